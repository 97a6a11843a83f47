"""What every converter shares: tf.Example encoding, sharded TFRecord
writing, streaming dataset statistics, the output layout, and the command
line (`define_output_flags`, `write_dataset`, `progress_bar`).

A converter hands over rows in columnar chunks: `{name: list}`, one entry per
row, `None` for a missing value, a list for multivalent and pretrained
fields. Memory stays bounded by the chunk size whatever the input size.

Output layout of every converter::

    <output_dir>/train-00000-of-00004.tfrecord[.gz]   (N shards)
    <output_dir>/eval-00000-of-00004.tfrecord[.gz]    (with --eval_fraction)
    <output_dir>/schema.json   (standardized dense fields get mean/std here)
    <output_dir>/stats.json

The folder only ever holds the last successful conversion: shards are
written under hidden temporary names (`.train-...tmp`, which no glob of the
layout matches), deleted if the conversion fails, and published on success,
when the shards of an earlier conversion that the new one did not write
(another --num_shards, an eval split no longer asked for) are removed.
"""

import json
import math
import os
import re
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import flags
from tensorflow.core.example import example_pb2

from rankup_tf import schema as schema_lib

Chunk = Dict[str, List[Any]]


class BadInputError(ValueError):
  """A source row that cannot be converted; the message names where."""


def record_fields(schema: schema_lib.Schema) -> Dict[str, str]:
  """Every feature a record carries, name -> kind, in schema order."""
  kinds = {}
  for f in schema.sparse_features:
    kinds[f.name] = "sparse"
  for f in schema.dense_features:
    kinds[f.name] = "dense"
  for f in schema.pretrained_features:
    kinds[f.name] = "pretrained"
  for t in schema.tasks:
    kinds[t.name] = "label"
    if t.weight is not None:
      kinds[t.weight] = "weight"
  if schema.user_id is not None and schema.user_id.name not in kinds:
    kinds[schema.user_id.name] = "user_id"
  return kinds


class ExampleEncoder:
  """Serializes chunk rows into tf.Example bytes, following a schema."""

  def __init__(self, schema: schema_lib.Schema):
    self._fields = []  # (name, list attribute, is_sequence, is_string)
    kinds = record_fields(schema)
    for name, kind in kinds.items():
      if kind == "sparse":
        f = schema.sparse(name)
        self._fields.append((name, _list_kind(f.dtype), f.multivalent,
                             f.dtype == "string"))
      elif kind == "user_id":
        dtype = schema.user_id.dtype
        self._fields.append((name, _list_kind(dtype), False,
                             dtype == "string"))
      else:
        self._fields.append((name, "float_list", kind == "pretrained", False))

  def encode(self, chunk: Chunk) -> List[bytes]:
    n = _chunk_len(chunk)
    columns = [(name, attr, seq, is_str, chunk[name])
               for name, attr, seq, is_str in self._fields]
    out = []
    for r in range(n):
      example = example_pb2.Example()
      feature = example.features.feature
      for name, attr, seq, is_str, column in columns:
        value = column[r]
        if value is None:
          continue
        target = getattr(feature[name], attr).value
        if seq:
          target.extend([_as_bytes(v) for v in value] if is_str else value)
        else:
          target.append(_as_bytes(value) if is_str else value)
      out.append(example.SerializeToString())
    return out


def _list_kind(dtype: str) -> str:
  return "bytes_list" if dtype == "string" else "int64_list"


def _as_bytes(v) -> bytes:
  return v if isinstance(v, bytes) else str(v).encode("utf-8")


def _chunk_len(chunk: Chunk) -> int:
  lengths = {len(v) for v in chunk.values()}
  if len(lengths) != 1:
    raise ValueError(f"Chunk columns differ in length: {sorted(lengths)}.")
  return lengths.pop()


