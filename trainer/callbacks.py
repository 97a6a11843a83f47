"""Training callbacks: throughput, NaN guard, kept checkpoints, evaluation
and early stopping."""

import math
import os
import time
from typing import List, Tuple

import tensorflow as tf

from rankup_tf.trainer import evaluation


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


class EpochThroughput(Throughput):
  """Throughput over whole Keras epochs (ParameterServerStrategy runs no
  batch-level callbacks); the first epoch, which carries the tracing, is
  left out unless it is the only one."""

  on_train_batch_begin = tf.keras.callbacks.Callback.on_train_batch_begin
  on_train_batch_end = tf.keras.callbacks.Callback.on_train_batch_end

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()
    self._first_step = _step(self.model)

  def on_epoch_end(self, epoch, logs=None):
    elapsed = time.perf_counter() - self._start
    steps = _step(self.model) - self._first_step
    self.batches += steps
    if self._first_batch_done or not self.params.get("epochs", 1) > 1:
      self.examples += steps * self.global_batch_size
      self.seconds += elapsed
    self._first_batch_done = True
    super().on_epoch_end(epoch, logs)


class NaNGuard(tf.keras.callbacks.Callback):
  """Stops the run on a NaN/inf loss, saying at which step and which step
  the last backup holds. Put it before the callbacks that save, so a NaN
  step never reaches a backup or checkpoint."""

  def __init__(self, backup_every_n_steps: int):
    super().__init__()
    self.backup_every_n_steps = backup_every_n_steps

  def on_train_batch_end(self, batch, logs=None):
    self._check(logs)

  def _check(self, logs):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      step = _step(self.model)
      last_good = (step - 1) // self.backup_every_n_steps * (
          self.backup_every_n_steps)
      raise NaNLossError(
          f"Training loss became {float(loss)} at step {step} (global "
          f"optimizer step); the last backup and checkpoint, if any, are "
          f"from step {last_good} or earlier. Lower the learning rates, "
          "check the input statistics, or use --precision=float32.")


class EpochNaNGuard(NaNGuard):
  """NaNGuard at the ends of Keras epochs (ParameterServerStrategy runs no
  batch-level callbacks)."""

  on_train_batch_end = tf.keras.callbacks.Callback.on_train_batch_end

  def on_epoch_end(self, epoch, logs=None):
    self._check(logs)


class KeptCheckpoints(tf.keras.callbacks.Callback):
  """tf.train.CheckpointManager saves every N steps (its
  `checkpoint_interval`) and at the end, keeping the newest `keep`. Every
  worker must save (the save is collective); only the chief's `directory`
  is the real one."""

  def __init__(self, directory: str, every_n_steps: int, keep: int):
    super().__init__()
    self.directory = directory
    self.every_n_steps = every_n_steps
    self.keep = keep
    self.manager = None

  def on_train_begin(self, logs=None):
    checkpoint = tf.train.Checkpoint(model=self.model,
                                     optimizer=self.model.optimizer)
    step = _step(self.model)
    # A run resumed at a multiple s of N from a backup whose kept checkpoint
    # a kill prevented: the manager counts s as saved, so save it now.
    missed = (step > 0 and step % self.every_n_steps == 0
              and tf.train.latest_checkpoint(self.directory)
              != os.path.join(self.directory, f"ckpt-{step}"))
    # The interval counts from the last multiple of N, so the saves fall on
    # multiples of N after a resume too.
    self.manager = tf.train.CheckpointManager(
        checkpoint, self.directory, max_to_keep=self.keep,
        step_counter=self.model.optimizer.iterations,
        checkpoint_interval=self.every_n_steps,
        last_checkpoint_step=(None if missed
                              else step - step % self.every_n_steps))
    if missed:
      self.manager.save(checkpoint_number=step)

  def on_train_batch_end(self, batch, logs=None):
    self._save_on_schedule()

  def _save_on_schedule(self):
    self.manager.save(checkpoint_number=_step(self.model))

  def on_train_end(self, logs=None):
    # The final step, unless the schedule saved it already.
    self.manager.save(checkpoint_number=_step(self.model),
                      check_interval=False)


class EpochKeptCheckpoints(KeptCheckpoints):
  """KeptCheckpoints checked at the ends of Keras epochs
  (ParameterServerStrategy runs no batch-level callbacks)."""

  on_train_batch_end = tf.keras.callbacks.Callback.on_train_batch_end

  def on_epoch_end(self, epoch, logs=None):
    self._save_on_schedule()


class PeriodicEvaluation(tf.keras.callbacks.Callback):
  """Runs `evaluator(step)` at the end of each Keras epoch whose step is a
  multiple of `every_n_steps`, and stops training when the evaluator's
  early stopping fires (at an epoch end, so under ParameterServerStrategy
  too). Put it after BackupAndRestore: at the start it takes up the run's
  evaluations up to the step that callback resumed from."""

  def __init__(self, evaluator: evaluation.Evaluator, every_n_steps: int):
    super().__init__()
    self.evaluator = evaluator
    self.every_n_steps = every_n_steps

  def on_train_begin(self, logs=None):
    self.evaluator.resume(_step(self.model))

  def on_epoch_end(self, epoch, logs=None):
    step = _step(self.model)
    if step % self.every_n_steps:
      return
    self.evaluator(step)
    best = self.evaluator.best
    if best is not None and best.stopped_at == step:
      print(f"Early stopping at step {step}: {best.name} did not improve "
            f"in {best.patience} evaluation(s); the best, {best.value}, was "
            f"at step {best.step}.", flush=True)
      self.model.stop_training = True


def fault_tolerance(backup_dir: str, checkpoint_dir: str, every_n_steps: int,
                    keep: int, global_batch_size: int, per_epoch: bool = False
                    ) -> Tuple[List[tf.keras.callbacks.Callback], Throughput]:
  """The trainer's NaN guard, backup, throughput and kept checkpoints, and
  the throughput callback among them.

  The NaN guard comes first: a NaN step stops the run before the backup and
  the checkpoint of that step are written, so a rerun resumes from finite
  weights. The throughput comes before the saving callbacks: it measures
  training steps; the time saves take shows in the run's wall time.
  `per_epoch`: ParameterServerStrategy runs no batch-level callbacks, so
  all four act at the ends of Keras epochs, which the caller makes fall on
  every `every_n_steps`.
  """
  if per_epoch:
    throughput = EpochThroughput(global_batch_size)
    return [EpochNaNGuard(every_n_steps), throughput,
            tf.keras.callbacks.BackupAndRestore(backup_dir,
                                                save_freq="epoch"),
            EpochKeptCheckpoints(checkpoint_dir, every_n_steps, keep)
            ], throughput
  throughput = Throughput(global_batch_size)
  return [NaNGuard(every_n_steps), throughput,
          tf.keras.callbacks.BackupAndRestore(backup_dir,
                                              save_freq=every_n_steps),
          KeptCheckpoints(checkpoint_dir, every_n_steps, keep)], throughput
