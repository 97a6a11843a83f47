"""A trainer's model_dir: the names of what the trainer writes there, and
the model its train_config.json and schema.json describe.

The trainer writes, serving and the benchmarks read:

    <model_dir>/train_config.json    the run's TrainConfig (model name and
                                     model config among it)
    <model_dir>/schema.json          the data's schema, as trained on
    <model_dir>/checkpoints/ckpt-N   tf.train.Checkpoint(model=...)
    <model_dir>/best/ckpt-N          the same, at the best evaluation
                                     (--export_best)
    <model_dir>/backup/              BackupAndRestore's state (a killed run
                                     resumes from it)
    <model_dir>/logs/                TensorBoard
    <model_dir>/metrics.json         the evaluations, the best, early stopping
    <model_dir>/summary.json         the finished run's summary
    <model_dir>/erank.json, .png     the effective-rank trajectory
                                     (--erank_every_n_steps; named by
                                     rankup_tf.diagnostics, which writes
                                     them to any folder)
    <model_dir>/workers/<task>/      non-chief workers' scratch copies
"""

import json
import os
from typing import Tuple

import tensorflow as tf

from rankup_tf import models
from rankup_tf import schema as schema_lib

CONFIG_FILE = "train_config.json"
SCHEMA_FILE = "schema.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BACKUP_DIR = "backup"
LOG_DIR = "logs"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
WORKERS_DIR = "workers"


def build_model(model_dir: str
                ) -> Tuple[models.RankingModel, schema_lib.Schema]:
  """The model train_config.json names, with its variables created (in the
  current strategy scope) and no weights restored, and its schema.

  Raises:
    FileNotFoundError: no train_config.json.
  """
  config_path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(config_path):
    raise FileNotFoundError(f"{config_path} does not exist: not a trainer "
                            "model_dir.")
  # Only the model part: the rest of the TrainConfig is the trainer's.
  with tf.io.gfile.GFile(config_path) as f:
    config = json.load(f)
  schema = schema_lib.Schema.load(os.path.join(model_dir, SCHEMA_FILE))
  model = models.build_model(
      config["model"], schema,
      models.CONFIGS[config["model"]].from_dict(config["model_config"]))
  model.build_from_schema()
  return model, schema
