"""make_dataset: shapes and dtypes per feature kind, sharding, bad input."""

import os

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib
from tests import tfexamples


@pytest.fixture(scope="module")
def schema():
  return tfexamples.all_kinds_schema()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
  folder = tmp_path_factory.mktemp("good")
  paths = []
  for shard in range(4):
    rows = [tfexamples.example(tfexamples.all_kinds_row(i))
            for i in range(shard, 40, 4)]
    compression = "GZIP" if shard == 3 else ""
    suffix = ".tfrecord.gz" if compression else ".tfrecord"
    paths.append(tfexamples.write_records(
        str(folder / f"part-{shard}{suffix}"), rows, compression))
  return str(folder / "part-*")


def _all(ds):
  return list(ds.as_numpy_iterator())


def test_shapes_and_dtypes_for_every_feature_kind(schema, good_files):
  ds = rankup_tf.make_dataset(good_files, schema, batch_size=8,
                              deterministic=True)
  features, labels = next(iter(ds))
  assert features["s_hash"].dtype == tf.int64
  assert features["s_hash"].shape == [8]
  assert features["i_vocab"].shape == [8]
  assert isinstance(features["tags"], tf.RaggedTensor)
  assert features["tags"].shape[0] == 8
  assert max(features["tags"].row_lengths().numpy()) <= 3  # max_length
  for name in ("d_log", "d_std", "d_raw"):
    assert features[name].dtype == tf.float32 and features[name].shape == [8]
  assert features["u_vec"].shape == [8, 4]
  assert features[schema_lib.USER_ID_KEY].dtype == tf.int64
  assert set(labels) == {"click", "buy", "buy" + schema_lib.WEIGHT_SUFFIX}
  assert all(v.dtype == tf.float32 and v.shape == [8]
             for v in labels.values())
  # Ids stay inside each table and values are transformed as documented.
  for f in schema.sparse_features:
    ids = features[f.name]
    ids = ids.flat_values if isinstance(ids, tf.RaggedTensor) else ids
    assert np.all((ids.numpy() >= 0) & (ids.numpy() < f.table_size))


def test_values_follow_the_schema(schema, good_files):
  ds = rankup_tf.make_dataset(good_files, schema, batch_size=40,
                              shuffle=False, deterministic=True)
  features, labels = next(iter(ds))
  uid = features[schema_lib.USER_ID_KEY].numpy()
  rows = [tfexamples.all_kinds_row(i) for i in uid]
  d_log = np.array([r["d_log"] for r in rows])
  np.testing.assert_allclose(features["d_log"].numpy(),
                             np.sign(d_log) * np.log1p(np.abs(d_log)),
                             rtol=1e-6)
  np.testing.assert_allclose(features["d_std"].numpy(),
                             (np.array([r["d_std"] for r in rows]) - 2) / 4)
  np.testing.assert_allclose(features["d_raw"].numpy(), -1.0)  # default
  vocab_ids = {"x": 2, "y": 3, "z": 4, "w": schema_lib.OOV_ID}
  assert features["s_vocab"].numpy().tolist() == [
      vocab_ids[r["s_vocab"]] for r in rows]
  assert features["i_vocab"].numpy().tolist() == [
      {7: 2, 8: 3, 9: 1}[r["i_vocab"]] for r in rows]
  assert features["tags"].row_lengths().numpy().tolist() == [
      min(len(r["tags"]), 3) for r in rows]
  np.testing.assert_array_equal(labels["click"].numpy(),
                                [r["click"] for r in rows])


@pytest.mark.parametrize("dtype,vocabulary,other", [
    ("string", ["[UNK]", "", "a"], "b"), ("int64", [-1, 0, 5], 6)])
def test_keras_lookup_tokens_are_plain_vocabulary_values(dtype, vocabulary,
                                                         other):
  """Values the Keras lookup layers reserve ("[UNK]", -1 first) map like
  any: first_value_id + index, anything else OOV_ID."""
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "v", "dtype": dtype,
                           "vocabulary": vocabulary}],
      "tasks": [{"name": "click"}]})
  transform = rankup_tf.features.FeatureTransform(schema)
  values = tf.constant([[v] for v in vocabulary + [other]],
                       dtype=tf.string if dtype == "string" else tf.int64)
  raw = {"v": tf.RaggedTensor.from_tensor(values).with_row_splits_dtype(
      tf.int64)}
  ids, _ = transform.transform(raw, None, with_labels=False)
  assert ids["v"].numpy().tolist() == [2, 3, 4, schema_lib.OOV_ID]


def test_missing_single_value_maps_to_missing_id(schema, tmp_path):
  row = tfexamples.all_kinds_row(1)
  del row["s_hash"]
  path = tfexamples.write_records(str(tmp_path / "m.tfrecord"),
                                  [tfexamples.example(row)])
  features, _ = next(iter(rankup_tf.make_dataset(path, schema, 1)))
  assert features["s_hash"].numpy().tolist() == [schema_lib.MISSING_ID]


def test_two_workers_cover_every_record_exactly_once(schema, good_files):
  seen = []
  for worker in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=worker,
                                         num_replicas_in_sync=2)
    ds = rankup_tf.make_dataset(good_files, schema, batch_size=1,
                                input_context=context, deterministic=True)
    seen.append([int(f[schema_lib.USER_ID_KEY][0]) for f, _ in _all(ds)])
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(40))


