"""Model configs: plain dataclasses, saved as JSON next to a model.

A model is built from (schema, config). The trainer turns flags into one of
these; nothing below reads flags. Each field's metadata (`config_field`)
holds the help text and allowed values its trainer flag is made from.
"""

import dataclasses
import json
import math
from typing import Any, Dict, Optional, Sequence, Tuple, Type


def config_field(default: Any = dataclasses.MISSING, *, help_text: str,
                 choices: Optional[Sequence[Any]] = None,
                 flag: Optional[str] = None) -> Any:
  """A dataclass field with what its command-line flag is made from.

  Example:

  ```python
  @dataclasses.dataclass(frozen=True)
  class MyConfig:
    split: str = config_field("random", help_text="Tokenization.",
                              choices=("random", "semantic"))
  ```

  Args:
    default: the default (a dict default is copied for every instance);
      omitted: the field is required.
    help_text: the flag's help.
    choices: the allowed values (an enum flag; config files and overrides
      are checked against them).
    flag: the flag's name when it is not the field's, so that fields of
      several models share one flag.

  Returns:
    A `dataclasses.field` carrying the metadata.
  """
  metadata = {"help": help_text}
  if choices is not None:
    metadata["choices"] = tuple(choices)
  if flag is not None:
    metadata["flag"] = flag
  if isinstance(default, dict):
    return dataclasses.field(default_factory=lambda: dict(default),
                             metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


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
  embedding_dim: int = config_field(16, help_text="d: embedding dim of "
                                    "every view.")
  tower_units: Tuple[int, ...] = config_field(
      (64,), help_text="Hidden units of each task tower.")
  loss_weights: Dict[str, float] = config_field(
      {}, help_text="Per-task loss weights, task=weight,...")
  dropout: float = config_field(
      0.0, help_text="Dropout rate in [0, 1) of the token blocks, task "
      "towers and baseline MLPs.")
  dense_l2: float = config_field(
      0.0, help_text="L2 coefficient on dense kernels (not biases, "
      "LayerNorms or embeddings): dense_l2 * sum(w^2) added to the "
      "training loss.")
  embedding_l2: float = config_field(
      0.0, help_text="L2 coefficient on the looked-up embedding rows: "
      "embedding_l2 * sum of their squares / batch size.")
  embedding_init_scale: float = config_field(
      1.0, help_text="Multiplier (>= 0) on the embedding initializer's "
      "stddev 1/sqrt(d); 0: zero tables.")

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
class TokenModelConfig(ModelConfig):
  """Fields of the token models (RankUp, RankMixer), declared once.

  Attributes:
    num_tokens: T, all tokens (sparse tokens fill what global, dense, cross
      and task tokens leave). D must be divisible by T (token mixing).
    token_dim: D.
    num_layers: L blocks.
    ffn_expansion: k, per-token FFN width kD (GELU) or 2kD/3 (SwiGLU: the
      same parameters and FLOPs; `layers.backbone.ffn_hidden_dim`).
    ffn_hidden_dim: the per-token FFN's hidden width itself (0: from k).
      A SwiGLU checkpoint from before the 2/3 width restores with
      ffn_hidden_dim = k * token_dim.
    dense_token: token(s) projecting the dense features and pretrained
      vectors (if the schema has some; RankMixer one, RankUp
      `num_dense_tokens`); without them a model sees the pretrained vectors
      only through cross tokens.
    num_experts: 0 for a per-token FFN, E > 0 for a sparse MoE FFN (its
      experts use the block's FFN activation).
    moe_l1_penalty: lambda of the MoE gate penalty.
  """
  num_tokens: int = config_field(16, help_text="T: tokens.")
  token_dim: int = config_field(64, help_text="D: token dim.")
  num_layers: int = config_field(2, help_text="L: blocks.")
  ffn_expansion: int = config_field(4, help_text="k: per-token FFN "
                                    "expansion (hidden kD; SwiGLU 2kD/3).")
  ffn_hidden_dim: int = config_field(
      0, help_text="Per-token FFN hidden width (0: from --ffn_expansion).")
  dense_token: bool = config_field(True, help_text="Dense-feature token.")
  num_experts: int = config_field(0, help_text="Sparse-MoE experts per "
                                  "token (0: plain per-token FFN).")
  moe_l1_penalty: float = config_field(1e-3, help_text="MoE gate L1 "
                                       "penalty.")


@dataclasses.dataclass(frozen=True)
class RankUpConfig(TokenModelConfig):
  """RankUp with a switch per component (SPEC 3), so each ablation row is
  one config.

  Attributes (besides TokenModelConfig's):
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
    global_token_func: "dcn" (the default: DCNv2 cross layers),
      "mlp", "fm" or "fwfm" (field-weighted FM). Over the concatenated
      field embeddings the low-rank cross beat the MLP at the same cost on
      Criteo 8k and the synthetic `ids` log and tied it on `affinity`
      (docs/results.md, "The DCNv2-cross global token").
    global_token_projection_dim: the "dcn" cross layers' rank r (0: full
      rank, (Md)^2 weights a layer, quadratic in the field count). The
      default 64: two layers of 2 Md r weights are the MLP token's Md x
      256 hidden layer, so the token costs about what the MLP one did,
      linear in the field count (below Md = 2r full rank is smaller).
      Unused by the other funcs (must still be >= 0).
    cross_tokens: one token per schema cross pair.
    sparse_cross_tokens: with cross_tokens, also the pairs of two sparse
      fields (view 3); off: crossed pretrained tokens only.
    task_tokens: one learned token per task, read by its task tower. Off
      by default: T is fixed (D must be divisible by T), so each task
      token takes an input token's place; with one or two tasks at T = 16
      that cost more than the tokens gave on two of the three logs
      measured and nothing on the third (docs/results.md, "Task tokens off
      by default"). Worth trying with many tasks and a large T.
    block: "rankup" (pre-LN, SwiGLU) or "rankmixer" (post-LN, GELU).
    final_norm: a LayerNorm on the tokens after the last "rankup" block,
      before the towers (pre-LN blocks leave the residual stream
      unnormalized; post-LN blocks already end in a LayerNorm).
    ffn_activation: "swiglu" or "gelu"; empty picks the block's own.
    num_dense_tokens: with dense_token, the tokens that project the dense
      features and pretrained vectors (each its own projection of all of
      them). 0 (the default): their share of the tokens that global, cross
      and task tokens leave, counting each dense field and pretrained
      vector as one field, rounded down, at least 1. Pre-LN blocks
      normalize every token before the mixer, so each token has an equal
      say: one token for many dense fields (Criteo: 13 of 39) starves them
      (docs/design.md).
  """
  num_embedding_views: int = config_field(
      0, help_text="K: embedding views (1 = single embedding; 0 = every "
      "view that has a role: 3 with sparse cross pairs in the schema, else "
      "2).")
  view_embedding_dims: Tuple[int, ...] = config_field(
      (), help_text="Embedding dim of each view (one per view, e.g. 8,16,8; "
      "empty: --embedding_dim for all).")
  split: str = config_field("random", help_text="Sparse-field tokenization.",
                            choices=("random", "semantic", "ordered"))
  permutation_seed: int = config_field(
      0, help_text="Seed of the random split's permutation.")
  global_token: bool = config_field(True, help_text="Global token.")
  global_token_func: str = config_field(
      "dcn", help_text="Global token function (dcn: DCNv2 cross layers; "
      "fwfm: field-weighted FM).", choices=("dcn", "mlp", "fm", "fwfm"))
  global_token_projection_dim: int = config_field(
      64, help_text="Rank of the dcn global token's cross layers (0 = full "
      "rank; 64 costs what a 256-unit MLP token does).")
  cross_tokens: bool = config_field(True, help_text="Crossed "
                                    "pretrained-embedding tokens.")
  sparse_cross_tokens: bool = config_field(
      True, help_text="With --cross_tokens, also the schema's sparse cross "
      "pairs.")
  task_tokens: bool = config_field(
      False, help_text="Task tokens (each takes an input token's place).")
  block: str = config_field(
      "rankup", help_text="Block style (rankup: pre-LN SwiGLU; rankmixer: "
      "post-LN GELU).", choices=("rankup", "rankmixer"))
  final_norm: bool = config_field(
      True, help_text="LayerNorm after the last pre-LN (rankup) block.")
  ffn_activation: str = config_field(
      "", help_text="Per-token FFN activation (empty: the block's own).",
      choices=("", "gelu", "swiglu"))
  num_dense_tokens: int = config_field(
      0, help_text="Dense-input tokens (0: the dense fields' and "
      "pretrained vectors' share of the free tokens, rounded down, >= 1).")


@dataclasses.dataclass(frozen=True)
class RankMixerConfig(TokenModelConfig):
  """RankMixer as published: semantic split, single embedding, post-LN GELU
  blocks, mean-pool readout. Fields as in TokenModelConfig."""

  def as_rankup(self) -> RankUpConfig:
    """The RankUpConfig with every RankUp component switched off."""
    return RankUpConfig(
        **dataclasses.asdict(self), num_embedding_views=1, split="semantic",
        global_token=False, cross_tokens=False, sparse_cross_tokens=False,
        task_tokens=False, block="rankmixer", final_norm=False,
        ffn_activation="gelu", num_dense_tokens=1)


@dataclasses.dataclass(frozen=True)
class DCNv2Config(ModelConfig):
  """DCN-V2 (stacked): cross layers on all inputs, then an MLP.

  Attributes:
    num_cross_layers: tfrs.layers.dcn.Cross layers.
    projection_dim: low-rank cross projection (0 = full rank).
    deep_units: MLP after the cross layers.
  """
  num_cross_layers: int = config_field(3, help_text="Cross layers.")
  projection_dim: int = config_field(0, help_text="Low-rank cross "
                                     "projection (0: full rank).")
  deep_units: Tuple[int, ...] = config_field(
      (256, 128), help_text="Deep MLP units.", flag="hidden_units")


@dataclasses.dataclass(frozen=True)
class DLRMConfig(ModelConfig):
  """DLRM: bottom MLP on dense inputs, pairwise dot interactions
  (tfrs.layers.feature_interaction.DotInteraction), top MLP."""
  bottom_units: Tuple[int, ...] = config_field(
      (64,), help_text="Bottom MLP units.")
  top_units: Tuple[int, ...] = config_field(
      (256, 128), help_text="Top MLP units.", flag="hidden_units")


@dataclasses.dataclass(frozen=True)
class DNNConfig(ModelConfig):
  """All inputs concatenated through an MLP."""
  hidden_units: Tuple[int, ...] = config_field(
      (256, 128), help_text="MLP units.")


CONFIGS: Dict[str, Type[ModelConfig]] = {
    "rankup": RankUpConfig, "rankmixer": RankMixerConfig,
    "dcnv2": DCNv2Config, "dlrm": DLRMConfig, "dnn": DNNConfig,
}
