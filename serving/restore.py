"""Rebuilds a trained model from a trainer's model_dir (layout:
`rankup_tf.run_dir`), outside any strategy, with a checkpoint's weights."""

import os
from typing import Tuple

import tensorflow as tf

from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf import schema as schema_lib


def model_from_model_dir(model_dir: str, checkpoint: str = ""
                         ) -> Tuple[models.RankingModel, schema_lib.Schema]:
  """The model of `checkpoint` (a checkpoint path; '': the latest in
  model_dir/checkpoints), and its schema.

  Raises:
    FileNotFoundError: no train_config.json or no checkpoint.
    ValueError: the checkpoint lacks weights of the model the config
      describes, or holds them in other shapes (a config and a checkpoint
      of different runs or code).
  """
  model, schema = run_dir.build_model(model_dir)
  if checkpoint:
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise FileNotFoundError(f"No checkpoint {checkpoint}.")
  else:
    checkpoint = tf.train.latest_checkpoint(
        os.path.join(model_dir, run_dir.CHECKPOINT_DIR))
    if checkpoint is None:
      raise FileNotFoundError(f"No checkpoint under {model_dir}/"
                              f"{run_dir.CHECKPOINT_DIR}.")
  config_file = os.path.join(model_dir, run_dir.CONFIG_FILE)
  # read(), not restore(): checkpoints written with write() (the best
  # ones) hold no save_counter, which is not a model weight.
  try:
    status = tf.train.Checkpoint(model=model).read(checkpoint)
  except ValueError as e:
    raise ValueError(
        f"{checkpoint} does not fit the model {config_file} describes: {e} "
        "A checkpoint written before a default changed restores once the "
        "config pins the old value (e.g. \"num_dense_tokens\": 1 for a "
        "RankUp checkpoint from before dense tokens got their share, "
        "\"ffn_hidden_dim\": k * token_dim for one from before SwiGLU "
        "FFNs were 2/3 as wide, \"global_token_projection_dim\": 0 for "
        "one with global_token_func dcn from before the cross's rank was "
        "64)."
    ) from None
  # The optimizer's slots in the checkpoint are not needed here; a model
  # weight missing from it would serve its initial value.
  status.expect_partial()
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(
        f"{checkpoint} does not hold every weight of the model "
        f"{config_file} describes; were they written by different runs or "
        f"versions? {e}") from None
  return model, schema
