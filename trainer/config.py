"""The training run's configuration: what flags turn into, saved in model_dir.

`TrainConfig` holds everything a run needs besides the data itself; the
model part is a `rankup_tf.models` config (`model_config`). The trainer
writes it to `<model_dir>/train_config.json`, so a run can be reproduced
or its model rebuilt without the flags.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib
from rankup_tf.trainer import checks
from rankup_tf.trainer import evaluation

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device",
              "parameter_server")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DENSE_OPTIMIZERS = ("adam", "rmsprop", "adagrad")
SPARSE_OPTIMIZERS = ("adagrad", "sgd")


@dataclasses.dataclass
class TrainConfig:
  """A training run.

  Attributes (data):
    train_files, eval_files: TFRecord globs (comma-separated allowed);
      eval_files may be empty (no evaluation).
    schema: the schema JSON path.
    min_id_count: sparse values seen fewer times in the training files map
      to their field's OOV row (0: off; a field's own `min_count` in the
      schema wins); counted by one pass over train_files before training.
  Attributes (model):
    model: a key of rankup_tf.models.MODELS.
    model_config: that model's config.
  Attributes (optimization):
    global_batch_size: examples per step over all replicas.
    train_steps: total steps (0: epochs x steps per data epoch).
    epochs: passes over the training data when train_steps is 0.
    steps_per_epoch: steps per data epoch (0: rows in stats.json next to the
      schema // global_batch_size).
    dense_optimizer, dense_learning_rate: for every non-embedding weight.
    sparse_optimizer, sparse_learning_rate: for the embedding tables.
    precision: float32, mixed_float16 or mixed_bfloat16 (mixed: that dtype
      for activations and matmuls; variables, embedding tables and the loss
      stay float32, and the export computes in float32). bfloat16 pays off
      only on hardware with bfloat16 matmuls (docs/results.md).
    jit_compile: XLA-compile the model after its embedding lookups (the
      lookups and the sparse optimizer's updates have no XLA kernels).
    seed: seeds TensorFlow and the input shuffle.
  Attributes (run):
    model_dir: checkpoints, logs, train_config.json, metrics.json.
    export_dir: SavedModel export base ('' : no export).
    model_name: the served model's name (export_dir/model_name/version).
    checkpoint_every_n_steps: checkpoints and the fault-tolerance backup.
    keep_checkpoints: checkpoints kept.
    eval_every_n_steps: full evaluation interval (0: only at the end).
    eval_every_epoch: evaluate at the end of every pass over the training
      data instead (eval_every_n_steps must be 0).
    early_stopping_patience: stop after this many evaluations in a row
      that do not beat the best (0: off).
    early_stopping_metric: `<task>/<metric>` (metric: auc, gauc or
      logloss) that chooses the best evaluation; '' is the first task's
      AUC.
    export_best: export the checkpoint of the best evaluation, kept under
      model_dir/best/, instead of the last.
    Early stopping and export_best need eval_files and periodic
    evaluation (eval_every_n_steps or eval_every_epoch), and are not
    supported under multi_worker (only the chief evaluates).
    erank_every_n_steps: effective-rank trajectory interval (0: off).
    strategy: auto, mirrored, multi_worker, one_device or parameter_server.
    ps_min_shard_bytes, ps_max_shards: parameter_server only; a variable is
      cut into row shards of at least this many bytes, at most this many
      (0: one per parameter server).
    num_logical_cpus: split the CPU into this many logical devices (tests
      of MirroredStrategy without GPUs); 0 leaves devices alone.
    skip_bad_records: skip and count bad input records instead of failing.
  """
  train_files: str
  schema: str
  model_dir: str
  eval_files: str = ""
  min_id_count: int = 0
  model: str = "rankup"
  model_config: models.ModelConfig = dataclasses.field(
      default_factory=models.RankUpConfig)
  global_batch_size: int = 1024
  train_steps: int = 0
  epochs: int = 1
  steps_per_epoch: int = 0
  dense_optimizer: str = "adam"
  dense_learning_rate: float = 1e-3
  sparse_optimizer: str = "adagrad"
  sparse_learning_rate: float = 0.05
  precision: str = "float32"
  jit_compile: bool = False
  seed: int = 0
  export_dir: str = ""
  model_name: str = "rankup"
  checkpoint_every_n_steps: int = 500
  keep_checkpoints: int = 3
  eval_every_n_steps: int = 0
  eval_every_epoch: bool = False
  early_stopping_patience: int = 0
  early_stopping_metric: str = ""
  export_best: bool = False
  erank_every_n_steps: int = 0
  strategy: str = "auto"
  ps_min_shard_bytes: int = 256 << 10
  ps_max_shards: int = 0
  num_logical_cpus: int = 0
  skip_bad_records: bool = False

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the setting and what is wrong."""
    def need(condition, message):
      if not condition:
        raise ValueError(message)
    need(self.model in models.MODELS,
         f"model {self.model!r} is unknown; expected one of "
         f"{sorted(models.MODELS)}.")
    need(isinstance(self.model_config, models.CONFIGS[self.model]),
         f"model {self.model!r} needs a {models.CONFIGS[self.model].__name__}"
         f", got {type(self.model_config).__name__}.")
    need(self.global_batch_size > 0, "global_batch_size must be positive.")
    need(self.train_steps >= 0 and self.epochs > 0
         and self.steps_per_epoch >= 0,
         "train_steps and steps_per_epoch must be >= 0, epochs > 0.")
    for name, choices in (("strategy", STRATEGIES),
                          ("precision", PRECISIONS),
                          ("dense_optimizer", DENSE_OPTIMIZERS),
                          ("sparse_optimizer", SPARSE_OPTIMIZERS)):
      value = getattr(self, name)
      need(value in choices,
           f"{name} {value!r} is unknown; expected one of {choices}.")
    need(self.checkpoint_every_n_steps > 0 and self.keep_checkpoints > 0,
         "checkpoint_every_n_steps and keep_checkpoints must be positive.")
    need(self.eval_every_n_steps >= 0 and self.erank_every_n_steps >= 0,
         "eval_every_n_steps and erank_every_n_steps must be >= 0.")
    need(not (self.eval_every_epoch and self.eval_every_n_steps),
         "Set eval_every_n_steps or eval_every_epoch, not both.")
    need(self.early_stopping_patience >= 0,
         "early_stopping_patience must be >= 0.")
    if self.early_stopping_metric:
      evaluation.check_metric_name(self.early_stopping_metric)
    if self.early_stopping_patience or self.export_best:
      setting = ("early_stopping_patience" if self.early_stopping_patience
                 else "export_best")
      need(self.eval_files and (self.eval_every_n_steps
                                or self.eval_every_epoch),
           f"{setting} needs evaluations during training: eval_files and "
           "eval_every_n_steps > 0 or eval_every_epoch.")
      need(self.strategy != "multi_worker",
           f"{setting} is not supported with strategy multi_worker: only "
           "the chief evaluates, and stopping or saving the best would "
           "need every worker.")
    need(self.ps_min_shard_bytes > 0 and self.ps_max_shards >= 0,
         "ps_min_shard_bytes must be positive and ps_max_shards >= 0.")
    for name in ("dense_learning_rate", "sparse_learning_rate"):
      checks.check_learning_rate(name, getattr(self, name))
    schema_lib.check_min_count(self.min_id_count, "min_id_count")
    export_lib.check_model_name(self.model_name)

  def to_dict(self) -> Dict[str, Any]:
    values = dataclasses.asdict(self)
    values["model_config"] = self.model_config.to_dict()
    return values

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
    values = dict(values)
    model = values.get("model", "rankup")
    if model not in models.CONFIGS:
      raise ValueError(f"model {model!r} is unknown; expected one of "
                       f"{sorted(models.MODELS)}.")
    values["model_config"] = models.CONFIGS[model].from_dict(
        values.get("model_config", {}))
    return cls(**values)

  def save(self, path: Optional[str] = None) -> str:
    path = path or os.path.join(self.model_dir, run_dir.CONFIG_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
    return path

  @classmethod
  def load(cls, path: str) -> "TrainConfig":
    with tf.io.gfile.GFile(path) as f:
      return cls.from_dict(json.load(f))
