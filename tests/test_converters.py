"""Converters: Criteo, CSV and the synthetic generator."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf  # noqa: F401
from rankup_tf import schema as schema_lib
from rankup_tf.data import criteo_to_tfrecord
from rankup_tf.data import csv_to_tfrecord
from rankup_tf.data import records
from rankup_tf.data import synthetic
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
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      f"error: {bad}, line 10: has 41 fields, expected 40. (--skip_bad_rows "
      "skips and counts such rows.)")
  assert "Traceback" not in result.stderr
  result = _run("data.criteo_to_tfrecord", f"--input={bad}",
                f"--output_dir={tmp_path}/out", "--num_shards=1",
                "--skip_bad_rows")
  assert result.returncode == 0, result.stderr
  assert "skipped bad rows: 2" in result.stdout
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert stats["skipped_rows"] == 2 and stats["train"]["rows"] == 48


def _criteo_lines(shared_data, n=40):
  return open(f"{shared_data}/criteo_8k/dev.tsv").read().splitlines()[:n]


def _set_cell(line, column, value, delimiter="\t"):
  cells = line.split(delimiter)
  cells[column] = value
  return delimiter.join(cells)


def _write(path, lines, end="\n"):
  path.write_bytes(b"".join(
      (l if isinstance(l, bytes) else l.encode()) + end.encode()
      for l in lines))
  return str(path)


def _criteo(path, out, skip=False):
  """Converts a Criteo file in process; returns the stats."""
  schema = criteo_to_tfrecord.criteo_schema(hash_buckets=100)
  with records.DatasetWriter(schema, str(out), 2) as writer:
    return writer.close(criteo_to_tfrecord.convert(str(path), schema, writer,
                                                   skip_bad_rows=skip))


def test_criteo_stray_quote_is_one_bad_row_not_a_merge(tmp_path,
                                                       shared_data):
  lines = _criteo_lines(shared_data)
  # TSV has no quoting: a quote opening a cell used to swallow the rows up
  # to the next quote into one field.
  lines[4] = _set_cell(lines[4], 20, '"' + lines[4].split("\t")[20])
  lines[30] = _set_cell(lines[30], 25, lines[30].split("\t")[25] + '"')
  bad = _write(tmp_path / "quote.tsv", lines)
  with pytest.raises(records.BadInputError) as error:
    _criteo(bad, tmp_path / "strict")
  assert str(error.value).startswith(
      f"{bad}, line 5: column 'C7': '\"")
  assert "is not an 8-hex-digit hash" in str(error.value)
  stats = _criteo(bad, tmp_path / "skip", skip=True)
  assert stats["skipped_rows"] == 2 and stats["train"]["rows"] == 38
  examples = _read_examples(str(tmp_path / "skip" /
                                "train-00000-of-00002.tfrecord"))
  # Row order is kept: shard 0 holds source lines 1, 3, 6 (line 5 skipped)...
  assert _value(examples[2], "C1") == [lines[5].split("\t")[14].encode()]


@pytest.mark.parametrize("cell, problem", [
    ("3.75", "'3.75' is not an integer"),
    ("1_000", "'1_000' is not an integer"),
    (" 12", "' 12' is not an integer"),
    ("1e3", "'1e3' is not an integer"),
])
def test_criteo_integer_columns_take_only_integers(tmp_path, shared_data,
                                                   cell, problem):
  lines = _criteo_lines(shared_data)
  lines[7] = _set_cell(lines[7], 3, cell)
  bad = _write(tmp_path / "ints.tsv", lines)
  with pytest.raises(records.BadInputError, match=re.escape(
      f"{bad}, line 8: column 'I3': {problem}.")):
    _criteo(bad, tmp_path / "out")


def test_undecodable_nul_and_overlong_cells_name_line_and_column(
    tmp_path, shared_data):
  lines = [l.encode() for l in _criteo_lines(shared_data, 10)]
  cases = {
      "utf8": (3, lines[2].replace(b"\t", b"\t\xff\xfe", 1),
               "column 'I1': byte 0xff is not UTF-8 text (binary data?)"),
      "nul": (4, lines[3][:-2] + b"\x00" + lines[3][-1:],
              "column 'C26': holds a NUL byte (binary data?)"),
      "long": (6, _set_cell(lines[5].decode(), 30, "a" * 200_000).encode(),
               "column 'C17': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'... "
               "(200000 characters) is longer than the 131072 characters a "
               "cell may hold"),
  }
  for name, (line_no, line, message) in cases.items():
    content = list(lines)
    content[line_no - 1] = line
    bad = _write(tmp_path / f"{name}.tsv", content)
    with pytest.raises(records.BadInputError) as error:
      _criteo(bad, tmp_path / name)
    assert str(error.value) == (f"{bad}, line {line_no}: {message}. "
                                "(--skip_bad_rows skips and counts such "
                                "rows.)")
    assert os.listdir(tmp_path / name) == []  # nothing left behind


def test_nothing_to_convert_is_an_error(tmp_path, shared_data):
  schema = criteo_to_tfrecord.criteo_schema(hash_buckets=100)
  schema_path = str(tmp_path / "schema.json")
  schema.save(schema_path)
  empty = _write(tmp_path / "empty.tsv", [])
  header_only = _write(tmp_path / "header.csv",
                       [",".join(criteo_to_tfrecord.COLUMNS)])
  all_bad = _write(tmp_path / "bad.tsv", ["x"] * 3)
  expected = [
      (empty, f"{empty}: no row to convert (the file holds no data rows)."),
      (str(tmp_path / "missing.tsv"), f"{tmp_path}/missing.tsv: no such "
       "file."),
      (str(tmp_path), f"{tmp_path} is a directory, expected a file."),
  ]
  for path, message in expected:
    with pytest.raises(records.BadInputError) as error:
      _criteo(path, tmp_path / "out")
    assert str(error.value) == message
  with pytest.raises(records.BadInputError) as error:
    _criteo(all_bad, tmp_path / "out", skip=True)
  assert str(error.value) == f"{all_bad}: no row to convert (all 3 rows are " \
      "bad)."
  with pytest.raises(records.BadInputError) as error:
    csv_to_tfrecord.convert_delimited(
        header_only, schema, records.DatasetWriter(schema,
                                                   str(tmp_path / "o"), 1),
        ",")
  assert str(error.value) == f"{header_only}: no row to convert (the file " \
      "holds no data rows)."


def test_csv_quoting_follows_rfc4180_one_record_per_line(tmp_path):
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "city", "dtype": "string",
                           "hash_buckets": 5}],
      "dense_features": [{"name": "price"}],
      "tasks": [{"name": "y"}]})
  good = _write(tmp_path / "good.csv", [
      "\ufeffy,city,price",  # a spreadsheet's byte-order mark
      '1,"Paris, TX",3.5', '0,"say ""hi""",1e-3', "1,,", '0,"",-2'],
      end="\r\n")
  writer = records.DatasetWriter(schema, str(tmp_path / "o"), 1)
  stats = writer.close(csv_to_tfrecord.convert_delimited(good, schema,
                                                         writer, ","))
  assert stats["train"]["rows"] == 4
  examples = _read_examples(str(tmp_path / "o" / "train-00000-of-00001"
                                ".tfrecord"))
  assert [_value(e, "city") for e in examples] == [
      [b"Paris, TX"], [b'say "hi"'], None, None]
  assert [_value(e, "price") for e in examples] == [
      [3.5], [pytest.approx(1e-3)], None, [-2.0]]
  lines = ["y,city,price"] + [f"{i % 2},c{i},{i}" for i in range(30)]
  lines[3] = '1,"c2,2'  # unclosed: used to swallow the next lines
  lines[9] = '0,c"8,8'  # a quote inside an unquoted field
  bad = _write(tmp_path / "bad.csv", lines)
  for skip, expected in ((False, None), (True, 28)):
    writer = records.DatasetWriter(schema, str(tmp_path / f"b{skip}"), 1)
    if not skip:
      with pytest.raises(records.BadInputError) as error:
        csv_to_tfrecord.convert_delimited(bad, schema, writer, ",")
      assert str(error.value).startswith(
          f"{bad}, line 4: column 'city': a quote that does not enclose the "
          "whole field")
      continue
    stats = writer.close(csv_to_tfrecord.convert_delimited(
        bad, schema, writer, ",", skip_bad_rows=True))
    assert (stats["skipped_rows"], stats["train"]["rows"]) == (2, expected)


