r"""Why strategies were slow: one embedding training step, three lookups.

    python -m benchmarks.embedding_lookup --rows=2600000,26000000

One table of `rows` x 16, 26 ids per example, batch 256, a Dense layer on
top, legacy Adagrad (the trainer's sparse optimizer); ms per training step
(mean of 20 after 3 warm-up steps), each configuration in its own process:

  keras      tf.keras.layers.Embedding (tf.nn.embedding_lookup);
  tfrs       tfrs.layers.embedding.TPUEmbedding (its CPU path: one lookup
             per feature through tf.nn.embedding_lookup);
  rankup     rankup_tf.layers.MultiEmbedding (one view, all 26 fields
             stacked in one table; replica-local sparse gather);

under no strategy, MirroredStrategy over one device and over two logical
CPU devices (the global batch split in two). Also reports whether the
traced step reads the whole table (a ReadVariableOp of the table's shape).
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

import rankup_tf
import tensorflow as tf
import tensorflow_recommenders as tfrs

FLAGS = flags.FLAGS
flags.DEFINE_list("rows", ["2600000", "26000000"], "Table sizes.")
flags.DEFINE_list("lookups", ["keras", "tfrs", "rankup"], "Lookups.")
flags.DEFINE_list("strategies", ["none", "mirrored1", "mirrored2"],
                  "Strategies.")
flags.DEFINE_string("one", "", "Internal: measure one JSON configuration.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, FIELDS, DIM = 256, 26, 16


def _measure(lookup: str, strategy_name: str, rows: int) -> dict:
  if strategy_name == "mirrored2":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)
  strategy = {"none": tf.distribute.get_strategy,
              "mirrored1": lambda: tf.distribute.MirroredStrategy(
                  ["/cpu:0"]),
              "mirrored2": lambda: tf.distribute.MirroredStrategy(
                  ["/cpu:0", "/cpu:1"])}[strategy_name]()
  names = [f"f{i}" for i in range(FIELDS)]
  ids = tf.random.uniform([BATCH, FIELDS], 0, rows // FIELDS, tf.int64)
  features = {n: ids[:, i] for i, n in enumerate(names)}
  labels = tf.random.uniform([BATCH, 1])
  with strategy.scope():
    if lookup == "keras":
      table = tf.keras.layers.Embedding(rows, DIM)
      embed = lambda f: table(tf.stack([f[n] for n in names], 1))
    elif lookup == "tfrs":
      config = tf.tpu.experimental.embedding.TableConfig(
          vocabulary_size=rows, dim=DIM)
      table = tfrs.layers.embedding.TPUEmbedding(
          {n: tf.tpu.experimental.embedding.FeatureConfig(table=config)
           for n in names}, optimizer=None)
      embed = lambda f: tf.stack([table(f)[n] for n in names], 1)
    else:
      table = rankup_tf.layers.MultiEmbedding(
          [rankup_tf.schema.SparseFeature(n, hash_buckets=rows // FIELDS)
           for n in names], [DIM])
      embed = lambda f: table(f)[0]
    dense = tf.keras.layers.Dense(1)
    optimizer = tf.keras.optimizers.legacy.Adagrad(0.05)
    dense(tf.reshape(embed(features), [BATCH, -1]))
  variables = table.trainable_variables + dense.trainable_variables

  def step(features, labels):
    with tf.GradientTape() as tape:
      logits = dense(tf.reshape(embed(features), [tf.shape(labels)[0], -1]))
      loss = tf.reduce_mean(tf.square(logits - labels))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  data = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((features, labels)).repeat().unbatch()
      .batch(BATCH))

  @tf.function
  def train(batch):
    return strategy.run(step, args=batch)

  iterator = iter(data)
  for _ in range(3):
    train(next(iterator))
  start = time.perf_counter()
  for _ in range(20):
    train(next(iterator))
  ms = (time.perf_counter() - start) / 20 * 1000
  graph = train.get_concrete_function(next(iterator)).graph
  whole_table_reads = sum(
      1 for op in graph.get_operations() if op.type == "ReadVariableOp"
      and op.outputs[0].shape.rank and op.outputs[0].shape[0] >= rows // 2)
  return {"ms": ms, "whole_table_reads": whole_table_reads}


def main(argv):
  del argv
  if FLAGS.one:
    spec = json.loads(FLAGS.one)
    print("RESULT " + json.dumps(_measure(**spec)), flush=True)
    return
  results = []
  for rows in (int(r) for r in FLAGS.rows):
    for lookup in FLAGS.lookups:
      for strategy in FLAGS.strategies:
        spec = json.dumps({"lookup": lookup, "strategy_name": strategy,
                           "rows": rows})
        out = subprocess.run([sys.executable, "-m",
                              "benchmarks.embedding_lookup", f"--one={spec}"],
                             cwd=REPO, capture_output=True, text=True)
        if out.returncode != 0:
          raise RuntimeError(out.stderr[-3000:])
        result = json.loads(out.stdout.split("RESULT ")[1])
        results.append((rows, lookup, strategy, result))
        print(f"measured {rows:,} rows {lookup} {strategy}: "
              f"{result['ms']:.1f} ms/step", flush=True)
  base = {(r, l): res["ms"] for r, l, s, res in results if s == "none"}
  print(f"\nbatch {BATCH}, {FIELDS} ids per example, dim {DIM}, legacy "
        "Adagrad")
  print(f"{'rows':>11} {'lookup':>7} {'strategy':>10} {'ms/step':>8} "
        f"{'vs none':>8} {'whole-table reads':>18}")
  for rows, lookup, strategy, result in results:
    print(f"{rows:>11,} {lookup:>7} {strategy:>10} {result['ms']:8.1f} "
          f"{result['ms'] / base[(rows, lookup)]:7.1f}x "
          f"{result['whole_table_reads']:>18}")


if __name__ == "__main__":
  app.run(main)
