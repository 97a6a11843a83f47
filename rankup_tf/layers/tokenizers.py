"""Tokenizers: layers that turn embeddings and dense inputs into D-dim tokens.

Field splits take one embedding view [B, M, d] (M fields of dim d) and
return T_s sparse tokens [B, T_s, D]: fields are partitioned into T_s groups,
each group's embeddings are concatenated and projected by that token's own
weights. The three splits differ only in how fields are grouped:

* `RandomPermutationSplit` (RankUp): a random permutation sigma, drawn once
  from a seed, then an even split of the permuted list;
* `SemanticGroupSplit` (RankMixer): fields of one semantic group together;
* `OrderedSplit`: an even split in the fields' given order.

The other tokenizers each return [B, n, D]: `GlobalToken` (n = 1),
`CrossedPretrainedToken` (one per cross pair), `DenseToken` (n = 1),
`TaskTokens` (one per task).
"""

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from rankup_tf import keras_compat
from rankup_tf.keras_compat import keras
from rankup_tf.layers import backbone

GLOBAL_TOKEN_FUNCS = ("mlp", "fm", "fwfm", "dcn")


def _view_shape(input_shape, layer):
  return backbone.static_dims(input_shape, layer,
                              "one embedding view shaped [B, M, d]")


class _FieldSplit(keras.layers.Layer):
  """Groups fields into tokens and projects each group with its own weights.

  Subclasses implement `_groups(num_fields)` -> the field indices of each
  token (`token_fields`, for reports), in the order `call` sees them. Groups
  are padded to the largest group with an all-zero field, so all T_s
  projections run as one batched contraction over [T_s, G*d, D].
  `kernel_l2` is an L2 coefficient on that kernel (not the bias).
  """

  def __init__(self, num_tokens: int, token_dim: int, kernel_l2: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    if num_tokens < 1:
      raise ValueError(f"{self.__class__.__name__}: num_tokens must be >= 1, "
                       f"got {num_tokens}.")
    self.num_tokens = num_tokens
    self.token_dim = token_dim
    self.kernel_l2 = kernel_l2

  def _groups(self, num_fields: int) -> List[List[int]]:
    raise NotImplementedError

  def _positions(self, token_fields: List[List[int]]) -> List[List[int]]:
    """Where each token's fields sit in the tensor `call` projects."""
    return token_fields

  @property
  def token_fields(self) -> List[List[int]]:
    """The input fields of each token (known once built)."""
    return self._token_fields

  def build(self, input_shape):
    num_fields, dim = _view_shape(input_shape, self)
    if self.num_tokens > num_fields:
      raise ValueError(
          f"{self.__class__.__name__} {self.name!r}: {self.num_tokens} tokens "
          f"from {num_fields} fields; every token needs at least one field.")
    self._token_fields = self._groups(num_fields)
    positions = self._positions(self._token_fields)
    width = max(len(g) for g in positions)
    padded = [g + [num_fields] * (width - len(g)) for g in positions]
    self._gather = tf.constant(np.array(padded, np.int32).reshape(-1))
    self._width, self._dim = width, dim
    self.kernel = self.add_weight(
        name="kernel", shape=[self.num_tokens, width * dim, self.token_dim],
        initializer=backbone.per_token_uniform(width * dim, self.token_dim),
        regularizer=backbone.kernel_regularizer(self.kernel_l2))
    self.bias = self.add_weight(
        name="bias", shape=[self.num_tokens, self.token_dim],
        initializer="zeros")
    super().build(input_shape)

  def call(self, embeddings: tf.Tensor) -> tf.Tensor:
    batch = tf.shape(embeddings)[0]
    padded = tf.pad(embeddings, [[0, 0], [0, 1], [0, 0]])  # zero field
    grouped = tf.reshape(tf.gather(padded, self._gather, axis=1),
                         [batch, self.num_tokens, self._width * self._dim])
    return backbone.per_token_matmul(grouped, self.kernel) + self.bias

  def get_config(self):
    return dict(super().get_config(), num_tokens=self.num_tokens,
                token_dim=self.token_dim, kernel_l2=self.kernel_l2)


def even_split(fields: Sequence[int], parts: int) -> List[List[int]]:
  """Splits a list into `parts` contiguous groups differing in size by <= 1."""
  return [list(map(int, g)) for g in np.array_split(np.asarray(fields), parts)]


@keras.saving.register_keras_serializable("rankup_tf")
class RandomPermutationSplit(_FieldSplit):
  """RankUp's randomized permutation splitting (SPEC 3.1).

  sigma is drawn once from `seed` when the layer first sees M fields (or
  given as `permutation`), then the permuted fields are split evenly. Once
  built, sigma lives in one place, a non-trainable weight: `call` reads it,
  and `permutation`, `token_fields` and `get_config` report it, so after
  restoring a checkpoint written with another seed all of them follow the
  checkpoint.

  Example:

  ```python
  split = rankup_tf.layers.RandomPermutationSplit(num_tokens=4, token_dim=32,
                                                  seed=7)
  tokens = split(tf.random.normal([8, 10, 16]))      # [8, 4, 32]
  split.token_fields                                 # fields of each token
  ```
  """

  def __init__(self, num_tokens: int, token_dim: int, seed: int = 0,
               permutation: Optional[Sequence[int]] = None, **kwargs):
    super().__init__(num_tokens, token_dim, **kwargs)
    self.seed = seed
    # Only until build: then the weight is sigma.
    self._initial_permutation = (None if permutation is None
                                 else [int(i) for i in permutation])

  @property
  def permutation(self) -> Optional[List[int]]:
    """sigma: the weight's value once built, else the given one (or None
    until drawn)."""
    if hasattr(self, "stored_permutation"):
      return [int(i) for i in self.stored_permutation.numpy()]
    return self._initial_permutation

  @property
  def token_fields(self) -> List[List[int]]:
    return even_split(self.permutation, self.num_tokens)

  def _groups(self, num_fields):
    if self._initial_permutation is None:
      self._initial_permutation = [
          int(i) for i in np.random.default_rng(self.seed).permutation(
              num_fields)]
    if sorted(self._initial_permutation) != list(range(num_fields)):
      raise ValueError(f"RandomPermutationSplit {self.name!r}: permutation "
                       f"{self._initial_permutation} is not a permutation "
                       f"of {num_fields} fields.")
    return even_split(self._initial_permutation, self.num_tokens)

  def _positions(self, token_fields):
    # `call` permutes the fields first, so each token's fields are
    # contiguous.
    return even_split(range(sum(map(len, token_fields))), self.num_tokens)

  def build(self, input_shape):
    super().build(input_shape)
    self.stored_permutation = self.add_weight(
        name="permutation", shape=[len(self._initial_permutation)],
        dtype="int32", trainable=False,
        initializer=keras.initializers.Constant(self._initial_permutation))

  def call(self, embeddings):
    return super().call(tf.gather(embeddings, self.stored_permutation,
                                  axis=1))

  def get_config(self):
    return dict(super().get_config(), seed=self.seed,
                permutation=self.permutation)


@keras.saving.register_keras_serializable("rankup_tf")
class SemanticGroupSplit(_FieldSplit):
  """RankMixer's semantic tokenization: a token never mixes groups.

  Tokens are shared out to groups in proportion to their field counts (each
  group gets at least one; largest remainder), and each group's fields are
  split evenly over its tokens, in the given order.

  Example:

  ```python
  split = rankup_tf.layers.SemanticGroupSplit(
      num_tokens=3, token_dim=32, groups=["user", "user", "item", "ctx"])
  tokens = split(tf.random.normal([8, 4, 16]))       # [8, 3, 32]
  ```

  Args:
    groups: the semantic group of each field, in field order.
  """

  def __init__(self, num_tokens: int, token_dim: int,
               groups: Sequence[str] = (), **kwargs):
    super().__init__(num_tokens, token_dim, **kwargs)
    self.groups = list(groups)

  def _groups(self, num_fields):
    if len(self.groups) != num_fields:
      raise ValueError(f"SemanticGroupSplit {self.name!r}: {len(self.groups)} "
                       f"group names for {num_fields} fields.")
    names = list(dict.fromkeys(self.groups))
    members = {n: [i for i, g in enumerate(self.groups) if g == n]
               for n in names}
    if self.num_tokens < len(names):
      raise ValueError(
          f"SemanticGroupSplit {self.name!r}: {self.num_tokens} tokens cannot "
          f"keep {len(names)} semantic groups {names} apart; use at least "
          f"{len(names)} sparse tokens.")
    share = {n: self.num_tokens * len(members[n]) / num_fields for n in names}
    tokens = {n: max(1, int(share[n])) for n in names}
    by_remainder = sorted(names, key=lambda n: share[n] - int(share[n]),
                          reverse=True)
    while sum(tokens.values()) < self.num_tokens:
      for n in by_remainder:
        if (sum(tokens.values()) < self.num_tokens
            and tokens[n] < len(members[n])):
          tokens[n] += 1
    while sum(tokens.values()) > self.num_tokens:
      largest = max(names, key=lambda n: tokens[n])
      tokens[largest] -= 1
    return [g for n in names for g in even_split(members[n], tokens[n])]

  def get_config(self):
    return dict(super().get_config(), groups=self.groups)


@keras.saving.register_keras_serializable("rankup_tf")
class OrderedSplit(_FieldSplit):
  """Fields split evenly in their given order (an ablation baseline).

  Example:

  ```python
  split = rankup_tf.layers.OrderedSplit(num_tokens=2, token_dim=32)
  tokens = split(tf.random.normal([8, 5, 16]))       # [8, 2, 32]
  ```
  """

  def _groups(self, num_fields):
    return even_split(range(num_fields), self.num_tokens)


SPLITS = {"random": RandomPermutationSplit, "semantic": SemanticGroupSplit,
          "ordered": OrderedSplit}


def _cross_layers(num_layers: int, projection_dim: int, regularizer) -> list:
  """`num_layers` DCNv2 cross layers of TFRS (low-rank with a
  `projection_dim`, 0: full rank), which is Keras 2 only (and imported only
  here, so the other tokenizers load without it)."""
  if keras_compat.KERAS_3:
    raise ValueError(
        "GlobalToken(func='dcn') uses TensorFlow-Recommenders' DCNv2 cross "
        "layer, which is Keras 2 (tf-keras) only, and this process uses "
        "Keras 3. Use func='mlp', 'fm' or 'fwfm', or set "
        "TF_USE_LEGACY_KERAS=1 before Python starts.")
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
  return [tfrs.layers.dcn.Cross(projection_dim=projection_dim or None,
                                kernel_regularizer=regularizer)
          for _ in range(num_layers)]


@keras.saving.register_keras_serializable("rankup_tf")
class GlobalToken(keras.layers.Layer):
  """One token summarizing all fields: g = func(Pool(view-1 embeddings)).

  func:
    * "mlp": the M field embeddings concatenated, then an MLP;
    * "fm": FM bi-interaction pooling 0.5 ((sum e)^2 - sum e^2)
      = sum_{i<j} e_i * e_j, [B, d];
    * "fwfm": field-weighted FM, sum_{i<j} r_ij e_i * e_j [B, d], with a
      learned scalar r_ij per field pair (initialized to 1, so it starts as
      "fm");
    * "dcn": the concatenation through `num_cross_layers` DCNv2 cross
      layers (tfrs; Keras 2 only), full rank (each (Md)^2 weights) or, with
      `cross_projection_dim` r, low rank (2 Md r weights each);
  each followed by a projection to D. FM and FwFM keep the element-wise
  products un-summed (bi-interaction pooling, as in NFM): the scalar FM
  score, sum over the d dims, would project to a rank-1 token.

  Example:

  ```python
  g = rankup_tf.layers.GlobalToken(token_dim=32, func="fm")
  token = g(tf.random.normal([8, 10, 16]))           # [8, 1, 32]
  ```

  `kernel_l2` is an L2 coefficient on every kernel (MLP, cross layers,
  projection; not the biases).
  """

  def __init__(self, token_dim: int, func: str = "mlp",
               hidden_units: Sequence[int] = (256,), num_cross_layers: int = 2,
               cross_projection_dim: int = 0, kernel_l2: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    if func not in GLOBAL_TOKEN_FUNCS:
      raise ValueError(f"GlobalToken: unknown func {func!r}; expected one of "
                       f"{GLOBAL_TOKEN_FUNCS}.")
    if cross_projection_dim < 0:
      raise ValueError(
          f"GlobalToken: cross_projection_dim must be >= 0 (the 'dcn' cross "
          f"layers' rank, 0: full rank), got {cross_projection_dim}.")
    if cross_projection_dim and func != "dcn":
      raise ValueError(
          f"GlobalToken: cross_projection_dim={cross_projection_dim} is the "
          f"rank of the 'dcn' cross layers; func={func!r} has none.")
    self.token_dim = token_dim
    self.func = func
    self.hidden_units = list(hidden_units)
    self.num_cross_layers = num_cross_layers
    self.cross_projection_dim = cross_projection_dim
    self.kernel_l2 = kernel_l2
    regularizer = backbone.kernel_regularizer(kernel_l2)
    self._hidden = ([keras.layers.Dense(u, activation="relu",
                                        kernel_regularizer=regularizer)
                     for u in self.hidden_units] if func == "mlp" else [])
    self._cross = (_cross_layers(num_cross_layers, cross_projection_dim,
                                 regularizer) if func == "dcn" else [])
    self._project = keras.layers.Dense(token_dim, name="project",
                                       kernel_regularizer=regularizer)

  def build(self, input_shape):
    num_fields, _ = _view_shape(input_shape, self)
    if self.func == "fwfm":
      # Only the M(M-1)/2 pairs i < j are weights (FwFM's count); call
      # scatters them into a strictly upper-triangular [M, M] matrix.
      self._pairs = np.stack(np.triu_indices(num_fields, k=1), axis=1)
      self.pair_weights = self.add_weight(
          name="pair_weights", shape=[len(self._pairs)], initializer="ones")
    super().build(input_shape)

  def call(self, embeddings: tf.Tensor) -> tf.Tensor:
    if self.func == "fm":
      total = tf.reduce_sum(embeddings, axis=1)
      pooled = 0.5 * (tf.square(total) - tf.reduce_sum(tf.square(embeddings),
                                                       axis=1))
    elif self.func == "fwfm":
      m = embeddings.shape[1]
      r = tf.scatter_nd(self._pairs, tf.cast(self.pair_weights,
                                              embeddings.dtype), [m, m])
      # sum_i e_i * (sum_j r_ij e_j): O(M^2 d) per example.
      pooled = tf.reduce_sum(
          embeddings * tf.einsum("ij,bjd->bid", r, embeddings), axis=1)
    else:
      shape = tf.shape(embeddings)
      pooled = tf.reshape(embeddings, [shape[0], embeddings.shape[1]
                                       * embeddings.shape[2]])
      x0 = pooled
      for cross in self._cross:
        pooled = cross(x0, pooled)
      for dense in self._hidden:
        pooled = dense(pooled)
    return self._project(pooled)[:, tf.newaxis]

  def get_config(self):
    return dict(super().get_config(), token_dim=self.token_dim, func=self.func,
                hidden_units=self.hidden_units,
                num_cross_layers=self.num_cross_layers,
                cross_projection_dim=self.cross_projection_dim,
                kernel_l2=self.kernel_l2)


@keras.saving.register_keras_serializable("rankup_tf")
class CrossedPretrainedToken(keras.layers.Layer):
  """One token per crossed pair: e = Proj_p(a_p * b_p) (SPEC 3.4).

  Called on a list of (a, b) pairs of [B, dim_p] tensors: pretrained vectors
  (e.g. two-tower user and item embeddings) or interaction-view embeddings of
  two sparse fields. Each pair has its own projection.

  Example:

  ```python
  cross = rankup_tf.layers.CrossedPretrainedToken(token_dim=32)
  z_user, z_item = tf.random.normal([8, 16]), tf.random.normal([8, 16])
  tokens = cross([(z_user, z_item)])                 # [8, 1, 32]
  ```

  `kernel_l2` is an L2 coefficient on the projections' kernels.
  """

  def __init__(self, token_dim: int, kernel_l2: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.token_dim = token_dim
    self.kernel_l2 = kernel_l2

  def build(self, input_shape):
    if not input_shape:
      raise ValueError(f"CrossedPretrainedToken {self.name!r} needs at least "
                       "one (a, b) pair.")
    self._projections = []
    for i, (a, b) in enumerate(input_shape):
      a, b = tf.TensorShape(a), tf.TensorShape(b)
      if a.rank != 2 or a[-1] is None or a[-1] != b[-1]:
        raise ValueError(f"CrossedPretrainedToken {self.name!r}: pair {i} "
                         f"needs two [B, dim] vectors of one dim, got {a} and "
                         f"{b}.")
      projection = keras.layers.Dense(
          self.token_dim, name=f"project_{i}",
          kernel_regularizer=backbone.kernel_regularizer(self.kernel_l2))
      projection.build(a)
      self._projections.append(projection)
    super().build(input_shape)

  def call(self, pairs) -> tf.Tensor:
    return tf.stack([project(a * b) for project, (a, b) in
                     zip(self._projections, pairs)], axis=1)

  def get_config(self):
    return dict(super().get_config(), token_dim=self.token_dim,
                kernel_l2=self.kernel_l2)


@keras.saving.register_keras_serializable("rankup_tf")
class DenseToken(keras.layers.Layer):
  """Dense inputs (normalized dense fields, pretrained vectors) projected
  into `num_tokens` tokens, each by its own projection of all of them.

  Example:

  ```python
  dense = tf.random.normal([8, 6])
  token = rankup_tf.layers.DenseToken(token_dim=32)(dense)     # [8, 1, 32]
  tokens = rankup_tf.layers.DenseToken(32, num_tokens=3)(dense)  # [8, 3, 32]
  ```

  `kernel_l2` is an L2 coefficient on the projection's kernel.
  """

  def __init__(self, token_dim: int, num_tokens: int = 1,
               kernel_l2: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if num_tokens < 1:
      raise ValueError(f"DenseToken: num_tokens must be >= 1, got "
                       f"{num_tokens}.")
    self.token_dim = token_dim
    self.num_tokens = num_tokens
    self.kernel_l2 = kernel_l2
    # One matmul for all tokens; num_tokens=1 keeps the [in, D] kernel.
    self._project = keras.layers.Dense(
        num_tokens * token_dim, name="project",
        kernel_regularizer=backbone.kernel_regularizer(kernel_l2))

  def build(self, input_shape):
    keras_compat.build_sublayer(self._project, input_shape)
    super().build(input_shape)

  def call(self, dense: tf.Tensor) -> tf.Tensor:
    return tf.reshape(self._project(dense),
                      [-1, self.num_tokens, self.token_dim])

  def get_config(self):
    return dict(super().get_config(), token_dim=self.token_dim,
                num_tokens=self.num_tokens, kernel_l2=self.kernel_l2)


@keras.saving.register_keras_serializable("rankup_tf")
class TaskTokens(keras.layers.Layer):
  """One learned token per task, the same for every example (SPEC 3.5).

  Called on any tensor whose first dim is the batch.

  Example:

  ```python
  tasks = rankup_tf.layers.TaskTokens(num_tasks=2, token_dim=32)
  tokens = tasks(tf.zeros([8, 5]))                   # [8, 2, 32]
  ```
  """

  def __init__(self, num_tasks: int, token_dim: int, **kwargs):
    super().__init__(**kwargs)
    if num_tasks < 1:
      raise ValueError(f"TaskTokens: num_tasks must be >= 1, got "
                       f"{num_tasks}.")
    self.num_tasks = num_tasks
    self.token_dim = token_dim

  def build(self, input_shape):
    self.tokens = self.add_weight(
        name="tokens", shape=[self.num_tasks, self.token_dim],
        initializer=keras.initializers.TruncatedNormal(stddev=0.02))
    super().build(input_shape)

  def call(self, batch_like: tf.Tensor) -> tf.Tensor:
    batch = tf.shape(batch_like)[0]
    return tf.tile(self.tokens[tf.newaxis], [batch, 1, 1])

  def get_config(self):
    return dict(super().get_config(), num_tasks=self.num_tasks,
                token_dim=self.token_dim)
