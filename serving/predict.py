r"""Answers predictions from an export without a server.

    python -m serving.predict --export_base=/tmp/export --model_name=rankup \
        --examples=/tmp/data/eval-00000-of-00004.tfrecord --count=4

Loads the newest version under <export_base>/<model_name> in this process
and calls its `serving_default` signature, the same function TF Serving
runs, on serialized examples read from TFRecords. For smoke tests and the
demo; in production use serving.client against TF Serving.

Loading a SavedModel runs its graph in this process, with this user's
rights: only load exports you trust.
"""

import os

import numpy as np
from absl import flags

import tensorflow as tf

from rankup_tf import cli
from rankup_tf import input_pipeline
from rankup_tf.serving import export as export_lib


def latest_version(model_base: str) -> str:
  """The newest integer-named version folder under model_base.

  Raises:
    FileNotFoundError: no such folder, or no version in it.
  """
  if not tf.io.gfile.isdir(model_base):
    raise FileNotFoundError(f"{model_base}: no such folder (exports are "
                            "<export_base>/<model_name>/<version>/).")
  versions = sorted(int(n.strip("/")) for n in tf.io.gfile.listdir(model_base)
                    if n.strip("/").isdigit())
  if not versions:
    raise FileNotFoundError(f"No exported version under {model_base}.")
  return os.path.join(model_base, str(versions[-1]))


def predict(export_dir: str, examples):
  signature = tf.saved_model.load(export_dir).signatures["serving_default"]
  outputs = signature(examples=tf.constant(list(examples), dtype=tf.string))
  return {k: v.numpy() for k, v in outputs.items()}


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors():
    export_dir = latest_version(os.path.join(
        FLAGS.export_base, export_lib.check_model_name(FLAGS.model_name)))
    examples = input_pipeline.read_examples(FLAGS.examples, FLAGS.count)
    outputs = predict(export_dir, examples)
  print(f"{export_dir} answered {len(examples)} examples:")
  for i in range(len(examples)):
    print(f"  example {i}: " + "  ".join(
        f"{task}={float(np.asarray(v)[i]):.4f}"
        for task, v in sorted(outputs.items())))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("export_base", None, "Export base folder. Its "
                      "SavedModel runs in this process: only exports you "
                      "trust.")
  flags.DEFINE_string("model_name", "rankup", "Model name.")
  flags.DEFINE_string("examples", None, "TFRecords of tf.Example.")
  flags.DEFINE_integer("count", 4, "Examples to predict (at least 1).")
  flags.mark_flags_as_required(["export_base", "examples"])


def cli_main() -> None:
  """`python -m serving.predict`, the `rankup-predict` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
