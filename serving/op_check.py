r"""Lists the ops of a SavedModel and fails on any TF Serving cannot run.

    python -m serving.op_check --export_dir=/tmp/export/rankup/3

TF Serving links core TensorFlow's kernels and loads no custom op
libraries, so an exported graph may only use ops that core TensorFlow
registers with a CPU kernel. The check reads `saved_model.pb` (the graph and
every function in its library) and compares each op against the registry
of this process: run it in a process that has imported nothing but
TensorFlow (the validator does), or a custom op loaded here would pass.
"""

import os
from typing import Dict, List, Set

from absl import flags

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import kernels
from tensorflow.python.framework import op_def_registry

from rankup_tf import cli


class NonCoreOpError(RuntimeError):
  """The graph uses ops TF Serving does not have."""


def graph_ops(saved_model: saved_model_pb2.SavedModel) -> Set[str]:
  """Every op type in the graphs and function libraries of a SavedModel."""
  ops = set()
  for meta_graph in saved_model.meta_graphs:
    graph = meta_graph.graph_def
    functions = {f.signature.name for f in graph.library.function}
    ops |= {n.op for n in graph.node}
    for function in graph.library.function:
      ops |= {n.op for n in function.node_def}
    ops -= functions  # calls of library functions, not ops
  return ops


def read_saved_model(export_dir: str) -> saved_model_pb2.SavedModel:
  path = os.path.join(export_dir, "saved_model.pb")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"No saved_model.pb in {export_dir}.")
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(path, "rb") as f:
    saved_model.ParseFromString(f.read())
  return saved_model


def unservable_ops(ops: Set[str]) -> Dict[str, str]:
  """op -> why TF Serving could not run it (empty when all are fine)."""
  problems = {}
  for op in sorted(ops):
    if op_def_registry.get(op) is None:
      problems[op] = "not a core TensorFlow op (custom op library?)"
      continue
    devices = {k.device_type for k in
               kernels.get_registered_kernels_for_op(op).kernel}
    if not devices & {"CPU", "DEFAULT"}:
      problems[op] = (f"no CPU kernel (only {sorted(devices)})" if devices
                      else "no kernel registered")
  return problems


def check_export(export_dir: str) -> List[str]:
  """Sorted op list of an export; raises NonCoreOpError naming bad ops."""
  ops = graph_ops(read_saved_model(export_dir))
  problems = unservable_ops(ops)
  if problems:
    raise NonCoreOpError(
        f"{export_dir} uses ops TF Serving cannot run: "
        + "; ".join(f"{op}: {why}" for op, why in problems.items()))
  return sorted(ops)


def main(argv):
  del argv
  with cli.one_line_errors(NonCoreOpError):
    ops = check_export(flags.FLAGS.export_dir)
  print(f"{len(ops)} op types, all core TensorFlow with CPU kernels:")
  print(", ".join(ops))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("export_dir", None, "A SavedModel version directory.")
  flags.mark_flag_as_required("export_dir")


def cli_main() -> None:
  """`python -m serving.op_check`, the `rankup-op-check` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
