"""Parsing and preprocessing of raw features into model inputs.

One `FeatureTransform` is used by the training input pipeline (inside
`tf.data`) and by the exported serving signatures, so training and serving
see the same ids and normalized values. Every op is a core TensorFlow op.

Model inputs (`features` dict) per schema field:

* sparse, single-valued: int64 ids, shape [B]; id 0 means missing, id 1
  out-of-vocabulary or (with `min_count`) rare;
* sparse, multivalent: int64 `tf.RaggedTensor` [B, (<= max_length)];
* dense: float32 [B], missing values replaced by the default, normalized;
* pretrained: float32 [B, dim];

NaN or infinity in a dense or pretrained value is an error naming the
feature and the record, in training, evaluation and serving alike (the
converters refuse such cells too): a missing value is an absent feature.
* `schema.USER_ID_KEY`: the raw user id [B] (int64 or string), when the
  schema has a user_id and labels are parsed.

Labels (`labels` dict): float32 [B] per task, and float32 [B] under
`task + schema.WEIGHT_SUFFIX` for tasks with an example-weight feature.
"""

from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from rankup_tf import schema as schema_lib

# What stands for "no value" in the padded tensors of `predict_raw`-style
# inputs (tf.Example input has real absence instead).
RAW_MISSING = {"string": "", "int64": -1}
_TF_DTYPES = {"string": tf.string, "int64": tf.int64}

Features = Dict[str, tf.Tensor]


def tf_dtype(dtype_name: str) -> tf.DType:
  return _TF_DTYPES[dtype_name]


def parse_spec(schema: schema_lib.Schema, with_labels: bool) -> Dict:
  """The `tf.io.parse_example` spec for a schema's tf.Example records."""
  spec = {}
  for f in schema.sparse_features:
    spec[f.name] = tf.io.RaggedFeature(tf_dtype(f.dtype),
                                       row_splits_dtype=tf.int64)
  for f in schema.dense_features:
    spec[f.name] = tf.io.FixedLenFeature([], tf.float32,
                                         default_value=float(f.default))
  for f in schema.pretrained_features:
    spec[f.name] = tf.io.FixedLenFeature([f.dim], tf.float32)
  if with_labels:
    for t in schema.tasks:
      spec[t.name] = tf.io.FixedLenFeature([], tf.float32)
      if t.weight is not None:
        spec[t.weight] = tf.io.FixedLenFeature([], tf.float32)
    uid = schema.user_id
    if uid is not None and uid.name not in spec:
      spec[uid.name] = tf.io.RaggedFeature(tf_dtype(uid.dtype),
                                           row_splits_dtype=tf.int64)
  return spec


