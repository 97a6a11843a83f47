"""A corpus of corrupt inputs: converter rows, TFRecords, schemas, settings
and serving requests. Each gives exactly one line saying what is wrong (and
where), or exactly the right result."""

import dataclasses
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import cli
from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib
from rankup_tf.data import criteo_to_tfrecord
from rankup_tf.data import csv_to_tfrecord
from rankup_tf.data import records
from rankup_tf.serving import export as export_lib
from rankup_tf.trainer import checks
from tests import tfexamples

SKIP = " (--skip_bad_rows skips and counts such rows.)"
NAN, INF = float("nan"), float("inf")


@dataclasses.dataclass
class Case:
  """`run(tmp_path, shared_data)` returns a result or raises; `expected` is
  that result, or "error: <the one line>" ({tmp} stands for tmp_path)."""
  name: str
  run: Callable
  expected: str


# -- converter rows -----------------------------------------------------------
def _criteo(edit, lines=6):
  """Converts edited criteo_8k/dev.tsv lines; returns the first row's
  converted cells that the edit touched, or the row count."""
  def run(tmp, data):
    rows = open(f"{data}/criteo_8k/dev.tsv", "rb").read().split(b"\n")[:lines]
    content = edit([r + b"\n" for r in rows])
    path = tmp / "in.tsv"
    path.write_bytes(b"".join(content))
    schema = criteo_to_tfrecord.criteo_schema(hash_buckets=100)
    with records.DatasetWriter(schema, str(tmp / "out"), 1) as writer:
      stats = writer.close(criteo_to_tfrecord.convert(str(path), schema,
                                                      writer))
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        str(tmp / "out" / "train-00000-of-00001.tfrecord")))).numpy())
    cells = {k: list(getattr(v, v.WhichOneof("kind")).value)
             for k, v in first.features.feature.items()}
    return (f"rows={stats['train']['rows']} I1={cells.get('I1')} "
            f"I3={cells.get('I3')} C20={cells.get('C20')}")
  return run


def _cell(line_index, column, value):
  """An edit setting one tab-separated cell (bytes) of one line."""
  def edit(rows):
    cells = rows[line_index].rstrip(b"\n").split(b"\t")
    cells[column] = value
    rows[line_index] = b"\t".join(cells) + b"\n"
    return rows
  return edit


def _line(line_index, value):
  def edit(rows):
    rows[line_index] = value
    return rows
  return edit


CLEAN = "rows=6 I1=[3.0] I3=None C20=None"
LINE3 = "error: {tmp}/in.tsv, line 3: "

