"""benchmarks.splits: arms parsed, paired statistics, a tiny real study that
converts, trains, records, reports and resumes."""

import csv
import math
import os
import subprocess
import sys

import pytest

from benchmarks import splits
from tests.conftest import REPO


def test_arms_are_parsed_in_order_and_bad_ones_refused():
  arms = splits.parse_arms(["b=--model=dnn --dropout=0.1",
                            "a=--model=rankup --block='rankmixer'"])
  assert arms == {"b": ["--model=dnn", "--dropout=0.1"],
                  "a": ["--model=rankup", "--block=rankmixer"]}
  with pytest.raises(ValueError, match="NAME=TRAINER_FLAGS"):
    splits.parse_arms(["--model=dnn"])
  with pytest.raises(ValueError, match="'a' is given twice"):
    splits.parse_arms(["a=--model=dnn", "a=--model=dlrm"])
  with pytest.raises(ValueError, match="'a' names no --model"):
    splits.parse_arms(["a=--epochs=2"])


def test_paired_difference_is_over_split_means():
  rows = [dict(split=p, arm=arm, seed=s, task="click", auc=auc)
          for p, arm, s, auc in [
              (0, "ref", 0, 0.70), (0, "ref", 1, 0.72), (0, "new", 0, 0.74),
              (1, "ref", 0, 0.60), (1, "new", 0, 0.58), (1, "new", 1, 0.61),
              (2, "ref", 0, 0.65), (2, "new", 0, 0.68),
              (3, "new", 0, 0.99)]]           # split 3: no reference there
  means = splits.split_means(rows, "click")
  assert means["ref"] == pytest.approx({0: 0.71, 1: 0.60, 2: 0.65})
  diff, se, higher, n = splits.paired(means["new"], means["ref"])
  diffs = [0.03, -0.005, 0.03]
  mean = sum(diffs) / 3
  sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
  assert (diff, higher, n) == (pytest.approx(mean), 2, 3)
  assert se == pytest.approx(sd / math.sqrt(3))
  table = splits.report(rows, ["ref", "new"], "ref")
  assert f"| new | 5 | 4 | {(0.74 + 0.595 + 0.68 + 0.99) / 4:.4f} | " \
         f"{mean:+.4f} ± {se:.4f} | {mean / se:+.1f} | 2 of 3 |" in table


TRAIN_FLAGS = ("--train_steps=2 --global_batch_size=64 "
               "--checkpoint_every_n_steps=1000000")


def _study(tsv, out, *arms, buckets=40, returncode=0):
  command = [sys.executable, "-m", "benchmarks.splits", f"--output_dir={out}",
             f"--converter_flags=--input={tsv} --num_shards=1 "
             f"--eval_fraction=0.25 --hash_buckets={buckets}", "--splits=2",
             "--seeds=0", f"--train_flags={TRAIN_FLAGS}",
             *[f"--arm={a}" for a in arms]]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  assert result.returncode == returncode, result.stderr[-3000:]
  with open(os.path.join(out, "auc.csv")) as f:
    return list(csv.DictReader(f)), result.stdout + result.stderr


def test_a_study_converts_trains_reports_and_resumes(shared_data, tmp_path):
  tsv = tmp_path / "rows.tsv"
  with open(f"{shared_data}/criteo_8k/train.tsv") as f:
    tsv.write_text("".join(f.readline() for _ in range(400)))
  out = tmp_path / "study"
  rows, _ = _study(tsv, out, "dnn=--model=dnn", "dlrm=--model=dlrm")
  assert [(r["split"], r["arm"], r["seed"], r["task"]) for r in rows] == [
      ("0", "dnn", "0", "label"), ("0", "dlrm", "0", "label"),
      ("1", "dnn", "0", "label"), ("1", "dlrm", "0", "label")]
  assert all(0 < float(r["auc"]) < 1 for r in rows)
  # Split p is the converter's --seed=p: the two eval splits differ.
  evals = [open(out / "data" / f"split{p}" / "eval-00000-of-00001.tfrecord",
                "rb").read() for p in (0, 1)]
  assert evals[0] != evals[1]
  results = (out / "results.md").read_text()
  assert "| dnn | 2 | 2 |" in results and "| dlrm | 2 | 2 |" in results
  # A rerun keeps the dnn runs and trains the arm whose flags changed
  # afresh: not restored from the first runs' checkpoints.
  rows_again, stdout = _study(tsv, out, "dnn=--model=dnn",
                              "dlrm=--model=dlrm --dropout=0.1")
  assert "dnn seed" not in stdout and stdout.count("dlrm seed 0") == 2
  assert rows_again[:4] == rows
  new = rows_again[4:]
  assert [r["flags"] for r in new] == [
      f"{TRAIN_FLAGS} --model=dlrm --dropout=0.1"] * 2
  old = [r["auc"] for r in rows if r["arm"] == "dlrm"]
  assert [r["auc"] for r in new] != old
  # The report reads the current runs only.
  assert "| dlrm | 2 | 2 |" in (out / "results.md").read_text()
  # Data converted with other converter flags is not reused.
  _, stderr = _study(tsv, out, "dnn=--model=dnn", buckets=41, returncode=1)
  assert "was converted with" in stderr and "--hash_buckets=40" in stderr