class FeatureTransform(tf.Module):
  """Turns serialized tf.Examples or raw tensors into model inputs.

  Example:

  ```python
  transform = FeatureTransform(schema)
  features, labels = transform.parse(serialized_batch)        # training
  features, _ = transform.parse(serialized_batch, with_labels=False)
  ```
  """

  def __init__(self, schema: schema_lib.Schema, name: str = "features"):
    super().__init__(name=name)
    self.schema = schema
    self._vocab_tables = {}
    self._frequent_tables = {}
    # Hand-built tables, not tf.keras.layers.StringLookup/IntegerLookup:
    # those take a vocabulary that starts with their OOV token ("[UNK]", -1)
    # as OOV and shift every later index by one, and they wrap the same
    # StaticHashTable (same ops, speed within noise on a 4096-row batch,
    # 12 KB more saved_model.pb).
    for f in schema.sparse_features:
      if f.vocabulary is not None:
        keys = tf.constant(list(f.vocabulary), dtype=tf_dtype(f.dtype))
        ids = tf.range(len(f.vocabulary), dtype=tf.int64) + f.first_value_id
        self._vocab_tables[f.name] = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, ids),
            default_value=schema_lib.OOV_ID, name=f"{f.name}_vocabulary")
      if f.filters_rare_ids:
        if f.frequent_values is None:
          raise schema_lib.SchemaError(
              f"sparse feature {f.name!r}: min_count {f.min_count} needs its "
              "frequent_values; the trainer counts them over the training "
              "files (rankup_tf.id_counts.with_frequent_values).")
        # A lookup table cannot be empty: None when no value is frequent
        # (every value then maps to the OOV row).
        self._frequent_tables[f.name] = None
        if f.frequent_values:
          keys = tf.constant(list(f.frequent_values),
                             dtype=tf_dtype(f.dtype))
          self._frequent_tables[f.name] = tf.lookup.StaticHashTable(
              tf.lookup.KeyValueTensorInitializer(
                  keys, tf.ones_like(keys, dtype=tf.int64)),
              default_value=0, name=f"{f.name}_frequent_values")

  # -- entry points ---------------------------------------------------------
  def parse(self, serialized: tf.Tensor, names: Optional[tf.Tensor] = None,
            with_labels: bool = True) -> Tuple[Features, Features]:
    """Parses a [B] batch of serialized tf.Example.

    Args:
      serialized: string [B].
      names: optional string [B] naming each record (e.g. "file:index");
        TensorFlow's parse errors and this transform's checks quote it.
      with_labels: parse task labels, weights and the user id (training and
        evaluation) or not (serving).
    Returns:
      (features, labels); labels is empty when with_labels is False.
    """
    raw = tf.io.parse_example(serialized, parse_spec(self.schema, with_labels),
                              example_names=names)
    return self.transform(raw, names, with_labels)

  def transform_padded(self, raw: Features) -> Features:
    """Model inputs from dense raw tensors (the `predict_raw` signature).

    Sparse fields come as [B] (single-valued) or [B, max_length]
    (multivalent) tensors padded with `RAW_MISSING[dtype]`.
    """
    ragged = dict(raw)
    for f in self.schema.sparse_features:
      values = raw[f.name]
      if not f.multivalent:
        values = values[:, tf.newaxis]
      ragged[f.name] = _drop_marker(values, RAW_MISSING[f.dtype])
    features, _ = self.transform(ragged, names=None, with_labels=False)
    return features

  # -- the shared transform -------------------------------------------------
  def transform(self, raw: Features, names: Optional[tf.Tensor],
                with_labels: bool) -> Tuple[Features, Features]:
    schema = self.schema
    # One check over all single-valued fields, and one over all dense
    # fields, rather than one per field: the same messages from a fraction
    # of the ops (tracing them was about half of building a pipeline).
    single = [f.name for f in schema.sparse_features if not f.multivalent]
    checks = [_assert_at_most_one(raw, single, names)] if single else []
    features = {}
    for f in schema.sparse_features:
      values = raw[f.name]
      if f.multivalent:
        # max_length is part of the field's definition: the first values
        # are kept (documented in the schema, counted by the converters).
        values = values[:, :f.max_length]
        features[f.name] = tf.ragged.map_flat_values(self._ids, f, values)
      else:
        ids = tf.ragged.map_flat_values(self._ids, f, values)
        features[f.name] = tf.squeeze(
            ids.to_tensor(default_value=schema_lib.MISSING_ID, shape=[None, 1]),
            axis=1)
    dense = {f.name: tf.cast(raw[f.name], tf.float32)
             for f in schema.dense_features}
    if dense:
      checks.append(_assert_dense_finite(dense, names))
    for f in schema.dense_features:
      features[f.name] = _normalize(dense[f.name], f)
    for f in schema.pretrained_features:
      value = tf.cast(raw[f.name], tf.float32)
      checks.append(_assert_vector_finite(value, f.name, names))
      features[f.name] = value
    labels = {}
    if with_labels:
      for t in schema.tasks:
        label = raw[t.name]
        checks.append(_assert_binary(label, t.name, names))
        labels[t.name] = label
        if t.weight is not None:
          labels[t.name + schema_lib.WEIGHT_SUFFIX] = raw[t.weight]
      if schema.user_id is not None:
        uid = raw[schema.user_id.name]
        checks.append(_assert_exactly_one(uid, schema.user_id.name, names))
        features[schema_lib.USER_ID_KEY] = tf.squeeze(
            uid.to_tensor(shape=[None, 1]), axis=1)
    with tf.control_dependencies(checks):
      features = {k: tf.identity(v) if isinstance(v, tf.Tensor) else v
                  for k, v in features.items()}
      labels = {k: tf.identity(v) for k, v in labels.items()}
    return features, labels

  def _ids(self, f: schema_lib.SparseFeature, values: tf.Tensor) -> tf.Tensor:
    if f.vocabulary is not None:
      ids = self._vocab_tables[f.name].lookup(values)
    else:
      text = (values if values.dtype == tf.string
              else tf.strings.as_string(values))
      ids = (tf.strings.to_hash_bucket_fast(text, f.hash_buckets)
             + f.first_value_id)
    if f.name in self._frequent_tables:
      table = self._frequent_tables[f.name]
      frequent = (table.lookup(values) > 0 if table is not None
                  else tf.zeros_like(ids, dtype=tf.bool))
      ids = tf.where(frequent, ids, tf.constant(schema_lib.OOV_ID, tf.int64))
    return ids


