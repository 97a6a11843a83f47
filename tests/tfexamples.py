"""Test helpers: tiny schemas and hand-written tf.Example files."""

import tensorflow as tf

from rankup_tf import schema as schema_lib

ALL_KINDS_SCHEMA = {
    "name": "all_kinds",
    "sparse_features": [
        {"name": "s_hash", "dtype": "string", "hash_buckets": 50,
         "group": "a"},
        {"name": "i_hash", "dtype": "int64", "hash_buckets": 30, "group": "a"},
        {"name": "s_vocab", "dtype": "string", "vocabulary": ["x", "y", "z"],
         "group": "b"},
        {"name": "i_vocab", "dtype": "int64", "vocabulary": [7, 8],
         "group": "b"},
        {"name": "tags", "dtype": "string", "hash_buckets": 20,
         "multivalent": True, "max_length": 3, "combiner": "mean",
         "group": "b"},
    ],
    "dense_features": [
        {"name": "d_log", "normalization": "log1p", "default": 0.0},
        {"name": "d_std", "normalization": "standardize", "mean": 2.0,
         "std": 4.0, "default": 2.0},
        # No record holds d_raw: it tests the default.
        {"name": "d_raw", "normalization": "none", "default": -1.0,
         "optional": True},
    ],
    "pretrained_features": [{"name": "u_vec", "dim": 4},
                            {"name": "v_vec", "dim": 4}],
    "crosses": [["u_vec", "v_vec"], ["s_hash", "i_hash"]],
    "tasks": [{"name": "click"}, {"name": "buy", "weight": "buy_w"}],
    "user_id": {"name": "uid", "dtype": "int64"},
}


def all_kinds_schema() -> schema_lib.Schema:
  return schema_lib.Schema.from_dict(ALL_KINDS_SCHEMA)


def example(values: dict) -> bytes:
  """A serialized tf.Example; value type picks the list type."""
  feature = {}
  for name, value in values.items():
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
      continue
    if isinstance(items[0], float):
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(
          value=items))
    elif isinstance(items[0], int):
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=items))
    else:
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[v.encode() if isinstance(v, str) else v for v in items]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def all_kinds_row(i: int) -> dict:
  """Record i of a valid all-kinds dataset (uid = i identifies it)."""
  return {"s_hash": f"s{i % 11}", "i_hash": i % 13,
          "s_vocab": ["x", "y", "z", "w"][i % 4], "i_vocab": [7, 8, 9][i % 3],
          "tags": [f"t{j}" for j in range(i % 5)],
          "d_log": float(i % 7) - 3.0, "d_std": float(i),
          "u_vec": [0.1 * i, 1.0, 2.0, 3.0], "v_vec": [1.0, 0.0, 1.0, 0.0],
          "click": float(i % 2), "buy": float(i % 3 == 0), "buy_w": 2.0,
          "uid": i}


def write_records(path: str, records, compression: str = "") -> str:
  with tf.io.TFRecordWriter(path, options=compression) as writer:
    for record in records:
      writer.write(record)
  return path
