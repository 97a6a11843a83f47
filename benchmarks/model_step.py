r"""Whole-model training step: full RankUp against RankMixer, and MFU.

    python -m benchmarks.model_step --batch=2048 --against=ca8501b

Builds RankMixer and full RankUp at the same T, D, L and k on the synthetic
ads log (generated into a temporary folder unless --data_dir names one),
with the trainer's own optimizer (sparse Adagrad on the tables, Adam on the
rest) and no distribution strategy, and times Keras' train function on a
few batches cached in memory (so parsing is not timed). Rounds alternate
the models and a float32 2048^2 matmul; figures are medians over rounds.

Prints per model: ms/step, examples/s, step time relative to RankMixer,
forward FLOPs/example (profiled), and MFU = 3 x FLOPs/example x examples/s
over the matmul's FLOP/s in the same run.

With --against=REV the same measurement also runs on the code at a git
revision (a temporary worktree, in its own process, then this
code's, one after the other), giving before/after figures from one
invocation; each process measures its own matmul peak, so each MFU and
each RankUp/RankMixer ratio is within one process.

Issue 11's targets: full RankUp's step <= 1.25x RankMixer's; whole-model
MFU >= 35% at batch 2048.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from absl import app
from absl import flags

import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "A converter's output; empty generates "
                    "synthetic rows into a temporary folder.")
flags.DEFINE_integer("batch", 2048, "Global batch size.")
flags.DEFINE_integer("num_tokens", 16, "T.")
flags.DEFINE_integer("token_dim", 64, "D.")
flags.DEFINE_integer("num_layers", 2, "L.")
flags.DEFINE_integer("ffn_expansion", 4, "k.")
flags.DEFINE_integer("batches", 4, "Distinct batches cached and cycled.")
flags.DEFINE_integer("rounds", 7, "Alternating rounds; medians over them.")
flags.DEFINE_integer("steps", 5, "Train steps per model per round.")
flags.DEFINE_string("against", "", "Git revision measured too (before/after).")
flags.DEFINE_string("emit_json", "", "Write the figures here as JSON instead "
                    "of printing tables (used for --against's process).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("rankmixer", "rankup")


def _configs():
  from rankup_tf import models  # pylint: disable=import-outside-toplevel
  shape = dict(num_tokens=FLAGS.num_tokens, token_dim=FLAGS.token_dim,
               num_layers=FLAGS.num_layers, ffn_expansion=FLAGS.ffn_expansion)
  return {"rankmixer": models.RankMixerConfig(**shape),
          "rankup": models.RankUpConfig(**shape)}


def _steps(data_dir: str) -> Dict[str, object]:
  """Model name -> a zero-argument train step (Keras' train function)."""
  import rankup_tf  # pylint: disable=import-outside-toplevel
  from rankup_tf import models  # pylint: disable=import-outside-toplevel
  from rankup_tf.trainer import config as config_lib  # pylint: disable=import-outside-toplevel
  from rankup_tf.trainer import optimizers  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  schema = rankup_tf.Schema.load(os.path.join(data_dir, "schema.json"))
  dataset = rankup_tf.make_dataset(
      os.path.join(data_dir, "train-*"), schema, FLAGS.batch, repeat=True,
      seed=0).take(FLAGS.batches).cache().repeat()
  steps, flops = {}, {}
  for name, model_config in _configs().items():
    tf.keras.utils.set_random_seed(0)
    config = config_lib.TrainConfig(
        train_files=data_dir, schema=data_dir, model_dir=data_dir,
        model=name, model_config=model_config, global_batch_size=FLAGS.batch)
    model = models.build_model(name, schema, model_config)
    model.build_from_schema()
    model.compile(optimizer=optimizers.make_optimizer(config, model))
    train_function = model.make_train_function()
    iterator = iter(dataset)
    steps[name] = (lambda f=train_function, i=iterator: f(i))
    flops[name] = model.flops_per_example()
  square = tf.random.normal([2048, 2048])
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(square, square)))
  steps["matmul"] = matmul
  return steps, flops


def measure(data_dir: str) -> Dict:
  """Median seconds per call of each model's step and the matmul."""
  steps, flops = _steps(data_dir)
  for step in steps.values():  # trace, warm up
    for _ in range(2):
      _sync(step())
  times = {name: [] for name in steps}
  for _ in range(FLAGS.rounds):
    for name, step in steps.items():
      calls = FLAGS.steps if name != "matmul" else 3
      start = time.perf_counter()
      for _ in range(calls):
        out = step()
      _sync(out)
      times[name].append((time.perf_counter() - start) / calls)
  return {"seconds": {n: float(np.median(t)) for n, t in times.items()},
          "flops": flops}


def _sync(out):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                        out)


def _generate(work_dir: str) -> str:
  from rankup_tf.data import synthetic  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(work_dir, "data")
  synthetic.generate(data_dir, rows=FLAGS.batch * FLAGS.batches * 2,
                     num_shards=2)
  return data_dir


def _against(revision: str, data_dir: str, work_dir: str) -> Dict:
  """The same measurement on the code at `revision`, in its own process."""
  tree = os.path.join(work_dir, "tree")
  subprocess.run(["git", "worktree", "add", "--detach", tree, revision],
                 cwd=REPO, check=True, capture_output=True)
  try:
    shutil.copy(os.path.abspath(__file__),
                os.path.join(tree, "benchmarks", "model_step.py"))
    out = os.path.join(work_dir, f"{revision}.json")
    argv = [a for a in sys.argv[1:] if not a.startswith("--against")]
    subprocess.run([sys.executable, "-m", "benchmarks.model_step", *argv,
                    f"--data_dir={data_dir}", f"--emit_json={out}"],
                   cwd=tree, check=True)
    with open(out) as f:
      return json.load(f)
  finally:
    subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=REPO,
                   check=False, capture_output=True)


def table(label: str, result: Dict) -> List[str]:
  seconds, flops = result["seconds"], result["flops"]
  peak = 2 * 2048 ** 3 / seconds["matmul"]
  lines = [f"{label}: float32 2048^2 matmul {peak / 1e9:.1f} GFLOP/s", "",
           "| model | ms/step | examples/s | step vs RankMixer | "
           "FLOPs/example | MFU |", "|---|---|---|---|---|---|"]
  for name in MODELS:
    rate = FLAGS.batch / seconds[name]
    lines.append(
        f"| {name} | {seconds[name] * 1000:.1f} | {rate:,.0f} | "
        f"{seconds[name] / seconds['rankmixer']:.2f}x | {flops[name]:,} | "
        f"{3 * flops[name] * rate / peak:.1%} |")
  return lines


def main(argv):
  del argv
  work_dir = tempfile.mkdtemp(prefix="model_step_")
  try:
    data_dir = FLAGS.data_dir or _generate(work_dir)
    if FLAGS.emit_json:
      with open(FLAGS.emit_json, "w") as f:
        json.dump(measure(data_dir), f)
      return
    before = _against(FLAGS.against, data_dir, work_dir) if FLAGS.against \
        else None
    after = measure(data_dir)
    print(f"\nbatch {FLAGS.batch}, T={FLAGS.num_tokens} D={FLAGS.token_dim} "
          f"L={FLAGS.num_layers} k={FLAGS.ffn_expansion}, no strategy, "
          f"{FLAGS.rounds} rounds x {FLAGS.steps} steps\n")
    if before:
      print("\n".join(table(f"at {FLAGS.against}", before)) + "\n")
    print("\n".join(table("this code", after)))
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
