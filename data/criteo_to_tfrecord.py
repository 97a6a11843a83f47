r"""Converts raw Kaggle Criteo click logs into TFRecords of tf.Example.

    python -m data.criteo_to_tfrecord --input=train.txt \
        --output_dir=/tmp/criteo --num_shards=64 --eval_fraction=0.1

(or `--eval_input=day_23.txt`: a separate file, same layout, as the eval
split.)

Input: the Display Advertising Challenge's `train.txt` layout (45M rows, or
`../shared/data/criteo_8k/*.tsv`): tab-separated, no header, no quoting (a
`"` is an ordinary character), `label`, 13 integer features I1..I13 (I2 can
be negative), 26 categorical features C1..C26 (8-hex-digit hashes); an
empty field is a missing value and stays missing in the tf.Example (the
feature is left out). Any other cell (`3.75` or `1_000` in an integer
column, a hash of another length) is a bad row, named by line and column.

Schema written: task `label`; I1..I13 dense with --dense_normalization
(log1p by default, i.e. sign(x) log(1 + |x|)); C1..C26 string sparse fields
hashed into --hash_buckets buckets. Criteo's fields are anonymous, so there
are no semantic groups: RankMixer's semantic split sees one ordered group.
Streaming: memory stays constant whatever the input size.
"""

import re
from typing import Any, Dict, List

from absl import flags

from rankup_tf import cli
from rankup_tf import schema as schema_lib
from rankup_tf.data import csv_to_tfrecord
from rankup_tf.data import records

NUM_INTEGER = 13
NUM_CATEGORICAL = 26
LABEL = "label"
COLUMNS = ([LABEL] + [f"I{i}" for i in range(1, NUM_INTEGER + 1)]
           + [f"C{i}" for i in range(1, NUM_CATEGORICAL + 1)])
_HASH_RE = re.compile(r"[0-9a-f]{8}")


def _parse_hash(text: str) -> str:
  if not _HASH_RE.fullmatch(text):
    raise ValueError(f"{csv_to_tfrecord.show(text)} is not an 8-hex-digit "
                     "hash")
  return text


# Criteo's own cell formats, stricter than the schema's (dense fields are
# floats there, hashed fields any string).
CELL_PARSERS = dict(
    {f"I{i}": csv_to_tfrecord.optional(
        lambda text: float(csv_to_tfrecord.parse_int(text)))
     for i in range(1, NUM_INTEGER + 1)},
    **{f"C{i}": csv_to_tfrecord.optional(_parse_hash)
       for i in range(1, NUM_CATEGORICAL + 1)})


def criteo_schema(hash_buckets: int = 100_000,
                  dense_normalization: str = "log1p") -> schema_lib.Schema:
  """The schema of raw Criteo rows. 'standardize' stats come from the data."""
  placeholder = ({"mean": 0.0, "std": 1.0}
                 if dense_normalization == "standardize" else {})
  return schema_lib.Schema.from_dict({
      "name": "criteo",
      "sparse_features": [
          {"name": f"C{i}", "dtype": "string", "hash_buckets": hash_buckets}
          for i in range(1, NUM_CATEGORICAL + 1)],
      "dense_features": [
          dict({"name": f"I{i}", "default": 0.0,
                "normalization": dense_normalization}, **placeholder)
          for i in range(1, NUM_INTEGER + 1)],
      "tasks": [{"name": LABEL}],
  }, source="criteo schema")


def convert(input_path: str, schema: schema_lib.Schema,
            writer: records.DatasetWriter, skip_bad_rows: bool = False,
            split: str = "") -> Dict[str, Any]:
  """Streams a raw Criteo file into `writer` (all rows to `split` if set);
  returns conversion counts."""
  return csv_to_tfrecord.convert_delimited(
      input_path, schema, writer, delimiter="\t", columns=COLUMNS,
      skip_bad_rows=skip_bad_rows, quoting=False, parsers=CELL_PARSERS,
      split=split)


def main(argv: List[str]) -> None:
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors():
    schema = criteo_schema(FLAGS.hash_buckets, FLAGS.dense_normalization)
    records.write_dataset(schema, lambda writer, path, split: convert(
        path, schema, writer, FLAGS.skip_bad_rows, split))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("input", None, "Raw Criteo file (train.txt layout).")
  flags.DEFINE_integer("hash_buckets", 100_000, "Hash buckets per "
                       "categorical field.")
  flags.DEFINE_enum("dense_normalization", "log1p",
                    list(schema_lib.NORMALIZATIONS),
                    "Normalization of I1..I13.")
  records.define_output_flags()
  flags.mark_flag_as_required("input")


def cli_main() -> None:
  """`python -m data.criteo_to_tfrecord`, the `rankup-convert-criteo` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