# Every shard name of the layout, any split and shard count, and the
# temporary names shards are written under.
_SHARD_RE = re.compile(r"(train|eval)-\d{5}-of-\d{5}\.tfrecord(\.gz)?")
_TEMPORARY_RE = re.compile(r"\.(train|eval)-.*\.tmp")


def shard_paths(output_dir: str, prefix: str, num_shards: int,
                compression: str) -> List[str]:
  suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
  return [os.path.join(output_dir, f"{prefix}-{i:05d}-of-{num_shards:05d}"
                       f"{suffix}") for i in range(num_shards)]


def _temporary(path: str) -> str:
  """The hidden name a file is written under before it is published."""
  return os.path.join(os.path.dirname(path),
                      f".{os.path.basename(path)}.tmp")


class ShardedWriter:
  """Writes records round-robin into N TFRecord shards.

  Shards are written under hidden temporary names; `close` renames them into
  place, `abort` deletes them.
  """

  def __init__(self, output_dir: str, prefix: str, num_shards: int,
               compression: str = ""):
    if num_shards <= 0:
      raise ValueError(f"num_shards must be positive, got {num_shards}.")
    if compression not in ("", "GZIP"):
      raise ValueError(f"compression must be '' or 'GZIP', got "
                       f"{compression!r}.")
    tf.io.gfile.makedirs(output_dir)
    self.paths = shard_paths(output_dir, prefix, num_shards, compression)
    options = tf.io.TFRecordOptions(compression_type=compression)
    self._writers = [tf.io.TFRecordWriter(_temporary(p), options)
                     for p in self.paths]
    self._next = 0
    self.rows = 0

  def write(self, records: Sequence[bytes]) -> None:
    writers, n = self._writers, len(self._writers)
    for record in records:
      writers[self._next].write(record)
      self._next = (self._next + 1) % n
    self.rows += len(records)

  def close(self) -> None:
    for writer, path in zip(self._writers, self.paths):
      writer.close()
      tf.io.gfile.rename(_temporary(path), path, overwrite=True)

  def abort(self) -> None:
    for writer, path in zip(self._writers, self.paths):
      writer.close()
      if tf.io.gfile.exists(_temporary(path)):
        tf.io.gfile.remove(_temporary(path))


