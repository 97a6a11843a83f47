r"""Models compared over repeated random train/eval splits of one log.

    python -m benchmarks.splits --output_dir=runs/splits_criteo \
        --converter_flags="--input=../shared/data/criteo_8k/train.tsv \
            --num_shards=4 --eval_fraction=0.2 --hash_buckets=10000" \
        --splits=10 --seeds=0,1,2 \
        --arm="rankup=--model=rankup" --arm="dnn=--model=dnn" \
        --arm="rankup_postln=--model=rankup --block=rankmixer --nofinal_norm \
            --ffn_activation=gelu --num_dense_tokens=1"

On a small log one split's AUC says more about the split than about the
model: on Criteo 8k a model's rank moved with the 80/20 split drawn
(docs/results.md, "Ten splits, tuned"). So split p (0 .. --splits - 1) is
the converter's output with `--seed=p`, and every arm (a name and its
trainer flags) trains on it once per seed of --seeds
(`python -m trainer.train <--train_flags> <arm flags> --seed=S
--permutation_seed=S`, in a fresh models/split{p}_{arm}_seed{S}/) and is
scored by its final eval AUC.

--output_dir gets data/split{p}/ (the converted splits, with the converter
flags they were made with: a rerun with other converter flags is refused,
not mixed in), models/ (the last runs), auc.csv (one line per split, arm,
seed and task, with the run's trainer flags; written as each run ends, so
a rerun keeps the runs already there whose trainer flags, --train_flags
and the arm's, are unchanged, and runs the rest) and results.md: each arm's mean AUC and, against --reference (default:
the first arm), the mean over splits of the per-split difference of
seed-mean AUCs, its standard error, t = mean / SE, and on how many splits
the arm was higher. Splits are the unit: the seeds of one split share its
data, so they are not independent draws.
"""

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags

FLAGS = flags.FLAGS

# The protocol of docs/results.md's ten-split comparisons.
DEFAULT_TRAIN_FLAGS = ("--min_id_count=5 --global_batch_size=256 --epochs=3 "
                       "--dense_learning_rate_decay=cosine "
                       "--deterministic_input "
                       "--checkpoint_every_n_steps=1000000")
_ARM_NAME = re.compile(r"[A-Za-z0-9_.@][A-Za-z0-9_.@-]*")
CSV_FIELDS = ("split", "arm", "flags", "seed", "task", "auc")


def parse_arms(specs: Sequence[str]) -> Dict[str, List[str]]:
  """'name=flags' -> {name: [flag, ...]}, in order; refuses a spec without
  a name (letters, digits, _ . @ -, not starting with -), a repeated name
  and an arm without --model."""
  arms: Dict[str, List[str]] = {}
  for spec in specs:
    name, sep, flag_text = spec.partition("=")
    name = name.strip()
    if not sep or not _ARM_NAME.fullmatch(name):
      raise ValueError(f"--arm {spec!r}: expected NAME=TRAINER_FLAGS, e.g. "
                       "'rankup=--model=rankup'.")
    if name in arms:
      raise ValueError(f"--arm {name!r} is given twice.")
    arm_flags = shlex.split(flag_text)
    if not any(f.startswith("--model=") for f in arm_flags):
      raise ValueError(f"--arm {name!r} names no --model=...: {spec!r}.")
    arms[name] = arm_flags
  if not arms:
    raise ValueError("Give at least one --arm NAME=TRAINER_FLAGS.")
  return arms


def split_means(rows: List[Dict], task: str) -> Dict[str, Dict[int, float]]:
  """{arm: {split: mean AUC over that split's seeds}} for one task."""
  values: Dict[str, Dict[int, List[float]]] = {}
  for row in rows:
    if row["task"] == task:
      values.setdefault(row["arm"], {}).setdefault(
          int(row["split"]), []).append(float(row["auc"]))
  return {arm: {p: sum(v) / len(v) for p, v in by_split.items()}
          for arm, by_split in values.items()}


def paired(arm: Dict[int, float], reference: Dict[int, float]
           ) -> Tuple[float, float, int, int]:
  """Over the splits both have: (mean difference, its standard error,
  splits where the arm is higher, splits). SE is nan below two splits."""
  splits = sorted(set(arm) & set(reference))
  diffs = [arm[p] - reference[p] for p in splits]
  n = len(diffs)
  if not n:
    return math.nan, math.nan, 0, 0
  mean = sum(diffs) / n
  se = (math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
        if n > 1 else math.nan)
  return mean, se, sum(d > 0 for d in diffs), n


def report(rows: List[Dict], arms: Sequence[str], reference: str) -> str:
  """results.md: per task, each arm's mean AUC and its paired difference
  from the reference arm over the splits."""
  lines = ["# Repeated splits", ""]
  for task in sorted({r["task"] for r in rows}):
    means = split_means(rows, task)
    lines += [f"## {task}", "",
              f"Against `{reference}`: mean ± SE over splits of the "
              "per-split difference of seed-mean AUCs; t = mean / SE.", "",
              "| arm | runs | splits | mean AUC | Δ vs reference | t | "
              "splits higher |", "|---|---|---|---|---|---|---|"]
    for arm in arms:
      if arm not in means:
        continue
      runs = sum(r["task"] == task and r["arm"] == arm for r in rows)
      by_split = means[arm]
      mean_auc = sum(by_split.values()) / len(by_split)
      if arm == reference or reference not in means:
        delta = t = higher = "-"
      else:
        diff, se, up, n = paired(by_split, means[reference])
        delta = f"{diff:+.4f} ± {se:.4f}"
        t = f"{diff / se:+.1f}" if se > 0 else "n/a"
        higher = f"{up} of {n}"
      lines.append(f"| {arm} | {runs} | {len(by_split)} | {mean_auc:.4f} | "
                   f"{delta} | {t} | {higher} |")
    lines.append("")
  return "\n".join(lines)


