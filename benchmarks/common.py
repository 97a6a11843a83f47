"""What benchmarks.ablation and benchmarks.tuning share: their common flags,
the rows (model configs) they train, the up-front check of every row, one
training run, and small table helpers.

A row is (name, model, config, label). Token-model rows are built from
COMPONENTS: each RankUp component is a set of RankUpConfig fields that take
RankMixer's value when the component is off and, when it is on, the shipped
RankUp's value (or the component's own `values` for one the shipped RankUp
leaves off), so a ladder step or a single-component row differs from its
reference in exactly the fields of the components it switches.
"""

import dataclasses
import gc
import os
import time
from typing import (Dict, FrozenSet, Iterable, List, NamedTuple, Optional,
                    Tuple)

import numpy as np
from absl import flags

import rankup_tf
import tensorflow as tf

from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import train

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The flags both benchmarks take (call once, before app.run; not at
  import, so tests can import the benchmarks beside trainer.flags)."""
  flags.DEFINE_string("data_dir", None, "A converter's output (schema.json, "
                      "stats.json, train-*, eval-*).")
  flags.DEFINE_string("output_dir", None, "Where the results go.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (>= 3 for real runs).")
  flags.DEFINE_list("models", [], "Rows to run (default: the benchmark's "
                    "own set).")
  flags.DEFINE_integer("epochs", 1, "Passes over the training data.")
  flags.DEFINE_integer("train_steps", 0, "Steps per run (overrides epochs).")
  flags.DEFINE_integer("global_batch_size", 1024, "Batch size.")
  flags.DEFINE_integer("num_tokens", 16, "T of every token model.")
  flags.DEFINE_integer("token_dim", 64, "D of every token model.")
  flags.DEFINE_integer("num_layers", 2, "L of every token model.")
  flags.DEFINE_integer("embedding_dim", 16, "d of every model.")
  flags.DEFINE_float("dense_learning_rate", 1e-3, "Dense learning rate "
                     "(the default setting).")
  flags.DEFINE_enum("dense_learning_rate_decay", "none",
                    list(config_lib.LEARNING_RATE_DECAYS),
                    "Dense learning rate schedule of every run.")
  flags.DEFINE_boolean("resume", True, "Keep the runs already recorded in "
                       "--output_dir (made with the row's current config "
                       "and these flags) and run only the rest.")
  flags.DEFINE_boolean("deterministic_input", False, "Train every run on "
                       "its input in one order set by its seed, so a seed "
                       "reproduces its run.")
  flags.mark_flags_as_required(["data_dir", "output_dir"])


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every run of a study shares (the common flags)."""
  data_dir: str
  output_dir: str
  seeds: Tuple[int, ...] = (0, 1, 2)
  epochs: int = 1
  train_steps: int = 0
  global_batch_size: int = 1024
  token: Dict = dataclasses.field(default_factory=lambda: token_shape(
      16, 64, 2, 16))
  dense_learning_rate: float = 1e-3
  dense_learning_rate_decay: str = "none"
  models: Tuple[str, ...] = ()
  resume: bool = True
  deterministic_input: bool = False

  @classmethod
  def from_flags(cls) -> "Setup":
    return cls(data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir,
               seeds=tuple(int(s) for s in FLAGS.seeds), epochs=FLAGS.epochs,
               train_steps=FLAGS.train_steps,
               global_batch_size=FLAGS.global_batch_size,
               token=token_shape(FLAGS.num_tokens, FLAGS.token_dim,
                                 FLAGS.num_layers, FLAGS.embedding_dim),
               dense_learning_rate=FLAGS.dense_learning_rate,
               dense_learning_rate_decay=FLAGS.dense_learning_rate_decay,
               models=tuple(FLAGS.models), resume=FLAGS.resume,
               deterministic_input=FLAGS.deterministic_input)

  def run_flags(self) -> Dict:
    """The common flags that shape a run (not which runs, nor where)."""
    return {f: getattr(self, f) for f in (
        "data_dir", "epochs", "train_steps", "global_batch_size",
        "dense_learning_rate", "dense_learning_rate_decay",
        "deterministic_input")}

  @property
  def schema_path(self) -> str:
    return os.path.join(self.data_dir, "schema.json")

  def schema(self) -> rankup_tf.Schema:
    return rankup_tf.Schema.load(self.schema_path)

  def files(self, split: str) -> List[str]:
    """The data's shards of a split ("train" or "eval"), sorted."""
    return sorted(tf.io.gfile.glob(os.path.join(self.data_dir,
                                                f"{split}-*")))


class Row(NamedTuple):
  name: str
  model: str
  config: models.ModelConfig
  label: str