def _normalize(x: tf.Tensor, f: schema_lib.DenseFeature) -> tf.Tensor:
  if f.normalization == "log1p":
    return tf.sign(x) * tf.math.log1p(tf.abs(x))
  if f.normalization == "standardize":
    return (x - f.mean) / f.std
  return x


def _drop_marker(values: tf.Tensor, marker) -> tf.RaggedTensor:
  keep = tf.not_equal(values, tf.constant(marker, dtype=values.dtype))
  return tf.ragged.boolean_mask(values, keep).with_row_splits_dtype(tf.int64)


def message(*parts) -> tf.Tensor:
  """A scalar string tensor from Python strings and scalar tensors.

  (`tf.strings.format` would quote string tensors; error messages should
  show a path exactly as the user wrote it.)
  """
  pieces = []
  for part in parts:
    if isinstance(part, str):
      pieces.append(part)
    elif part.dtype == tf.string:
      pieces.append(part)
    else:
      pieces.append(tf.strings.as_string(part))
  return tf.strings.join(pieces)


def _record_name(names: Optional[tf.Tensor], bad: tf.Tensor) -> tf.Tensor:
  index = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
  return _name_of(names, index)


def _name_of(names: Optional[tf.Tensor], index: tf.Tensor) -> tf.Tensor:
  if names is None:
    return message("#", index, " of the batch")
  return tf.gather(names, index)


def _first_bad_cell(bad: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """(record, field) of the first True of a [B, F] matrix, row by row."""
  flat = tf.argmax(tf.cast(tf.reshape(bad, [-1]), tf.int32),
                   output_type=tf.int32)
  fields = tf.shape(bad, out_type=tf.int32)[1]
  return flat // fields, flat % fields


def _assert_at_most_one(raw: Features, fields: List[str], names):
  """Every record holds at most one value of each of `fields`."""
  splits = tf.stack([raw[n].row_splits for n in fields], axis=1)
  lengths = splits[1:] - splits[:-1]  # [B, F]
  bad = lengths > 1
  record, field = _first_bad_cell(bad)
  return tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [message("Feature ", tf.gather(tf.constant(fields), field),
               " is single-valued but record ", _name_of(names, record),
               " holds ", lengths[record, field], " values (declare it "
               "multivalent in the schema if that is intended).")],
      name="check_single_valued")


def _assert_exactly_one(values: tf.RaggedTensor, name: str, names):
  bad = tf.not_equal(values.row_lengths(), 1)
  return tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [message(f"User-id feature {name} must hold exactly one value; "
               "record ", _record_name(names, bad), " does not.")],
      name=f"check_{name}_user_id")


