r"""TF Serving export: versioned, atomic SavedModels with warmup requests.

Library: `export_saved_model(model, schema, export_base, model_name,
warmup_examples)`. Command line, from a trainer's model_dir:

    python -m serving.export --model_dir=/tmp/run --export_base=/tmp/export \
        --model_name=rankup --examples=/tmp/data/eval-*

Layout: `<export_base>/<model_name>/<version>/`, version an integer one
above the largest there. The SavedModel is written to a hidden temporary
folder beside it, checked (only core ops, see serving.op_check), then
renamed: TF Serving, which only loads integer-named folders, never sees a
half-written version.

Signatures (parsing, hashing and normalization run inside the graph, the
same `rankup_tf.features.FeatureTransform` the training pipeline ran):

* `serving_default`: input `examples`, string [batch] of serialized
  tf.Example -> one float32 [batch] probability per task, named by task;
* `predict_raw`: the schema's raw features as named tensors (sparse [batch]
  or [batch, max_length] padded with "" / -1, dense [batch], pretrained
  [batch, dim]) -> the same outputs.

`assets.extra/tf_serving_warmup_requests` holds PredictionLog records built
from real examples for both signatures; TF Serving replays them on load.
`assets.extra/schema.json` tells clients the raw inputs.

Model names are DNS labels (`check_model_name`): the name becomes a folder
under the export base, a URL path segment of the REST API and the
Kubernetes names of serving.config, and must be safe as all three.
"""

import os
import re
import uuid
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags

import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from rankup_tf import cli
from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib
from rankup_tf.serving import op_check
from rankup_tf.serving import restore

# The export's assets.extra: warmup requests TF Serving replays on load,
# and the schema that tells clients the raw inputs.
WARMUP_FILE = "tf_serving_warmup_requests"
SCHEMA_FILE = "schema.json"
SIGNATURES = ("serving_default", "predict_raw")
EXAMPLES_INPUT = "examples"
# A DNS-1123 label short enough for "<name>-serving" to stay one.
_MODEL_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?")


def check_model_name(name: str) -> str:
  """Returns `name` if it is a safe model name, else raises ValueError."""
  if not _MODEL_NAME_RE.fullmatch(name):
    raise ValueError(
        f"model name {name!r} is not allowed: use 1 to 50 lower-case "
        "letters, digits and '-', starting and ending with a letter or "
        "digit (the name becomes a folder, a URL path segment and "
        "Kubernetes names).")
  return name


class ServingModule(tf.Module):
  """The exported object: a model's variables and forward pass plus the
  feature transform, with the two serving signatures as tf.functions."""

  def __init__(self, model: tf.keras.Model, schema: schema_lib.Schema):
    super().__init__(name="rankup_serving")
    # The signatures need the model's variables, not the Keras model: saving
    # a tracked Keras model also writes Keras metadata and traces every
    # layer's call, most of an export's time, for nothing TF Serving reads.
    self.model_variables = list(model.variables)
    self._probabilities = model.probabilities
    self.transform = features_lib.FeatureTransform(schema)
    # Traced as written: AutoGraph's conversion of the parsing and every
    # layer's source would take most of the tracing time, for no control
    # flow.
    self.serve_examples = tf.function(
        self._serve_examples,
        input_signature=[tf.TensorSpec([None], tf.string,
                                       name=EXAMPLES_INPUT)],
        autograph=False)
    self.serve_raw = tf.function(
        self._serve_raw,
        input_signature=[features_lib.raw_input_specs(schema)],
        autograph=False)

  def _predict(self, features) -> Dict[str, tf.Tensor]:
    return {t: tf.identity(p, name=t)
            for t, p in self._probabilities(features).items()}

  def _serve_examples(self, examples):
    check = tf.debugging.assert_greater(
        tf.size(examples), 0,
        message="empty batch: input 'examples' holds no serialized "
        "tf.Example")
    with tf.control_dependencies([check]):
      features, _ = self.transform.parse(examples, with_labels=False)
    return self._predict(features)

  def _serve_raw(self, inputs):
    batch = tf.shape(next(iter(inputs.values())))[0]
    checks = [tf.debugging.assert_greater(
        batch, 0, message="empty batch: the raw inputs hold no example")]
    for name, value in inputs.items():
      checks.append(tf.debugging.assert_equal(
          tf.shape(value)[0], batch,
          message=f"input '{name}' has a different batch size than the "
          "other inputs"))
    with tf.control_dependencies(checks):
      features = self.transform.transform_padded(inputs)
    return self._predict(features)


