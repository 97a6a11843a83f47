"""Rebuilds a trained model from a trainer's model_dir.

Layout written by `trainer.train`:

    <model_dir>/train_config.json    model name and model config
    <model_dir>/schema.json          the data's schema
    <model_dir>/checkpoints/ckpt-N   tf.train.Checkpoint(model=...)
    <model_dir>/best/ckpt-N          the same, at the best evaluation
                                     (--export_best)
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


def model_from_model_dir(model_dir: str, checkpoint: str = ""
                         ) -> Tuple[models.RankingModel, schema_lib.Schema]:
  """The model of `checkpoint` (a checkpoint path; '': the latest in
  model_dir/checkpoints), and its schema.

  Raises:
    FileNotFoundError: no train_config.json or no checkpoint.
  """
  config_path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(config_path):
    raise FileNotFoundError(f"{config_path} does not exist: not a trainer "
                            "model_dir.")
  with tf.io.gfile.GFile(config_path) as f:
    config = json.load(f)
  schema = schema_lib.Schema.load(os.path.join(model_dir, SCHEMA_FILE))
  model = models.build_model(
      config["model"], schema,
      models.CONFIGS[config["model"]].from_dict(config["model_config"]))
  model.build_from_schema()
  if checkpoint:
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise FileNotFoundError(f"No checkpoint {checkpoint}.")
  else:
    checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir,
                                                         CHECKPOINT_DIR))
    if checkpoint is None:
      raise FileNotFoundError(f"No checkpoint under {model_dir}/"
                              f"{CHECKPOINT_DIR}.")
  tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
  return model, schema
