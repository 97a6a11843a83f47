"""Whole-eval-set evaluation: AUC, logloss, GAUC, calibration per task;
the best evaluation so far, its checkpoint, and early stopping."""

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

import rankup_tf
from rankup_tf import metrics as metrics_lib
from rankup_tf import run_dir
from rankup_tf import schema as schema_lib

# The metrics a best evaluation can be chosen by, and whether larger is
# better.
SELECTABLE_METRICS = {"auc": True, "gauc": True, "logloss": False}


def predict(step, task_names, dataset: tf.data.Dataset
            ) -> Dict[str, np.ndarray]:
  """Probabilities (`step`: the model's `probabilities` as a tf.function),
  labels and user ids over a (features, labels) dataset.

  The model runs in the strategy's cross-replica context on this process
  alone (no collectives), so one worker can evaluate while others wait.
  """
  columns: Dict[str, List[np.ndarray]] = {}
  for features, labels in dataset:
    outputs = {f"prediction/{t}": v for t, v in step(features).items()}
    outputs.update({f"label/{t}": labels[t] for t in task_names})
    if schema_lib.USER_ID_KEY in features:
      outputs["user_id"] = features[schema_lib.USER_ID_KEY]
    for key, value in outputs.items():
      columns.setdefault(key, []).append(value.numpy())
  return {k: np.concatenate(v) for k, v in columns.items()}