CONVERTER_CASES = [
    Case("criteo_clean", _criteo(lambda rows: rows), CLEAN),
    Case("criteo_crlf", _criteo(lambda rows: [r.replace(b"\n", b"\r\n")
                                              for r in rows]), CLEAN),
    Case("criteo_no_final_newline",
         _criteo(lambda rows: rows[:-1] + [rows[-1].rstrip(b"\n")]), CLEAN),
    Case("criteo_plus_sign", _criteo(_cell(0, 1, b"+3")), CLEAN),
    Case("criteo_41_fields", _criteo(_cell(2, 5, b"1\t2")),
         LINE3 + "has 41 fields, expected 40." + SKIP),
    Case("criteo_39_fields", _criteo(_line(2, b"0" + b"\t" * 38 + b"\n")),
         LINE3 + "has 39 fields, expected 40." + SKIP),
    Case("criteo_blank_line", _criteo(_line(2, b"\n")),
         LINE3 + "has 1 fields, expected 40." + SKIP),
    Case("criteo_label_x", _criteo(_cell(2, 0, b"x")),
         LINE3 + "column 'label': label 'x' is not 0 or 1." + SKIP),
    Case("criteo_label_2", _criteo(_cell(2, 0, b"2")),
         LINE3 + "column 'label': label '2' is not 0 or 1." + SKIP),
    Case("criteo_label_empty", _criteo(_cell(2, 0, b"")),
         LINE3 + "column 'label': required value of 'label' is empty."
         + SKIP),
    Case("criteo_int_decimal", _criteo(_cell(2, 2, b"3.75")),
         LINE3 + "column 'I2': '3.75' is not an integer." + SKIP),
    Case("criteo_int_underscore", _criteo(_cell(2, 2, b"1_000")),
         LINE3 + "column 'I2': '1_000' is not an integer." + SKIP),
    Case("criteo_int_padded", _criteo(_cell(2, 2, b" 7")),
         LINE3 + "column 'I2': ' 7' is not an integer." + SKIP),
    Case("criteo_int_arabic_digits", _criteo(_cell(2, 2, "٣".encode())),
         LINE3 + "column 'I2': '٣' is not an integer." + SKIP),
    Case("criteo_hash_short", _criteo(_cell(2, 14, b"05db916")),
         LINE3 + "column 'C1': '05db916' is not an 8-hex-digit hash."
         + SKIP),
    Case("criteo_hash_quoted", _criteo(_cell(2, 14, b'"05db9164')),
         LINE3 + "column 'C1': '\"05db9164' is not an 8-hex-digit hash."
         + SKIP),
    Case("criteo_invalid_utf8", _criteo(_cell(2, 20, b"ab\xc3\x28cdef")),
         LINE3 + "column 'C7': byte 0xc3 is not UTF-8 text (binary data?)."
         + SKIP),
    Case("criteo_nul", _criteo(_cell(2, 39, b"\x00")),
         LINE3 + "column 'C26': holds a NUL byte (binary data?)." + SKIP),
    Case("criteo_overlong", _criteo(_cell(2, 15, b"f" * 140_000)),
         LINE3 + "column 'C2': 'ffffffffffffffffffffffffffffffffffffffff'... "
         "(140000 characters) is longer than the 131072 characters a cell "
         "may hold." + SKIP),
    Case("criteo_empty_file", _criteo(lambda rows: []),
         "error: {tmp}/in.tsv: no row to convert (the file holds no data "
         "rows)."),
]


def _csv(text, delimiter=","):
  """Converts a CSV text in process; returns the first row's cells."""
  spec = {
      "sparse_features": [{"name": "city", "hash_buckets": 5},
                          {"name": "n", "dtype": "int64", "hash_buckets": 5}],
      "dense_features": [{"name": "price"}],
      "pretrained_features": [{"name": "vec", "dim": 2}],
      "tasks": [{"name": "y", "weight": "w"}]}

  def run(tmp, data):
    del data
    schema = schema_lib.Schema.from_dict(spec)
    path = tmp / "in.csv"
    path.write_bytes(text.encode())
    with records.DatasetWriter(schema, str(tmp / "out"), 1) as writer:
      writer.close(csv_to_tfrecord.convert_delimited(
          str(path), schema, writer, delimiter))
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        str(tmp / "out" / "train-00000-of-00001.tfrecord")))).numpy())
    return " ".join(f"{k}={list(getattr(v, v.WhichOneof('kind')).value)}"
                    for k, v in sorted(first.features.feature.items()))
  return run


HEADER = "y,w,city,n,price,vec\n"
CSV_LINE2 = "error: {tmp}/in.csv, line 2: "

