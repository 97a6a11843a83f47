r"""Input-pipeline throughput: read + parse + preprocess, no model.

    python -m benchmarks.input_pipeline --data_dir=/tmp/synthetic \
        --batch_size=4096 --batches=100

Prints examples/second of `rankup_tf.make_dataset` over the training shards
(after --warmup_batches), with the pipeline's shuffle on, as training uses it:
in the fastest order (the default) and in one fixed order (the trainer's
--deterministic_input), and the ratio of the two, measured in one run.
"""

import os
import time

from absl import app
from absl import flags

import rankup_tf
from rankup_tf import schema as schema_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "A converter's output folder.")
flags.DEFINE_integer("batch_size", 4096, "Examples per batch.")
flags.DEFINE_integer("batches", 100, "Batches timed.")
flags.DEFINE_integer("warmup_batches", 5, "Batches read before timing.")
flags.mark_flag_as_required("data_dir")


def measure(file_pattern: str, schema: schema_lib.Schema, batch_size: int,
            batches: int, warmup_batches: int,
            deterministic: bool = False) -> float:
  """Examples per second of make_dataset over `batches` batches."""
  ds = rankup_tf.make_dataset(file_pattern, schema, batch_size, repeat=True,
                              deterministic=deterministic)
  iterator = iter(ds)
  for _ in range(warmup_batches):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  schema = schema_lib.Schema.load(os.path.join(FLAGS.data_dir, "schema.json"))
  rates = {
      deterministic: measure(os.path.join(FLAGS.data_dir, "train-*"), schema,
                             FLAGS.batch_size, FLAGS.batches,
                             FLAGS.warmup_batches, deterministic)
      for deterministic in (False, True)}
  print(f"input pipeline: {rates[False]:,.0f} examples/s, in one fixed "
        f"order {rates[True]:,.0f} ({rates[True] / rates[False]:.2f}x) "
        f"(batch {FLAGS.batch_size}, {FLAGS.batches} batches, "
        f"{os.cpu_count()} CPUs, {len(schema.sparse_features)} sparse, "
        f"{len(schema.dense_features)} dense, "
        f"{len(schema.pretrained_features)} pretrained fields)")


if __name__ == "__main__":
  app.run(main)