def finite_or_none(value):
  """`value` with every NaN or infinite float replaced by None, so it dumps
  as strict JSON (a one-class eval set has no AUC)."""
  if isinstance(value, dict):
    return {k: finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_none(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def check_metric_name(name: str) -> Tuple[str, str]:
  """(task, metric) of a `<task>/<metric>` name such as `click/auc`."""
  task, sep, metric = name.rpartition("/")
  if not sep or not task or metric not in SELECTABLE_METRICS:
    raise ValueError(
        f"early_stopping_metric {name!r} is not <task>/<metric> with metric "
        f"one of {sorted(SELECTABLE_METRICS)} (e.g. 'click/auc').")
  return task, metric


def selection_metric(name: str, schema: schema_lib.Schema
                     ) -> Tuple[str, str]:
  """(task, metric) the best evaluation is chosen by: `name`, or the first
  task's AUC when it is empty. Raises ValueError when the schema has no
  such task, or no user id for GAUC."""
  if not name:
    return schema.task_names[0], "auc"
  task, metric = check_metric_name(name)
  if task not in schema.task_names:
    raise ValueError(f"early_stopping_metric {name!r}: the schema has no "
                     f"task {task!r}; its tasks are "
                     f"{list(schema.task_names)}.")
  if metric == "gauc" and schema.user_id is None:
    raise ValueError(f"early_stopping_metric {name!r}: GAUC needs a "
                     "user_id in the schema, and it names none.")
  return task, metric


class BestEvaluation:
  """The best evaluation so far by one task's metric, and early stopping:
  `patience` evaluations in a row that do not beat the best stop the run
  (0: never). A NaN metric (a one-class eval set has no AUC) beats
  nothing."""

  def __init__(self, task: str, metric: str, patience: int = 0):
    self.task = task
    self.metric = metric
    self.patience = patience
    self.reset()

  def reset(self) -> None:
    self.step: Optional[int] = None
    self.value: Optional[float] = None
    self.since = 0  # evaluations since the best
    self.stopped_at: Optional[int] = None

  @property
  def name(self) -> str:
    return f"{self.task}/{self.metric}"

  def update(self, result: Dict) -> bool:
    """Takes the next evaluation (an Evaluator result); returns whether it
    is the new best."""
    value = result["tasks"][self.task].get(self.metric)
    better = (value is not None and math.isfinite(value)
              and (self.value is None
                   or (value > self.value if SELECTABLE_METRICS[self.metric]
                       else value < self.value)))
    if better:
      self.step, self.value, self.since = result["step"], float(value), 0
    else:
      self.since += 1
      if (self.patience and self.since >= self.patience
          and self.stopped_at is None):
        self.stopped_at = result["step"]
    return better

  def to_dict(self) -> Dict[str, Any]:
    return {"best": {"metric": self.name, "step": self.step,
                     "value": self.value},
            "early_stopping": {"patience": self.patience,
                               "stopped": self.stopped_at is not None,
                               "step": self.stopped_at}}


class BestCheckpoints:
  """The model at its best evaluations: `<model_dir>/best/ckpt-<step>`,
  apart from the kept checkpoints' rotation.

  A killed run resumes from its last backup, which can predate the newest
  best; the best before it is then the best again. So an older best is
  deleted only once a newer one is at or before the last backup step.
  """

  def __init__(self, model, model_dir: str, backup_every_n_steps: int):
    self.directory = os.path.join(model_dir, run_dir.BEST_DIR)
    self.backup_every_n_steps = backup_every_n_steps
    self._checkpoint = tf.train.Checkpoint(model=model)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, f"ckpt-{step}")

  def steps(self) -> List[int]:
    """The steps of the best checkpoints on disk, ascending."""
    return sorted(int(os.path.basename(p)[len("ckpt-"):-len(".index")])
                  for p in tf.io.gfile.glob(
                      os.path.join(self.directory, "ckpt-*.index")))

  def save(self, step: int) -> None:
    self._checkpoint.write(self.path(step))

  def _delete(self, step: int) -> None:
    for path in tf.io.gfile.glob(self.path(step) + ".*"):
      tf.io.gfile.remove(path)

  def prune(self, step: int) -> None:
    """After the evaluation at `step`: deletes the bests a newer best at or
    before the last backup step supersedes."""
    backup = step - step % self.backup_every_n_steps
    for old in [s for s in self.steps() if s <= backup][:-1]:
      self._delete(old)

  def keep_only(self, step: Optional[int]) -> None:
    for other in self.steps():
      if other != step:
        self._delete(other)


def _nan_for_none(result: Dict) -> Dict:
  """An evaluation read back from metrics.json, NaNs restored."""
  return {"step": result["step"],
          "tasks": {task: {k: float("nan") if v is None else v
                           for k, v in values.items()}
                    for task, values in result["tasks"].items()}}


def early_stopped_step(model_dir: str) -> Optional[int]:
  """The step at which early stopping ended the run in model_dir, if its
  metrics.json says it did."""
  path = os.path.join(model_dir, run_dir.METRICS_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return (json.load(f).get("early_stopping") or {}).get("step")


class Evaluator:
  """Evaluates a model on the whole eval set; writes metrics.json and
  TensorBoard scalars `eval/<task>/<metric>`.

  With `best`, it also tracks the best evaluation and early stopping (the
  caller stops training when `best.stopped_at` is set); with
  `best_checkpoints`, it saves the model at each new best.
  """

  def __init__(self, model, file_pattern: str, batch_size: int,
               model_dir: str, log_dir: str = "",
               best: Optional[BestEvaluation] = None,
               best_checkpoints: Optional[BestCheckpoints] = None):
    if best_checkpoints is not None and best is None:
      raise ValueError("best_checkpoints needs best to say what is best.")
    self.model = model
    self.schema = model.schema
    self.file_pattern = file_pattern
    self.batch_size = batch_size
    self.model_dir = model_dir
    self.best = best
    self.best_checkpoints = best_checkpoints
    self.history: List[Dict] = []
    self.fields: Dict[str, Any] = {}  # more top-level fields of metrics.json
    # Built at the first evaluation and reused: an evaluation that built
    # both took 6.1x as long as one that reuses them on the suite's eval
    # set (docs/results.md, "A trainer run's fixed cost").
    self._dataset = None
    self._step = None
    self._writer = (tf.summary.create_file_writer(os.path.join(log_dir,
                                                               "eval"))
                    if log_dir else None)

  def resume(self, step: int) -> None:
    """Takes up the evaluations of this run's earlier processes up to
    `step` from metrics.json (a run resumed from its step-`step` backup,
    or a finished one); later ones were of steps trained again now. At
    step 0 it starts afresh. Best checkpoints other than the best's go."""
    path = os.path.join(self.model_dir, run_dir.METRICS_FILE)
    self.history = []
    if step and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        self.history = [_nan_for_none(h) for h in json.load(f)["history"]
                        if h["step"] <= step]
    if self.best is not None:
      self.best.reset()
      for result in self.history:
        self.best.update(result)
    if self.best_checkpoints is not None:
      self.best_checkpoints.keep_only(self.best.step)

  def write(self) -> None:
    """metrics.json: the last evaluation ('final'), all of them, the best
    and early stopping, and `fields`. Replaced whole, so a kill mid-write
    leaves the previous one."""
    values = {"final": self.history[-1] if self.history else None,
              "history": self.history}
    if self.best is not None:
      values.update(self.best.to_dict())
    values.update(self.fields)
    path = os.path.join(self.model_dir, run_dir.METRICS_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
      json.dump(finite_or_none(values), f, indent=2, allow_nan=False)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

  def __call__(self, step: int) -> Dict:
    if self._dataset is None:
      self._dataset = rankup_tf.make_dataset(
          self.file_pattern, self.schema, self.batch_size, shuffle=False,
          deterministic=True, drop_remainder=False)
      # Traced for full batches and for the last, smaller one.
      self._step = tf.function(self.model.probabilities, autograph=False)
    columns = predict(self._step, self.schema.task_names, self._dataset)
    groups = columns.get("user_id")
    tasks = {t: metrics_lib.task_metrics(columns[f"label/{t}"],
                                         columns[f"prediction/{t}"], groups)
             for t in self.schema.task_names}
    result = {"step": step, "tasks": tasks}
    self.history.append(result)
    improved = self.best is not None and self.best.update(result)
    if improved and self.best_checkpoints is not None:
      # Before metrics.json names it the best, so it never names a missing
      # checkpoint.
      self.best_checkpoints.save(step)
    if self._writer is not None:
      with self._writer.as_default(step=step):
        for task, values in tasks.items():
          for name, value in values.items():
            if name != "examples":
              tf.summary.scalar(f"eval/{task}/{name}", value)
      self._writer.flush()
    self.write()
    if self.best_checkpoints is not None:
      self.best_checkpoints.prune(step)
    line = "  ".join(f"{t}: auc {v['auc']:.4f} logloss {v['logloss']:.4f}"
                     + (f" gauc {v['gauc']:.4f}" if "gauc" in v else "")
                     for t, v in tasks.items())
    if self.best is not None and self.best.step is not None:
      line += (f"  [best {self.best.name} {self.best.value:.4f} @ step "
               f"{self.best.step}]")
    print(f"eval @ step {step}: {line}", flush=True)
    return result
