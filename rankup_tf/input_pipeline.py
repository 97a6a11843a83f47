"""TFRecord input pipeline: files of tf.Example -> batches of model inputs.

`make_dataset` reads the shards of a dataset written by the converters in
`data/` (or any TFRecords of tf.Example matching a schema):

    files --(shard per worker)--> shuffle files --> parallel interleave of
    per-file readers --> shuffle records --> batch --> tf.io.parse_example
    (vectorized) + FeatureTransform (ids, normalization) --> prefetch

Bad input raises instead of disappearing:

* a corrupt or truncated file: every file's readable bytes are counted and
  compared with its size (for GZIP, with the size in its trailer), so a file
  that stops early, even silently, fails with "Corrupt or truncated TFRecord
  file <path>";
* a record missing a required feature, or with a wrong dtype or value count:
  TensorFlow's parse error quotes the record as "<path>:<index>" and the key;
* a label other than 0/1, or several values in a single-valued field: an
  assertion that names the feature and the record.

With `bad_records=BadRecordCounter()` bad records are skipped instead, and
counted; the unreadable tail of a corrupt file is counted in files and bytes.

`read_examples` reads the first serialized records as they are (warmup
requests, export checks, clients).
"""

import struct
from typing import List, Optional, Sequence, Union

import tensorflow as tf

from rankup_tf import features as features_lib
from rankup_tf import schema as schema_lib

# The dataset functions are traced as written (`do_not_convert`): none has
# Python control flow on tensors, and AutoGraph's source conversion took
# about 40% of building a pipeline.

# TFRecord framing per record: 8-byte length, 4-byte length CRC, 4-byte data
# CRC.
_RECORD_OVERHEAD = 16
_READ_BUFFER_BYTES = 1 << 20
# Records per block of the per-file size accounting.
_BLOCK_RECORDS = 256
_GZIP_SUFFIXES = (".gz", ".gzip")


class BadRecordCounter:
  """Counts what `make_dataset(..., bad_records=counter)` skipped.

  Counts are of skips: with `repeat=True` a bad record is skipped, and
  counted, on every pass over its file (and a shuffle buffer larger than
  the data reads several passes ahead). Create it outside any
  `strategy.scope()`: its counters are plain host variables updated by the
  input pipeline.
  """

  def __init__(self):
    with tf.device("/cpu:0"):
      self.records = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name="skipped_records")
      self.corrupt_files = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="corrupt_files")
      self.bytes_lost = tf.Variable(0, dtype=tf.int64, trainable=False,
                                    name="bytes_lost")

  def result(self) -> dict:
    return {"skipped_records": int(self.records.numpy()),
            "corrupt_files": int(self.corrupt_files.numpy()),
            "unreadable_bytes": int(self.bytes_lost.numpy())}


def list_files(file_pattern: Union[str, Sequence[str]]) -> List[str]:
  """Sorted files matching a glob, a comma-separated list of globs, or a list.

  Raises:
    FileNotFoundError: naming the pattern that matched nothing.
  """
  patterns = (file_pattern.split(",") if isinstance(file_pattern, str)
              else list(file_pattern))
  files = []
  for pattern in patterns:
    matched = tf.io.gfile.glob(pattern.strip())
    if not matched:
      raise FileNotFoundError(f"No files match {pattern.strip()!r}.")
    files.extend(matched)
  return sorted(set(files))


def compression(path: str) -> str:
  """The TFRecord compression of a file, from its name (.gz/.gzip: GZIP)."""
  return "GZIP" if path.endswith(_GZIP_SUFFIXES) else ""


def read_examples(file_pattern: str, count: int) -> List[bytes]:
  """The first `count` serialized records of the files matching a glob.

  Raises:
    ValueError: count < 1, or the files hold no record.
    FileNotFoundError: no file matches.
  """
  if count < 1:
    raise ValueError(f"the example count must be at least 1, got {count}.")
  files = list_files(file_pattern)
  records = []
  for path in files:
    for record in tf.data.TFRecordDataset(
        path, compression(path)).take(count - len(records)):
      records.append(record.numpy())
    if len(records) >= count:
      break
  if not records:
    raise ValueError(f"{file_pattern} holds no TFRecord.")
  return records


def _expected_bytes(path: str) -> int:
  """Decompressed size of a TFRecord file (GZIP: trailer's size mod 2**32)."""
  size = tf.io.gfile.stat(path).length
  if compression(path) != "GZIP":
    return size
  if size < 4:
    return -1  # Cannot even hold a trailer: reported as corrupt.
  with tf.io.gfile.GFile(path, "rb") as f:
    f.seek(size - 4)
    return struct.unpack("<I", f.read(4))[0]


