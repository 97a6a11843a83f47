r"""Converts a delimited text file (CSV/TSV) into TFRecords of tf.Example.

    python -m data.csv_to_tfrecord --input=clicks.csv --schema=schema.json \
        --output_dir=/tmp/clicks --num_shards=4 [--eval_fraction=0.1]

The file needs a header naming its columns; every feature the schema names
must be a column (extra columns are reported and not converted). Cell format:

* empty cell = missing value (sparse and dense fields; tf.Example leaves the
  feature out, the input pipeline applies the schema's default);
* multivalent sparse cells hold values separated by --multivalent_separator;
* pretrained-vector cells hold exactly `dim` floats separated by
  --vector_separator;
* labels are 0 or 1, weights are floats; both are required.

A row that breaks these rules stops the conversion with an error naming the
file, line and column, unless --skip_bad_rows is set: then it is skipped and
counted (`skipped_rows` in stats.json and in the final log line).
Memory use is bounded by --chunk_rows whatever the input size.
"""

import csv
import io
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import rankup_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from rankup_tf import schema as schema_lib
from data import records

Cell = Callable[[str], Any]


def _parse_int(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{text!r} is not an integer") from None


def _parse_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f"{text!r} is not a number") from None
  if not math.isfinite(value):
    raise ValueError(f"{text!r} is not a finite number")
  return value


def _parse_label(text: str) -> float:
  if text.strip() in ("0", "1", "0.0", "1.0"):
    return float(text)
  raise ValueError(f"label {text!r} is not 0 or 1")


def cell_parsers(schema: schema_lib.Schema, multivalent_separator: str,
                 vector_separator: str) -> Dict[str, Cell]:
  """name -> function(cell text) -> value or None, raising ValueError."""
  parsers = {}

  def optional(parse):
    return lambda text: None if text == "" else parse(text)

  def required(parse, name):
    def parse_required(text):
      if text == "":
        raise ValueError(f"required value of {name!r} is empty")
      return parse(text)
    return parse_required

  for kind_name, kind in records.record_fields(schema).items():
    if kind == "sparse":
      f = schema.sparse(kind_name)
      scalar = _parse_int if f.dtype == "int64" else str
      if f.multivalent:
        parsers[kind_name] = optional(
            lambda text, scalar=scalar: [scalar(v) for v in
                                         text.split(multivalent_separator)])
      else:
        parsers[kind_name] = optional(scalar)
    elif kind == "dense":
      parsers[kind_name] = optional(_parse_float)
    elif kind == "pretrained":
      dim = schema.pretrained(kind_name).dim

      def vector(text, dim=dim, name=kind_name):
        values = [_parse_float(v) for v in text.split(vector_separator)]
        if len(values) != dim:
          raise ValueError(f"vector {name!r} has {len(values)} values, the "
                           f"schema says dim={dim}")
        return values
      parsers[kind_name] = required(vector, kind_name)
    elif kind == "label":
      parsers[kind_name] = required(_parse_label, kind_name)
    elif kind == "weight":
      parsers[kind_name] = required(_parse_float, kind_name)
    else:  # user_id
      scalar = _parse_int if schema.user_id.dtype == "int64" else str
      parsers[kind_name] = required(scalar, kind_name)
  return parsers


def _counting_lines(stream: io.BufferedReader, progress) -> Iterable[str]:
  for line in stream:
    progress.update(len(line))
    yield line.decode("utf-8")


