r"""Converts a delimited text file (CSV/TSV) into TFRecords of tf.Example.

    python -m data.csv_to_tfrecord --input=clicks.csv --schema=schema.json \
        --output_dir=/tmp/clicks --num_shards=4 \
        [--eval_fraction=0.1 | --eval_input=later_clicks.csv]

The file needs a header naming its columns; every feature the schema names
must be a column (extra columns are reported and not converted). A record is
one line (UTF-8; a field may be quoted "like, this" with "" for a quote, but
may not span lines). Cell format:

* empty cell = missing value (sparse and dense fields; tf.Example leaves the
  feature out, the input pipeline applies the schema's default);
* integers are plain decimal (`-12`), floats decimal or scientific
  (`3.75`, `1e-3`), never `nan`, `inf`, `1_000` or padded with spaces;
* multivalent sparse cells hold values separated by --multivalent_separator;
* pretrained-vector cells hold exactly `dim` floats separated by
  --vector_separator;
* labels are 0 or 1, weights are floats; both are required.

A row that breaks these rules stops the conversion with one line naming the
file, line and column, unless --skip_bad_rows is set: then that line, and
only that line, is skipped and counted (`skipped_rows` in stats.json and in
the final log line). A conversion that would write no row fails.
--eval_input converts a second file, with its own header, the same way into
the eval split (its skipped rows: `eval_skipped_rows`); the delimiter
follows each file's extension unless --delimiter is set.
Memory use is bounded by --chunk_rows whatever the input size.
"""

import codecs
import math
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence
from typing import Tuple

from absl import flags
from absl import logging

from rankup_tf import cli
from rankup_tf import schema as schema_lib
from rankup_tf.data import records

Cell = Callable[[str], Any]

# Longest cell accepted: longer ones are garbage (a lost line break, binary
# data), not values.
MAX_CELL_CHARS = 1 << 17
# Skipped rows whose reason is logged (all are counted).
_LOGGED_SKIPS = 10

_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?",
                       re.ASCII)


def show(text: str) -> str:
  """A cell as an error message quotes it: repr, long ones shortened."""
  if len(text) <= 40:
    return repr(text)
  return f"{text[:40]!r}... ({len(text)} characters)"


def parse_int(text: str) -> int:
  if not _INT_RE.fullmatch(text):
    raise ValueError(f"{show(text)} is not an integer")
  return int(text)


def parse_float(text: str) -> float:
  value = float(text) if _FLOAT_RE.fullmatch(text) else math.nan
  if not math.isfinite(value):  # not a number, or out of float range
    raise ValueError(f"{show(text)} is not a finite decimal number")
  return value


def _parse_label(text: str) -> float:
  if text in ("0", "1", "0.0", "1.0"):
    return float(text)
  raise ValueError(f"label {show(text)} is not 0 or 1")


def optional(parse: Cell) -> Cell:
  """An empty cell is a missing value (None); others go to `parse`."""
  return lambda text: None if text == "" else parse(text)


def cell_parsers(schema: schema_lib.Schema, multivalent_separator: str,
                 vector_separator: str) -> Dict[str, Cell]:
  """name -> function(cell text) -> value or None, raising ValueError."""
  parsers = {}

  def required(parse, name):
    def parse_required(text):
      if text == "":
        raise ValueError(f"required value of {name!r} is empty")
      return parse(text)
    return parse_required

  for kind_name, kind in records.record_fields(schema).items():
    if kind == "sparse":
      f = schema.sparse(kind_name)
      scalar = parse_int if f.dtype == "int64" else str
      if f.multivalent:
        parsers[kind_name] = optional(
            lambda text, scalar=scalar: [scalar(v) for v in
                                         text.split(multivalent_separator)])
      else:
        parsers[kind_name] = optional(scalar)
    elif kind == "dense":
      parsers[kind_name] = optional(parse_float)
    elif kind == "pretrained":
      dim = schema.pretrained(kind_name).dim

      def vector(text, dim=dim, name=kind_name):
        values = [parse_float(v) for v in text.split(vector_separator)]
        if len(values) != dim:
          raise ValueError(f"vector {name!r} has {len(values)} values, the "
                           f"schema says dim={dim}")
        return values
      parsers[kind_name] = required(vector, kind_name)
    elif kind == "label":
      parsers[kind_name] = required(_parse_label, kind_name)
    elif kind == "weight":
      parsers[kind_name] = required(parse_float, kind_name)
    else:  # user_id
      scalar = parse_int if schema.user_id.dtype == "int64" else str
      parsers[kind_name] = required(scalar, kind_name)
  return parsers


