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


def make_strategy(kind: str, ps_min_shard_bytes: int = 256 << 10,
                  ps_max_shards: int = 0) -> tf.distribute.Strategy:
  """The strategy `kind` names.

  auto: MirroredStrategy over all GPUs when there are two or more, else no
    strategy (TensorFlow's default, which places work on the one GPU or the
    CPU): a one-replica MirroredStrategy only adds cost;
  one_device: no strategy;
  mirrored: MirroredStrategy over all GPUs, else all (logical) CPUs;
  multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG;
  parameter_server: ParameterServerStrategy from TF_CONFIG (this process is
    the coordinator, task type chief); variables are cut into row shards of
    at least `ps_min_shard_bytes`, at most `ps_max_shards` of them (0: one
    per parameter server).
  """
  if kind in ("multi_worker", "parameter_server"):
    if "TF_CONFIG" not in os.environ:
      raise ValueError(f"--strategy={kind} needs the TF_CONFIG environment "
                       "variable (cluster and this task).")
    if kind == "multi_worker":
      return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
    if not num_ps:
      raise ValueError("--strategy=parameter_server: TF_CONFIG's cluster has "
                       "no 'ps' tasks.")
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=ps_min_shard_bytes,
        max_shards=ps_max_shards or num_ps)
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  if kind == "one_device" or (kind == "auto" and len(gpus) < 2):
    return tf.distribute.get_strategy()
  if kind in ("auto", "mirrored"):
    return tf.distribute.MirroredStrategy(gpus or cpus)
  raise ValueError(f"Unknown strategy {kind!r}.")


def server_task() -> str:
  """'worker' or 'ps' when TF_CONFIG makes this process a parameter-server
  cluster's worker or parameter server (it then only serves), else ''."""
  task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
  return task.get("type", "") if task.get("type") in ("worker", "ps") else ""


def serve_forever() -> None:
  """Runs this worker or parameter server task of TF_CONFIG's cluster; the
  coordinator (chief) sends it work. Never returns."""
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=resolver.task_type,
      task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
      start=True)
  print(f"{resolver.task_type} {resolver.task_id} serving at "
        f"{server.target}", flush=True)
  server.join()


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes exports, summaries and metrics."""
  if is_parameter_server(strategy):
    return True  # only the coordinator runs the trainer
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
  if resolver is None or not resolver.task_type or is_parameter_server(
      strategy):
    return "chief"
  return f"{resolver.task_type}_{resolver.task_id}"