@pytest.mark.parametrize("cell, problem", [
    ("nan", "'nan' is not a finite decimal number"),
    ("-inf", "'-inf' is not a finite decimal number"),
    ("1e999", "'1e999' is not a finite decimal number"),
    ("1_000.5", "'1_000.5' is not a finite decimal number"),
    (" 2.5", "' 2.5' is not a finite decimal number"),
])
def test_csv_float_cells_are_plain_finite_decimals(tmp_path, cell, problem):
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "a", "hash_buckets": 5}],
      "dense_features": [{"name": "price"}], "tasks": [{"name": "y"}]})
  bad = _write(tmp_path / "f.csv", ["y,a,price", "1,x,1.5", f'0,x,"{cell}"'])
  with pytest.raises(records.BadInputError, match=re.escape(
      f"{bad}, line 3: column 'price': {problem}.")):
    csv_to_tfrecord.convert_delimited(
        bad, schema, records.DatasetWriter(schema, str(tmp_path / "o"), 1),
        ",")


def test_output_dir_holds_only_the_last_successful_conversion(tmp_path,
                                                              shared_data):
  lines = _criteo_lines(shared_data, 30)
  good = _write(tmp_path / "good.tsv", lines)
  bad = _write(tmp_path / "bad.tsv", lines[:20] + ["1\tx"] + lines[20:])
  out = tmp_path / "out"
  schema = criteo_to_tfrecord.criteo_schema(hash_buckets=100)
  for shards, eval_fraction in ((4, 0.2), (2, 0.0)):
    with records.DatasetWriter(schema, str(out), shards,
                               eval_fraction=eval_fraction) as writer:
      writer.close(criteo_to_tfrecord.convert(good, schema, writer))
  # The 4-shard train and eval splits of the first run are gone.
  assert sorted(os.listdir(out)) == ["schema.json", "stats.json",
                                     "train-00000-of-00002.tfrecord",
                                     "train-00001-of-00002.tfrecord"]
  before = {f: (out / f).read_bytes() for f in os.listdir(out)}
  with pytest.raises(records.BadInputError, match="line 21"):
    with records.DatasetWriter(schema, str(out), 3) as writer:
      writer.close(criteo_to_tfrecord.convert(bad, schema, writer))
  # A failed conversion leaves no temporary file and the last result intact.
  assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
  assert len(tf.io.gfile.glob(f"{out}/train-*")) == 2


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