class _BadField(ValueError):
  """A line that cannot be split into fields; `index` is the bad field."""

  def __init__(self, index: int, message: str):
    super().__init__(message)
    self.index = index


def _quoted_field_re(delimiter: str) -> "re.Pattern":
  """One field: "quoted" (with "" for a quote) or plain, then a delimiter or
  the end of the line."""
  d = re.escape(delimiter)
  return re.compile(rf'"((?:[^"]|"")*)"(?={d}|$)|([^"{d}]*)(?={d}|$)')


def _split_quoted(text: str, delimiter: str, field_re: "re.Pattern"
                  ) -> List[str]:
  """Fields of one CSV line (RFC 4180 quoting, no line breaks in fields).

  Raises:
    _BadField: a quote that does not open and close a whole field.
  """
  fields, pos = [], 0
  while True:
    match = field_re.match(text, pos)
    if match is None:
      raise _BadField(len(fields), "a quote that does not enclose the whole "
                      "field (quote a field as \"...\" and double quotes "
                      "inside it; a quoted field cannot span lines)")
    quoted, plain = match.groups()
    fields.append(plain if quoted is None else quoted.replace('""', '"'))
    pos = match.end()
    if pos == len(text):
      return fields
    pos += len(delimiter)


def _split_line(raw: bytes, delimiter: str,
                field_re: Optional["re.Pattern"]) -> List[str]:
  """Decodes and splits one line; _BadField names the field at fault."""
  raw = raw.rstrip(b"\n")
  raw = raw[:-1] if raw.endswith(b"\r") else raw
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    prefix = raw[:e.start].decode("utf-8", "replace")
    raise _BadField(prefix.count(delimiter), f"byte 0x{raw[e.start]:02x} is "
                    "not UTF-8 text (binary data?)") from None
  if "\0" in text:
    raise _BadField(text[:text.index("\0")].count(delimiter),
                    "holds a NUL byte (binary data?)")
  fields = (text.split(delimiter) if field_re is None
            else _split_quoted(text, delimiter, field_re))
  for index, field in enumerate(fields):
    if len(field) > MAX_CELL_CHARS:
      raise _BadField(index, f"{show(field)} is longer than the "
                      f"{MAX_CELL_CHARS} characters a cell may hold")
  return fields


def _numbered_lines(stream, progress) -> Iterable[Tuple[int, bytes]]:
  for line_no, raw in enumerate(stream, start=1):
    progress.update(len(raw))
    yield line_no, raw