def provenance(setup: Setup, row: Row) -> Dict:
  """What a kept run of `row` must have been made with for a resumed study
  to reuse it: a row whose config changed (new fields, new defaults) or a
  study rerun with other run flags (epochs, batch, schedule) runs again."""
  return {"model": row.model, "config": row.config.to_dict(),
          "flags": setup.run_flags()}


def made_with(record: Dict, setup: Setup, row: Row) -> bool:
  """Whether a recorded trial or run was made with `row`'s current config
  and the study's current run flags."""
  return record.get("made_with") == provenance(setup, row)


class Component(NamedTuple):
  name: str
  label: str
  fields: FrozenSet[str]
  in_paper_table: bool  # the paper reports it alone on top of RankMixer
  # The fields' values when on, for a component the shipped RankUp leaves
  # off (it is then outside the ladder and full RankUp); None: the shipped
  # RankUp's values.
  values: Optional[Dict[str, object]] = None

  @property
  def shipped(self) -> bool:
    return self.values is None


# In ladder order. num_embedding_views is not a component field: the
# default (0) gives every view that has a role its own table. The pre-LN
# blocks bring num_dense_tokens (the dense inputs' share of the tokens):
# they give every token an equal say in the mixer, which post-LN blocks do
# not (docs/design.md).
COMPONENTS = (
    Component("random_split", "random permutation split",
              frozenset({"split"}), True),
    Component("global_multi_embedding", "global token & multi-embedding",
              frozenset({"global_token"}), True),
    Component("crossed", "crossed pretrained token",
              frozenset({"cross_tokens"}), True),
    Component("sparse_crosses", "sparse cross tokens & third view",
              frozenset({"sparse_cross_tokens"}), False),
    # Off in the shipped RankUp: at a fixed T each task token takes an input
    # token's place (docs/results.md, "Task tokens off by default").
    Component("task_tokens", "task tokens", frozenset({"task_tokens"}), True,
              values={"task_tokens": True}),
    Component("swiglu", "pre-LN SwiGLU blocks",
              frozenset({"block", "ffn_activation", "final_norm",
                         "num_dense_tokens"}), True),
)


def _available(schema: rankup_tf.Schema) -> List[Component]:
  """The components this schema can switch on (cross tokens need pairs)."""
  kinds = {schema.cross_kind(p) for p in schema.crosses}
  return [c for c in COMPONENTS
          if (c.name != "crossed" or "pretrained" in kinds)
          and (c.name != "sparse_crosses" or "sparse" in kinds)]


def _shipped(schema: rankup_tf.Schema) -> List[Component]:
  """The available components the shipped RankUp has on: the ladder's
  steps, and full RankUp."""
  return [c for c in _available(schema) if c.shipped]


def token_config(token: Dict, on: Iterable[str]) -> models.RankUpConfig:
  """RankMixer as a RankUpConfig with the named components switched on: to
  the shipped RankUp's values, or a component's own `values`."""
  on = set(on)
  full = models.RankUpConfig(**token)
  values = dataclasses.asdict(models.RankMixerConfig(**token).as_rankup())
  for component in COMPONENTS:
    if component.name in on:
      values.update(component.values
                    or {f: getattr(full, f) for f in component.fields})
  if "crossed" in on or "sparse_crosses" in on:
    values["cross_tokens"] = True
  values["num_embedding_views"] = full.num_embedding_views
  return models.RankUpConfig(**values)


def token_shape(t: int, d: int, layers: int, emb: int) -> Dict:
  return dict(num_tokens=t, token_dim=d, num_layers=layers, embedding_dim=emb)


def baseline_rows(emb: int) -> List[Row]:
  return [Row("dnn", "dnn", models.DNNConfig(embedding_dim=emb), "DNN"),
          Row("dlrm", "dlrm", models.DLRMConfig(embedding_dim=emb), "DLRM"),
          Row("dcnv2", "dcnv2", models.DCNv2Config(embedding_dim=emb),
              "DCNv2")]


def rankmixer_row(token: Dict) -> Row:
  return Row("rankmixer", "rankmixer", models.RankMixerConfig(**token),
             "RankMixer")


def full_rankup_row(schema: rankup_tf.Schema, token: Dict) -> Row:
  """The shipped RankUp: every shipped component the schema allows."""
  return Row("full_rankup", "rankup", token_config(
      token, [c.name for c in _shipped(schema)]),
             "full RankUp (+ pre-LN SwiGLU)")