class HyperLogLog:
  """Distinct-count sketch over 64-bit hashes (2**p registers, ~1.04/sqrt(2**p)
  relative error)."""

  def __init__(self, p: int = 14):
    self.p = p
    self.registers = np.zeros(1 << p, dtype=np.uint8)

  def add_hashes(self, hashes: np.ndarray) -> None:
    if hashes.size == 0:
      return
    hashes = hashes.astype(np.uint64)
    index = (hashes >> np.uint64(64 - self.p)).astype(np.int64)
    rest = hashes << np.uint64(self.p)
    # Rank = position of the first set bit in the remaining 64 - p bits.
    highest = np.where(rest == 0, -1,
                       np.floor(np.log2(np.maximum(rest, 1).astype(
                           np.float64))).astype(np.int64))
    rank = np.where(rest == 0, 64 - self.p + 1, 63 - highest + 1)
    np.maximum.at(self.registers, index, rank.astype(np.uint8))

  def estimate(self) -> int:
    m = float(len(self.registers))
    alpha = 0.7213 / (1 + 1.079 / m)
    raw = alpha * m * m / np.sum(np.power(2.0, -self.registers.astype(float)))
    zeros = int(np.count_nonzero(self.registers == 0))
    if raw <= 2.5 * m and zeros:
      return int(round(m * math.log(m / zeros)))
    return int(round(raw))


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer: spreads integer keys over 64 bits."""
  x = x.astype(np.uint64)
  with np.errstate(over="ignore"):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_values(values: List[Any]) -> np.ndarray:
  """Deterministic 64-bit hashes of ints or strings (stable across runs)."""
  if not values:
    return np.zeros(0, np.uint64)
  if isinstance(values[0], (str, bytes)):
    keys = np.fromiter((zlib.crc32(_as_bytes(v)) for v in values),
                       dtype=np.uint64, count=len(values))
  else:
    keys = np.asarray(values, dtype=np.int64).view(np.uint64)
  return _mix64(keys)


class _Moments:
  """Streaming count/mean/variance/min/max (Chan et al. merge)."""

  def __init__(self):
    self.n, self.mean, self.m2 = 0, 0.0, 0.0
    self.min, self.max = math.inf, -math.inf

  def add(self, x: np.ndarray) -> None:
    if x.size == 0:
      return
    n, mean = x.size, float(x.mean())
    m2 = float(((x - mean) ** 2).sum())
    delta, total = mean - self.mean, self.n + n
    self.mean += delta * n / total
    self.m2 += m2 + delta * delta * self.n * n / total
    self.n = total
    self.min, self.max = min(self.min, float(x.min())), max(self.max,
                                                             float(x.max()))

  def result(self) -> Dict[str, Optional[float]]:
    if self.n == 0:
      return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": self.mean, "std": math.sqrt(self.m2 / self.n),
            "min": self.min, "max": self.max}


class DatasetStats:
  """Streaming statistics of the rows written, per field and task."""

  def __init__(self, schema: schema_lib.Schema):
    self.schema = schema
    self.rows = 0
    self._missing = {n: 0 for n in record_fields(schema)}
    self._sketch = {f.name: HyperLogLog() for f in schema.sparse_features}
    self._truncated = {f.name: 0 for f in schema.sparse_features
                       if f.multivalent}
    self._moments = {f.name: _Moments() for f in schema.dense_features}
    self._positives = {t.name: 0 for t in schema.tasks}

  def add(self, chunk: Chunk) -> None:
    self.rows += _chunk_len(chunk)
    for name in self._missing:
      self._missing[name] += sum(1 for v in chunk[name] if v is None)
    for f in self.schema.sparse_features:
      present = [v for v in chunk[f.name] if v is not None]
      if f.multivalent:
        self._truncated[f.name] += sum(1 for v in present
                                       if len(v) > f.max_length)
        present = [x for v in present for x in v]
      self._sketch[f.name].add_hashes(hash_values(present))
    for f in self.schema.dense_features:
      self._moments[f.name].add(np.asarray(
          [v for v in chunk[f.name] if v is not None], dtype=np.float64))
    for t in self.schema.tasks:
      self._positives[t.name] += int(sum(chunk[t.name]))

  def result(self) -> Dict[str, Any]:
    rows = max(self.rows, 1)
    missing_rate = {n: c / rows for n, c in self._missing.items()}
    sparse = {}
    for f in self.schema.sparse_features:
      sparse[f.name] = {"distinct_estimate": self._sketch[f.name].estimate(),
                        "missing_rate": missing_rate[f.name]}
      if f.multivalent:
        sparse[f.name]["rows_over_max_length"] = self._truncated[f.name]
    dense = {f.name: dict(self._moments[f.name].result(),
                          missing_rate=missing_rate[f.name])
             for f in self.schema.dense_features}
    return {
        "rows": self.rows,
        "label_rates": {t: p / rows for t, p in self._positives.items()},
        "positives": dict(self._positives),
        "sparse": sparse,
        "dense": dense,
        "pretrained": {f.name: {"missing_rate": missing_rate[f.name]}
                       for f in self.schema.pretrained_features},
    }


class DatasetWriter:
  """Train/eval shard writers plus the stats of the training split.

  Use it as a context manager: leaving the block by an exception before
  `close` deletes what was written, so a failed conversion leaves the
  output folder as it was.

  ```python
  with DatasetWriter(schema, "/tmp/out", num_shards=4) as writer:
    writer.add(chunk)
    stats = writer.close()
  ```
  """

  def __init__(self, schema: schema_lib.Schema, output_dir: str,
               num_shards: int, compression: str = "",
               eval_fraction: float = 0.0, num_eval_shards: int = 0,
               seed: int = 0, separate_eval: bool = False):
    """`separate_eval`: the eval split is what `add(chunk, "eval")` gets
    (a separate file), not a random `eval_fraction` of the rows."""
    if not 0.0 <= eval_fraction < 1.0:
      raise ValueError(f"eval_fraction must be in [0, 1), got "
                       f"{eval_fraction}.")
    if separate_eval and eval_fraction > 0:
      raise ValueError("A separate eval input and eval_fraction > 0 both "
                       "choose the eval rows: use one.")
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
      raise ValueError(f"output_dir {output_dir} is a file, expected a "
                       "folder.")
    self.schema = schema
    self.output_dir = output_dir
    self.encoder = ExampleEncoder(schema)
    self.train = ShardedWriter(output_dir, "train", num_shards, compression)
    self.eval = (ShardedWriter(output_dir, "eval",
                               num_eval_shards or num_shards, compression)
                 if eval_fraction > 0 or separate_eval else None)
    self.eval_fraction = eval_fraction
    self.train_stats = DatasetStats(schema)
    self.eval_stats = DatasetStats(schema)
    self._rng = np.random.default_rng(seed)
    self._closed = False

  def __enter__(self) -> "DatasetWriter":
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    if not self._closed:
      self.abort()

  def add(self, chunk: Chunk, split: str = "") -> None:
    """Writes rows to `split` ('train' or 'eval'); '' splits them at random
    by eval_fraction."""
    if split not in ("", "train", "eval"):
      raise ValueError(f"split {split!r} is not 'train', 'eval' or ''.")
    if split == "eval":
      if self.eval is None:
        raise ValueError("add(chunk, 'eval') needs separate_eval=True.")
      parts = [(chunk, self.eval, self.eval_stats)]
    elif split == "train" or not self.eval_fraction:
      parts = [(chunk, self.train, self.train_stats)]
    else:
      to_eval = self._rng.random(_chunk_len(chunk)) < self.eval_fraction
      parts = [(_select(chunk, ~to_eval), self.train, self.train_stats),
               (_select(chunk, to_eval), self.eval, self.eval_stats)]
    for part, writer, stats in parts:
      stats.add(part)
      writer.write(self.encoder.encode(part))

  @property
  def rows(self) -> int:
    """Rows added so far, both splits."""
    return self.train_stats.rows + self.eval_stats.rows

  def abort(self) -> None:
    """Deletes the temporary shards; the output folder is left as it was."""
    self._closed = True
    for writer in (self.train, self.eval):
      if writer is not None:
        writer.abort()

  def close(self, extra_stats: Optional[Dict[str, Any]] = None
            ) -> Dict[str, Any]:
    """Publishes the shards, schema.json and stats.json; returns the stats.

    Shards of an earlier conversion that this one did not write are removed.
    """
    self._closed = True
    self.train.close()
    stats = {"train": self.train_stats.result(),
             "train_files": [os.path.basename(p) for p in self.train.paths]}
    written = set(self.train.paths)
    if self.eval is not None:
      self.eval.close()
      stats["eval"] = self.eval_stats.result()
      stats["eval_files"] = [os.path.basename(p) for p in self.eval.paths]
      written |= set(self.eval.paths)
    for name in tf.io.gfile.listdir(self.output_dir):
      path = os.path.join(self.output_dir, name)
      if ((_SHARD_RE.fullmatch(name) and path not in written)
          or _TEMPORARY_RE.fullmatch(name)):
        tf.io.gfile.remove(path)
    stats.update(extra_stats or {})
    schema = self.schema.with_dense_stats(
        {n: s for n, s in stats["train"]["dense"].items()
         if s["mean"] is not None})
    schema_path = os.path.join(self.output_dir, "schema.json")
    schema.save(_temporary(schema_path))
    tf.io.gfile.rename(_temporary(schema_path), schema_path, overwrite=True)
    stats_path = os.path.join(self.output_dir, "stats.json")
    with tf.io.gfile.GFile(_temporary(stats_path), "w") as f:
      # Strict JSON: a NaN here would be a bug upstream, not a value.
      f.write(json.dumps(stats, indent=2, sort_keys=True, allow_nan=False)
              + "\n")
    tf.io.gfile.rename(_temporary(stats_path), stats_path, overwrite=True)
    return stats


def _select(chunk: Chunk, mask: np.ndarray) -> Chunk:
  index = np.flatnonzero(mask)
  return {k: [v[i] for i in index] for k, v in chunk.items()}


# -- the command line every converter shares ---------------------------------
FLAGS = flags.FLAGS


def progress_bar(total: int, description: str, unit: str = "B"):
  """A progress bar on stderr (tqdm), off when stderr is not a terminal
  (logs and captured output get the result line, not bar redraws)."""
  from tqdm import tqdm
  return tqdm(total=total, unit=unit, unit_scale=True, desc=description,
              mininterval=1.0, dynamic_ncols=True, disable=None)


def define_output_flags():
  """Flags every converter shares."""
  flags.DEFINE_string("output_dir", None, "Where shards, schema.json and "
                      "stats.json go.")
  flags.DEFINE_integer("num_shards", 4, "Training TFRecord shards to write.")
  flags.DEFINE_float("eval_fraction", 0.0, "Fraction of rows written to "
                     "eval-* shards instead (deterministic by --seed).")
  flags.DEFINE_string("eval_input", "", "A separate file, in --input's "
                      "format, converted as the eval split (eval-* shards; "
                      "e.g. a later time range); not with --eval_fraction.")
  flags.DEFINE_integer("num_eval_shards", 0, "Eval shards (0: --num_shards).")
  flags.DEFINE_boolean("gzip", False, "Write GZIP-compressed shards.")
  flags.DEFINE_integer("seed", 0, "Seed of the train/eval split.")
  flags.DEFINE_boolean("skip_bad_rows", False, "Skip and count rows that "
                       "cannot be converted instead of stopping.")
  flags.mark_flag_as_required("output_dir")


def write_dataset(
    schema: schema_lib.Schema,
    convert: Callable[[DatasetWriter, str, str], Dict[str, Any]]
) -> None:
  """Runs `convert(writer, path, split)` on --input (split '': by
  --eval_fraction) and on --eval_input (split 'eval'; its counts go to
  stats.json as eval_<count>) into --output_dir, publishes the result and
  prints the counts; a failure leaves --output_dir as it was."""
  if FLAGS.eval_input and FLAGS.eval_fraction > 0:
    raise ValueError("--eval_input and --eval_fraction both choose the eval "
                     "rows: set one (--eval_fraction=0 with --eval_input).")
  with DatasetWriter(
      schema, FLAGS.output_dir, FLAGS.num_shards,
      compression="GZIP" if FLAGS.gzip else "",
      eval_fraction=FLAGS.eval_fraction,
      num_eval_shards=FLAGS.num_eval_shards, seed=FLAGS.seed,
      separate_eval=bool(FLAGS.eval_input)) as writer:
    counts = convert(writer, FLAGS.input, "")
    if FLAGS.eval_input:
      counts.update({f"eval_{k}": v for k, v in
                     convert(writer, FLAGS.eval_input, "eval").items()})
    stats = writer.close(counts)
  split_rows = ", ".join(f"{s}: {stats[s]['rows']} rows"
                         for s in ("train", "eval") if s in stats)
  skipped = f"skipped bad rows: {stats.get('skipped_rows', 0)}"
  if FLAGS.eval_input:
    skipped += f", of --eval_input: {stats['eval_skipped_rows']}"
  print(f"Wrote {split_rows} to {FLAGS.output_dir} ({skipped}).")
