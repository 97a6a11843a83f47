"""Converters: Criteo, CSV and the synthetic generator."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf  # noqa: F401
from rankup_tf import schema as schema_lib
from data import criteo_to_tfrecord
from data import csv_to_tfrecord
from data import records
from data import synthetic
from tests.conftest import REPO


def _read_examples(path):
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(path)]


def _value(example, name):
  feature = example.features.feature
  if name not in feature:
    return None
  kind = feature[name].WhichOneof("kind")
  return list(getattr(feature[name], kind).value)


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def criteo_out(shared_data, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("criteo"))
  result = _run("data.criteo_to_tfrecord",
                f"--input={shared_data}/criteo_8k/train.tsv",
                f"--output_dir={out}", "--num_shards=3")
  assert result.returncode == 0, result.stderr
  assert "Wrote train: 7200 rows" in result.stdout
  return out


def test_criteo_counts_and_stats(criteo_out):
  stats = json.load(open(os.path.join(criteo_out, "stats.json")))
  assert stats["train"]["rows"] == 7200
  assert stats["train"]["positives"] == {"label": 1549}
  assert stats["skipped_rows"] == 0
  shards = sorted(f for f in os.listdir(criteo_out) if f.startswith("train-"))
  assert shards == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
  total = sum(len(_read_examples(os.path.join(criteo_out, s)))
              for s in shards)
  assert total == 7200
  assert stats["train"]["dense"]["I2"]["min"] < 0  # negative ints kept
  assert 0 < stats["train"]["dense"]["I1"]["missing_rate"] < 1
  schema = schema_lib.Schema.load(os.path.join(criteo_out, "schema.json"))
  assert schema.sparse_names == [f"C{i}" for i in range(1, 27)]


def test_criteo_records_match_source_lines(criteo_out, shared_data):
  lines = open(f"{shared_data}/criteo_8k/train.tsv").read().splitlines()
  shards = [_read_examples(os.path.join(
      criteo_out, f"train-0000{i}-of-00003.tfrecord")) for i in range(3)]
  checked_missing = checked_negative = 0
  for line_index in [0, 1, 2, 3, 100, 4321, 7199]:
    fields = lines[line_index].split("\t")
    example = shards[line_index % 3][line_index // 3]
    assert _value(example, "label") == [float(fields[0])]
    for i in range(13):
      cell = fields[1 + i]
      got = _value(example, f"I{i + 1}")
      if cell == "":
        assert got is None  # missing stays missing
        checked_missing += 1
      else:
        assert got == [float(int(cell))]
        checked_negative += int(int(cell) < 0)
    for i in range(26):
      cell = fields[14 + i]
      got = _value(example, f"C{i + 1}")
      assert got == (None if cell == "" else [cell.encode()])
  assert checked_missing > 0
  negative_lines = [i for i, l in enumerate(lines)
                    if l.split("\t")[2].startswith("-")]
  assert negative_lines, "criteo_8k has negative I2 values"
  i = negative_lines[0]
  example = shards[i % 3][i // 3]
  assert _value(example, "I2") == [float(int(lines[i].split("\t")[2]))] \
      and _value(example, "I2")[0] < 0


def test_criteo_bad_line_is_named_and_skip_counts(tmp_path, shared_data):
  lines = open(f"{shared_data}/criteo_8k/dev.tsv").read().splitlines()[:50]
  lines[9] = lines[9].replace("\t", "\t\t", 1)  # 41 fields
  lines[19] = "x" + lines[19][1:]  # label "x"
  bad = tmp_path / "bad.tsv"
  bad.write_text("\n".join(lines) + "\n")
  result = _run("data.criteo_to_tfrecord", f"--input={bad}",
                f"--output_dir={tmp_path}/out", "--num_shards=1")
  assert result.returncode != 0
  assert f"{bad}, line 10: has 41 fields, expected 40" in result.stderr
  result = _run("data.criteo_to_tfrecord", f"--input={bad}",
                f"--output_dir={tmp_path}/out", "--num_shards=1",
                "--skip_bad_rows")
  assert result.returncode == 0, result.stderr
  assert "skipped bad rows: 2" in result.stdout
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert stats["skipped_rows"] == 2 and stats["train"]["rows"] == 48


def test_csv_converter_on_criteo_sample(tmp_path, shared_data):
  schema = criteo_to_tfrecord.criteo_schema(
      hash_buckets=1000, dense_normalization="standardize")
  schema_path = str(tmp_path / "schema.json")
  schema.save(schema_path)
  source = f"{shared_data}/criteo_sample_200.csv"
  result = _run("data.csv_to_tfrecord", f"--input={source}",
                f"--schema={schema_path}", f"--output_dir={tmp_path}/out",
                "--num_shards=2", "--gzip")
  assert result.returncode == 0, result.stderr
  rows = open(source).read().splitlines()
  header, body = rows[0].split(","), [r.split(",") for r in rows[1:]]
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert stats["train"]["rows"] == len(body) == 200
  assert stats["train"]["positives"]["label"] == sum(
      int(r[header.index("label")]) for r in body)
  # Standardization stats come from the data and land in the schema.
  i5 = [float(r[header.index("I5")]) for r in body if r[header.index("I5")]]
  written = schema_lib.Schema.load(str(tmp_path / "out" / "schema.json"))
  i5_field = [f for f in written.dense_features if f.name == "I5"][0]
  assert i5_field.mean == pytest.approx(np.mean(i5))
  assert i5_field.std == pytest.approx(np.std(i5))
  first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
      str(tmp_path / "out" / "train-00000-of-00002.tfrecord.gz"),
      compression_type="GZIP"))).numpy())
  assert _value(first, "C1") == [body[0][header.index("C1")].encode()]


def test_csv_converter_reports_missing_columns_and_bad_cells(tmp_path):
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "tags", "dtype": "string",
                           "hash_buckets": 5, "multivalent": True,
                           "max_length": 2}],
      "pretrained_features": [{"name": "vec", "dim": 3}],
      "tasks": [{"name": "y"}]})
  writer = records.DatasetWriter(schema, str(tmp_path / "o"), 1)
  good = tmp_path / "good.csv"
  good.write_text("y,tags,vec,extra\n1,a|b|c,1 2 3,z\n0,,4 5 6,z\n")
  counts = csv_to_tfrecord.convert_delimited(str(good), schema, writer, ",")
  stats = writer.close(counts)
  assert stats["train"]["rows"] == 2
  assert stats["train"]["sparse"]["tags"]["rows_over_max_length"] == 1
  assert stats["train"]["sparse"]["tags"]["missing_rate"] == 0.5
  bad_vec = tmp_path / "bad_vec.csv"
  bad_vec.write_text("y,tags,vec\n1,a,1 2\n")
  with pytest.raises(records.BadInputError,
                     match=r"bad_vec.csv, line 2: column 'vec': vector 'vec' "
                     r"has 2 values, the schema says dim=3"):
    csv_to_tfrecord.convert_delimited(
        str(bad_vec), schema,
        records.DatasetWriter(schema, str(tmp_path / "o2"), 1), ",")
  no_col = tmp_path / "no_col.csv"
  no_col.write_text("y,tags\n1,a\n")
  with pytest.raises(records.BadInputError, match=r"feature\(s\) \['vec'\] "
                     "have no column"):
    csv_to_tfrecord.convert_delimited(
        str(no_col), schema,
        records.DatasetWriter(schema, str(tmp_path / "o3"), 1), ",")


def test_synthetic_is_deterministic_by_seed(tmp_path):
  def digest(seed, name):
    out = str(tmp_path / name)
    synthetic.generate(out, rows=3000, seed=seed, num_users=500,
                       num_items=300, num_shards=2)
    return {f: open(os.path.join(out, f), "rb").read()
            for f in sorted(os.listdir(out))}
  first, again, other = digest(7, "a"), digest(7, "b"), digest(8, "c")
  assert first == again
  assert first["train-00000-of-00002.tfrecord"] != \
      other["train-00000-of-00002.tfrecord"]


def test_synthetic_label_rates_and_structure(tmp_path):
  out = str(tmp_path / "syn")
  stats = synthetic.generate(out, rows=24000, seed=3, num_shards=2)
  for split in ("train", "eval"):
    rates = stats[split]["label_rates"]
    assert synthetic.CLICK_RATE_BOUNDS[0] <= rates["click"] <= \
        synthetic.CLICK_RATE_BOUNDS[1]
    assert synthetic.CONVERSION_RATE_BOUNDS[0] <= rates["conversion"] <= \
        synthetic.CONVERSION_RATE_BOUNDS[1]
  assert 0.05 < stats["eval"]["rows"] / 24000 < 0.15
  schema = schema_lib.Schema.load(os.path.join(out, "schema.json"))
  assert len(schema.sparse_features) >= 32
  assert {f.group for f in schema.sparse_features} == {"user", "item",
                                                        "context"}
  sparse = stats["train"]["sparse"]
  assert sparse["user_id"]["distinct_estimate"] > 1000  # long tail
  assert 0.15 < sparse["ctx_query"]["missing_rate"] < 0.25
  examples = _read_examples(os.path.join(out, "train-00000-of-00002.tfrecord"))
  clicks = np.array([_value(e, "click")[0] for e in examples])
  conversions = np.array([_value(e, "conversion")[0] for e in examples])
  assert np.all(conversions <= clicks)  # conversion only after a click
  # Near-collinear fields: the derived field mostly follows its parent.
  city = np.array([_value(e, "user_city")[0] for e in examples])
  region = np.array([_value(e, "user_region")[0] for e in examples])
  assert np.mean(region == city // 10) > 0.9
  # The pretrained vectors' product carries signal about clicks.
  score = np.array([np.dot(_value(e, "user_vec"), _value(e, "item_vec"))
                    for e in examples])
  assert score[clicks == 1].mean() > score[clicks == 0].mean() + 0.1
