r"""Training speed and memory against embedding-table size, per strategy.

    python -m benchmarks.embedding_scale --scales=1,10,100 \
        --models=rankup,dnn --train_steps=48

Generates a small synthetic log once, then for each model, table scale and
strategy trains `--train_steps` steps in its own process(es) and prints
examples/s (the first Keras epoch, which carries the tracing, left out) and
the peak resident memory of each process:

  plain             a plain Keras `fit` of the model without any strategy
                    (the reference: make_dataset + the trainer's optimizer);
  auto              `python -m trainer.train --strategy=auto` (one device);
  mirrored          `--strategy=mirrored --num_logical_cpus=2`;
  parameter_server  `--strategy=parameter_server` on a local cluster of a
                    coordinator, 2 workers and 2 parameter servers.

Scale 1 multiplies every hash-bucket count of the synthetic schema by
`--base_fraction` (default 0.1: about 42k rows per view); scales 10 and 100
make the tables 10x and 100x larger. Everything shares this machine's CPU
cores, so compare ratios within one run, not absolute rates.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import rankup_tf
import tensorflow as tf

from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import optimizers

FLAGS = flags.FLAGS
flags.DEFINE_list("scales", ["1", "10", "100"], "Table-size multipliers.")
flags.DEFINE_list("models", ["rankup", "dnn"], "Models to measure.")
flags.DEFINE_list("strategies", ["plain", "auto", "mirrored",
                                 "parameter_server"], "Strategies.")
flags.DEFINE_integer("train_steps", 48, "Steps per configuration.")
flags.DEFINE_integer("global_batch_size", 512, "Global batch size.")
flags.DEFINE_float("base_fraction", 0.1, "Scale 1's share of the synthetic "
                   "schema's hash buckets.")
flags.DEFINE_string("work_dir", "", "Where data and runs go (default: a "
                    "temporary folder, removed at the end).")
flags.DEFINE_string("plain_run", "", "Internal: run one plain fit from this "
                    "JSON spec and print its examples/s.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4  # Keras epochs per run: the first (tracing) is left out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait(process: subprocess.Popen) -> int:
  """Waits for `process`; returns its peak resident memory in MiB."""
  _, status, usage = os.wait4(process.pid, 0)
  process.returncode = os.waitstatus_to_exitcode(status)
  return usage.ru_maxrss // 1024


def _scaled_schema(data_dir: str, scale: int) -> str:
  spec = rankup_tf.Schema.load(os.path.join(data_dir,
                                            "schema.json")).to_dict()
  for field in spec["sparse_features"]:
    if "hash_buckets" in field:
      field["hash_buckets"] = max(
          2, int(field["hash_buckets"] * FLAGS.base_fraction * scale))
  path = os.path.join(data_dir, f"schema_x{scale}.json")
  rankup_tf.Schema.from_dict(spec).save(path)
  return path


def _trainer_flags(data_dir, schema, model, model_dir):
  return [f"--train_files={data_dir}/train-*", f"--schema={schema}",
          f"--model={model}", f"--model_dir={model_dir}",
          f"--train_steps={FLAGS.train_steps}",
          f"--global_batch_size={FLAGS.global_batch_size}",
          f"--checkpoint_every_n_steps={FLAGS.train_steps // EPOCHS}"]


def _run(command, env=None):
  with tempfile.TemporaryFile("w+") as log:
    process = subprocess.Popen(command, cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT,
                               env=dict(os.environ, **(env or {})))
    memory = _wait(process)
    log.seek(0)
    output = log.read()
  if process.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
  return output, memory


def measure(strategy, data_dir, schema, model, run_dir):
  """(examples/s, [peak MiB per process]) of one configuration."""
  model_dir = os.path.join(run_dir, "model")
  trainer = [sys.executable, "-m", "trainer.train",
             *_trainer_flags(data_dir, schema, model, model_dir)]
  if strategy == "plain":
    spec = json.dumps({"data_dir": data_dir, "schema": schema,
                       "model": model})
    output, memory = _run([sys.executable, "-m", "benchmarks.embedding_scale",
                           f"--plain_run={spec}",
                           f"--train_steps={FLAGS.train_steps}",
                           f"--global_batch_size={FLAGS.global_batch_size}"])
    return float(output.split("plain examples/s: ")[1].split()[0]), [memory]
  if strategy in ("auto", "mirrored"):
    extra = (["--strategy=mirrored", "--num_logical_cpus=2"]
             if strategy == "mirrored" else ["--strategy=auto"])
    _, memory = _run(trainer + extra)
    memories = [memory]
  else:
    cluster = {"chief": [f"127.0.0.1:{_free_port()}"],
               "worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)],
               "ps": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}

    def tf_config(kind, index):
      return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {
          "type": kind, "index": index}})}
    command = trainer + ["--strategy=parameter_server"]
    servers = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env=dict(os.environ, **tf_config(kind, i)))
               for kind in ("worker", "ps") for i in range(2)]
    try:
      _, memory = _run(command, env=tf_config("chief", 0))
    finally:
      for server in servers:
        server.send_signal(signal.SIGKILL)
    memories = [memory] + [_wait(server) for server in servers]
  with open(os.path.join(model_dir, run_dir.SUMMARY_FILE)) as f:
    return json.load(f)["train_examples_per_sec"], memories


def plain_fit(spec) -> float:
  """A plain Keras fit, no strategy: the reference rate."""
  schema = rankup_tf.Schema.load(spec["schema"])
  config = config_lib.TrainConfig(
      train_files=f"{spec['data_dir']}/train-*", schema=spec["schema"],
      model_dir="unused", model=spec["model"],
      model_config=models.CONFIGS[spec["model"]]())
  model = models.build_model(spec["model"], schema, config.model_config)
  model.build_from_schema()
  model.compile(optimizer=optimizers.make_optimizer(config, model))
  data = rankup_tf.make_dataset(config.train_files, schema,
                                FLAGS.global_batch_size, repeat=True)
  epoch_seconds = []

  class EpochTimer(tf.keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      epoch_seconds.append(time.perf_counter() - self.start)

  steps = FLAGS.train_steps // EPOCHS
  model.fit(data, epochs=EPOCHS, steps_per_epoch=steps,
            callbacks=[EpochTimer()], verbose=0)
  return steps * FLAGS.global_batch_size * (EPOCHS - 1) / sum(
      epoch_seconds[1:])


def main(argv):
  del argv
  if FLAGS.plain_run:
    print(f"plain examples/s: {plain_fit(json.loads(FLAGS.plain_run)):.1f}",
          flush=True)
    return
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="embedding_scale_")
  data_dir = os.path.join(work_dir, "data")
  if not os.path.exists(os.path.join(data_dir, "schema.json")):
    subprocess.run([sys.executable, "-m", "data.synthetic",
                    f"--output_dir={data_dir}", "--rows=40000",
                    "--num_shards=4"], cwd=REPO, check=True,
                   capture_output=True)
  scales = [int(s) for s in FLAGS.scales]
  results = {}
  for model in FLAGS.models:
    for scale in scales:
      schema = _scaled_schema(data_dir, scale)
      for strategy in FLAGS.strategies:
        start = time.time()
        rate, memory = measure(strategy, data_dir, schema, model, os.path.join(
            work_dir, f"{model}_x{scale}_{strategy}"))
        results[(model, scale, strategy)] = (rate, memory)
        print(f"measured {model} x{scale} {strategy}: {rate:,.0f} ex/s, peak "
              f"MiB {memory} ({time.time() - start:.0f} s)", flush=True)
  print(f"\nglobal batch {FLAGS.global_batch_size}, {FLAGS.train_steps} "
        f"steps, {os.cpu_count()} CPU cores, scale 1 = "
        f"{FLAGS.base_fraction} x the synthetic schema's buckets")
  print(f"{'model':7} {'scale':>5} {'strategy':>16} {'ex/s':>8} "
        f"{'vs x1':>6} {'vs plain':>8}  peak MiB per process")
  for (model, scale, strategy), (rate, memory) in results.items():
    first = results[(model, scales[0], strategy)][0]
    plain = results.get((model, scale, "plain"), (float("nan"),))[0]
    print(f"{model:7} {scale:>5} {strategy:>16} {rate:8,.0f} "
          f"{rate / first:5.2f}x {rate / plain:7.2f}x  "
          f"{', '.join(str(m) for m in memory)}")


if __name__ == "__main__":
  app.run(main)
