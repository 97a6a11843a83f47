"""Checks the trainer runs before it builds a model: settings that would
train without an error but learn nothing (a negative or NaN learning rate),
and schema fields the data never holds (a misspelt dense field)."""

import math

import tensorflow as tf

from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib

# Records read to see which dense fields the data holds: enough that a
# field missing in three rows out of four still shows up.
PRESENCE_SAMPLE = 1024


def check_learning_rate(name: str, value: float) -> None:
  """Raises ValueError unless `value` is a positive finite number."""
  if not (isinstance(value, (int, float)) and math.isfinite(value)
          and value > 0):
    raise ValueError(f"{name} must be a positive finite number, got "
                     f"{value!r}.")


def check_dense_fields_present(file_pattern: str, schema: schema_lib.Schema,
                               sample: int = PRESENCE_SAMPLE) -> None:
  """Raises ValueError naming the schema's dense fields that none of the
  first `sample` records holds, unless the schema declares them optional.

  A dense field absent from the data (`I01` in the schema for `I1`) would
  otherwise train on its default alone. Records that do not parse are left
  to the pipeline's own checks.
  """
  required = [f.name for f in schema.dense_features if not f.optional]
  if not required:
    return
  spec = {n: tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
          for n in required}
  files = input_pipeline.list_files(file_pattern)
  records = tf.data.Dataset.from_tensor_slices(
      (files, [input_pipeline.compression(f) for f in files])).flat_map(
          tf.data.TFRecordDataset).take(sample)
  @tf.autograph.experimental.do_not_convert
  def holds(record):
    parsed = tf.io.parse_single_example(record, spec)
    return tf.stack([tf.size(parsed[n], tf.int64) > 0 for n in required])

  @tf.autograph.experimental.do_not_convert
  def count(state, held):
    seen, present = state
    return seen + 1, present + tf.cast(held, tf.int64)

  # Counted inside the dataset: no Python step per record.
  seen, present = records.map(holds).ignore_errors().reduce(
      (tf.constant(0, tf.int64), tf.zeros([len(required)], tf.int64)), count)
  seen = int(seen)
  absent = [n for n, p in zip(required, present.numpy()) if p == 0]
  if seen and absent:
    raise ValueError(
        f"dense feature(s) {absent} of the schema are in none of the first "
        f"{seen} records of {file_pattern}: misspelt in the schema or the "
        "data? (Declare a field \"optional\": true in the schema if the "
        "data may lack it.)")
