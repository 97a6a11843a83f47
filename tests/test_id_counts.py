"""Rare and unseen ids: counting, the OOV mapping in training and in the
export, the threshold's off state and its errors."""

import copy
import json

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import features as features_lib
from rankup_tf import id_counts
from rankup_tf import input_pipeline
from rankup_tf import models
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib
from tests import tfexamples
from rankup_tf.trainer import config as train_config

# all_kinds_row(i) for i < 40: s_hash is s{i % 11}, so s0..s6 occur 4 times
# and s7..s10 3 times; i_vocab 7 occurs 14 times, 8 and 9 13 times; tags
# holds t0..t{i % 5 - 1}, cut at max_length 3.
ROWS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp("id_counts")
  records = [tfexamples.example(tfexamples.all_kinds_row(i))
             for i in range(ROWS)]
  # Two files, one GZIP: counting reads what make_dataset reads.
  tfexamples.write_records(str(folder / "part-0.tfrecord"), records[:25])
  tfexamples.write_records(str(folder / "part-1.tfrecord.gz"), records[25:],
                           "GZIP")
  return str(folder / "part-*")


def _schema(**field_changes):
  spec = copy.deepcopy(tfexamples.ALL_KINDS_SCHEMA)
  for field in spec["sparse_features"]:
    field.update(field_changes.get(field["name"], {}))
  return schema_lib.Schema.from_dict(spec)


def _ids(schema, rows):
  transform = features_lib.FeatureTransform(schema)
  features, _ = transform.parse(tf.constant(
      [tfexamples.example(r) for r in rows]))
  return features


def test_counts_are_exact_and_multivalent_fields_are_cut(data):
  counts = id_counts.count_values(data, tfexamples.all_kinds_schema(),
                                  ["s_hash", "i_vocab", "tags"],
                                  batch_size=7)
  values, n = counts["s_hash"]
  assert dict(zip(values.tolist(), n.tolist())) == {
      f"s{k}".encode(): 4 if k < 7 else 3 for k in range(11)}
  assert values.tolist()[:7] == [f"s{k}".encode() for k in range(7)]
  assert dict(zip(*[a.tolist() for a in counts["i_vocab"]])) == {
      7: 14, 8: 13, 9: 13}
  # Row i has i % 5 tags, only the first 3 kept: t3 is never counted.
  assert dict(zip(*[a.tolist() for a in counts["tags"]])) == {
      b"t0": 32, b"t1": 24, b"t2": 16}


def test_rare_and_unseen_values_map_to_the_oov_row(data):
  schema, report = id_counts.with_frequent_values(
      _schema(i_vocab={"min_count": 14}), data, default_min_count=4)
  s_hash = schema.sparse("s_hash")
  assert s_hash.frequent_values == tuple(f"s{k}" for k in range(7))
  assert report["s_hash"] == {"min_count": 4, "distinct": 11, "kept": 7,
                              "rare_share": 12 / 40}
  # A hashed field gains an OOV row in front of its buckets.
  assert s_hash.table_size == 2 + 50
  assert schema.sparse("i_vocab").frequent_values == (7,)
  assert schema.sparse("i_vocab").table_size == 4  # unchanged for vocab

  rows = [dict(tfexamples.all_kinds_row(0), s_hash=value, i_vocab=vocab,
               tags=["t0", "t3", "never"])
          for value, vocab in (("s0", 7), ("s9", 8), ("never", 9))]
  ids = _ids(schema, rows)
  plain = _ids(tfexamples.all_kinds_schema(), rows)
  oov = schema_lib.OOV_ID
  # A frequent value keeps its bucket, one row further on.
  assert ids["s_hash"].numpy().tolist() == [
      plain["s_hash"].numpy()[0] + 1, oov, oov]
  assert ids["i_vocab"].numpy().tolist() == [2, oov, oov]
  assert ids["tags"].to_list() == [[plain["tags"].to_list()[0][0] + 1, oov,
                                    oov]] * 3
  # Without the threshold, rare and unseen values have rows of their own.
  assert oov not in plain["s_hash"].numpy().tolist()


def test_threshold_off_changes_nothing(data):
  schema = tfexamples.all_kinds_schema()
  same, report = id_counts.with_frequent_values(schema, data, 0)
  assert same is schema and report == {}
  # A field's own min_count 0 opts it out of the default.
  schema, _ = id_counts.with_frequent_values(
      _schema(s_hash={"min_count": 0}), data, default_min_count=4)
  assert schema.sparse("s_hash").frequent_values is None
  assert schema.sparse("s_hash").table_size == 51
  rows = [tfexamples.all_kinds_row(i) for i in range(8)]
  np.testing.assert_array_equal(
      _ids(schema, rows)["s_hash"],
      _ids(tfexamples.all_kinds_schema(), rows)["s_hash"])