CSV_CASES = [
    Case("csv_quoted_delimiter_and_quote",
         _csv(HEADER + '1,2,"Paris, ""TX""",4,0.5,1 2\n'),
         "city=[b'Paris, \"TX\"'] n=[4] price=[0.5] vec=[1.0, 2.0] w=[2.0] "
         "y=[1.0]"),
    Case("csv_missing_cells_stay_missing", _csv(HEADER + "0,1,,,,3 4\n"),
         "vec=[3.0, 4.0] w=[1.0] y=[0.0]"),
    Case("csv_unclosed_quote", _csv(HEADER + '1,2,"Paris,4,0.5,1 2\n'
                                    + "0,1,a,1,1,1 1\n"),
         CSV_LINE2 + "column 'city': a quote that does not enclose the "
         "whole field (quote a field as \"...\" and double quotes inside it; "
         "a quoted field cannot span lines)." + SKIP),
    Case("csv_quote_inside_field", _csv(HEADER + '1,2,Par"is,4,0.5,1 2\n'),
         CSV_LINE2 + "column 'city': a quote that does not enclose the "
         "whole field (quote a field as \"...\" and double quotes inside it; "
         "a quoted field cannot span lines)." + SKIP),
    Case("csv_nan", _csv(HEADER + "1,2,a,4,nan,1 2\n"),
         CSV_LINE2 + "column 'price': 'nan' is not a finite decimal number."
         + SKIP),
    Case("csv_overflow", _csv(HEADER + "1,2,a,4,1e999,1 2\n"),
         CSV_LINE2 + "column 'price': '1e999' is not a finite decimal "
         "number." + SKIP),
    Case("csv_vector_short", _csv(HEADER + "1,2,a,4,0.5,1\n"),
         CSV_LINE2 + "column 'vec': vector 'vec' has 1 values, the schema "
         "says dim=2." + SKIP),
    Case("csv_vector_inf", _csv(HEADER + "1,2,a,4,0.5,1 inf\n"),
         CSV_LINE2 + "column 'vec': 'inf' is not a finite decimal number."
         + SKIP),
    Case("csv_weight_empty", _csv(HEADER + "1,,a,4,0.5,1 2\n"),
         CSV_LINE2 + "column 'w': required value of 'w' is empty." + SKIP),
    Case("csv_int64_sparse_decimal", _csv(HEADER + "1,2,a,1.5,0.5,1 2\n"),
         CSV_LINE2 + "column 'n': '1.5' is not an integer." + SKIP),
    Case("csv_duplicate_column", _csv("y,w,city,n,price,vec,city\n"),
         "error: {tmp}/in.csv, line 1 (header): column(s) ['city'] appear "
         "more than once."),
    Case("csv_missing_column", _csv("y,w,city,n,vec\n1,2,a,4,1 2\n"),
         "error: {tmp}/in.csv: the schema's feature(s) ['price'] have no "
         "column; the columns are ['y', 'w', 'city', 'n', 'vec']."),
    Case("csv_header_only", _csv(HEADER),
         "error: {tmp}/in.csv: no row to convert (the file holds no data "
         "rows)."),
    Case("csv_empty_file", _csv(""),
         "error: {tmp}/in.csv: empty file, expected a header line."),
    Case("csv_two_character_delimiter", _csv(HEADER, delimiter=",;"),
         "error: delimiter ',;' cannot separate fields: use one character "
         "other than a quote or line break."),
]


# -- TFRecords ----------------------------------------------------------------
def _tfrecord(edit):
  """Reads a 4-record all-kinds file with `edit(rows)` applied."""
  def run(tmp, data):
    del data
    rows = [tfexamples.all_kinds_row(i) for i in range(4)]
    serialized = edit([tfexamples.example(r) for r in rows], rows)
    path = tfexamples.write_records(str(tmp / "in.tfrecord"), serialized)
    ds = rankup_tf.make_dataset(path, tfexamples.all_kinds_schema(), 4,
                                shuffle=False, drop_remainder=False)
    return f"batches={len(list(ds))}"
  return run


def _record(index, **values):
  def edit(serialized, rows):
    rows[index].update(values)
    serialized[index] = tfexamples.example(rows[index])
    return serialized
  return edit


def _not_a_tfrecord(tmp, data):
  del data
  (tmp / "in.tfrecord").write_bytes(b"label,I1\n1,2\n")
  ds = rankup_tf.make_dataset(str(tmp / "in.tfrecord"),
                              tfexamples.all_kinds_schema(), 4)
  return f"batches={len(list(ds))}"


RECORD2 = ("error: Feature {feature} must be finite; record "
           "{{tmp}}/in.tfrecord:2")