def test_synthetic_teachers_share_labels_and_differ_in_vectors(tmp_path):
  """Same seed: identical labels and fields under both teachers; only the
  pretrained vectors change, and stats.json names the teacher."""
  columns = {}
  for teacher in synthetic.TEACHERS:
    out = str(tmp_path / teacher)
    synthetic.generate(out, rows=2000, seed=2, num_users=400, num_items=200,
                       num_shards=1, eval_fraction=0.0, teacher=teacher)
    with open(os.path.join(out, "stats.json")) as f:
      assert json.load(f)["generator"]["teacher"] == teacher
    examples = _read_examples(os.path.join(out, "train-00000-of-00001"
                                                ".tfrecord"))
    columns[teacher] = {name: [_value(e, name) for e in examples]
                        for name in examples[0].features.feature}
  affinity, ids = columns["affinity"], columns["ids"]
  assert set(affinity) == set(ids)
  for name in affinity:
    if name in ("user_vec", "item_vec"):
      assert affinity[name] != ids[name]
    else:
      assert affinity[name] == ids[name], name
  with pytest.raises(ValueError, match="Unknown teacher 'oracle'"):
    synthetic.World(0, 10, 10, teacher="oracle")


def _r_squared(x, y):
  x = np.c_[x, np.ones(len(x))]
  residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
  return 1 - (residual ** 2).sum() / ((y - y.mean(0)) ** 2).sum()


def test_synthetic_ids_teacher_vectors_carry_only_what_ids_carry():
  worlds = {t: synthetic.World(0, 3000, 1000, teacher=t)
            for t in synthetic.TEACHERS}
  affinity, ids = worlds["affinity"], worlds["ids"]
  segment = np.eye(20)[ids.segment]
  # "affinity": the vectors are an oracle of the users' latent factors u.
  assert _r_squared(affinity.user_vec, affinity.u) > 0.95
  # "ids": beyond the user_segment field (a function of u the log holds),
  # the vectors explain next to nothing more of u.
  gain = (_r_squared(np.c_[segment, ids.user_vec], ids.u)
          - _r_squared(segment, ids.u))
  assert gain < 0.02
  # The teacher's user-item affinity: recovered by the oracle vectors'
  # product, not by the "ids" ones.
  rng = np.random.default_rng(0)
  user, item = rng.integers(0, 3000, 20000), rng.integers(0, 1000, 20000)
  truth = np.einsum("nd,nd->n", ids.u[user], ids.v[item])
  for world, low, high in ((affinity, 0.9, 1.0), (ids, -0.15, 0.15)):
    product = np.einsum("nd,nd->n", world.user_vec[user],
                        world.item_vec[item])
    assert low < np.corrcoef(product, truth)[0, 1] < high