def read_rows(path: str) -> List[Dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _run(command: List[str], what: str) -> None:
  """Runs a step, or exits naming it with the end of its stderr."""
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"{what} failed (exit {result.returncode}): "
             f"{shlex.join(command)}\n{result.stderr[-4000:]}")


def convert(output_dir: str, split: int) -> str:
  """The split's data dir, converted with --seed=split unless it is there
  (made with the same converter and flags; other ones are refused)."""
  path = os.path.join(output_dir, "data", f"split{split}")
  made_with = os.path.join(path, "converter_command.txt")
  command = [sys.executable, "-m", FLAGS.converter,
             *shlex.split(FLAGS.converter_flags), f"--output_dir={path}",
             f"--seed={split}"]
  recorded = shlex.join(command[1:])  # not the interpreter's path
  if os.path.exists(made_with):
    with open(made_with) as f:
      previous = f.read().strip()
    if previous != recorded:
      sys.exit(f"{path} was converted with `{previous}`, not `{recorded}`: "
               "use another --output_dir or delete it.")
    return path
  shutil.rmtree(path, ignore_errors=True)  # a conversion killed midway
  _run(command, f"Converting split {split}")
  with open(made_with, "w") as f:
    f.write(recorded + "\n")
  return path


def train(data_dir: str, run_flags: List[str], seed: int, model_dir: str
          ) -> Dict[str, float]:
  """One run in a fresh model_dir (a checkpoint left there would be
  restored, not trained); {task: final eval AUC}."""
  shutil.rmtree(model_dir, ignore_errors=True)
  _run([sys.executable, "-m", "trainer.train",
        f"--train_files={data_dir}/train-*", f"--eval_files={data_dir}/eval-*",
        f"--schema={data_dir}/schema.json", f"--model_dir={model_dir}",
        *run_flags, f"--seed={seed}", f"--permutation_seed={seed}"],
       f"Training {shlex.join(run_flags)} seed {seed} on {data_dir}")
  with open(os.path.join(model_dir, "metrics.json")) as f:
    tasks = json.load(f)["final"]["tasks"]
  return {task: values["auc"] for task, values in tasks.items()}


def main(argv):
  del argv
  arms = parse_arms(FLAGS.arm)
  reference = FLAGS.reference or next(iter(arms))
  if reference not in arms:
    raise ValueError(f"--reference {reference!r} is not an arm "
                     f"({', '.join(arms)}).")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  csv_path = os.path.join(FLAGS.output_dir, "auc.csv")
  run_flags = {name: shlex.split(FLAGS.train_flags) + arm_flags
               for name, arm_flags in arms.items()}
  rows = read_rows(csv_path)
  done = {(r["split"], r["arm"], r["flags"], r["seed"]) for r in rows}
  if not rows:
    with open(csv_path, "w", newline="") as f:
      csv.DictWriter(f, CSV_FIELDS).writeheader()
  seeds = [int(s) for s in FLAGS.seeds]
  for split in range(FLAGS.splits):
    data_dir = convert(FLAGS.output_dir, split)
    for name, flags_of_run in run_flags.items():
      for seed in seeds:
        if (str(split), name, shlex.join(flags_of_run), str(seed)) in done:
          continue
        model_dir = os.path.join(FLAGS.output_dir, "models",
                                 f"split{split}_{name}_seed{seed}")
        aucs = train(data_dir, flags_of_run, seed, model_dir)
        with open(csv_path, "a", newline="") as f:
          csv.DictWriter(f, CSV_FIELDS).writerows(
              dict(split=split, arm=name, flags=shlex.join(flags_of_run),
                   seed=seed, task=task, auc=auc)
              for task, auc in aucs.items())
        print(f"split {split} {name} seed {seed}: "
              + " ".join(f"{t} auc {a:.4f}" for t, a in aucs.items()),
              flush=True)
  # A rerun with changed flags keeps the old lines; report the current ones.
  current = [r for r in read_rows(csv_path) if r["arm"] in arms
             and r["flags"] == shlex.join(run_flags[r["arm"]])
             and int(r["split"]) < FLAGS.splits and int(r["seed"]) in seeds]
  text = report(current, list(arms), reference)
  with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
    f.write(text)
  print(text)


def define_flags() -> None:
  flags.DEFINE_string("output_dir", None, "Where data, runs and results go.")
  flags.DEFINE_string("converter", "data.criteo_to_tfrecord",
                      "Converter module; run with --converter_flags, "
                      "--output_dir and --seed=SPLIT.")
  flags.DEFINE_string("converter_flags", None, "The converter's flags "
                      "(input, shards, eval fraction, ...).")
  flags.DEFINE_integer("splits", 10, "Random splits (converter seeds 0..).")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds per split.")
  flags.DEFINE_multi_string("arm", [], "NAME=TRAINER_FLAGS, once per arm.")
  flags.DEFINE_string("reference", "", "The arm others are compared with "
                      "(default: the first).")
  flags.DEFINE_string("train_flags", DEFAULT_TRAIN_FLAGS,
                      "Trainer flags of every run.")
  flags.mark_flags_as_required(["output_dir", "converter_flags"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