def _check_input(input_path: str) -> int:
  """The input's size; raises BadInputError unless it is a readable file."""
  import tensorflow as tf
  if not tf.io.gfile.exists(input_path):
    raise records.BadInputError(f"{input_path}: no such file.")
  if tf.io.gfile.isdir(input_path):
    raise records.BadInputError(f"{input_path} is a directory, expected a "
                                "file.")
  return tf.io.gfile.stat(input_path).length


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
    quoting: bool = True,
    parsers: Optional[Dict[str, Cell]] = None,
    split: str = "",
) -> Dict[str, Any]:
  """Streams a delimited file into `writer`; returns conversion counts.

  Args:
    columns: the column names when the file has no header (Criteo); None
      reads them from the first line.
    quoting: fields may be quoted (CSV); False for formats without quoting
      (Criteo's TSV), where a quote is an ordinary character.
    parsers: cell parsers replacing the schema's for some fields (Criteo's
      integer and hash columns).
    split: the split every row goes to ('eval' for a separate eval file);
      '' lets `writer` split them by its eval_fraction.
  Raises:
    records.BadInputError: naming file, line and column of a bad row, or a
      file that holds no row to convert.
  """
  import tensorflow as tf
  if len(delimiter) != 1 or delimiter in '"\n\r':
    raise ValueError(f"delimiter {delimiter!r} cannot separate fields: use "
                     "one character other than a quote or line break.")
  parsers = dict(cell_parsers(schema, multivalent_separator,
                              vector_separator), **(parsers or {}))
  total = _check_input(input_path)
  field_re = _quoted_field_re(delimiter) if quoting else None
  skipped = converted = 0

  with tf.io.gfile.GFile(input_path, "rb") as stream, \
      records.progress_bar(total, f"converting {input_path}") as progress:
    lines = _numbered_lines(stream, progress)
    if columns is None:
      _, header = next(lines, (1, None))
      if header is None:
        raise records.BadInputError(f"{input_path}: empty file, expected a "
                                    "header line.")
      header = header[len(codecs.BOM_UTF8):] if header.startswith(
          codecs.BOM_UTF8) else header  # Spreadsheets start with a BOM.
      try:
        columns = _split_line(header, delimiter, field_re)
      except _BadField as e:
        raise records.BadInputError(
            f"{input_path}, line 1 (header), field {e.index + 1}: {e}."
            ) from None
      repeated = sorted({c for c in columns if columns.count(c) > 1})
      if repeated:
        raise records.BadInputError(
            f"{input_path}, line 1 (header): column(s) {repeated} appear "
            "more than once.")
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

    def column(index):
      return repr(columns[index]) if index < len(columns) else \
          f"#{index + 1} (of {len(columns)})"

    wanted = [(columns.index(n), n, p) for n, p in parsers.items()]
    chunk = {n: [] for n in parsers}
    for line_no, raw in lines:
      try:
        row = _split_line(raw, delimiter, field_re)
        if len(row) != len(columns):
          raise ValueError(f"has {len(row)} fields, expected {len(columns)}")
        values = []
        for index, name, parse in wanted:
          try:
            values.append(parse(row[index]))
          except ValueError as e:
            raise _BadField(index, str(e)) from None
      except _BadField as e:
        error = (f"{input_path}, line {line_no}: column {column(e.index)}: "
                 f"{e}.")
      except ValueError as e:
        error = f"{input_path}, line {line_no}: {e}."
      else:
        for (_, name, _), value in zip(wanted, values):
          chunk[name].append(value)
        converted += 1
        if len(chunk[wanted[0][1]]) >= chunk_rows:
          writer.add(chunk, split)
          chunk = {n: [] for n in parsers}
        continue
      if not skip_bad_rows:
        raise records.BadInputError(
            f"{error} (--skip_bad_rows skips and counts such rows.)")
      skipped += 1
      if skipped <= _LOGGED_SKIPS:
        logging.warning("skipped: %s", error)
    if chunk[wanted[0][1]]:
      writer.add(chunk, split)
  if converted == 0:
    raise records.BadInputError(
        f"{input_path}: no row to convert"
        + (f" (all {skipped} rows are bad)." if skipped else
           " (the file holds no data rows)."))
  if skipped:
    logging.warning("%s: skipped %d bad rows.", input_path, skipped)
  return {"skipped_rows": skipped, "source": input_path}


FLAGS = flags.FLAGS


def main(argv: List[str]) -> None:
  del argv
  with cli.one_line_errors():
    schema = schema_lib.Schema.load(FLAGS.schema)
    records.write_dataset(
        schema, lambda writer, path, split: convert_delimited(
            path, schema, writer,
            FLAGS.delimiter or ("\t" if path.endswith(".tsv") else ","),
            multivalent_separator=FLAGS.multivalent_separator,
            vector_separator=FLAGS.vector_separator,
            skip_bad_rows=FLAGS.skip_bad_rows, split=split))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("input", None, "CSV/TSV file with a header line.")
  flags.DEFINE_string("schema", None, "Schema JSON naming the columns to "
                      "convert.")
  flags.DEFINE_string("delimiter", None, "Field delimiter (default: tab for "
                      ".tsv, comma otherwise).")
  flags.DEFINE_string("multivalent_separator", "|", "Separates the values of "
                      "a multivalent cell.")
  flags.DEFINE_string("vector_separator", " ", "Separates the floats of a "
                      "pretrained-vector cell.")
  records.define_output_flags()
  flags.mark_flags_as_required(["input", "schema"])


def cli_main() -> None:
  """`python -m data.csv_to_tfrecord`, the `rankup-convert-csv` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