TFRECORD_CASES = [
    Case("tfrecord_clean", _tfrecord(lambda s, r: s), "batches=1"),
    Case("tfrecord_empty_file", _tfrecord(lambda s, r: []), "batches=0"),
    Case("tfrecord_nan_dense", _tfrecord(_record(2, d_raw=NAN)),
         RECORD2.format(feature="d_raw") + " has nan (leave a missing value "
         "out: it gets the default)."),
    Case("tfrecord_inf_dense", _tfrecord(_record(2, d_std=-INF)),
         RECORD2.format(feature="d_std") + " has -inf (leave a missing value "
         "out: it gets the default)."),
    Case("tfrecord_nan_vector", _tfrecord(_record(2, u_vec=[0.0, NAN, 0.0,
                                                            0.0])),
         RECORD2.format(feature="u_vec") + " has [0.000000 nan 0.000000 "
         "0.000000] (leave a missing value out: it gets the default)."),
    Case("tfrecord_label_half", _tfrecord(_record(2, click=0.5)),
         "error: Label click must be 0 or 1; record {tmp}/in.tfrecord:2 has "
         "0.500000."),
    Case("tfrecord_not_a_tfrecord", _not_a_tfrecord,
         "error: Corrupt or truncated TFRecord file {tmp}/in.tfrecord: only "
         "0 of its 13 bytes could be read as records."),
]


# -- schemas ------------------------------------------------------------------
def _schema(**changes):
  def run(tmp, data):
    del tmp, data
    spec = dict(tfexamples.ALL_KINDS_SCHEMA)
    for key, value in changes.items():
      spec[key] = value
    return str(schema_lib.Schema.from_dict(spec).dense_names)
  return run


_DENSE = tfexamples.ALL_KINDS_SCHEMA["dense_features"]

SCHEMA_CASES = [
    Case("schema_optional_dense", _schema(dense_features=[
        {"name": "d_opt", "optional": True}]), "['d_opt']"),
    Case("schema_optional_not_bool", _schema(dense_features=[
        {"name": "d", "optional": "yes"}]),
         "error: schema: dense feature 'd': optional must be true or false, "
         "got 'yes'."),
    Case("schema_nan_default", _schema(dense_features=[
        {"name": "d", "default": NAN}]),
         "error: schema: dense feature 'd': default must be a finite number, "
         "got nan."),
    Case("schema_unknown_key", _schema(dense_features=[
        {"name": "d", "normalisation": "log1p"}]),
         "error: schema: dense feature 'd': unknown key(s) ['normalisation']; "
         "allowed: ['default', 'mean', 'name', 'normalization', 'optional', "
         "'std']."),
]


# -- settings -----------------------------------------------------------------
def _presence(dense):
  """check_dense_fields_present on all-kinds records, schema dense fields
  replaced by `dense`."""
  def run(tmp, data):
    del data
    spec = dict(tfexamples.ALL_KINDS_SCHEMA, dense_features=dense)
    path = tfexamples.write_records(str(tmp / "in.tfrecord"), [
        tfexamples.example(tfexamples.all_kinds_row(i)) for i in range(5)])
    return checks.check_dense_fields_present(
        path, schema_lib.Schema.from_dict(spec))
  return run


def _call(function, *args):
  return lambda tmp, data: function(*args)


def _count(count):
  def run(tmp, data):
    del data
    path = tfexamples.write_records(str(tmp / "in.tfrecord"), [
        tfexamples.example(tfexamples.all_kinds_row(i)) for i in range(3)])
    return len(input_pipeline.read_examples(path, count))
  return run


