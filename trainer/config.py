"""The training run's configuration: what flags turn into, saved in model_dir.

`TrainConfig` holds everything a run needs besides the data itself; the
model part is a `rankup_tf.models` config (`model_config`). The trainer
writes it to `<model_dir>/train_config.json`, so a run can be reproduced
or its model rebuilt without the flags. `from_layers` builds one from
layered settings (a config file, `read_config_file`; an override,
`parse_override`), checking every key and value against the fields.
"""

import dataclasses
import json
import os
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
import yaml

from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf import schema as schema_lib
from rankup_tf.models import configs as model_configs
from rankup_tf.serving import export as export_lib
from rankup_tf.trainer import checks
from rankup_tf.trainer import evaluation

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device",
              "parameter_server")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DENSE_OPTIMIZERS = ("adam", "rmsprop", "adagrad")
SPARSE_OPTIMIZERS = ("adagrad", "sgd")
LEARNING_RATE_DECAYS = ("none", "cosine")

_field = model_configs.config_field


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
    dense_learning_rate_decay: none keeps dense_learning_rate; cosine
      decays it to 0 over the run's planned steps, so the last steps
      settle the weights instead of moving them as far as the first (the
      sparse optimizer, Adagrad, already shrinks its own steps).
    sparse_optimizer, sparse_learning_rate: for the embedding tables.
    precision: float32, mixed_float16 or mixed_bfloat16 (mixed: that dtype
      for activations and matmuls; variables, embedding tables and the loss
      stay float32, and the export computes in float32). bfloat16 pays off
      only on hardware with bfloat16 matmuls (docs/results.md).
    jit_compile: XLA-compile the model after its embedding lookups (the
      lookups and the sparse optimizer's updates have no XLA kernels).
    seed: seeds TensorFlow and the input shuffle.
    deterministic_input: read the training input in one order, set by
      seed, instead of the fastest (parallel reads finish in any order):
      two uninterrupted runs of one seed then see the same batches. On
      this project's CPU they then end with the same metrics
      (docs/results.md).
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
  train_files: str = _field(help_text="Training TFRecord glob(s), "
                            "comma-separated.")
  schema: str = _field(help_text="Schema JSON of the data.")
  model_dir: str = _field(help_text="Checkpoints, logs, configs, metrics.")
  eval_files: str = _field("", help_text="Evaluation TFRecord glob(s); "
                           "empty skips evaluation.")
  min_id_count: int = _field(
      0, help_text="Sparse values seen fewer times in the training files "
      "map to the OOV row (0: off; >= 2; a schema field's min_count wins).")
  model: str = _field("rankup", help_text="Model.",
                      choices=sorted(models.CONFIGS))
  model_config: models.ModelConfig = dataclasses.field(
      default_factory=models.RankUpConfig)
  global_batch_size: int = _field(1024, help_text="Examples per step over "
                                  "all replicas.")
  train_steps: int = _field(0, help_text="Total steps (0: --epochs "
                            "passes).")
  epochs: int = _field(1, help_text="Passes over the training data when "
                       "--train_steps is 0.")
  steps_per_epoch: int = _field(0, help_text="Steps per pass (0: from "
                                "stats.json beside the schema).")
  dense_optimizer: str = _field("adam", help_text="Optimizer of the dense "
                                "weights.", choices=DENSE_OPTIMIZERS)
  dense_learning_rate: float = _field(1e-3, help_text="Dense learning "
                                      "rate.")
  dense_learning_rate_decay: str = _field(
      "none", help_text="Dense learning rate schedule: none (constant) or "
      "cosine (to 0 over the run's steps).", choices=LEARNING_RATE_DECAYS)
  sparse_optimizer: str = _field("adagrad", help_text="Optimizer of the "
                                 "embedding tables.",
                                 choices=SPARSE_OPTIMIZERS)
  sparse_learning_rate: float = _field(0.05, help_text="Embedding learning "
                                       "rate.")
  precision: str = _field(
      "float32", help_text="Compute precision; mixed_*: activations and "
      "matmuls in that dtype, variables, embeddings and loss float32.",
      choices=PRECISIONS)
  jit_compile: bool = _field(False, help_text="XLA-compile the model after "
                             "its embedding lookups.")
  seed: int = _field(0, help_text="Random seed.")
  deterministic_input: bool = _field(
      False, help_text="Read the training input in one order set by --seed, "
      "so a seed reproduces its run (the parallel reads wait for each "
      "other).")
  export_dir: str = _field("", help_text="SavedModel export base (empty: "
                           "no export).")
  model_name: str = _field("rankup", help_text="Served model name.")
  checkpoint_every_n_steps: int = _field(500, help_text="Checkpoint and "
                                         "backup interval.")
  keep_checkpoints: int = _field(3, help_text="Checkpoints kept.")
  eval_every_n_steps: int = _field(0, help_text="Full evaluation interval "
                                   "(0: at the end only).")
  eval_every_epoch: bool = _field(False, help_text="Evaluate after every "
                                  "pass over the training data instead.")
  early_stopping_patience: int = _field(
      0, help_text="Stop after this many evaluations in a row without a "
      "new best (0: off).")
  early_stopping_metric: str = _field(
      "", help_text="<task>/<auc|gauc|logloss> that picks the best "
      "evaluation (empty: the first task's AUC).")
  export_best: bool = _field(False, help_text="Export the best "
                             "evaluation's checkpoint (model_dir/best/), "
                             "not the last.")
  erank_every_n_steps: int = _field(0, help_text="Effective-rank trajectory "
                                    "interval (0: off).")
  strategy: str = _field(
      "auto", help_text="auto: MirroredStrategy over 2+ GPUs, else no "
      "strategy; multi_worker, parameter_server: from TF_CONFIG.",
      choices=STRATEGIES)
  ps_min_shard_bytes: int = _field(256 << 10, help_text="parameter_server: "
                                   "smallest shard of a variable.")
  ps_max_shards: int = _field(0, help_text="parameter_server: most shards "
                              "per variable (0: one per PS task).")
  num_logical_cpus: int = _field(0, help_text="Split the CPU into this many "
                                 "logical devices.")
  skip_bad_records: bool = _field(False, help_text="Skip and count bad "
                                  "records instead of failing on the first.")

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
    for field in dataclasses.fields(self):
      choices = field.metadata.get("choices")
      value = getattr(self, field.name)
      need(choices is None or value in choices,
           f"{field.name} {value!r} is unknown; expected one of {choices}.")
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


def read_config_file(path: str) -> Dict[str, Any]:
  """The settings in a JSON (.json) or YAML config file.

  The file holds TrainConfig fields as `train_config.json` does (a saved one
  is a valid config file); `from_layers` checks them.

  Example:

  ```python
  settings = read_config_file("run.yaml")  # {"train_steps": 100, ...}
  ```

  Args:
    path: the file; any other extension than .json reads as YAML.

  Returns:
    The file's mapping.
  """
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    settings = json.loads(text) if path.endswith(".json") else (
        yaml.safe_load(text))
  except (ValueError, yaml.YAMLError) as e:
    raise ValueError(f"config file {path}: cannot parse it: {e}") from None
  if not isinstance(settings, dict):
    raise ValueError(f"config file {path}: expected a mapping of settings, "
                     f"got {type(settings).__name__}.")
  return settings


def parse_override(text: str) -> Dict[str, Any]:
  """The settings of a tf-models style `--params_override` string.

  Either a YAML or JSON mapping, or comma-separated `key=value` pairs whose
  values read as YAML; a dotted key sets a field of a section (the
  model's fields are under `model_config`, as in train_config.json).

  Example:

  ```python
  parse_override("train_steps=100,model_config.tower_units=[32,16]")
  # {"train_steps": 100, "model_config": {"tower_units": [32, 16]}}
  parse_override("{train_steps: 100, model_config: {dropout: 0.1}}")
  ```

  Args:
    text: the override.

  Returns:
    The settings, nested at the dots.
  """
  try:
    parsed = yaml.safe_load(text)
  except yaml.YAMLError:
    parsed = None  # key=value pairs need not be valid YAML (e.g. a glob).
  if not isinstance(parsed, dict):
    parsed = {}
    for item in _split_commas(text):
      key, sep, value = item.partition("=")
      if not sep or not key.strip():
        raise ValueError(f"params_override: {item!r} is not key=value.")
      parsed[key.strip()] = _yaml_value(value.strip())
  nested = {}
  for key, value in parsed.items():
    *sections, name = str(key).split(".")
    target = nested
    for section in sections:
      target = target.setdefault(section, {})
    if isinstance(value, dict) and isinstance(target.get(name), dict):
      target[name].update(value)
    else:
      target[name] = value
  return nested


def from_layers(layers: Sequence[Tuple[str, Mapping[str, Any]]]
               ) -> TrainConfig:
  """The TrainConfig of settings layered over the defaults.

  Each layer's settings are nested as in train_config.json (the model's
  fields under `model_config`, merged field by field); a later layer wins.
  Every key is checked against TrainConfig and the chosen model's config,
  every value against its field's type and allowed values; errors name the
  key and the layer's source.

  Example:

  ```python
  config = from_layers([
      ("config file run.yaml", read_config_file("run.yaml")),
      ("params_override", parse_override("model_config.dropout=0.1")),
  ])
  ```

  Args:
    layers: (source, settings) pairs, lowest precedence first.

  Returns:
    The TrainConfig (validated).
  """
  run_fields = {f.name: f for f in dataclasses.fields(TrainConfig)
                if f.name != "model_config"}
  values, model_values = {}, {}
  for source, settings in layers:
    for key, value in settings.items():
      if key != "model_config":
        values[key] = _checked(key, value, run_fields, source, "TrainConfig")
  model = values.get("model", run_fields["model"].default)
  config_class = models.CONFIGS[model]
  model_fields = {f.name: f for f in dataclasses.fields(config_class)}
  for source, settings in layers:
    section = settings.get("model_config", {})
    if not isinstance(section, dict):
      raise ValueError(f"{source}: model_config must be a mapping, got "
                       f"{section!r}.")
    for key, value in section.items():
      model_values[key] = _checked(f"model_config.{key}", value, model_fields,
                                   source, f"{config_class.__name__} (model "
                                   f"{model!r})")
  missing = [name for name, f in run_fields.items()
             if f.default is dataclasses.MISSING and name not in values]
  if missing:
    raise ValueError(f"{', '.join(missing)} not set: required as a flag, in "
                     "the config file or in the override.")
  return TrainConfig(model_config=config_class.from_dict(model_values),
                     **values)


def _split_commas(text: str) -> List[str]:
  """`text` split at the commas outside brackets and braces."""
  items, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += (char in "[{") - (char in "]}")
    if char == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  items.append(text[start:])
  return [item for item in items if item.strip()]


def _yaml_value(text: str) -> Any:
  try:
    return yaml.safe_load(text) if text else ""
  except yaml.YAMLError:
    return text  # A string YAML cannot read as a scalar, e.g. `*.tfrecord`.


def _checked(key: str, value: Any, fields: Mapping[str, dataclasses.Field],
             source: str, owner: str) -> Any:
  """`value` as the type of the field `key` names; ValueError otherwise."""
  name = key.rpartition(".")[2]
  if name not in fields:
    raise ValueError(f"{source}: unknown key {key!r} for {owner}; known: "
                     f"{sorted(fields)}.")
  field = fields[name]
  if field.type is float and isinstance(value, str):
    try:
      value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string.
    except ValueError:
      pass
  if not _has_type(value, field.type):
    expected = {int: "an integer", float: "a number", bool: "true or false",
                str: "a string", tuple: "a list of integers",
                dict: "a mapping of names to numbers"}[
                    typing.get_origin(field.type) or field.type]
    raise ValueError(f"{source}: {key} must be {expected}, got {value!r}.")
  choices = field.metadata.get("choices")
  if choices is not None and value not in choices:
    raise ValueError(f"{source}: {key} {value!r} is unknown; expected one "
                     f"of {list(choices)}.")
  if isinstance(value, dict):
    return {k: float(v) for k, v in value.items()}
  return float(value) if field.type is float else value


def _has_type(value: Any, kind: Any) -> bool:
  """Whether `value` fits a config field type (ints are floats; a list fits
  a tuple)."""
  origin = typing.get_origin(kind)
  if origin is tuple:
    return (isinstance(value, (list, tuple))
            and all(_has_type(v, int) for v in value))
  if origin is dict:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _has_type(v, float) for k, v in value.items())
  if isinstance(value, bool):
    return kind is bool
  if kind is float:
    return isinstance(value, (int, float))
  return isinstance(value, kind)