def test_a_field_with_no_frequent_value_maps_everything_to_oov(data):
  schema, report = id_counts.with_frequent_values(
      _schema(s_hash={"min_count": 100}), data)
  assert report["s_hash"]["kept"] == 0 and report["s_hash"][
      "rare_share"] == 1.0
  ids = _ids(schema, [tfexamples.all_kinds_row(i) for i in range(3)])
  assert ids["s_hash"].numpy().tolist() == [schema_lib.OOV_ID] * 3


def test_frequent_values_survive_the_schema_json(data, tmp_path):
  schema, _ = id_counts.with_frequent_values(
      tfexamples.all_kinds_schema(), data, 4)
  path = str(tmp_path / "schema.json")
  schema.save(path)
  assert schema_lib.Schema.load(path) == schema
  assert json.loads(open(path).read())["sparse_features"][0][
      "frequent_values"] == [f"s{k}" for k in range(7)]


@pytest.mark.parametrize("field, message", [
    ({"min_count": 1}, "min_count must be 0 (off) or an integer >= 2, got 1"),
    ({"min_count": -3}, "min_count must be 0 (off) or an integer >= 2"),
    ({"min_count": "5"}, "got '5'"),
    ({"min_count": True}, "got True"),
    ({"frequent_values": ["a"]}, "frequent_values needs a min_count"),
    ({"min_count": 2, "frequent_values": [1]},
     "frequent_values entries must be string"),
    ({"min_count": 2, "frequent_values": ["a", "a"]}, "duplicate entries"),
])
def test_bad_threshold_names_the_field(field, message):
  with pytest.raises(schema_lib.SchemaError) as error:
    _schema(s_hash=field)
  assert "sparse feature 's_hash'" in str(error.value)
  assert message in str(error.value)


def test_bad_default_threshold_and_uncounted_field_are_named(data):
  with pytest.raises(schema_lib.SchemaError, match="min_id_count must be 0"):
    id_counts.with_frequent_values(tfexamples.all_kinds_schema(), data, 1)
  with pytest.raises(ValueError, match="min_id_count must be 0"):
    train_config.TrainConfig(train_files=data, schema="s", model_dir="m",
                             min_id_count=-1)
  with pytest.raises(schema_lib.SchemaError,
                     match="'s_hash': min_count 5 needs its frequent_values"):
    features_lib.FeatureTransform(_schema(s_hash={"min_count": 5}))


def test_export_maps_rare_and_unseen_values_to_one_row(data, tmp_path):
  # Seeded: with some initial weights every ReLU of this tiny MLP is off for
  # the test row, and all three predictions are sigmoid(bias) = 0.5.
  tf.keras.utils.set_random_seed(0)
  schema, _ = id_counts.with_frequent_values(
      tfexamples.all_kinds_schema(), data, 4)
  model = models.build_model("dnn", schema, models.DNNConfig(
      embedding_dim=4, hidden_units=(8,), tower_units=(4,)))
  model.build_from_schema()
  path = export_lib.export_saved_model(
      model, schema, str(tmp_path / "export"), "m",
      input_pipeline.read_examples(data, 2))
  serve = tf.saved_model.load(path).signatures["serving_default"]
  rows = [dict(tfexamples.all_kinds_row(0), s_hash=v)
          for v in ("s0", "s9", "never")]
  click = serve(examples=tf.constant(
      [tfexamples.example(r) for r in rows]))["click"].numpy()
  assert click[1] == click[2]  # both read the OOV row
  assert click[0] != click[1]
  # The export predicts what the model does on the training-time ids.
  expected = tf.sigmoid(model(_ids(schema, rows), training=False)["click"])
  np.testing.assert_allclose(click, expected.numpy(), rtol=1e-5)


def test_the_trainer_flag_reaches_the_saved_schema(data):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rankup_tf.trainer import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  from rankup_tf.trainer import train  # pylint: disable=g-import-not-at-top
  if "min_id_count" not in flags.FLAGS:
    trainer_flags.define_flags()
  flags.FLAGS(["train", f"--train_files={data}", "--schema=s",
               "--model_dir=m", "--min_id_count=4"])
  try:
    config = trainer_flags.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  assert config.min_id_count == 4
  schema = train._frequent_values(config, tfexamples.all_kinds_schema())
  assert schema.sparse("s_hash").frequent_values == tuple(
      f"s{k}" for k in range(7))
