r"""Validates an export the way TF Serving will use it, in a fresh process.

    python -m serving.validate --export_dir=/tmp/export/rankup/1 \
        --examples=/tmp/data/eval-* [--model_dir=/tmp/run [--checkpoint=...]]

Checks, each failing loudly (exit 1) with what went wrong:
1. only core TensorFlow ops (serving.op_check; this process imports
   nothing that registers custom ops);
2. the SavedModel's SignatureDefs (what `saved_model_cli show --all` lists)
   hold both signatures;
3. both signatures answer on real examples, with one probability in [0, 1]
   per example and task, and agree with each other (max abs diff <= 1e-5);
4. with --model_dir: the model rebuilt from its latest checkpoint (or
   --checkpoint), run in memory, agrees with the export (max abs diff
   <= 1e-5);
5. every warmup request in assets.extra replays without error.
The trainer runs this after every export.

Loading a SavedModel runs its graph in this process, with this user's
rights: only validate exports you trust.
"""

import os
import sys
from typing import Dict, List

from absl import flags

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from rankup_tf import cli
from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib
from rankup_tf.serving import op_check
from rankup_tf.serving import restore

TOLERANCE = 1e-5


class ValidationError(RuntimeError):
  """The export would not serve correctly."""


def _signature_outputs(signature, inputs: Dict[str, tf.Tensor]
                       ) -> Dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in signature(**inputs).items()}


def _max_diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
  if sorted(a) != sorted(b):
    raise ValidationError(f"Outputs differ in names: {sorted(a)} vs "
                          f"{sorted(b)}.")
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def signature_names(export_dir: str) -> List[str]:
  """The SignatureDef keys of every MetaGraphDef in saved_model.pb, in the
  order `saved_model_cli show --all` lists them (read from the proto, not
  parsed from the tool's text)."""
  saved_model = op_check.read_saved_model(export_dir)
  meta_graphs = sorted(saved_model.meta_graphs,
                       key=lambda m: list(m.meta_info_def.tags))
  return [key for meta_graph in meta_graphs
          for key in sorted(meta_graph.signature_def)]


def replay_warmup(loaded, export_dir: str) -> int:
  """Runs every warmup request; returns how many."""
  path = os.path.join(export_dir, "assets.extra", export_lib.WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    raise ValidationError(f"No warmup file at {path}.")
  count = 0
  for record in tf.data.TFRecordDataset(path):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    signature = loaded.signatures[request.model_spec.signature_name]
    inputs = {k: tf.constant(tf.make_ndarray(v))
              for k, v in request.inputs.items()}
    outputs = _signature_outputs(signature, inputs)
    if not outputs:
      raise ValidationError(f"Warmup request {count} returned nothing.")
    count += 1
  return count


def validate(export_dir: str, examples_pattern: str, model_dir: str = "",
             num_examples: int = 64, checkpoint: str = ""
             ) -> Dict[str, object]:
  """All checks; returns a report, raises ValidationError on a failure."""
  report: Dict[str, object] = {"export_dir": export_dir}
  try:
    report["ops"] = len(op_check.check_export(export_dir))
  except op_check.NonCoreOpError as e:
    raise ValidationError(str(e)) from None
  listed = signature_names(export_dir)
  missing = [s for s in export_lib.SIGNATURES if s not in listed]
  if missing:
    raise ValidationError(f"The SavedModel lacks signature(s) {missing} (it "
                          f"has {listed}).")
  report["signatures"] = listed

  loaded = tf.saved_model.load(export_dir)
  examples = input_pipeline.read_examples(examples_pattern, num_examples)
  serialized = tf.constant(examples)
  from_examples = _signature_outputs(
      loaded.signatures["serving_default"],
      {export_lib.EXAMPLES_INPUT: serialized})
  schema = schema_lib.Schema.load(os.path.join(
      export_dir, "assets.extra", export_lib.SCHEMA_FILE))
  from_raw = _signature_outputs(
      loaded.signatures["predict_raw"],
      features_lib.padded_raw_features(schema, serialized))
  for task, values in from_examples.items():
    if values.shape != (len(examples),) or not np.all(
        (values >= 0) & (values <= 1)):
      raise ValidationError(f"serving_default output {task!r} is not "
                            f"{len(examples)} probabilities: {values[:5]}")
  report["signature_max_abs_diff"] = _max_diff(from_examples, from_raw)
  if report["signature_max_abs_diff"] > TOLERANCE:
    raise ValidationError(f"serving_default and predict_raw disagree by "
                          f"{report['signature_max_abs_diff']:.2e}.")
  if model_dir:
    model, _ = restore.model_from_model_dir(model_dir, checkpoint)
    features, _ = features_lib.FeatureTransform(schema).parse(
        serialized, with_labels=False)
    in_memory = {t: p.numpy()
                 for t, p in model.probabilities(features).items()}
    report["in_memory_max_abs_diff"] = _max_diff(from_examples, in_memory)
    if report["in_memory_max_abs_diff"] > TOLERANCE:
      raise ValidationError(f"The export and the in-memory model from "
                            f"{model_dir} disagree by "
                            f"{report['in_memory_max_abs_diff']:.2e}.")
  report["warmup_requests"] = replay_warmup(loaded, export_dir)
  report["examples"] = len(examples)
  return report


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors():
    try:
      report = validate(FLAGS.export_dir, FLAGS.examples, FLAGS.model_dir,
                        checkpoint=FLAGS.checkpoint)
    except ValidationError as e:
      print(f"error: export validation failed: {cli.error_line(e)}",
            file=sys.stderr)
      sys.exit(1)
  print("export validation passed: " + ", ".join(
      f"{k}={v}" for k, v in report.items()))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("export_dir", None, "A SavedModel version folder. "
                      "It runs in this process: only exports you trust.")
  flags.DEFINE_string("examples", None, "TFRecords of real examples.")
  flags.DEFINE_string("model_dir", "", "The trainer's model_dir, to compare "
                      "with the in-memory model.")
  flags.DEFINE_string("checkpoint", "", "With --model_dir: the checkpoint "
                      "to compare with (empty: the latest).")
  flags.mark_flags_as_required(["export_dir", "examples"])


def cli_main() -> None:
  """`python -m serving.validate`, the `rankup-validate` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