def ladder(schema: rankup_tf.Schema, token: Dict) -> List[Row]:
  """Baselines, RankMixer, then one row per shipped component, each adding
  to the row before; the last is full RankUp."""
  rows = baseline_rows(token["embedding_dim"]) + [rankmixer_row(token)]
  on = []
  for component in _shipped(schema)[:-1]:
    on.append(component.name)
    rows.append(Row(component.name, "rankup",
                    token_config(token, on), f"+ {component.label}"))
  return rows + [full_rankup_row(schema, token)]


def single_component_rows(schema: rankup_tf.Schema,
                          token: Dict) -> List[Row]:
  """The paper's table: each component alone on top of RankMixer."""
  return [Row(f"only_{c.name}", "rankup", token_config(token, [c.name]),
              f"RankMixer + {c.label} alone")
          for c in _available(schema) if c.in_paper_table]


def train_config(setup: Setup, row: Row, seed: int, model_dir: str,
                 train_files: str, eval_files: str, **overrides
                 ) -> config_lib.TrainConfig:
  """The TrainConfig of one run of a row; `overrides` are TrainConfig
  fields (dense_learning_rate, steps_per_epoch, ...)."""
  config = row.config
  if row.model == "rankup":
    # Each seed draws its own permutation, as it draws its own init.
    config = dataclasses.replace(config, permutation_seed=seed)
  values = dict(
      train_files=train_files, eval_files=eval_files,
      schema=setup.schema_path, model_dir=model_dir, model=row.model,
      model_config=config, global_batch_size=setup.global_batch_size,
      train_steps=setup.train_steps, epochs=setup.epochs, seed=seed,
      dense_learning_rate=setup.dense_learning_rate,
      dense_learning_rate_decay=setup.dense_learning_rate_decay,
      deterministic_input=setup.deterministic_input,
      checkpoint_every_n_steps=10 ** 6)
  values.update(overrides)
  return config_lib.TrainConfig(**values)


def run(config: config_lib.TrainConfig) -> Dict:
  """Trains one run from scratch; returns its summary."""
  if tf.io.gfile.exists(config.model_dir):
    tf.io.gfile.rmtree(config.model_dir)
  summary = train.run(config)  # --strategy=auto
  # Keep the run's configs, metrics and logs; its checkpoints are not
  # needed by a study and hold the large embedding tables.
  tf.io.gfile.rmtree(os.path.join(config.model_dir, run_dir.CHECKPOINT_DIR))
  tf.keras.backend.clear_session()
  gc.collect()
  return summary


class RowError(ValueError):
  """A row whose config the schema (or the model) rejects."""


def build(schema: rankup_tf.Schema, row: Row, flops: bool = True) -> Dict:
  """Builds a row's model as training would; returns its parameter counts
  and (with `flops`) forward FLOPs per example. Raises RowError naming the
  row."""
  try:
    model = models.build_model(row.model, schema, row.config)
    model.build_from_schema()
    cost = model.parameter_counts()
    if flops:
      cost["flops_per_example"] = model.flops_per_example()
  except (ValueError, TypeError, rankup_tf.SchemaError) as e:
    raise RowError(f"Row {row.name!r} ({row.label}): {e}") from None
  finally:
    tf.keras.backend.clear_session()
  return cost


def check_rows(setup: Setup, schema: rankup_tf.Schema, rows: List[Row],
               flops: Iterable[str] = ()) -> Dict[str, Dict]:
  """Validates every row's TrainConfig and builds its model before the
  first run, so a config the schema rejects fails now, naming the row, not
  after hours of earlier rows. Returns each row's cost (see `build`; FLOPs
  for the rows named in `flops`)."""
  costs = {}
  flops = set(flops)
  for row in rows:
    try:
      train_config(setup, row, 0, os.path.join(setup.output_dir, "check"),
                   "unused", "")
    except ValueError as e:
      raise RowError(f"Row {row.name!r} ({row.label}): {e}") from None
    costs[row.name] = build(schema, row, flops=row.name in flops)
  return costs


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a size x size float32 matmul on this machine, now."""
  a = tf.random.normal([size, size])
  b = tf.random.normal([size, size])
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  matmul().numpy()
  start = time.perf_counter()
  for _ in range(repeats):
    matmul().numpy()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def finite(values: Iterable[Optional[float]]) -> List[float]:
  """The values that are numbers (a one-class split has no AUC: None)."""
  return [v for v in values if v is not None and v == v]


def signed(value: float, digits: int = 4) -> str:
  """+0.0123, or n/a when there is nothing to compare (no GAUC without
  user ids)."""
  return f"{value:+.{digits}f}" if np.isfinite(value) else "n/a"


def mean_std(values: Iterable[Optional[float]]) -> str:
  values = finite(values)
  if not values:
    return "n/a"
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"
