"""Training callbacks: throughput, NaN guard, kept checkpoints, evaluation."""

import math
import time
from typing import Callable, Optional

import tensorflow as tf


class NaNLossError(RuntimeError):
  """The training loss became NaN or infinite."""


def _step(model) -> int:
  return int(model.optimizer.iterations.numpy())


class Throughput(tf.keras.callbacks.Callback):
  """Adds `examples_per_sec` to the logs (the progress bar shows it).

  The rate is measured over the batches since the first one of the run,
  which carries the graph tracing and is left out.
  """

  def __init__(self, global_batch_size: int):
    super().__init__()
    self.global_batch_size = global_batch_size
    self.batches = 0  # run by this process (fewer after a resume)
    self.examples = 0
    self.seconds = 0.0
    self._first_batch_done = False
    self._start = None

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    elapsed = time.perf_counter() - self._start
    self.batches += 1
    if not self._first_batch_done:
      self._first_batch_done = True
      return
    self.examples += self.global_batch_size
    self.seconds += elapsed
    if logs is not None:
      logs["examples_per_sec"] = self.rate

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      logs["examples_per_sec"] = self.rate

  @property
  def rate(self) -> float:
    return self.examples / self.seconds if self.seconds else float("nan")


class NaNGuard(tf.keras.callbacks.Callback):
  """Stops the run on a NaN/inf loss, saying at which step."""

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise NaNLossError(
          f"Training loss became {float(loss)} at step {_step(self.model)} "
          "(global optimizer step). Lower the learning rates, check the "
          "input statistics, or use --precision=float32.")


class KeptCheckpoints(tf.keras.callbacks.Callback):
  """tf.train.CheckpointManager saves every N steps and at the end, keeping
  the newest `keep`. Every worker must save (the save is collective); only
  the chief's `directory` is the real one."""

  def __init__(self, directory: str, every_n_steps: int, keep: int):
    super().__init__()
    self.directory = directory
    self.every_n_steps = every_n_steps
    self.keep = keep
    self.manager = None

  def on_train_begin(self, logs=None):
    checkpoint = tf.train.Checkpoint(model=self.model,
                                     optimizer=self.model.optimizer)
    self.manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                              max_to_keep=self.keep)

  def on_train_batch_end(self, batch, logs=None):
    step = _step(self.model)
    if step % self.every_n_steps == 0:
      self.manager.save(checkpoint_number=step)

  def on_train_end(self, logs=None):
    step = _step(self.model)
    if self.manager.latest_checkpoint != f"{self.manager._prefix}-{step}":  # pylint: disable=protected-access
      self.manager.save(checkpoint_number=step)


class PeriodicEvaluation(tf.keras.callbacks.Callback):
  """Runs `evaluate(step)` at the end of every Keras epoch (an eval
  interval of the trainer)."""

  def __init__(self, evaluate: Callable[[int], Optional[dict]]):
    super().__init__()
    self.evaluate = evaluate

  def on_epoch_end(self, epoch, logs=None):
    self.evaluate(_step(self.model))
