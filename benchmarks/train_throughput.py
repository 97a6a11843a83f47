r"""Training throughput of the default RankUp: 1 vs 2 devices, XLA or not.

    python -m benchmarks.train_throughput --data_dir=runs/demo/data \
        --train_steps=120

Runs `trainer.train` (default RankUp config) four times, each in its own
process, all with the same global batch and steps: one device
(--strategy=auto: no strategy) and 2 logical CPU devices
(--strategy=mirrored --num_logical_cpus=2),
each with and without --jit_compile, and prints the trainer's measured
training examples/second (first step excluded) and ratios to the first
configuration. Logical CPU devices share this machine's cores: 2 devices
test MirroredStrategy's overhead here, not a speed-up.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

from rankup_tf import run_dir

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "A converter's output folder.")
flags.DEFINE_integer("train_steps", 120, "Steps per configuration.")
flags.DEFINE_integer("global_batch_size", 1024, "Global batch size.")
flags.mark_flag_as_required("data_dir")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(devices: int, jit: bool, work_dir: str) -> float:
  model_dir = os.path.join(work_dir, f"devices{devices}_jit{int(jit)}")
  command = [
      sys.executable, "-m", "trainer.train",
      f"--train_files={FLAGS.data_dir}/train-*",
      f"--schema={FLAGS.data_dir}/schema.json", f"--model_dir={model_dir}",
      f"--train_steps={FLAGS.train_steps}",
      f"--global_batch_size={FLAGS.global_batch_size}",
      *(["--strategy=mirrored", f"--num_logical_cpus={devices}"]
        if devices > 1 else ["--strategy=auto"]),
      f"--checkpoint_every_n_steps={FLAGS.train_steps}",
      f"--{'' if jit else 'no'}jit_compile"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  with open(os.path.join(model_dir, run_dir.SUMMARY_FILE)) as f:
    return json.load(f)["train_examples_per_sec"]


def main(argv):
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as work_dir:
    for devices in (1, 2):
      for jit in (False, True):
        rate = measure(devices, jit, work_dir)
        rows.append((devices, jit, rate))
        print(f"measured devices={devices} jit={jit}: {rate:,.0f} ex/s",
              flush=True)
  base = rows[0][2]
  print(f"\ndefault RankUp, global batch {FLAGS.global_batch_size}, "
        f"{FLAGS.train_steps} steps, {os.cpu_count()} CPU cores")
  print(f"{'devices':>7} {'jit_compile':>11} {'examples/s':>11} "
        f"{'vs 1 device':>11}")
  for devices, jit, rate in rows:
    print(f"{devices:>7} {str(jit):>11} {rate:11,.0f} {rate / base:10.2f}x")


if __name__ == "__main__":
  app.run(main)