def _assert_vector_finite(value: tf.Tensor, name: str, names):
  """Every value of a pretrained vector [B, dim] is finite. NaN and infinity
  are rejected, never learned from or served: a missing value is an absent
  feature, which gets the schema's default."""
  finite = tf.reduce_all(tf.math.is_finite(value), axis=1)
  record = tf.argmax(tf.cast(tf.logical_not(finite), tf.int32),
                     output_type=tf.int32)
  shown = tf.strings.reduce_join(tf.strings.as_string(
      tf.gather(value, record)), separator=" ")
  return tf.debugging.Assert(
      tf.reduce_all(finite),
      [message(f"Feature {name} must be finite; record ",
               _name_of(names, record), " has [", shown,
               "] (leave a missing value out: it gets the default).")],
      name=f"check_{name}_finite")


def _assert_dense_finite(dense: Features, names):
  """Every dense field of every record is finite (as
  `_assert_vector_finite`)."""
  fields = list(dense)
  values = tf.stack([dense[n] for n in fields], axis=1)
  bad = tf.logical_not(tf.math.is_finite(values))
  record, field = _first_bad_cell(bad)
  return tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [message("Feature ", tf.gather(tf.constant(fields), field),
               " must be finite; record ", _name_of(names, record), " has ",
               values[record, field], " (leave a missing value out: it gets "
               "the default).")],
      name="check_dense_finite")


def _assert_binary(label: tf.Tensor, name: str, names):
  bad = tf.logical_and(tf.not_equal(label, 0.0), tf.not_equal(label, 1.0))
  return tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [message(f"Label {name} must be 0 or 1; record ",
               _record_name(names, bad), " has ",
               tf.gather(label, tf.argmax(tf.cast(bad, tf.int32))), ".")],
      name=f"check_{name}_binary")


def placeholder_features(schema: schema_lib.Schema,
                         batch_size: int = 1) -> Features:
  """Valid model inputs of a batch size (all-missing ids, zero floats).

  For building a model's variables and for tracing it (FLOP counts).
  """
  features = {}
  for f in schema.sparse_features:
    ids = tf.fill([batch_size], tf.constant(schema_lib.MISSING_ID, tf.int64))
    features[f.name] = (tf.RaggedTensor.from_tensor(ids[:, tf.newaxis])
                        .with_row_splits_dtype(tf.int64)
                        if f.multivalent else ids)
  for f in schema.dense_features:
    features[f.name] = tf.zeros([batch_size])
  for f in schema.pretrained_features:
    features[f.name] = tf.zeros([batch_size, f.dim])
  return features


def padded_raw_features(schema: schema_lib.Schema,
                        serialized) -> Dict[str, tf.Tensor]:
  """Serialized tf.Examples -> the padded raw tensors `predict_raw` takes.

  The inverse of what `FeatureTransform.transform_padded` reads: sparse
  fields [B] or [B, max_length] with `RAW_MISSING[dtype]` for no value,
  dense fields [B] (defaults applied), pretrained vectors [B, dim]. For
  clients and warmup requests built from real examples.
  """
  raw = tf.io.parse_example(serialized, parse_spec(schema, with_labels=False))
  padded = {}
  for f in schema.sparse_features:
    width = f.max_length if f.multivalent else 1
    values = raw[f.name][:, :width].to_tensor(
        default_value=RAW_MISSING[f.dtype], shape=[None, width])
    padded[f.name] = values if f.multivalent else values[:, 0]
  for name in schema.dense_names + schema.pretrained_names:
    padded[name] = raw[name]
  return padded


def raw_input_specs(schema: schema_lib.Schema) -> Dict[str, tf.TensorSpec]:
  """TensorSpecs of the padded raw inputs, named as in the schema."""
  specs = {}
  for f in schema.sparse_features:
    shape = [None, f.max_length] if f.multivalent else [None]
    specs[f.name] = tf.TensorSpec(shape, tf_dtype(f.dtype), name=f.name)
  for f in schema.dense_features:
    specs[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
  for f in schema.pretrained_features:
    specs[f.name] = tf.TensorSpec([None, f.dim], tf.float32, name=f.name)
  return specs
