"""Rare and unseen ids: count sparse values over the training data and keep
the frequent ones (the schema's `min_count` and `frequent_values`).

A value seen only once or twice in training gets an embedding row (or a
share of a hash bucket) fitted to those few labels, and a value never seen
reads a row that training left at its random start (or one fitted to other
values that happen to hash there): both are noise at serving time. With a
minimum count, every such value maps to the field's OOV row instead, one
row trained by all the rare values together, so a rare or new value gets
the average behaviour of rare values.

Example:

```python
schema = rankup_tf.Schema.load("data/criteo/schema.json")
schema, report = id_counts.with_frequent_values(
    schema, "data/criteo/train-*", default_min_count=5)
# schema: every sparse field with min_count 5 and its frequent_values.
```

Hashed fields keep hashing: a frequent value goes to its bucket as before
(and still shares it with the other frequent values that hash there); only
values below the count leave their buckets for the OOV row, so the buckets
no frequent value hashes to are never read. Without a minimum count those
rows keep their initial values, which `ModelConfig.embedding_init_scale`
can shrink (0: zeros).

Counting is one pass over the training files, all of them on every worker
that calls it (every process must map ids alike). It holds every distinct
value of the counted fields with its count in memory.
"""

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib

# Per-batch unique values buffered before they are merged into the totals.
_MERGE_EVERY = 1 << 20


class _ValueCounts:
  """Exact counts of the values of one field, merged in numpy."""

  def __init__(self):
    self._values: List[np.ndarray] = []
    self._counts: List[np.ndarray] = []
    self._buffered = 0

  def add(self, values: np.ndarray) -> None:
    if values.size == 0:
      return
    unique, counts = np.unique(values, return_counts=True)
    self._values.append(unique)
    self._counts.append(counts)
    self._buffered += unique.size
    if self._buffered > _MERGE_EVERY:
      self._merge()

  def _merge(self) -> None:
    if len(self._values) > 1:
      unique, inverse = np.unique(np.concatenate(self._values),
                                  return_inverse=True)
      counts = np.bincount(inverse.reshape(-1),
                           weights=np.concatenate(self._counts))
      self._values, self._counts = [unique], [counts.astype(np.int64)]
    self._buffered = 0

  def result(self) -> Tuple[np.ndarray, np.ndarray]:
    """(values, counts), most frequent first, ties by value."""
    self._merge()
    if not self._values:
      return np.zeros(0, object), np.zeros(0, np.int64)
    values, counts = self._values[0], self._counts[0]
    # np.unique sorted the values, so a stable sort keeps ties in order.
    order = np.argsort(-counts, kind="stable")
    return values[order], counts[order]


class _RawValues:
  """A stand-in for `FeatureTransform` in `make_dataset`: the flat values
  of the counted fields as the model would see them (multivalent fields cut
  at max_length), not their ids."""

  def __init__(self, fields: List[schema_lib.SparseFeature]):
    self._fields = fields

  def parse(self, serialized, names=None, with_labels=False):
    del with_labels
    spec = {f.name: tf.io.RaggedFeature(
        tf.string if f.dtype == "string" else tf.int64,
        row_splits_dtype=tf.int64) for f in self._fields}
    raw = tf.io.parse_example(serialized, spec, example_names=names)
    values = {f.name: (raw[f.name][:, :f.max_length] if f.multivalent
                       else raw[f.name]).flat_values for f in self._fields}
    return values, {}


def count_values(file_pattern: str, schema: schema_lib.Schema,
                 names: List[str], batch_size: int = 4096,
                 skip_bad_records: bool = False
                 ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{field: (values, counts)} of sparse fields `names` over the files.

  Values are bytes for string fields, ints for int64 ones; most frequent
  first. The files are read as `make_dataset` reads them: a corrupt file or
  a bad record fails naming it, or is skipped with `skip_bad_records`.
  """
  fields = [schema.sparse(n) for n in names]
  dataset = input_pipeline.make_dataset(
      file_pattern, schema, batch_size, shuffle=False, with_labels=False,
      drop_remainder=False, transform=_RawValues(fields),
      bad_records=(input_pipeline.BadRecordCounter() if skip_bad_records
                   else None))
  counts = {n: _ValueCounts() for n in names}
  for batch in dataset.as_numpy_iterator():
    for name, values in batch.items():
      counts[name].add(values)
  return {n: c.result() for n, c in counts.items()}


def with_frequent_values(schema: schema_lib.Schema, file_pattern: str,
                         default_min_count: int = 0,
                         skip_bad_records: bool = False
                         ) -> Tuple[schema_lib.Schema, Dict[str, Dict]]:
  """The schema with `frequent_values` for every field that filters rare ids.

  A field's threshold is its own `min_count` when the schema sets one (0
  turns it off for that field), else `default_min_count`. Fields that
  already list their frequent_values keep them (e.g. counted over a longer
  window than the training files). Nothing is read when no field needs
  counting, and the schema comes back unchanged.

  Returns:
    (schema, report): report is {field: {"min_count", "distinct", "kept",
    "rare_share"}} for the counted fields, rare_share being the fraction of
    the training values that map to the OOV row.
  Raises:
    SchemaError: a threshold that is not 0 or >= 2, naming the field.
  """
  schema_lib.check_min_count(default_min_count, "min_id_count")
  thresholds = {}
  for f in schema.sparse_features:
    threshold = f.min_count if f.min_count is not None else default_min_count
    if threshold >= 2 and f.frequent_values is None:
      thresholds[f.name] = threshold
  if not thresholds:
    return schema, {}
  counted = count_values(file_pattern, schema, list(thresholds),
                         skip_bad_records=skip_bad_records)
  fields, report = [], {}
  for f in schema.sparse_features:
    if f.name in thresholds:
      threshold = thresholds[f.name]
      values, counts = counted[f.name]
      keep = counts >= threshold
      frequent = tuple(_json_value(v, f) for v in values[keep])
      if f.vocabulary is not None:  # other values are OOV anyway
        vocabulary = set(f.vocabulary)
        frequent = tuple(v for v in frequent if v in vocabulary)
      total = int(counts.sum())
      report[f.name] = {
          "min_count": threshold, "distinct": int(values.size),
          "kept": len(frequent),
          "rare_share": (float(counts[~keep].sum()) / total if total
                         else 0.0)}
      f = dataclasses.replace(f, min_count=threshold,
                              frequent_values=frequent)
    fields.append(f)
  return dataclasses.replace(schema, sparse_features=tuple(fields)), report


def _json_value(value, f: schema_lib.SparseFeature):
  """A counted value as the schema's JSON holds it (str or int)."""
  if f.dtype == "int64":
    return int(value)
  try:
    return value.decode("utf-8")
  except UnicodeDecodeError:
    raise schema_lib.SchemaError(
        f"sparse feature {f.name!r}: value {value!r} is not UTF-8 text, so "
        "the schema cannot list it; min_count needs UTF-8 string values."
    ) from None
