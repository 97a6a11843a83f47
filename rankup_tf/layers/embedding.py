"""Multi-embedding: K independent embedding tables per sparse field (SPEC 3.2).

Tables are ordinary Keras weights read with sparse gathers, so every
strategy trains them with sparse row updates (docs/design.md, "Embeddings
under a distribution strategy", has the measurements behind this):

* no strategy: `ResourceGather`; the gradient is an `IndexedSlices` and the
  optimizer applies a sparse update to the touched rows;
* MirroredStrategy / MultiWorkerMirroredStrategy: each replica gathers from
  its own copy; the `IndexedSlices` gradients are all-gathered (never
  densified) and applied sparsely to every copy;
* ParameterServerStrategy: a table created under a variable partitioner is
  a `ShardedVariable`; `tf.nn.embedding_lookup` gathers each row on the
  parameter server that holds it and the update stays on that server.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from rankup_tf import schema as schema_lib
from rankup_tf import keras_compat
from rankup_tf.keras_compat import keras

FeatureSpec = Union[schema_lib.SparseFeature, Dict]


def _as_feature(spec: FeatureSpec) -> schema_lib.SparseFeature:
  if isinstance(spec, schema_lib.SparseFeature):
    return spec
  spec = dict(spec)
  if isinstance(spec.get("vocabulary"), list):
    spec["vocabulary"] = tuple(spec["vocabulary"])
  return schema_lib.SparseFeature(**spec)


@dataclasses.dataclass(frozen=True)
class _Stack:
  """One table: the fields that share a combiner, each owning a disjoint row
  range starting at its offset, for every view in `views` (their columns
  side by side, `dim` each)."""
  views: Tuple[int, ...]
  combiner: str
  fields: Tuple[str, ...]
  offsets: Tuple[int, ...]
  rows: int
  dim: int

  @property
  def name(self) -> str:
    return "view" + "_".join(str(k) for k in self.views) + "_" + self.combiner


@keras.saving.register_keras_serializable("rankup_tf")
class MultiEmbedding(keras.layers.Layer):
  """K independent embedding tables per sparse field ("views").

  View k has its own embedding rows for every field it covers, of dim
  `view_dims[k]`, so different token types can read different embeddings of
  one feature. K = 1 is ordinary single embedding. Multivalent fields are
  pooled with the schema's combiner (sum, mean or sqrtn).

  Fields of a view are stacked into one table per combiner (each field owns
  a disjoint row range, so the math is that of one table per field): one
  gather per table per step instead of one per field, and a distribution
  strategy exchanges one sparse gradient per table. Views that cover the
  same fields with the same dim share that table side by side (view k's
  columns are its own embeddings): one gather and one sparse update serve
  them all, with the math of separate tables, since every optimizer here
  updates each element on its own. Rows are initialized from a truncated
  normal of stddev init_scale/sqrt(dim) (at init_scale 1, the default of
  `tf.tpu.experimental.embedding.TableConfig`).

  Example:

  ```python
  fields = [rankup_tf.schema.SparseFeature("user", hash_buckets=100),
            rankup_tf.schema.SparseFeature("item", hash_buckets=50)]
  embed = rankup_tf.layers.MultiEmbedding(fields, view_dims=[8, 8])
  views = embed({"user": tf.constant([1, 2]), "item": tf.constant([3, 4])})
  # two views, each [2, 2, 8]
  ```

  Args:
    features: the sparse fields (`schema.SparseFeature`s or their dicts).
    view_dims: embedding dim of each view; K = len(view_dims) >= 1.
    view_features: names of the fields each view covers (default: all).
    init_scale: multiplier (>= 0) on the initializer's stddev; 0 gives
      all-zero tables.
    l2: with training=True, adds the layer loss
      l2 * (sum of the squared values of every row looked up) / B. It is
      computed from the gathered rows, so the tables' gradients stay
      sparse (`IndexedSlices`) and rows not looked up are not decayed.
  Call:
    a dict name -> int64 ids [B] (or RaggedTensor [B, None] for multivalent
    fields), and `training`. Returns a list of K tensors [B, M_k, d_k],
    fields in `view_features[k]` order.
  """

  def __init__(self, features: Sequence[FeatureSpec],
               view_dims: Sequence[int],
               view_features: Optional[Sequence[Sequence[str]]] = None,
               init_scale: float = 1.0, l2: float = 0.0, **kwargs):
    if keras_compat.KERAS_3:
      # Its tables rely on tf-keras variable handling under distribution
      # strategies (sharded tables, sparse updates), measured in Keras 2 only.
      raise NotImplementedError(
          "MultiEmbedding is Keras 2 (tf-keras) only, like rankup_tf.models, "
          "and this process uses Keras 3. In Keras 3 embed with "
          "keras.layers.Embedding (or keras_rs) and feed the [B, M, d] field "
          "embeddings to the token layers (README, \"Keras 3\"); or set "
          "TF_USE_LEGACY_KERAS=1 before Python starts.")
    super().__init__(**kwargs)
    if not (math.isfinite(init_scale) and init_scale >= 0):
      raise ValueError(f"MultiEmbedding: init_scale must be >= 0, got "
                       f"{init_scale}.")
    if not (math.isfinite(l2) and l2 >= 0):
      raise ValueError(f"MultiEmbedding: l2 must be >= 0, got {l2}.")
    self.init_scale = float(init_scale)
    self.l2 = float(l2)
    self.features = [_as_feature(f) for f in features]
    self.view_dims = [int(d) for d in view_dims]
    if not self.view_dims:
      raise ValueError("MultiEmbedding needs at least one view (K >= 1), got "
                       "view_dims=[].")
    if any(d <= 0 for d in self.view_dims):
      raise ValueError(f"MultiEmbedding: view dims must be positive, got "
                       f"{self.view_dims}.")
    names = [f.name for f in self.features]
    if view_features is None:
      view_features = [names] * len(self.view_dims)
    self.view_features = [list(v) for v in view_features]
    if len(self.view_features) != len(self.view_dims):
      raise ValueError(f"MultiEmbedding: {len(self.view_features)} view "
                       f"field lists for {len(self.view_dims)} views.")
    self._by_name = {f.name: f for f in self.features}
    stacks = {}  # (combiner, fields, dim) -> views, in view order
    for k, fields in enumerate(self.view_features):
      unknown = [n for n in fields if n not in self._by_name]
      if unknown or not fields:
        raise ValueError(f"MultiEmbedding view {k}: unknown fields {unknown}"
                         if unknown else f"MultiEmbedding view {k} is empty.")
      by_combiner = {}  # one id per row makes the combiner irrelevant
      for name in fields:
        f = self._by_name[name]
        by_combiner.setdefault(f.combiner if f.multivalent else "mean",
                               []).append(name)
      for combiner, members in by_combiner.items():
        key = (combiner, tuple(members), self.view_dims[k])
        stacks.setdefault(key, []).append(k)
    self._stacks: List[_Stack] = []
    for (combiner, members, dim), views in stacks.items():
      sizes = [self._by_name[n].table_size for n in members]
      self._stacks.append(_Stack(
          tuple(views), combiner, members,
          tuple(sum(sizes[:i]) for i in range(len(sizes))), sum(sizes), dim))

  def build(self, input_shape=None):
    self.tables = {}
    for stack in self._stacks:
      dim = stack.dim
      self.tables[stack.name] = self.add_weight(
          stack.name, [stack.rows, dim * len(stack.views)], dtype=tf.float32,
          experimental_autocast=False,  # embeddings stay float32
          initializer=keras.initializers.TruncatedNormal(
              stddev=self.init_scale / math.sqrt(dim)))
    super().build(input_shape)

  @property
  def num_views(self) -> int:
    return len(self.view_dims)

  @property
  def embedding_variables(self) -> List[tf.Variable]:
    """The tables' variables, for a separate sparse optimizer: a table
    sharded by ParameterServerStrategy contributes its shards (the
    variables Keras tracks and the optimizer updates)."""
    if not self.built:
      self.build()
    return [part for table in self.tables.values()
            for part in getattr(table, "variables", [table])]

  def call(self, inputs: Dict[str, tf.Tensor], training=None
           ) -> List[tf.Tensor]:
    missing = [f.name for f in self.features if f.name not in inputs]
    if missing:
      raise KeyError(f"MultiEmbedding {self.name!r}: inputs lack the sparse "
                     f"feature(s) {missing}.")
    # Sums of squares of the looked-up rows, for the L2 loss.
    squares = [] if training and self.l2 else None
    pieces = [[] for _ in self.view_dims]  # per view: (fields, [B, m, d])
    for stack in self._stacks:
      table = self.tables[stack.name]
      single = [(n, o) for n, o in zip(stack.fields, stack.offsets)
                if not self._by_name[n].multivalent]
      if single:  # every univalent field of the table in one gather
        ids = tf.stack([tf.cast(inputs[n], tf.int64) + o
                        for n, o in single], axis=1)
        rows = gather(table, ids)
        if squares is not None:
          squares.append(tf.reduce_sum(tf.square(rows)))
        _add_by_view(pieces, stack, [n for n, _ in single], rows)
      for name, offset in zip(stack.fields, stack.offsets):
        if self._by_name[name].multivalent:
          _add_by_view(pieces, stack, [name], _pooled(
              table, inputs[name], offset, stack.combiner,
              squares)[:, tf.newaxis])
    views = []
    for fields, view_pieces in zip(self.view_features, pieces):
      order = [name for names, _ in view_pieces for name in names]
      view = (view_pieces[0][1] if len(view_pieces) == 1
              else tf.concat([rows for _, rows in view_pieces], axis=1))
      if order != fields:
        # One reorder, cheaper than slicing every field out and stacking
        # them again (a slice and a gradient per field).
        view = tf.gather(view, [order.index(n) for n in fields], axis=1)
      views.append(view)
    if squares is not None:
      batch = tf.cast(tf.shape(views[0])[0], tf.float32)
      self.add_loss(self.l2 * tf.add_n(squares) / tf.maximum(batch, 1.0))
    return views

  def get_config(self):
    return dict(super().get_config(),
                features=[dataclasses.asdict(f) for f in self.features],
                view_dims=self.view_dims, view_features=self.view_features,
                init_scale=self.init_scale, l2=self.l2)


def _add_by_view(pieces, stack: _Stack, names: List[str],
                 rows: tf.Tensor) -> None:
  """Hands each view of `stack` its columns of `rows` [B, m, views x dim]."""
  parts = (tf.split(rows, len(stack.views), axis=-1)
           if len(stack.views) > 1 else [rows])
  for view, part in zip(stack.views, parts):
    pieces[view].append((names, part))


def gather(table, ids: tf.Tensor) -> tf.Tensor:
  """Rows `ids` of `table`, read sparsely under any strategy.

  `tf.nn.embedding_lookup` on a MirroredVariable reads the whole table
  (ReadVariableOp) and gathers from that copy; the optimizer's sparse update
  must then copy the whole table as well, since the read still holds its
  buffer: the cost of a step grows with the table. Inside a replica we read
  the replica's own component variable instead (`ResourceGather`); the tape
  gives its gradient to the mirrored variable as `IndexedSlices`.
  """
  local = getattr(table, "_get_on_device_or_primary", None)
  if local is not None:  # a mirrored table: this replica's (or the primary) copy
    table = local()
  return tf.nn.embedding_lookup(table, ids)


def _pooled(table, ids: tf.RaggedTensor, offset: int, combiner: str,
            squares: Optional[List[tf.Tensor]] = None) -> tf.Tensor:
  """[B, d]: the rows of each example's ids, pooled by `combiner`; appends
  the sum of the rows' squares to `squares` if given."""
  if not isinstance(ids, tf.RaggedTensor):
    ids = tf.RaggedTensor.from_tensor(ids)
  flat_rows = gather(table, ids.flat_values + offset)
  if squares is not None:
    squares.append(tf.reduce_sum(tf.square(flat_rows)))
  rows = ids.with_flat_values(flat_rows)
  total = tf.reduce_sum(rows, axis=1)
  if combiner == "sum":
    return total
  count = tf.cast(ids.row_lengths(), total.dtype)[:, tf.newaxis]
  if combiner == "sqrtn":
    count = tf.sqrt(count)
  return tf.math.divide_no_nan(total, count)
