"""absl flags of `python -m trainer.train`, and their conversion to a
TrainConfig. Nothing else in the project reads flags."""

import dataclasses
from typing import Dict

from absl import flags

from rankup_tf import models
from rankup_tf.trainer import config as config_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines every training flag (call once, before app.run)."""
  d = config_lib.TrainConfig
  rankup = models.RankUpConfig()
  # Data.
  flags.DEFINE_string("train_files", None, "Training TFRecord glob(s), "
                      "comma-separated.")
  flags.DEFINE_string("eval_files", "", "Evaluation TFRecord glob(s); empty "
                      "skips evaluation.")
  flags.DEFINE_string("schema", None, "Schema JSON of the data.")
  flags.DEFINE_boolean("skip_bad_records", False, "Skip and count bad "
                       "records instead of failing on the first.")
  flags.DEFINE_integer("min_id_count", d.min_id_count, "Sparse values seen "
                       "fewer times in the training files map to the OOV "
                       "row (0: off; >= 2; a schema field's min_count "
                       "wins).")
  # Model.
  flags.DEFINE_enum("model", "rankup", sorted(models.MODELS), "Model.")
  flags.DEFINE_integer("num_tokens", rankup.num_tokens, "T: tokens "
                       "(rankup, rankmixer).")
  flags.DEFINE_integer("token_dim", rankup.token_dim, "D: token dim.")
  flags.DEFINE_integer("num_layers", rankup.num_layers, "L: blocks.")
  flags.DEFINE_integer("ffn_expansion", rankup.ffn_expansion, "k: per-token "
                       "FFN expansion.")
  flags.DEFINE_integer("num_embedding_views", rankup.num_embedding_views,
                       "K: embedding views (rankup; 1 = single embedding; 0 "
                       "= every view that has a role: 3 with sparse cross "
                       "pairs in the schema, else 2).")
  flags.DEFINE_integer("embedding_dim", rankup.embedding_dim, "d: embedding "
                       "dim of every view.")
  flags.DEFINE_list("view_embedding_dims", [], "Embedding dim of each view "
                    "(rankup; one per view, e.g. 8,16,8; empty: "
                    "--embedding_dim for all).")
  flags.DEFINE_enum("split", rankup.split, ["random", "semantic", "ordered"],
                    "Sparse-field tokenization (rankup).")
  flags.DEFINE_integer("permutation_seed", rankup.permutation_seed,
                       "Seed of the random split's permutation.")
  flags.DEFINE_boolean("global_token", rankup.global_token, "Global token.")
  flags.DEFINE_enum("global_token_func", rankup.global_token_func,
                    ["mlp", "fm", "fwfm", "dcn"], "Global token function "
                    "(fwfm: field-weighted FM).")
  flags.DEFINE_boolean("cross_tokens", rankup.cross_tokens, "Crossed "
                       "pretrained-embedding tokens.")
  flags.DEFINE_boolean("sparse_cross_tokens", rankup.sparse_cross_tokens,
                       "With --cross_tokens, also the schema's sparse cross "
                       "pairs.")
  flags.DEFINE_boolean("dense_token", rankup.dense_token, "Dense-feature "
                       "token.")
  flags.DEFINE_boolean("task_tokens", rankup.task_tokens, "Task tokens.")
  flags.DEFINE_enum("block", rankup.block, ["rankup", "rankmixer"],
                    "Block style (rankup: pre-LN SwiGLU; rankmixer: post-LN "
                    "GELU).")
  flags.DEFINE_enum("ffn_activation", "", ["", "gelu", "swiglu"],
                    "Per-token FFN activation (empty: the block's own).")
  flags.DEFINE_integer("num_experts", 0, "Sparse-MoE experts per token "
                       "(0: plain per-token FFN).")
  flags.DEFINE_float("moe_l1_penalty", rankup.moe_l1_penalty, "MoE gate L1 "
                     "penalty.")
  flags.DEFINE_list("tower_units", ["64"], "Hidden units of each task "
                    "tower.")
  flags.DEFINE_integer("num_cross_layers", 3, "DCNv2 cross layers.")
  flags.DEFINE_integer("projection_dim", 0, "DCNv2 low-rank projection "
                       "(0: full rank).")
  flags.DEFINE_list("hidden_units", ["256", "128"], "MLP units (dnn, dcnv2 "
                    "deep part, dlrm top MLP).")
  flags.DEFINE_list("bottom_units", ["64"], "DLRM bottom MLP units.")
  flags.DEFINE_list("loss_weights", [], "Per-task loss weights, "
                    "task=weight,...")
  # Regularization (every model; 0 / 1.0 leave training as without them).
  flags.DEFINE_float("dropout", rankup.dropout, "Dropout rate in [0, 1) of "
                     "the token blocks, task towers and baseline MLPs.")
  flags.DEFINE_float("dense_l2", rankup.dense_l2, "L2 coefficient on dense "
                     "kernels (not biases, LayerNorms or embeddings): "
                     "dense_l2 * sum(w^2) added to the training loss.")
  flags.DEFINE_float("embedding_l2", rankup.embedding_l2, "L2 coefficient "
                     "on the looked-up embedding rows: embedding_l2 * sum of "
                     "their squares / batch size.")
  flags.DEFINE_float("embedding_init_scale", rankup.embedding_init_scale,
                     "Multiplier (>= 0) on the embedding initializer's "
                     "stddev 1/sqrt(d); 0: zero tables.")
  # Optimization.
  flags.DEFINE_integer("global_batch_size", d.global_batch_size, "Examples "
                       "per step over all replicas.")
  flags.DEFINE_integer("train_steps", d.train_steps, "Total steps (0: "
                       "--epochs passes).")
  flags.DEFINE_integer("epochs", d.epochs, "Passes over the training data "
                       "when --train_steps is 0.")
  flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Steps per "
                       "pass (0: from stats.json beside the schema).")
  flags.DEFINE_enum("dense_optimizer", d.dense_optimizer,
                    list(config_lib.DENSE_OPTIMIZERS), "Optimizer of the "
                    "dense weights.")
  flags.DEFINE_float("dense_learning_rate", d.dense_learning_rate,
                     "Dense learning rate.")
  flags.DEFINE_enum("sparse_optimizer", d.sparse_optimizer,
                    list(config_lib.SPARSE_OPTIMIZERS), "Optimizer of the "
                    "embedding tables.")
  flags.DEFINE_float("sparse_learning_rate", d.sparse_learning_rate,
                     "Embedding learning rate.")
  flags.DEFINE_enum("precision", d.precision, list(config_lib.PRECISIONS),
                    "Compute precision; mixed_*: activations and matmuls in "
                    "that dtype, variables, embeddings and loss float32.")
  flags.DEFINE_boolean("jit_compile", d.jit_compile, "XLA-compile the model "
                       "after its embedding lookups.")
  flags.DEFINE_integer("seed", d.seed, "Random seed.")
  # Run.
  flags.DEFINE_string("model_dir", None, "Checkpoints, logs, configs, "
                      "metrics.")
  flags.DEFINE_string("export_dir", d.export_dir, "SavedModel export base "
                      "(empty: no export).")
  flags.DEFINE_string("model_name", d.model_name, "Served model name.")
  flags.DEFINE_integer("checkpoint_every_n_steps", d.checkpoint_every_n_steps,
                       "Checkpoint and backup interval.")
  flags.DEFINE_integer("keep_checkpoints", d.keep_checkpoints, "Checkpoints "
                       "kept.")
  flags.DEFINE_integer("eval_every_n_steps", d.eval_every_n_steps, "Full "
                       "evaluation interval (0: at the end only).")
  flags.DEFINE_boolean("eval_every_epoch", d.eval_every_epoch, "Evaluate "
                       "after every pass over the training data instead.")
  flags.DEFINE_integer("early_stopping_patience", d.early_stopping_patience,
                       "Stop after this many evaluations in a row without "
                       "a new best (0: off).")
  flags.DEFINE_string("early_stopping_metric", d.early_stopping_metric,
                      "<task>/<auc|gauc|logloss> that picks the best "
                      "evaluation (empty: the first task's AUC).")
  flags.DEFINE_boolean("export_best", d.export_best, "Export the best "
                       "evaluation's checkpoint (model_dir/best/), not the "
                       "last.")
  flags.DEFINE_integer("erank_every_n_steps", d.erank_every_n_steps,
                       "Effective-rank trajectory interval (0: off).")
  flags.DEFINE_enum("strategy", d.strategy, list(config_lib.STRATEGIES),
                    "auto: MirroredStrategy over 2+ GPUs, else no strategy; "
                    "multi_worker, parameter_server: from TF_CONFIG.")
  flags.DEFINE_integer("ps_min_shard_bytes", d.ps_min_shard_bytes,
                       "parameter_server: smallest shard of a variable.")
  flags.DEFINE_integer("ps_max_shards", d.ps_max_shards, "parameter_server: "
                       "most shards per variable (0: one per PS task).")
  flags.DEFINE_integer("num_logical_cpus", d.num_logical_cpus, "Split the "
                       "CPU into this many logical devices.")
  flags.mark_flags_as_required(["train_files", "schema", "model_dir"])


def _ints(values):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f"expected integers, got {values}") from None


def _loss_weights(values) -> Dict[str, float]:
  weights = {}
  for item in values:
    task, sep, weight = item.partition("=")
    if not sep:
      raise ValueError(f"--loss_weights entry {item!r} is not task=weight.")
    try:
      weights[task] = float(weight)
    except ValueError:
      raise ValueError(f"--loss_weights entry {item!r}: {weight!r} is not a "
                       "number.") from None
  return weights


def model_config_from_flags(name: str) -> models.ModelConfig:
  """The `name` model's config from the model flags."""
  shared = dict(embedding_dim=FLAGS.embedding_dim,
                tower_units=_ints(FLAGS.tower_units),
                loss_weights=_loss_weights(FLAGS.loss_weights),
                dropout=FLAGS.dropout, dense_l2=FLAGS.dense_l2,
                embedding_l2=FLAGS.embedding_l2,
                embedding_init_scale=FLAGS.embedding_init_scale)
  token = dict(num_tokens=FLAGS.num_tokens, token_dim=FLAGS.token_dim,
               num_layers=FLAGS.num_layers, ffn_expansion=FLAGS.ffn_expansion,
               dense_token=FLAGS.dense_token, num_experts=FLAGS.num_experts,
               moe_l1_penalty=FLAGS.moe_l1_penalty)
  if name == "rankup":
    return models.RankUpConfig(
        **shared, **token, num_embedding_views=FLAGS.num_embedding_views,
        view_embedding_dims=_ints(FLAGS.view_embedding_dims),
        split=FLAGS.split, permutation_seed=FLAGS.permutation_seed,
        global_token=FLAGS.global_token,
        global_token_func=FLAGS.global_token_func,
        cross_tokens=FLAGS.cross_tokens,
        sparse_cross_tokens=FLAGS.sparse_cross_tokens,
        task_tokens=FLAGS.task_tokens,
        block=FLAGS.block, ffn_activation=FLAGS.ffn_activation)
  if name == "rankmixer":
    return models.RankMixerConfig(**shared, **token)
  if name == "dcnv2":
    return models.DCNv2Config(**shared,
                              num_cross_layers=FLAGS.num_cross_layers,
                              projection_dim=FLAGS.projection_dim,
                              deep_units=_ints(FLAGS.hidden_units))
  if name == "dlrm":
    return models.DLRMConfig(**shared, bottom_units=_ints(FLAGS.bottom_units),
                             top_units=_ints(FLAGS.hidden_units))
  return models.DNNConfig(**shared, hidden_units=_ints(FLAGS.hidden_units))


def config_from_flags() -> config_lib.TrainConfig:
  """The TrainConfig the parsed flags describe."""
  run_fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  run_fields -= {"model_config"}
  values = {name: FLAGS[name].value for name in run_fields}
  values["model_config"] = model_config_from_flags(FLAGS.model)
  return config_lib.TrainConfig(**values)
