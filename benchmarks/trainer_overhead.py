r"""The fixed cost of a trainer run, phase by phase, timed in one run.

    python -m benchmarks.trainer_overhead --against=7cda089 --rounds=3

Every run of `trainer.train` pays for building its input pipelines (and the
preflight that reads one batch of each split), tracing the training step,
evaluating, and exporting (tracing the serving signatures, saving, and the
validation in a fresh process), whatever its step count: on small data and
in the test suite that is most of a run. This benchmark trains a small
RankUp for `--train_steps` steps on a generated 12,000-row log (the test
suite's shapes) and reports each phase's seconds:

  preflight        `_preflight` (one batch of each split);
  make_dataset     every `rankup_tf.make_dataset` call, preflight's included;
  fit              `Model.fit` (tracing the step, then the steps);
  export           `export_saved_model` without the validation inside it;
  validate         `_validate_export` (serving.validate in a fresh process);
  total            `trainer.train.run`.

With --against=REV the same runs in a git worktree of REV, alternating
rounds with today's tree (noisy shared CPUs); the figures are medians over
rounds and "speedup" is REV's median over today's.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Dict

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """This benchmark's flags (not defined on import: the tests import
  `make_data` beside the trainer's flags)."""
  flags.DEFINE_string("against", "", "Git revision to compare with (before/"
                      "after); empty: today's tree only.")
  flags.DEFINE_integer("rounds", 3, "Alternating rounds; medians over them.")
  flags.DEFINE_integer("train_steps", 20, "Steps of each run.")
  flags.DEFINE_string("work_dir", "", "Where the data and runs go (default: "
                      "a temporary folder).")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("preflight", "make_dataset", "fit", "export", "validate", "total")
# The small model of the test suite (tests/test_trainer.py uses these).
MODEL_FLAGS = ["--num_tokens=8", "--token_dim=32", "--embedding_dim=8",
               "--tower_units=16", "--ffn_expansion=2"]

# Run by `python -c` in the tree being measured (today's or REV's), so it
# uses only what both have: it times one run and prints its phases as JSON.
_CHILD = r"""
import functools, json, os, sys, time
import rankup_tf.trainer  # Keras 2 first.
import rankup_tf
import tensorflow as tf
from absl import flags
from rankup_tf.serving import export as export_lib
from trainer import flags as flags_lib
from trainer import train

seconds = dict.fromkeys(("preflight", "make_dataset", "fit", "validate",
                         "export_with_validate"), 0.0)

def timed(owner, attribute, phase):
  function = getattr(owner, attribute)
  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return function(*args, **kwargs)
    finally:
      seconds[phase] += time.perf_counter() - start
  setattr(owner, attribute, wrapper)

timed(train, "_preflight", "preflight")
timed(rankup_tf, "make_dataset", "make_dataset")
timed(tf.keras.Model, "fit", "fit")
timed(train, "_validate_export", "validate")
timed(export_lib, "export_saved_model", "export_with_validate")
flags_lib.define_flags()
flags.FLAGS(["trainer"] + sys.argv[1:])
start = time.perf_counter()
train.run(flags_lib.config_from_flags())
seconds["total"] = time.perf_counter() - start
seconds["export"] = seconds.pop("export_with_validate") - seconds["validate"]
print("PHASES " + json.dumps(seconds))
"""


def make_data(path: str) -> str:
  """The test suite's trainer log (tests/test_trainer.py): 12,000 rows,
  tables cut to 1,000 rows in small.json; returns that schema's path."""
  import rankup_tf.trainer  # pylint: disable=g-import-not-at-top,unused-import
  import rankup_tf  # pylint: disable=g-import-not-at-top
  from rankup_tf.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(path, rows=12000, seed=5, num_users=400, num_items=300,
                     num_shards=4, eval_fraction=0.15)
  spec = rankup_tf.Schema.load(os.path.join(path, "schema.json")).to_dict()
  for f in spec["sparse_features"]:
    if "hash_buckets" in f:
      f["hash_buckets"] = min(f["hash_buckets"], 1000)
  schema = os.path.join(path, "small.json")
  rankup_tf.Schema.from_dict(spec).save(schema)
  return schema


def run_once(tree: str, data: str, schema: str, model_dir: str
             ) -> Dict[str, float]:
  """One timed trainer run with the code of `tree`."""
  flags_ = [f"--train_files={data}/train-*", f"--eval_files={data}/eval-*",
            f"--schema={schema}", f"--model_dir={model_dir}",
            f"--export_dir={model_dir}/export", "--global_batch_size=256",
            f"--train_steps={FLAGS.train_steps}", *MODEL_FLAGS]
  result = subprocess.run(
      [sys.executable, "-c", _CHILD, *flags_], cwd=tree,
      env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True,
      check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith("PHASES ")]
  if result.returncode != 0 or not lines:
    raise RuntimeError(f"The run in {tree} failed:\n{result.stderr[-3000:]}")
  return json.loads(lines[-1][len("PHASES "):])


def main(argv):
  del argv
  # Absolute: each run's working directory is its tree.
  work = os.path.abspath(FLAGS.work_dir
                         or tempfile.mkdtemp(prefix="trainer_overhead_"))
  data = os.path.join(work, "data")
  schema = (os.path.join(data, "small.json")
            if os.path.exists(os.path.join(data, "small.json"))
            else make_data(data))
  trees = {"today": REPO}
  if FLAGS.against:
    worktree = os.path.join(work, f"tree_{FLAGS.against}")
    if not os.path.exists(worktree):
      subprocess.run(["git", "worktree", "add", "--detach", worktree,
                      FLAGS.against], cwd=REPO, check=True)
    trees[FLAGS.against] = worktree
  times = {name: [] for name in trees}
  for round_ in range(FLAGS.rounds):
    for name, tree in trees.items():
      model_dir = os.path.join(work, f"run_{name}_{round_}")
      times[name].append(run_once(tree, data, schema, model_dir))
      print(f"round {round_} {name}: {times[name][-1]['total']:.1f} s",
            flush=True)
  medians = {name: {p: statistics.median(r[p] for r in runs)
                    for p in PHASES} for name, runs in times.items()}
  header = "| phase | " + " | ".join(f"{n} (s)" for n in trees)
  if FLAGS.against:
    header += " | speedup"
  print(f"\n{FLAGS.train_steps} steps, medians of {FLAGS.rounds} rounds\n")
  print(header + " |")
  print("|---" * (len(trees) + 1 + bool(FLAGS.against)) + "|")
  for phase in PHASES:
    cells = [f"{medians[n][phase]:.2f}" for n in trees]
    if FLAGS.against:
      speedup = medians[FLAGS.against][phase] / medians["today"][phase]
      cells.append(f"{speedup:.2f}x")
    print(f"| {phase} | " + " | ".join(cells) + " |")
  if not FLAGS.work_dir:  # Nothing left behind: runs, data, worktree.
    shutil.rmtree(work)
    if FLAGS.against:
      subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)


if __name__ == "__main__":
  define_flags()
  app.run(main)