def test_deterministic_mode_repeats_the_same_order(schema, good_files):
  def order():
    ds = rankup_tf.make_dataset(good_files, schema, batch_size=5,
                                deterministic=True, seed=3)
    return [f[schema_lib.USER_ID_KEY].tolist() for f, _ in _all(ds)]
  assert order() == order()


def test_no_matching_files_and_too_few_shards(schema, tmp_path, good_files):
  with pytest.raises(FileNotFoundError, match="No files match"):
    rankup_tf.make_dataset(str(tmp_path / "nothing-*"), schema, 4)
  context = tf.distribute.InputContext(num_input_pipelines=8,
                                       input_pipeline_id=0)
  with pytest.raises(ValueError, match="4 file.* 8 input pipelines"):
    rankup_tf.make_dataset(good_files, schema, 4, input_context=context)


def _valid_rows(n=12):
  return [tfexamples.example(tfexamples.all_kinds_row(i)) for i in range(n)]


def _corrupt_middle(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-30])


def _bad_file(tmp_path, case):
  rows = _valid_rows()
  compression, suffix = "", ".tfrecord"
  if case == "missing_label":
    row = tfexamples.all_kinds_row(5)
    del row["click"]
    rows[5] = tfexamples.example(row)
  elif case == "wrong_dtype":
    row = tfexamples.all_kinds_row(5)
    row["d_log"] = 3  # int64 where the schema says float
    rows[5] = tfexamples.example(row)
  elif case == "two_values":
    row = tfexamples.all_kinds_row(5)
    row["s_hash"] = ["a", "b"]
    rows[5] = tfexamples.example(row)
  elif case == "two_values_later_field":
    # Record 5 is the first bad one of its batch (4-7); its field is not.
    row = tfexamples.all_kinds_row(5)
    row["i_vocab"] = [7, 8, 9]
    rows[5] = tfexamples.example(row)
    row = tfexamples.all_kinds_row(6)
    row["s_hash"] = ["a", "b"]
    rows[6] = tfexamples.example(row)
  elif case == "bad_label":
    row = tfexamples.all_kinds_row(5)
    row["buy"] = 2.0
    rows[5] = tfexamples.example(row)
  elif case == "nan_dense":
    row = tfexamples.all_kinds_row(5)
    row["d_log"] = float("nan")
    rows[5] = tfexamples.example(row)
  elif case == "inf_later_dense":
    row = tfexamples.all_kinds_row(5)
    row["d_std"] = float("inf")
    rows[5] = tfexamples.example(row)
    row = tfexamples.all_kinds_row(6)
    row["d_log"] = float("nan")
    rows[6] = tfexamples.example(row)
  elif case == "inf_vector":
    row = tfexamples.all_kinds_row(5)
    row["v_vec"] = [1.0, float("-inf"), 0.0, 0.0]
    rows[5] = tfexamples.example(row)
  elif case == "truncated_gzip":
    compression, suffix = "GZIP", ".tfrecord.gz"
  path = tfexamples.write_records(str(tmp_path / f"{case}{suffix}"), rows,
                                  compression)
  if case in ("corrupt", "garbage_tail"):
    _corrupt_middle(path)
  if case in ("truncated", "truncated_gzip"):
    _truncate(path)
  return path


@pytest.mark.parametrize("case, message", [
    ("corrupt", "Corrupt or truncated TFRecord file {path}"),
    ("truncated", "Corrupt or truncated TFRecord file {path}"),
    ("truncated_gzip", "Corrupt or truncated TFRecord file {path}"),
    ("missing_label", "Name: {path}:5, Feature: click"),
    ("wrong_dtype", "Name: {path}:5, Key: d_log"),
    ("two_values", "Feature s_hash is single-valued but record {path}:5 "
     "holds 2 values"),
    ("two_values_later_field", "Feature i_vocab is single-valued but "
     "record {path}:5 holds 3 values"),
    ("bad_label", "Label buy must be 0 or 1; record {path}:5 has 2"),
    ("nan_dense", "Feature d_log must be finite; record {path}:5 has nan"),
    ("inf_later_dense", "Feature d_std must be finite; record {path}:5 has "
     "inf"),
    ("inf_vector", "Feature v_vec must be finite; record {path}:5 has "
     "[1.000000 -inf 0.000000 0.000000]"),
])
def test_bad_input_raises_naming_file_and_feature(schema, tmp_path, case,
                                                  message):
  path = _bad_file(tmp_path, case)
  ds = rankup_tf.make_dataset(path, schema, batch_size=4, shuffle=False,
                              drop_remainder=False)
  with pytest.raises(tf.errors.OpError) as error:
    _all(ds)
  assert message.format(path=path) in error.value.message


def test_skip_mode_counts_what_it_skips(schema, tmp_path):
  bad_records = [_bad_file(tmp_path, c) for c in
                 ("missing_label", "wrong_dtype", "two_values", "bad_label",
                  "nan_dense", "inf_vector")]
  truncated = _bad_file(tmp_path, "truncated")
  counter = input_pipeline.BadRecordCounter()
  ds = rankup_tf.make_dataset(bad_records + [truncated], schema,
                              batch_size=1, bad_records=counter,
                              drop_remainder=False)
  kept = len(_all(ds))
  result = counter.result()
  assert result["skipped_records"] == 6
  assert result["corrupt_files"] == 1 and result["unreadable_bytes"] > 0
  # 6 files x 11 good records + the readable part of the truncated file.
  assert kept == 66 + 11
