"""Readouts: per-task towers over the final tokens."""

from typing import Dict, Sequence

import tensorflow as tf

from rankup_tf.keras_compat import keras
from rankup_tf.layers import backbone


@keras.saving.register_keras_serializable("rankup_tf")
class TaskTowers(keras.layers.Layer):
  """One MLP tower per task, each ending in a logit.

  Without task tokens (RankMixer's readout) every tower reads the mean of
  all final tokens. With task tokens (RankUp, SPEC 3.5) the last N tokens
  are the tasks' own, in task order, and tower k reads its task token
  concatenated with the mean of the shared tokens:

      y_k = Tower_k([x_task_k, Pool(H_L shared)])

  Example:

  ```python
  towers = rankup_tf.layers.TaskTowers(["click", "conversion"],
                                       hidden_units=[64],
                                       use_task_tokens=True)
  logits = towers(tf.random.normal([8, 6, 32]))  # {"click": [8], ...}
  ```

  Args:
    task_names: one tower per task, in this order.
    hidden_units: each tower's hidden ReLU layers (then a logit).
    use_task_tokens: read task tokens (see above).
    dropout: rate of the dropout (training only) after every hidden layer.
    kernel_l2: L2 coefficient on the towers' kernels (not the biases).
  """

  def __init__(self, task_names: Sequence[str],
               hidden_units: Sequence[int] = (64,),
               use_task_tokens: bool = False, dropout: float = 0.0,
               kernel_l2: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.task_names = list(task_names)
    if not self.task_names:
      raise ValueError("TaskTowers needs at least one task.")
    self.hidden_units = list(hidden_units)
    self.use_task_tokens = use_task_tokens
    self.dropout = dropout
    self.kernel_l2 = kernel_l2
    self._towers = {
        task: keras.Sequential(
            mlp_layers(self.hidden_units, dropout, kernel_l2)
            + [keras.layers.Dense(
                1, kernel_regularizer=backbone.kernel_regularizer(kernel_l2))],
            name=f"tower_{task}")
        for task in self.task_names}

  def build(self, input_shape):
    shape = tf.TensorShape(input_shape)
    if shape.rank != 3:
      raise ValueError(f"TaskTowers {self.name!r} expects tokens [B, T, D], "
                       f"got {shape}.")
    if self.use_task_tokens and shape[1] is not None and \
        shape[1] <= len(self.task_names):
      raise ValueError(f"TaskTowers {self.name!r}: {shape[1]} tokens cannot "
                       f"hold {len(self.task_names)} task tokens plus shared "
                       "ones.")
    super().build(input_shape)

  def call(self, tokens: tf.Tensor, training=None) -> Dict[str, tf.Tensor]:
    n = len(self.task_names)
    logits = {}
    if self.use_task_tokens:
      shared = tf.reduce_mean(tokens[:, :-n], axis=1)
      for k, task in enumerate(self.task_names):
        own = tokens[:, tokens.shape[1] - n + k]
        logits[task] = tf.squeeze(self._towers[task](
            tf.concat([own, shared], axis=-1), training=training), -1)
    else:
      pooled = tf.reduce_mean(tokens, axis=1)
      for task in self.task_names:
        logits[task] = tf.squeeze(
            self._towers[task](pooled, training=training), -1)
    return logits

  def get_config(self):
    return dict(super().get_config(), task_names=self.task_names,
                hidden_units=self.hidden_units,
                use_task_tokens=self.use_task_tokens, dropout=self.dropout,
                kernel_l2=self.kernel_l2)


def mlp_layers(units: Sequence[int], dropout: float = 0.0,
               kernel_l2: float = 0.0) -> list:
  """ReLU Dense layers of `units` (with an L2 of kernel_l2 on their
  kernels), each followed by a Dropout of rate `dropout` when it is not 0."""
  layers = []
  for u in units:
    layers.append(keras.layers.Dense(
        u, activation="relu",
        kernel_regularizer=backbone.kernel_regularizer(kernel_l2)))
    drop = backbone.maybe_dropout(dropout)
    if drop is not None:
      layers.append(drop)
  return layers
