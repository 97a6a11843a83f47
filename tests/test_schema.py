"""Schema validation: a valid file loads; each kind of invalid one is named."""

import copy
import json

import pytest

import rankup_tf  # noqa: F401
from rankup_tf import schema as schema_lib
from tests import tfexamples


def _spec(**changes):
  spec = copy.deepcopy(tfexamples.ALL_KINDS_SCHEMA)
  spec.update(changes)
  return spec


def test_valid_schema_round_trips_through_json(tmp_path):
  schema = tfexamples.all_kinds_schema()
  path = str(tmp_path / "schema.json")
  schema.save(path)
  loaded = schema_lib.Schema.load(path)
  assert loaded == schema
  assert loaded.sparse_names == ["s_hash", "i_hash", "s_vocab", "i_vocab",
                                 "tags"]
  assert loaded.sparse("s_vocab").table_size == 5  # missing, OOV, 3 words
  assert loaded.sparse("s_hash").table_size == 51  # missing + 50 buckets
  assert loaded.cross_kind(("u_vec", "v_vec")) == "pretrained"
  assert loaded.cross_kind(("s_hash", "i_hash")) == "sparse"


def _sparse(**field):
  base = {"name": "f", "dtype": "string", "hash_buckets": 10}
  base.update(field)
  return base


@pytest.mark.parametrize("spec, message", [
    (_spec(sparse_features=[_sparse(dtype="float")]),
     "sparse feature 'f': unknown dtype 'float'"),
    (_spec(sparse_features=[_sparse(hash_buckets=0)]),
     "sparse feature 'f': hash_buckets must be a positive integer, got 0"),
    (_spec(sparse_features=[_sparse(vocabulary=["a"])]),
     "sparse feature 'f': set exactly one of"),
    (_spec(sparse_features=[_sparse(), _sparse()]),
     "duplicate name 'f'"),
    (_spec(sparse_features=[_sparse(multivalent=True)]),
     "sparse feature 'f': a multivalent feature needs a positive integer "
     "max_length"),
    (_spec(sparse_features=[_sparse(multivalent=True, max_length=2,
                                    combiner="max")]),
     "sparse feature 'f': unknown combiner 'max'"),
    (_spec(sparse_features=[]), "no sparse_features"),
    (_spec(dense_features=[{"name": "d", "normalization": "zscore"}]),
     "dense feature 'd': unknown normalization 'zscore'"),
    (_spec(dense_features=[{"name": "d", "normalization": "standardize"}]),
     "dense feature 'd': 'standardize' needs finite 'mean' and 'std'"),
    (_spec(pretrained_features=[{"name": "u_vec", "dim": 0}], crosses=[]),
     "pretrained feature 'u_vec': dim must be a positive integer"),
    (_spec(crosses=[["u_vec", "nope"]]),
     "cross ['u_vec', 'nope'] names 'nope', which is neither"),
    (_spec(crosses=[["u_vec", "s_hash"]]), "mixes a pretrained and a sparse"),
    (_spec(pretrained_features=[{"name": "u_vec", "dim": 4},
                                {"name": "v_vec", "dim": 8}]),
     "pretrained dims differ (4 vs 8)"),
    (_spec(tasks=[]), "no tasks"),
    (_spec(tasks=[{"name": "s_hash"}]), "duplicate name 's_hash'"),
    (_spec(tasks=[{"name": "bad-name"}]), "'bad-name' is not a valid"),
    (_spec(user_id={"name": "d_log", "dtype": "int64"}),
     "user_id 'd_log' names a dense feature"),
    (_spec(user_id={"name": "s_hash", "dtype": "int64"}),
     "user_id 's_hash' must be a single-valued int64"),
    (_spec(colour="blue"), "unknown key(s) ['colour']"),
    (_spec(sparse_features=[_sparse(buckets=3)]),
     "sparse feature 'f': unknown key(s) ['buckets']"),
    (_spec(pretrained_features=[{"name": "u_vec"}]),
     "pretrained feature 'u_vec' is missing ['dim']"),
])
def test_invalid_schema_names_field_and_problem(tmp_path, spec, message):
  path = tmp_path / "bad_schema.json"
  path.write_text(json.dumps(spec))
  with pytest.raises(schema_lib.SchemaError) as error:
    schema_lib.Schema.load(str(path))
  assert message in str(error.value)
  assert str(path) in str(error.value)


def test_not_json_and_missing_file_are_named(tmp_path):
  path = tmp_path / "broken.json"
  path.write_text("{not json")
  with pytest.raises(schema_lib.SchemaError, match="broken.json: not valid "
                     "JSON"):
    schema_lib.Schema.load(str(path))
  with pytest.raises(schema_lib.SchemaError, match="does not exist"):
    schema_lib.Schema.load(str(tmp_path / "absent.json"))


def test_with_dense_stats_fills_only_standardized_fields():
  schema = tfexamples.all_kinds_schema().with_dense_stats(
      {"d_std": {"mean": 5.0, "std": 0.5}, "d_log": {"mean": 9.0, "std": 9.0}})
  by_name = {f.name: f for f in schema.dense_features}
  assert (by_name["d_std"].mean, by_name["d_std"].std) == (5.0, 0.5)
  assert by_name["d_log"].mean is None
