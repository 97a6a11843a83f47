"""Distribution strategies from the --strategy flag."""

import json
import os

import tensorflow as tf


def configure_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (before TF starts)."""
  if count > 1:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * count)


def make_strategy(kind: str) -> tf.distribute.Strategy:
  """auto: MirroredStrategy over all GPUs, one device without a GPU;
  mirrored: all GPUs, else all (logical) CPUs; one_device: the first GPU or
  the CPU; multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.

  One device is a one-replica MirroredStrategy rather than
  OneDeviceStrategy, which Keras' BackupAndRestore does not support.
  """
  if kind == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG "
                       "environment variable (cluster and this task).")
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  if kind == "one_device" or (kind == "auto" and not gpus):
    return tf.distribute.MirroredStrategy([(gpus or cpus)[0]])
  if kind in ("auto", "mirrored"):
    return tf.distribute.MirroredStrategy(gpus or cpus)
  raise ValueError(f"Unknown strategy {kind!r}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes exports, summaries and metrics."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in cluster)


def task_name(strategy: tf.distribute.Strategy) -> str:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "chief"
  return f"{resolver.task_type}_{resolver.task_id}"
