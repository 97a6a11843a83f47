r"""Serving latency and throughput of an export, against the in-memory model.

    python -m benchmarks.serving_latency --model_dir=runs/demo/model \
        --export_dir=runs/demo/export/rankup/1 \
        --examples='runs/demo/data/eval-*'

For batch sizes 1, 32 and 256, times sequential calls of
* serving_default: serialized tf.Examples in, parsing and preprocessing in
  the graph (what TF Serving runs for gRPC/REST tf.Example requests);
* predict_raw: padded raw tensors in, preprocessing in the graph;
* in-memory: the Keras model restored from --model_dir on already
  preprocessed features (no parsing: the floor the export is compared to);
and prints p50/p99 latency, examples/second, and each variant's p50 as a
ratio of the in-memory p50 (this machine is noisy: compare ratios from one
run, not absolute times across runs). No network or server is involved.
"""

import time
from typing import Callable, Dict, List

import numpy as np
from absl import app
from absl import flags

import tensorflow as tf

from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf.serving import restore

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The trainer's model_dir.")
flags.DEFINE_string("export_dir", None, "The export version folder.")
flags.DEFINE_string("examples", None, "TFRecords of real examples.")
flags.DEFINE_list("batch_sizes", ["1", "32", "256"], "Batch sizes.")
flags.DEFINE_integer("calls", 200, "Timed calls per variant at batch 1 "
                     "(fewer at larger batches, at least 30).")
flags.mark_flags_as_required(["model_dir", "export_dir", "examples"])


def time_calls(function: Callable[[], Dict], calls: int) -> List[float]:
  """Seconds of each call, after warmup; outputs are fetched to host."""
  for _ in range(5):
    {k: v.numpy() for k, v in function().items()}
  latencies = []
  for _ in range(calls):
    start = time.perf_counter()
    {k: v.numpy() for k, v in function().items()}
    latencies.append(time.perf_counter() - start)
  return latencies


def main(argv):
  del argv
  loaded = tf.saved_model.load(FLAGS.export_dir)
  model, schema = restore.model_from_model_dir(FLAGS.model_dir)
  transform = features_lib.FeatureTransform(schema)
  in_memory = tf.function(model.probabilities)
  sizes = [int(b) for b in FLAGS.batch_sizes]
  examples = input_pipeline.read_examples(FLAGS.examples, max(sizes))
  print(f"{'batch':>5} {'variant':>16} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'examples/s':>11} {'p50 / in-memory':>16}")
  for size in sizes:
    batch = tf.constant(examples[:size])
    raw = features_lib.padded_raw_features(schema, batch)
    features, _ = transform.parse(batch, with_labels=False)
    variants = {
        "in-memory model": lambda: in_memory(features),
        "serving_default": lambda: loaded.signatures["serving_default"](
            examples=batch),
        "predict_raw": lambda: loaded.signatures["predict_raw"](**raw),
    }
    calls = max(30, FLAGS.calls * 32 // max(size, 32))
    results = {name: time_calls(fn, calls) for name, fn in variants.items()}
    base = np.percentile(results["in-memory model"], 50)
    for name, latencies in results.items():
      p50, p99 = (np.percentile(latencies, q) for q in (50, 99))
      rate = size * len(latencies) / sum(latencies)
      print(f"{size:>5} {name:>16} {1000 * p50:9.2f} {1000 * p99:9.2f} "
            f"{rate:11,.0f} {p50 / base:15.2f}x")


if __name__ == "__main__":
  app.run(main)
