"""Multi-embedding on TF-Recommenders' TPUEmbedding (SPEC 3.2)."""

import dataclasses
from typing import Dict, List, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs
from tensorflow.python.ops import resource_variable_ops

from rankup_tf import schema as schema_lib

FeatureSpec = Union[schema_lib.SparseFeature, Dict]


def _as_feature(spec: FeatureSpec) -> schema_lib.SparseFeature:
  if isinstance(spec, schema_lib.SparseFeature):
    return spec
  spec = dict(spec)
  if isinstance(spec.get("vocabulary"), list):
    spec["vocabulary"] = tuple(spec["vocabulary"])
  return schema_lib.SparseFeature(**spec)


@tf.keras.utils.register_keras_serializable("rankup_tf")
class MultiEmbedding(tf.keras.layers.Layer):
  """K independent embedding tables per sparse field ("views").

  View k has its own embedding rows for every field it covers, of dim
  `view_dims[k]`, so different token types can read different embeddings of
  one feature. K = 1 is ordinary single embedding. Tables and lookups are
  TF-Recommenders' `tfrs.layers.embedding.TPUEmbedding` with
  `tf.tpu.experimental.embedding.TableConfig`/`FeatureConfig`: plain
  variables on CPU/GPU (also under MirroredStrategy), sharded on TPU.
  Multivalent fields are pooled with the schema's combiner.

  Fields of a view are stacked into one table per combiner (each field owns
  a disjoint row range, so the math is that of one table per field): a
  distribution strategy then all-reduces one sparse gradient per view, not
  one per field (33 fields x 3 views took 16 s just to trace otherwise).

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
    optimizer: the embedding optimizer, needed only under a TPUStrategy
      (see `tfrs.layers.embedding.TPUEmbedding`); None elsewhere, where the
      tables are trained like any variable.
  Call:
    a dict name -> int64 ids [B] (or RaggedTensor [B, None] for multivalent
    fields). Returns a list of K tensors [B, M_k, d_k], fields in
    `view_features[k]` order.
  """

  def __init__(self, features: Sequence[FeatureSpec],
               view_dims: Sequence[int],
               view_features: Optional[Sequence[Sequence[str]]] = None,
               optimizer=None, **kwargs):
    super().__init__(**kwargs)
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
    by_name = {f.name: f for f in self.features}
    config, self._offsets = {}, {}
    for k, (dim, fields) in enumerate(zip(self.view_dims,
                                          self.view_features)):
      unknown = [n for n in fields if n not in by_name]
      if unknown or not fields:
        raise ValueError(f"MultiEmbedding view {k}: unknown fields {unknown}"
                         if unknown else f"MultiEmbedding view {k} is empty.")
      stacks = {}  # combiner -> fields; one id per row makes it irrelevant
      for name in fields:
        f = by_name[name]
        stacks.setdefault(f.combiner if f.multivalent else "mean",
                          []).append(name)
      config[f"view{k}"] = {}
      for combiner, members in stacks.items():
        table = tf.tpu.experimental.embedding.TableConfig(
            vocabulary_size=sum(by_name[n].table_size for n in members),
            dim=dim, combiner=combiner, name=f"view{k}_{combiner}")
        offset = 0
        for name in members:
          self._offsets[(k, name)] = offset
          offset += by_name[name].table_size
          config[f"view{k}"][name] = (
              tf.tpu.experimental.embedding.FeatureConfig(
                  table=table, name=f"view{k}_{name}"))
    self._embedding = tfrs.layers.embedding.TPUEmbedding(
        config, optimizer=optimizer)

  @property
  def num_views(self) -> int:
    return len(self.view_dims)

  @property
  def embedding_variables(self) -> List[tf.Variable]:
    """The tables (for a separate sparse optimizer)."""
    return self._embedding.trainable_variables

  def call(self, inputs: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
    missing = [f.name for f in self.features if f.name not in inputs]
    if missing:
      raise KeyError(f"MultiEmbedding {self.name!r}: inputs lack the sparse "
                     f"feature(s) {missing}.")
    ids = {f"view{k}": {name: _shift(inputs[name], self._offsets[(k, name)])
                        for name in fields}
           for k, fields in enumerate(self.view_features)}
    with tf.variable_creator_scope(_string_variables_stay_local):
      looked_up = self._embedding(ids)
    return [tf.stack([looked_up[f"view{k}"][name] for name in fields], axis=1)
            for k, fields in enumerate(self.view_features)]

  def get_config(self):
    return dict(super().get_config(),
                features=[dataclasses.asdict(f) for f in self.features],
                view_dims=self.view_dims, view_features=self.view_features)


def _string_variables_stay_local(next_creator, **kwargs):
  """Creates string variables outside any distribution strategy.

  Off TPU, TPUEmbedding keeps an (unused) SparseCore layout string variable;
  MultiWorkerMirroredStrategy cannot broadcast a string initial value, and
  the string needs no syncing. ResourceVariable's constructor skips the
  variable-creator stack.
  """
  if kwargs.get("dtype") is not None and tf.as_dtype(
      kwargs["dtype"]) == tf.string:
    return resource_variable_ops.ResourceVariable(
        initial_value=kwargs["initial_value"], trainable=False,
        name=kwargs.get("name"), dtype=tf.string)
  return next_creator(**kwargs)


def _shift(ids, offset: int):
  """ids + offset, for dense or ragged ids."""
  if offset == 0:
    return ids
  if isinstance(ids, tf.RaggedTensor):
    return ids.with_flat_values(ids.flat_values + offset)
  return ids + offset
