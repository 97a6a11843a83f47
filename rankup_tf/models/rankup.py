"""RankUp and RankMixer: token models on one shared implementation."""

from typing import Dict, List

import tensorflow as tf

from rankup_tf import schema as schema_lib
from rankup_tf.layers import backbone
from rankup_tf.layers import heads
from rankup_tf.layers import tokenizers
from rankup_tf.models import base
from rankup_tf.models import configs

# Which view each role reads, before clipping to the K views there are.
_GLOBAL_VIEW, _TOKEN_VIEW, _CROSS_VIEW = 0, 1, 2


class RankUpModel(base.RankingModel):
  """RankUp (SPEC 3): a token backbone fed with high-rank tokens.

  Token sequence, in order (T = num_tokens in all):

      [global] + T_s sparse tokens + [T_d dense] + [one per cross pair]
      + [one per task]

  T_d is `num_dense_tokens` (by default the dense inputs' share of the
  fields); T_s is what the other tokens leave of T. Tokens go through L blocks
  (RankUp pre-LN SwiGLU, then a final LayerNorm, or RankMixer post-LN
  GELU); tower k reads task token k and the mean of the shared tokens (or,
  without task tokens, the mean of all tokens).

  Example:

  ```python
  schema = rankup_tf.Schema.load("schema.json")
  model = rankup_tf.models.RankUpModel(
      schema, rankup_tf.models.RankUpConfig(num_tokens=16, token_dim=64))
  logits = model(features)            # {"click": [B], "conversion": [B]}
  ```
  """

  config_class = configs.RankUpConfig

  def __init__(self, schema: schema_lib.Schema, config: configs.RankUpConfig,
               **kwargs):
    super().__init__(schema, config, **kwargs)
    c = self._token_config(config)
    if not 0 <= c.num_embedding_views <= 3:
      raise ValueError(f"num_embedding_views must be 1, 2 or 3 (global, "
                       f"sparse-token and cross views), or 0 for every view "
                       f"that has a role; got {c.num_embedding_views}.")
    self.sparse_crosses = ([p for p in schema.crosses
                            if schema.cross_kind(p) == "sparse"]
                           if c.cross_tokens and c.sparse_cross_tokens
                           else [])
    # K, resolved: each view that has a role gets its own table.
    self.num_embedding_views = k = c.num_embedding_views or (
        1 + int(c.global_token)
        + int(c.global_token and bool(self.sparse_crosses)))
    self.pretrained_crosses = ([p for p in schema.crosses
                                if schema.cross_kind(p) == "pretrained"]
                               if c.cross_tokens else [])
    self._views = {"global": min(_GLOBAL_VIEW, k - 1),
                   "tokens": min(_TOKEN_VIEW, k - 1),
                   "cross": min(_CROSS_VIEW, k - 1)}
    self._check_views(c)
    self._token_counts = self._count_tokens(c)
    self._embedding_stage(self._view_dims(c, k), self._view_features(c))

    self.tokenizer = self._make_split(c)
    l2 = c.dense_l2
    if c.global_token_projection_dim < 0:
      raise ValueError(f"global_token_projection_dim must be >= 0 (0: full "
                       f"rank), got {c.global_token_projection_dim}.")
    self.global_token = (tokenizers.GlobalToken(
        c.token_dim, c.global_token_func,
        cross_projection_dim=(c.global_token_projection_dim
                              if c.global_token_func == "dcn" else 0),
        kernel_l2=l2,
        name="global_token")
                         if c.global_token else None)
    self.dense_token = (tokenizers.DenseToken(
        c.token_dim, self._token_counts["dense"], kernel_l2=l2,
        name="dense_token") if self._token_counts["dense"] else None)
    self.cross_token = (tokenizers.CrossedPretrainedToken(
        c.token_dim, kernel_l2=l2, name="cross_tokens")
                        if self._token_counts["cross"] else None)
    self.task_tokens = (tokenizers.TaskTokens(
        len(schema.tasks), c.token_dim, name="task_tokens")
                        if c.task_tokens else None)
    block_kwargs = dict(expansion=c.ffn_expansion,
                        hidden_dim=c.ffn_hidden_dim,
                        num_experts=c.num_experts,
                        moe_l1_penalty=c.moe_l1_penalty, dropout=c.dropout,
                        kernel_l2=l2)
    if c.ffn_activation:
      block_kwargs["activation"] = c.ffn_activation
    self.blocks = [backbone.make_block(c.block, name=f"block{i + 1}",
                                       **block_kwargs)
                   for i in range(c.num_layers)]
    # Post-LN blocks end normalized; pre-LN ones need a final LayerNorm.
    self.final_norm = (tf.keras.layers.LayerNormalization(
        epsilon=1e-6, name="final_norm")
                       if c.final_norm and c.block == "rankup" else None)
    self.towers = heads.TaskTowers(schema.task_names, c.tower_units,
                                   use_task_tokens=c.task_tokens,
                                   dropout=c.dropout, kernel_l2=l2,
                                   name="towers")

  @staticmethod
  def _token_config(config) -> configs.RankUpConfig:
    return config

  # -- construction checks ----------------------------------------------------
  @staticmethod
  def _view_dims(c: configs.RankUpConfig, k: int) -> List[int]:
    if not c.view_embedding_dims:
      return [c.embedding_dim] * k
    dims = list(c.view_embedding_dims)
    if len(dims) != k:
      raise ValueError(
          f"view_embedding_dims={dims} has {len(dims)} entries but "
          f"num_embedding_views={k}: give one dim per view (global, sparse "
          "token, cross views in that order), or none for embedding_dim.")
    if any(d <= 0 for d in dims):
      raise ValueError(f"view_embedding_dims must be positive, got {dims}.")
    return dims

  def _check_views(self, c: configs.RankUpConfig) -> None:
    used = {self._views["tokens"]}
    if c.global_token:
      used.add(self._views["global"])
    if self.sparse_crosses:
      used.add(self._views["cross"])
    unused = sorted(set(range(self.num_embedding_views)) - used)
    if unused:
      roles = {0: "the global token (global_token is off)",
               2: "sparse cross tokens (no sparse cross pair in the schema, "
                  "or cross_tokens is off)"}
      raise ValueError(
          f"num_embedding_views={self.num_embedding_views}, but view(s) "
          f"{[v + 1 for v in unused]} would feed nothing: view "
          + "; view ".join(f"{v + 1} is for {roles[v]}" for v in unused)
          + f". Use num_embedding_views={len(used)}.")

  def _count_tokens(self, c: configs.RankUpConfig) -> Dict[str, int]:
    # "dense" is set below, from what the other tokens leave; listed here
    # to keep the order of the token sequence.
    counts = {"global": int(c.global_token), "dense": 0,
              "cross": len(self.sparse_crosses) + len(self.pretrained_crosses),
              "task": len(self.schema.tasks) if c.task_tokens else 0}
    counts["dense"] = self._count_dense_tokens(
        c, c.num_tokens - sum(counts.values()))
    others = sum(counts.values())
    counts["sparse"] = c.num_tokens - others
    if counts["sparse"] < 1:
      raise ValueError(
          f"num_tokens={c.num_tokens} leaves no sparse tokens: "
          + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "sparse")
          + f" = {others} non-sparse tokens. Raise num_tokens.")
    num_fields = len(self.schema.sparse_features)
    if counts["sparse"] > num_fields:
      raise ValueError(
          f"num_tokens={c.num_tokens} asks for {counts['sparse']} sparse "
          f"tokens but the schema has {num_fields} sparse fields; every "
          "sparse token needs at least one field. Lower num_tokens.")
    if c.token_dim % c.num_tokens:
      divisors = [t for t in range(others + 1, min(num_fields + others,
                                                    c.token_dim) + 1)
                  if c.token_dim % t == 0]
      raise ValueError(
          f"token_dim D={c.token_dim} is not divisible by num_tokens "
          f"T={c.num_tokens} (token mixing cuts each token into T heads). "
          f"With D={c.token_dim}, T can be one of {divisors}; or pick D as a "
          f"multiple of {c.num_tokens}.")
    return counts

  def _count_dense_tokens(self, c: configs.RankUpConfig, free: int) -> int:
    """c.num_dense_tokens, or for 0 the dense inputs' share of the `free`
    tokens (those global, cross and task tokens leave), each dense field and
    pretrained vector counting as one field: rounded down (never more than
    their share), at least 1. 0 without a dense token."""
    if c.num_dense_tokens < 0:
      raise ValueError(f"num_dense_tokens must be >= 0 (0: their share of "
                       f"the fields), got {c.num_dense_tokens}.")
    dense_inputs = (len(self.schema.dense_features)
                    + len(self.schema.pretrained_features))
    if not (c.dense_token and dense_inputs):
      return 0
    if c.num_dense_tokens:
      return c.num_dense_tokens
    fields = dense_inputs + len(self.schema.sparse_features)
    return max(1, free * dense_inputs // fields)

  def _view_features(self, c: configs.RankUpConfig) -> List[List[str]]:
    views = [[] for _ in range(self.num_embedding_views)]

    def cover(view, names):
      views[view] += [n for n in names if n not in views[view]]

    all_fields = self.schema.sparse_names
    if c.global_token:
      cover(self._views["global"], all_fields)
    cover(self._views["tokens"], all_fields)
    for pair in self.sparse_crosses:
      cover(self._views["cross"], pair)
    # Keep schema order inside every view.
    return [[n for n in all_fields if n in v] for v in views]

  def _make_split(self, c: configs.RankUpConfig):
    num, dim, l2 = self._token_counts["sparse"], c.token_dim, c.dense_l2
    if c.split == "random":
      return tokenizers.RandomPermutationSplit(num, dim, c.permutation_seed,
                                               kernel_l2=l2,
                                               name="sparse_tokens")
    if c.split == "semantic":
      groups = [f.semantic_group for f in self.schema.sparse_features]
      return tokenizers.SemanticGroupSplit(num, dim, groups, kernel_l2=l2,
                                           name="sparse_tokens")
    if c.split == "ordered":
      return tokenizers.OrderedSplit(num, dim, kernel_l2=l2,
                                     name="sparse_tokens")
    raise ValueError(f"Unknown split {c.split!r}; expected one of "
                     f"{sorted(tokenizers.SPLITS)}.")

  # -- forward ----------------------------------------------------------------
  @property
  def token_counts(self) -> Dict[str, int]:
    """Tokens of each kind (global, sparse, dense, cross, task)."""
    return dict(self._token_counts)

  def input_tokens(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The token matrix [B, T, D] the first block sees."""
    return self._tokens(self.embedding(features), self.dense_inputs(features))

  def _tokens(self, views, dense: Dict[str, tf.Tensor]) -> tf.Tensor:
    token_view = views[self._views["tokens"]]
    parts = []
    if self.global_token is not None:
      parts.append(self.global_token(views[self._views["global"]]))
    parts.append(self.tokenizer(token_view))
    if self.dense_token is not None:
      # Dense fields and pretrained vectors: a model without cross tokens
      # (RankMixer) still sees the vectors; cross tokens add their product.
      parts.append(self.dense_token(self.dense_vector(dense)))
    if self.cross_token is not None:
      parts.append(self.cross_token(self._cross_pairs(dense, views)))
    if self.task_tokens is not None:
      parts.append(self.task_tokens(token_view))
    return tf.concat([tf.cast(p, self.compute_dtype) for p in parts], axis=1)

  def _cross_pairs(self, dense, views):
    pairs = [(dense[a], dense[b]) for a, b in self.pretrained_crosses]
    cross_view = views[self._views["cross"]]
    fields = self.embedding.view_features[self._views["cross"]]
    for a, b in self.sparse_crosses:
      pairs.append((cross_view[:, fields.index(a)],
                    cross_view[:, fields.index(b)]))
    return pairs

  def token_states(self, features: Dict[str, tf.Tensor]
                   ) -> Dict[str, tf.Tensor]:
    """Token matrices at every measuring point (SPEC 4), in order:
    "input", then "block{i}_mixer" and "block{i}_ffn" (after residuals)."""
    tokens = self.input_tokens(features)
    states = {"input": tokens}
    for i, block in enumerate(self.blocks, start=1):
      tokens, block_states = block(tokens, training=False, return_states=True)
      states[f"block{i}_mixer"] = block_states["mixer"]
      states[f"block{i}_ffn"] = block_states["ffn"]
    return states

  def interact(self, views, dense: Dict[str, tf.Tensor], training=None
               ) -> Dict[str, tf.Tensor]:
    tokens = self._tokens(views, dense)
    for block in self.blocks:
      tokens = block(tokens, training=training)
    if self.final_norm is not None:
      tokens = self.final_norm(tokens)
    return self.towers(tokens, training=training)


class RankMixerModel(RankUpModel):
  """RankMixer (the baseline RankUp improves on): semantic split, single
  embedding, no global/cross/task tokens, post-LN GELU blocks, mean-pool
  readout.

  Example:

  ```python
  model = rankup_tf.models.RankMixerModel(
      schema, rankup_tf.models.RankMixerConfig(num_tokens=8, token_dim=64))
  ```
  """

  config_class = configs.RankMixerConfig

  @staticmethod
  def _token_config(config) -> configs.RankUpConfig:
    return config.as_rankup()