def next_version(model_base: str) -> int:
  """1 + the largest integer-named folder under model_base (1 if none)."""
  if not tf.io.gfile.isdir(model_base):
    return 1
  versions = [int(n.strip("/")) for n in tf.io.gfile.listdir(model_base)
              if n.strip("/").isdigit()]
  return max(versions, default=0) + 1


def warmup_requests(schema: schema_lib.Schema, model_name: str,
                    examples: Sequence[bytes]
                    ) -> List[prediction_log_pb2.PredictionLog]:
  """One PredictionLog per signature, from real serialized examples."""
  if not examples:
    raise ValueError("warmup needs at least one real example.")
  logs = []
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
      name=model_name, signature_name="serving_default"))
  request.inputs[EXAMPLES_INPUT].CopyFrom(
      tf.make_tensor_proto(list(examples), dtype=tf.string))
  logs.append(request)
  raw = features_lib.padded_raw_features(schema, tf.constant(list(examples)))
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
      name=model_name, signature_name="predict_raw"))
  for name, value in raw.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
  logs.append(request)
  return [prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=r)) for r in logs]


def export_saved_model(model: tf.keras.Model, schema: schema_lib.Schema,
                       export_base: str, model_name: str,
                       warmup_examples: Sequence[bytes],
                       version: Optional[int] = None,
                       validate: Optional[Callable[[str], None]] = None
                       ) -> str:
  """Writes a new version atomically; returns its folder.

  The version is written under a hidden temporary name, checked (core ops
  only, then `validate(temporary_folder)` when given, which raises to
  refuse it) and only then renamed to its number, the only name TF Serving
  loads. Temporary folders that killed exports left behind are removed
  first.

  Raises:
    op_check.NonCoreOpError: the graph needs ops TF Serving lacks (nothing
      is left under the version's name).
    FileExistsError: `version` already exists.
    ValueError: an unsafe model name (see `check_model_name`).
    Whatever `validate` raises (nothing is left under the version's name).
  """
  model_base = os.path.join(export_base, check_model_name(model_name))
  tf.io.gfile.makedirs(model_base)
  for leftover in tf.io.gfile.glob(os.path.join(model_base, ".tmp-*")):
    tf.io.gfile.rmtree(leftover)
  version = version or next_version(model_base)
  final = os.path.join(model_base, str(version))
  if tf.io.gfile.exists(final):
    raise FileExistsError(f"{final} exists; versions are never overwritten.")
  temporary = os.path.join(model_base, f".tmp-{version}-{uuid.uuid4().hex}")
  module = ServingModule(model, schema)
  try:
    tf.saved_model.save(module, temporary, signatures={
        "serving_default": module.serve_examples.get_concrete_function(),
        "predict_raw": module.serve_raw.get_concrete_function()})
    extra = os.path.join(temporary, "assets.extra")
    tf.io.gfile.makedirs(extra)
    schema.save(os.path.join(extra, SCHEMA_FILE))
    with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
      for log in warmup_requests(schema, model_name, warmup_examples):
        writer.write(log.SerializeToString())
    op_check.check_export(temporary)
    if validate is not None:
      validate(temporary)
    tf.io.gfile.rename(temporary, final)
  except BaseException:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.rmtree(temporary)
    raise
  return final


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors(op_check.NonCoreOpError):
    model, schema = restore.model_from_model_dir(FLAGS.model_dir)
    examples = input_pipeline.read_examples(FLAGS.examples, FLAGS.num_warmup)
    path = export_saved_model(model, schema, FLAGS.export_base,
                              FLAGS.model_name, examples)
  print(path)


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("model_dir", None, "A trainer's model_dir.")
  flags.DEFINE_string("export_base", None, "Export base folder.")
  flags.DEFINE_string("model_name", "rankup", "Served model name: lower-case "
                      "letters, digits and '-'.")
  flags.DEFINE_string("examples", None, "TFRecords of real examples for the "
                      "warmup requests.")
  flags.DEFINE_integer("num_warmup", 8, "Examples per warmup request.")
  flags.mark_flags_as_required(["model_dir", "export_base", "examples"])


def cli_main() -> None:
  """`python -m serving.export`, the `rankup-export` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