def _read_file(path, compression, expected_bytes,
               bad_records: Optional[BadRecordCounter]):
  """Records of one file as (path, index, record), with its size checked.

  Records are counted in blocks (one function call per block, not per
  record); an empty block marks the end of the file, where the bytes read
  are compared with the file's size.
  """
  blocks = tf.data.TFRecordDataset(
      path, compression_type=compression,
      buffer_size=_READ_BUFFER_BYTES).ignore_errors().batch(_BLOCK_RECORDS)
  end = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))
  is_gzip = tf.equal(compression, "GZIP")

  @tf.autograph.experimental.do_not_convert
  def account(state, block):
    bytes_read, records_read = state
    size = tf.size(block, out_type=tf.int64)
    bytes_read += (tf.reduce_sum(tf.cast(tf.strings.length(block), tf.int64))
                   + _RECORD_OVERHEAD * size)
    comparable = tf.where(is_gzip, bytes_read % (1 << 32), bytes_read)
    complete = tf.logical_or(size > 0, tf.equal(comparable, expected_bytes))
    if bad_records is None:
      check = tf.debugging.Assert(complete, [features_lib.message(
          "Corrupt or truncated TFRecord file ", path, ": only ", bytes_read,
          " of its ", expected_bytes, " bytes could be read as records.")])
    else:
      lost = tf.cast(tf.logical_not(complete), tf.int64)
      check = tf.group(
          bad_records.corrupt_files.assign_add(lost),
          bad_records.bytes_lost.assign_add(
              lost * tf.maximum(expected_bytes - comparable, 0)))
    with tf.control_dependencies([check]):
      indices = tf.range(records_read, records_read + size)
    paths = tf.fill([size], path)
    return (bytes_read, records_read + size), (paths, indices, block)

  zero = tf.constant(0, tf.int64)
  return (blocks.concatenate(end).scan((zero, zero), account).unbatch())


def make_dataset(
    file_pattern: Union[str, Sequence[str]],
    schema: schema_lib.Schema,
    batch_size: int,
    *,
    shuffle: bool = True,
    repeat: bool = False,
    with_labels: bool = True,
    input_context: Optional[tf.distribute.InputContext] = None,
    deterministic: bool = False,
    seed: Optional[int] = None,
    shuffle_buffer_size: int = 16384,
    cycle_length: int = 8,
    drop_remainder: bool = True,
    bad_records: Optional[BadRecordCounter] = None,
    transform: Optional[features_lib.FeatureTransform] = None,
) -> tf.data.Dataset:
  """A `tf.data.Dataset` of `(features, labels)` batches.

  Example:

  ```python
  schema = rankup_tf.Schema.load("data/synthetic/schema.json")
  ds = rankup_tf.make_dataset("data/synthetic/train-*.tfrecord", schema,
                              batch_size=4096, repeat=True)
  features, labels = next(iter(ds))
  ```

  Args:
    file_pattern: glob, comma-separated globs, or a list of them. Files
      ending in .gz/.gzip are read as GZIP.
    schema: the dataset's schema.
    batch_size: examples per batch (per replica when `input_context` says so:
      pass the per-replica size from `input_context.get_per_replica_batch_size`).
    shuffle: shuffle file order and records.
    repeat: repeat forever (training with steps per epoch).
    with_labels: parse labels and the user id (False for inference).
    input_context: from `strategy.distribute_datasets_from_function`; files
      are split across input pipelines (workers) so each record is read by
      exactly one of them.
    deterministic: same order every run (for tests and reproducible evals);
      shuffling is then seeded by `seed` (0 when None).
    seed: shuffle seed.
    shuffle_buffer_size: records in the shuffle buffer.
    cycle_length: files read concurrently.
    drop_remainder: drop a last partial batch (keeps batch shapes static).
    bad_records: skip bad records and corrupt-file tails instead of raising,
      counting them here.
    transform: the FeatureTransform to use; one is built from `schema` when
      None.
  Raises:
    FileNotFoundError: no file matches a pattern.
    ValueError: fewer files than input pipelines to shard them across.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  files = list_files(file_pattern)
  if input_context is not None and input_context.num_input_pipelines > 1:
    n = input_context.num_input_pipelines
    if len(files) < n:
      raise ValueError(
          f"{len(files)} file(s) match {file_pattern!r} but there are {n} "
          "input pipelines (workers); write at least as many shards as "
          "workers.")
    files = files[input_context.input_pipeline_id::n]
  if deterministic and seed is None:
    seed = 0
  transform = transform or features_lib.FeatureTransform(schema)

  ds = tf.data.Dataset.from_tensor_slices(
      (files, [compression(f) for f in files],
       tf.constant([_expected_bytes(f) for f in files], tf.int64)))
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  read = tf.autograph.experimental.do_not_convert(
      lambda path, compression, expected: _read_file(
          path, compression, expected, bad_records))
  ds = ds.interleave(
      read,
      cycle_length=min(cycle_length, len(files)),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=deterministic)
  if bad_records is not None:
    ds = _skip_bad_records(ds, transform, with_labels, bad_records)
  if repeat:
    ds = ds.repeat()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer_size, seed=seed,
                    reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  @tf.autograph.experimental.do_not_convert
  def parse(paths, indices, records):
    names = tf.strings.join([paths, tf.strings.as_string(indices)],
                            separator=":")
    features, labels = transform.parse(records, names, with_labels)
    return (features, labels) if with_labels else features

  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  options = tf.data.Options()
  options.deterministic = deterministic
  ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)


def _skip_bad_records(ds, transform, with_labels, bad_records):
  """Drops records that would fail parsing, counting them."""
  @tf.autograph.experimental.do_not_convert
  def validate(path, index, record):
    names = tf.strings.join([path, tf.strings.as_string(index)],
                            separator=":")[tf.newaxis]
    parsed = transform.parse(record[tf.newaxis], names, with_labels)
    with tf.control_dependencies(tf.nest.flatten(parsed,
                                                 expand_composites=True)):
      return path, tf.identity(index), record

  @tf.autograph.experimental.do_not_convert
  def count_seen(*item):
    with tf.control_dependencies([bad_records.records.assign_add(1)]):
      return tf.nest.map_structure(tf.identity, item)

  @tf.autograph.experimental.do_not_convert
  def count_kept(*item):
    with tf.control_dependencies([bad_records.records.assign_sub(1)]):
      return tf.nest.map_structure(tf.identity, item)

  return (ds.map(count_seen).map(validate).ignore_errors().map(count_kept))

