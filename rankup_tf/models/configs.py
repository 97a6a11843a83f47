"""Model configs: plain dataclasses, saved as JSON next to a model.

A model is built from (schema, config). The trainer turns flags into one of
these; nothing below reads flags.
"""

import dataclasses
import json
import math
from typing import Any, Dict, Tuple, Type


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Fields every model shares.

  Attributes:
    embedding_dim: d, the dim of every embedding view (RankUp:
      unless `view_embedding_dims` sets one per view).
    tower_units: hidden units of each task tower (then a logit).
    loss_weights: task name -> loss weight (missing tasks weigh 1.0).
    dropout: dropout rate in [0, 1) of the token blocks (after token mixing
      and after the per-token FFN, before each residual add), the task
      towers' hidden layers and the baselines' MLP hidden layers; training
      only. 0 adds no dropout layer.
    dense_l2: L2 coefficient on every dense kernel (Dense and per-token
      weight matrices, MoE routers; not biases, LayerNorms, task tokens or
      embeddings): dense_l2 * sum of squared entries, added to the
      training loss once per step (independent of the batch size).
    embedding_l2: L2 coefficient on the embedding rows a batch looks up:
      embedding_l2 * (sum of the squared looked-up values) / batch size,
      added to the training loss. Rows not looked up get no gradient, so
      the tables' gradients stay sparse.
    embedding_init_scale: multiplier (>= 0) on the embedding initializer's
      stddev 1/sqrt(d); 0 gives all-zero tables.
  """
  embedding_dim: int = 16
  tower_units: Tuple[int, ...] = (64,)
  loss_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
  dropout: float = 0.0
  dense_l2: float = 0.0
  embedding_l2: float = 0.0
  embedding_init_scale: float = 1.0

  def __post_init__(self):
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
    for name in ("dense_l2", "embedding_l2", "embedding_init_scale"):
      value = getattr(self, name)
      if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got "
                         f"{value}.")

  def to_dict(self) -> Dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
      raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: "
                       f"{sorted(fields)}.")
    converted = {k: (tuple(v) if isinstance(v, list) else v)
                 for k, v in values.items()}
    return cls(**converted)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class RankUpConfig(ModelConfig):
  """RankUp with a switch per component (SPEC 3), so each ablation row is
  one config.

  Attributes:
    num_tokens: T, all tokens (sparse tokens fill what global, dense, cross
      and task tokens leave). D must be divisible by T (token mixing).
    token_dim: D.
    num_layers: L blocks.
    ffn_expansion: k, per-token FFN width kD.
    num_embedding_views: K in 1..3, or 0 (the default) for every view that
      has a role with this config and schema: 1, + 1 with a global token,
      + 1 more with sparse cross tokens on a schema that has sparse cross
      pairs (so 3 on the synthetic log, 2 on Criteo). View 1 feeds the
      global token, view 2 the sparse tokens, view 3 the sparse cross
      tokens; with fewer views the later roles share the last view (K = 1:
      single embedding). A K with a view that would feed nothing is refused.
    view_embedding_dims: the embedding dim of each view (SPEC 3.2), K
      entries; empty gives every view `embedding_dim`.
    split: "random" (permutation, RankUp), "semantic" (RankMixer) or
      "ordered".
    permutation_seed: seed of the random split's permutation.
    global_token: prepend g = func(Pool(view-1 embeddings)).
    global_token_func: "mlp", "fm", "fwfm" (field-weighted FM) or "dcn".
    cross_tokens: one token per schema cross pair.
    sparse_cross_tokens: with cross_tokens, also the pairs of two sparse
      fields (view 3); off: crossed pretrained tokens only.
    dense_token: one token projecting the dense features and pretrained
      vectors (if the schema has some); without it a model sees the
      pretrained vectors only through cross tokens.
    task_tokens: one learned token per task, read by its task tower.
    block: "rankup" (pre-LN, SwiGLU) or "rankmixer" (post-LN, GELU).
    ffn_activation: "swiglu" or "gelu"; empty picks the block's own.
    num_experts: 0 for a per-token FFN, E > 0 for a sparse MoE FFN (its
      experts use the block's FFN activation).
    moe_l1_penalty: lambda of the MoE gate penalty.
  """
  num_tokens: int = 16
  token_dim: int = 64
  num_layers: int = 2
  ffn_expansion: int = 4
  num_embedding_views: int = 0
  view_embedding_dims: Tuple[int, ...] = ()
  split: str = "random"
  permutation_seed: int = 0
  global_token: bool = True
  global_token_func: str = "mlp"
  cross_tokens: bool = True
  sparse_cross_tokens: bool = True
  dense_token: bool = True
  task_tokens: bool = True
  block: str = "rankup"
  ffn_activation: str = ""
  num_experts: int = 0
  moe_l1_penalty: float = 1e-3


@dataclasses.dataclass(frozen=True)
class RankMixerConfig(ModelConfig):
  """RankMixer as published: semantic split, single embedding, post-LN GELU
  blocks, mean-pool readout. Fields as in RankUpConfig."""
  num_tokens: int = 16
  token_dim: int = 64
  num_layers: int = 2
  ffn_expansion: int = 4
  dense_token: bool = True
  num_experts: int = 0
  moe_l1_penalty: float = 1e-3

  def as_rankup(self) -> RankUpConfig:
    """The RankUpConfig with every RankUp component switched off."""
    return RankUpConfig(
        embedding_dim=self.embedding_dim, tower_units=self.tower_units,
        loss_weights=self.loss_weights, num_tokens=self.num_tokens,
        token_dim=self.token_dim, num_layers=self.num_layers,
        ffn_expansion=self.ffn_expansion, num_embedding_views=1,
        split="semantic", global_token=False, cross_tokens=False,
        sparse_cross_tokens=False,
        dense_token=self.dense_token, task_tokens=False, block="rankmixer",
        ffn_activation="gelu", num_experts=self.num_experts,
        moe_l1_penalty=self.moe_l1_penalty, dropout=self.dropout,
        dense_l2=self.dense_l2, embedding_l2=self.embedding_l2,
        embedding_init_scale=self.embedding_init_scale)


@dataclasses.dataclass(frozen=True)
class DCNv2Config(ModelConfig):
  """DCN-V2 (stacked): cross layers on all inputs, then an MLP.

  Attributes:
    num_cross_layers: tfrs.layers.dcn.Cross layers.
    projection_dim: low-rank cross projection (0 = full rank).
    deep_units: MLP after the cross layers.
  """
  num_cross_layers: int = 3
  projection_dim: int = 0
  deep_units: Tuple[int, ...] = (256, 128)


@dataclasses.dataclass(frozen=True)
class DLRMConfig(ModelConfig):
  """DLRM: bottom MLP on dense inputs, pairwise dot interactions
  (tfrs.layers.feature_interaction.DotInteraction), top MLP."""
  bottom_units: Tuple[int, ...] = (64,)
  top_units: Tuple[int, ...] = (256, 128)


@dataclasses.dataclass(frozen=True)
class DNNConfig(ModelConfig):
  """All inputs concatenated through an MLP."""
  hidden_units: Tuple[int, ...] = (256, 128)


CONFIGS: Dict[str, Type[ModelConfig]] = {
    "rankup": RankUpConfig, "rankmixer": RankMixerConfig,
    "dcnv2": DCNv2Config, "dlrm": DLRMConfig, "dnn": DNNConfig,
}
