"""The trainer's optimizer: a sparse optimizer on the embedding tables and
a dense one on the rest, as one Keras optimizer."""

import tensorflow as tf
import tensorflow_recommenders as tfrs

from rankup_tf.trainer import config as config_lib


def _optimizer(kind: str, learning_rate):
  legacy = tf.keras.optimizers.legacy
  return {"adam": legacy.Adam, "rmsprop": legacy.RMSprop,
          "adagrad": legacy.Adagrad, "sgd": legacy.SGD}[kind](learning_rate)


class _CompositeOptimizer(tfrs.experimental.optimizers.CompositeOptimizer):
  """tfrs' CompositeOptimizer whose apply_gradients returns the update op.

  Keras' LossScaleOptimizer (mixed_float16) puts apply_gradients in a
  tf.cond, whose branches must both return an op; the tfrs version
  returns None.
  """

  def apply_gradients(self, grads_and_vars, name=None,
                      experimental_aggregate_gradients=True):
    owner = {v.ref(): optimizer for optimizer, variables in
             self._optimizers_and_vars for v in variables()}
    groups = {}
    for gradient, variable in grads_and_vars:
      if variable.ref() not in owner:
        raise ValueError(f"Variable {variable.name} is not handled by any "
                         "optimizer.")
      groups.setdefault(owner[variable.ref()], []).append(
          (gradient, variable))
    updates = [
        optimizer.apply_gradients(
            pairs, name=name,
            experimental_aggregate_gradients=experimental_aggregate_gradients)
        for optimizer, pairs in groups.items()]
    replica = tf.distribute.get_replica_context()
    if replica is None:
      return tf.group(*updates)
    # One op shared by every replica, as each optimizer's own update is.
    return replica.merge_call(lambda _, *ops: tf.group(*ops), args=updates)

  def create_slots(self):
    """Creates every optimizer's step counter, hyperparameters and slots
    now. Left to the first training step, their creation makes
    tf.function trace that step twice (once creating, once without)."""
    for optimizer, variables in self._optimizers_and_vars:
      optimizer._create_all_weights(variables())  # pylint: disable=protected-access


def _dense_learning_rate(config: config_lib.TrainConfig, total_steps: int):
  if config.dense_learning_rate_decay == "none":
    return config.dense_learning_rate
  if total_steps < 1:
    raise ValueError("dense_learning_rate_decay="
                     f"{config.dense_learning_rate_decay!r} needs the run's "
                     f"total steps (got {total_steps}).")
  # Keyed on the dense optimizer's own step count, which a checkpoint
  # restores, so a resumed run continues the schedule.
  return tf.keras.optimizers.schedules.CosineDecay(
      config.dense_learning_rate, total_steps)


def make_optimizer(config: config_lib.TrainConfig, model,
                   total_steps: int = 0):
  """The sparse optimizer on embedding tables, the dense one on the rest,
  with their slots for the variables of `model`, which must be built;
  `total_steps` (the run's planned steps) sets a decaying dense rate."""
  optimizer = _CompositeOptimizer([
      (_optimizer(config.sparse_optimizer, config.sparse_learning_rate),
       lambda: model.embedding_variables),
      (_optimizer(config.dense_optimizer,
                  _dense_learning_rate(config, total_steps)),
       lambda: model.dense_variables),
  ])
  optimizer.create_slots()
  if config.precision == "mixed_float16":
    optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer
