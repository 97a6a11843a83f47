"""Whole-eval-set evaluation: AUC, logloss, GAUC, calibration per task."""

import json
import math
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf

import rankup_tf
from rankup_tf import metrics as metrics_lib
from rankup_tf import schema as schema_lib

METRICS_FILE = "metrics.json"


def predict(model, dataset: tf.data.Dataset) -> Dict[str, np.ndarray]:
  """Probabilities, labels and user ids over a (features, labels) dataset.

  The model runs in the strategy's cross-replica context on this process
  alone (no collectives), so one worker can evaluate while others wait.
  """
  task_names = model.schema.task_names

  @tf.function
  def step(features):
    logits = model(features, training=False)
    return {t: tf.sigmoid(tf.cast(logits[t], tf.float32)) for t in task_names}

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


class Evaluator:
  """Evaluates a model on the whole eval set; writes metrics.json and
  TensorBoard scalars `eval/<task>/<metric>`."""

  def __init__(self, model, file_pattern: str, batch_size: int,
               model_dir: str, log_dir: str = ""):
    self.model = model
    self.schema = model.schema
    self.file_pattern = file_pattern
    self.batch_size = batch_size
    self.model_dir = model_dir
    self.history: List[Dict] = []
    self._writer = (tf.summary.create_file_writer(os.path.join(log_dir,
                                                               "eval"))
                    if log_dir else None)

  def __call__(self, step: int) -> Dict:
    dataset = rankup_tf.make_dataset(
        self.file_pattern, self.schema, self.batch_size, shuffle=False,
        deterministic=True, drop_remainder=False)
    columns = predict(self.model, dataset)
    groups = columns.get("user_id")
    tasks = {t: metrics_lib.task_metrics(columns[f"label/{t}"],
                                         columns[f"prediction/{t}"], groups)
             for t in self.schema.task_names}
    result = {"step": step, "tasks": tasks}
    self.history.append(result)
    if self._writer is not None:
      with self._writer.as_default(step=step):
        for task, values in tasks.items():
          for name, value in values.items():
            if name != "examples":
              tf.summary.scalar(f"eval/{task}/{name}", value)
      self._writer.flush()
    with tf.io.gfile.GFile(os.path.join(self.model_dir, METRICS_FILE),
                           "w") as f:
      json.dump(finite_or_none({"final": result, "history": self.history}),
                f, indent=2, allow_nan=False)
    line = "  ".join(f"{t}: auc {v['auc']:.4f} logloss {v['logloss']:.4f}"
                     + (f" gauc {v['gauc']:.4f}" if "gauc" in v else "")
                     for t, v in tasks.items())
    print(f"eval @ step {step}: {line}", flush=True)
    return result