def test_eval_input_is_the_eval_split_with_its_own_bad_row_count(tmp_path):
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "item", "dtype": "string",
                           "hash_buckets": 5}],
      "dense_features": [{"name": "price"}],
      "tasks": [{"name": "y"}]})
  schema_path = str(tmp_path / "schema.json")
  schema.save(schema_path)
  train = tmp_path / "train.csv"
  train.write_text("y,item,price\n1,a,1.5\n0,b,2\n1,c,3\n")
  later = tmp_path / "later.tsv"  # its own header order and delimiter
  later.write_text("price\titem\ty\n4\td\t0\nabc\te\t1\n6\tf\t1\n")
  flags = [f"--input={train}", f"--eval_input={later}",
           f"--schema={schema_path}", f"--output_dir={tmp_path}/out",
           "--num_shards=1"]
  result = _run("data.csv_to_tfrecord", *flags)
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      f"error: {later}, line 3: column 'price': 'abc' is not a finite "
      "decimal number. (--skip_bad_rows skips and counts such rows.)")
  result = _run("data.csv_to_tfrecord", *flags, "--eval_fraction=0.2")
  assert result.returncode == 1
  assert "--eval_input and --eval_fraction both choose the eval rows" in \
      result.stderr.splitlines()[-1]
  assert not os.path.exists(tmp_path / "out" / "stats.json")

  result = _run("data.csv_to_tfrecord", *flags, "--skip_bad_rows")
  assert result.returncode == 0, result.stderr
  assert ("Wrote train: 3 rows, eval: 2 rows to "
          f"{tmp_path}/out (skipped bad rows: 0, of --eval_input: 1)."
          ) in result.stdout
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert (stats["train"]["rows"], stats["eval"]["rows"]) == (3, 2)
  assert (stats["skipped_rows"], stats["eval_skipped_rows"]) == (0, 1)
  assert stats["eval_source"] == str(later)
  assert stats["eval_files"] == ["eval-00000-of-00001.tfrecord"]
  evals = _read_examples(str(tmp_path / "out" / stats["eval_files"][0]))
  assert [_value(e, "item") for e in evals] == [[b"d"], [b"f"]]
  assert [_value(e, "price") for e in evals] == [[4.0], [6.0]]


def test_an_eval_input_without_rows_is_an_error(tmp_path):
  schema = schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "item", "dtype": "string",
                           "hash_buckets": 5}],
      "tasks": [{"name": "y"}]})
  writer = records.DatasetWriter(schema, str(tmp_path / "out"), 1,
                                 separate_eval=True)
  train, later = tmp_path / "train.csv", tmp_path / "later.csv"
  train.write_text("y,item\n1,a\n")
  later.write_text("y,item\n")
  csv_to_tfrecord.convert_delimited(str(train), schema, writer, ",")
  with pytest.raises(records.BadInputError, match=re.escape(
      f"{later}: no row to convert (the file holds no data rows).")):
    csv_to_tfrecord.convert_delimited(str(later), schema, writer, ",",
                                      split="eval")
  writer.abort()


def test_criteo_eval_input(tmp_path, shared_data):
  lines = _criteo_lines(shared_data, 60)
  train, later = tmp_path / "train.txt", tmp_path / "day_23.txt"
  train.write_text("\n".join(lines[:40]) + "\n")
  lines[45] = "x" + lines[45][1:]  # label "x": line 6 of the eval file
  later.write_text("\n".join(lines[40:]) + "\n")
  flags = [f"--input={train}", f"--eval_input={later}",
           f"--output_dir={tmp_path}/out", "--num_shards=1"]
  result = _run("data.criteo_to_tfrecord", *flags)
  assert result.returncode == 1
  assert f"error: {later}, line 6: column 'label'" in result.stderr
  result = _run("data.criteo_to_tfrecord", *flags, "--skip_bad_rows")
  assert result.returncode == 0, result.stderr
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert (stats["train"]["rows"], stats["eval"]["rows"]) == (40, 19)
  assert (stats["skipped_rows"], stats["eval_skipped_rows"]) == (0, 1)