def convert_delimited(
    input_path: str,
    schema: schema_lib.Schema,
    writer: records.DatasetWriter,
    delimiter: str,
    columns: Optional[Sequence[str]] = None,
    multivalent_separator: str = "|",
    vector_separator: str = " ",
    skip_bad_rows: bool = False,
    chunk_rows: int = 8192,
) -> Dict[str, Any]:
  """Streams a delimited file into `writer`; returns conversion counts.

  Args:
    columns: the column names when the file has no header (Criteo); None
      reads them from the first line.
  Raises:
    records.BadInputError: naming file, line and column of a bad row.
  """
  import tensorflow as tf
  parsers = cell_parsers(schema, multivalent_separator, vector_separator)
  total = tf.io.gfile.stat(input_path).length
  skipped = 0
  with tf.io.gfile.GFile(input_path, "rb") as stream, \
      records.progress_bar(total, f"converting {input_path}") as progress:
    reader = csv.reader(_counting_lines(stream, progress),
                        delimiter=delimiter)
    first_line = 1
    if columns is None:
      columns = next(reader, None)
      first_line = 2
      if columns is None:
        raise records.BadInputError(f"{input_path}: empty file, expected a "
                                    "header line.")
    columns = list(columns)
    missing = [n for n in parsers if n not in columns]
    if missing:
      raise records.BadInputError(
          f"{input_path}: the schema's feature(s) {missing} have no column; "
          f"the columns are {columns}.")
    extra = [c for c in columns if c not in parsers]
    if extra:
      logging.info("%s: columns not in the schema, not converted: %s",
                   input_path, extra)
    wanted = [(columns.index(n), n, p) for n, p in parsers.items()]
    chunk = {n: [] for n in parsers}
    for line_no, row in enumerate(reader, start=first_line):
      try:
        if len(row) != len(columns):
          raise ValueError(f"has {len(row)} fields, expected {len(columns)}")
        values = []
        for index, name, parse in wanted:
          try:
            values.append(parse(row[index]))
          except ValueError as e:
            raise ValueError(f"column {name!r}: {e}") from None
      except ValueError as e:
        if not skip_bad_rows:
          raise records.BadInputError(f"{input_path}, line {line_no}: {e}."
                                      " (--skip_bad_rows skips and counts "
                                      "such rows.)") from None
        skipped += 1
        continue
      for (_, name, _), value in zip(wanted, values):
        chunk[name].append(value)
      if len(chunk[wanted[0][1]]) >= chunk_rows:
        writer.add(chunk)
        chunk = {n: [] for n in parsers}
    if chunk[wanted[0][1]]:
      writer.add(chunk)
  if skipped:
    logging.warning("%s: skipped %d bad rows.", input_path, skipped)
  return {"skipped_rows": skipped, "source": input_path}


FLAGS = flags.FLAGS


def define_output_flags():
  """Flags every converter shares."""
  flags.DEFINE_string("output_dir", None, "Where shards, schema.json and "
                      "stats.json go.")
  flags.DEFINE_integer("num_shards", 4, "Training TFRecord shards to write.")
  flags.DEFINE_float("eval_fraction", 0.0, "Fraction of rows written to "
                     "eval-* shards instead (deterministic by --seed).")
  flags.DEFINE_integer("num_eval_shards", 0, "Eval shards (0: --num_shards).")
  flags.DEFINE_boolean("gzip", False, "Write GZIP-compressed shards.")
  flags.DEFINE_integer("seed", 0, "Seed of the train/eval split.")
  flags.DEFINE_boolean("skip_bad_rows", False, "Skip and count rows that "
                       "cannot be converted instead of stopping.")
  flags.mark_flag_as_required("output_dir")


def make_writer(schema: schema_lib.Schema) -> records.DatasetWriter:
  return records.DatasetWriter(
      schema, FLAGS.output_dir, FLAGS.num_shards,
      compression="GZIP" if FLAGS.gzip else "",
      eval_fraction=FLAGS.eval_fraction,
      num_eval_shards=FLAGS.num_eval_shards, seed=FLAGS.seed)


def report(stats: Dict[str, Any]) -> None:
  split_rows = ", ".join(f"{s}: {stats[s]['rows']} rows"
                         for s in ("train", "eval") if s in stats)
  print(f"Wrote {split_rows} to {FLAGS.output_dir} "
        f"(skipped bad rows: {stats.get('skipped_rows', 0)}).")


def main(argv: List[str]) -> None:
  del argv
  schema = schema_lib.Schema.load(FLAGS.schema)
  delimiter = FLAGS.delimiter or ("\t" if FLAGS.input.endswith(".tsv")
                                  else ",")
  writer = make_writer(schema)
  counts = convert_delimited(
      FLAGS.input, schema, writer, delimiter,
      multivalent_separator=FLAGS.multivalent_separator,
      vector_separator=FLAGS.vector_separator,
      skip_bad_rows=FLAGS.skip_bad_rows)
  report(writer.close(counts))


if __name__ == "__main__":
  flags.DEFINE_string("input", None, "CSV/TSV file with a header line.")
  flags.DEFINE_string("schema", None, "Schema JSON naming the columns to "
                      "convert.")
  flags.DEFINE_string("delimiter", None, "Field delimiter (default: tab for "
                      ".tsv, comma otherwise).")
  flags.DEFINE_string("multivalent_separator", "|", "Separates the values of "
                      "a multivalent cell.")
  flags.DEFINE_string("vector_separator", " ", "Separates the floats of a "
                      "pretrained-vector cell.")
  define_output_flags()
  flags.mark_flags_as_required(["input", "schema"])
  app.run(main)