SETTING_CASES = [
    Case("learning_rate_ok", _call(checks.check_learning_rate,
                                   "dense_learning_rate", 1e-3), "None"),
    Case("learning_rate_negative", _call(checks.check_learning_rate,
                                         "dense_learning_rate", -0.01),
         "error: dense_learning_rate must be a positive finite number, got "
         "-0.01."),
    Case("learning_rate_zero", _call(checks.check_learning_rate,
                                     "sparse_learning_rate", 0.0),
         "error: sparse_learning_rate must be a positive finite number, got "
         "0.0."),
    Case("learning_rate_nan", _call(checks.check_learning_rate,
                                    "dense_learning_rate", NAN),
         "error: dense_learning_rate must be a positive finite number, got "
         "nan."),
    Case("model_name_traversal", _call(export_lib.check_model_name,
                                       "../../x"),
         "error: model name '../../x' is not allowed: use 1 to 50 lower-case "
         "letters, digits and '-', starting and ending with a letter or digit "
         "(the name becomes a folder, a URL path segment and Kubernetes "
         "names)."),
    Case("model_name_ok", _call(export_lib.check_model_name, "rankup-v2"),
         "rankup-v2"),
    Case("example_count_zero", _count(0),
         "error: the example count must be at least 1, got 0."),
    Case("example_count_beyond_the_file", _count(10), "3"),
    Case("dense_field_misspelt", _presence(_DENSE + [{"name": "I01"}]),
         "error: dense feature(s) ['I01'] of the schema are in none of the "
         "first 5 records of {tmp}/in.tfrecord: misspelt in the schema or "
         "the data? (Declare a field \"optional\": true in the schema if the "
         "data may lack it.)"),
    Case("dense_field_optional", _presence(_DENSE + [
        {"name": "I01", "optional": True}]), "None"),
]


# -- serving requests (the graph both serving signatures run) -----------------
def _serve_examples(edit):
  def run(tmp, data):
    del tmp, data
    rows = [tfexamples.all_kinds_row(i) for i in range(3)]
    edit(rows)
    transform = features_lib.FeatureTransform(tfexamples.all_kinds_schema())
    features, _ = transform.parse(
        tf.constant([tfexamples.example(r) for r in rows]),
        with_labels=False)
    return f"d_raw={features['d_raw'].numpy().tolist()}"
  return run


def _serve_raw(edit):
  def run(tmp, data):
    del tmp, data
    schema = tfexamples.all_kinds_schema()
    raw = {k: v.numpy() for k, v in features_lib.padded_raw_features(
        schema, tf.constant([tfexamples.example(tfexamples.all_kinds_row(i))
                             for i in range(3)])).items()}
    edit(raw)
    features = features_lib.FeatureTransform(schema).transform_padded(
        {k: tf.constant(v) for k, v in raw.items()})
    return f"s_hash={features['s_hash'].numpy().tolist()}"
  return run


def _set(**values):
  """An edit of the second example."""
  def edit(rows):
    rows[1].update(values)
  return edit


SERVING_CASES = [
    Case("serve_examples_clean", _serve_examples(lambda rows: None),
         "d_raw=[-1.0, -1.0, -1.0]"),
    Case("serve_examples_nan", _serve_examples(_set(d_log=NAN)),
         "error: Feature d_log must be finite; record #1 of the batch has nan "
         "(leave a missing value out: it gets the default)."),
    Case("serve_examples_two_values", _serve_examples(_set(s_hash=["a",
                                                                   "b"])),
         "error: Feature s_hash is single-valued but record #1 of the batch "
         "holds 2 values (declare it multivalent in the schema if that is "
         "intended)."),
    Case("serve_raw_inf_vector",
         _serve_raw(lambda raw: raw["v_vec"].__setitem__((2, 3), np.inf)),
         "error: Feature v_vec must be finite; record #2 of the batch has "
         "[1.000000 0.000000 1.000000 inf] (leave a missing value out: it "
         "gets the default)."),
    Case("serve_raw_nan_dense",
         _serve_raw(lambda raw: raw["d_std"].__setitem__(0, np.nan)),
         "error: Feature d_std must be finite; record #0 of the batch has nan "
         "(leave a missing value out: it gets the default)."),
]

CASES = (CONVERTER_CASES + CSV_CASES + TFRECORD_CASES + SCHEMA_CASES
         + SETTING_CASES + SERVING_CASES)


def test_the_corpus_is_large_and_names_are_unique():
  assert len(CASES) >= 40
  assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path, shared_data):
  try:
    outcome = str(case.run(tmp_path, shared_data))
  except cli.INPUT_ERRORS as e:
    outcome = f"error: {cli.error_line(e)}"
  assert outcome == case.expected.format(tmp=tmp_path)
