"""--strategy=parameter_server on a local cluster: a coordinator, two
workers and two parameter servers, each `python -m trainer.train` in its own
process on 127.0.0.1 (as the README launches them on several hosts)."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf.serving import export as export_lib
from rankup_tf.serving import restore
from tests.conftest import REPO
from tests.test_trainer import _finish, _flags, _train, data_dir  # noqa: F401


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tf_config(cluster, task_type, index=0):
  return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                   "task": {"type": task_type,
                                            "index": index}})}


@pytest.fixture(scope="module")
def cluster_run(data_dir, tmp_path_factory):  # noqa: F811
  """One 40-step run on the local cluster; worker 1 is killed after the
  coordinator's first Keras epoch (10 steps)."""
  tmp_path = tmp_path_factory.mktemp("parameter_server")
  cluster = {"chief": [f"127.0.0.1:{_free_port()}"],
             "worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)],
             "ps": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
  model_dir, export_dir = tmp_path / "run", tmp_path / "export"
  flags = _flags(data_dir, model_dir, "--strategy=parameter_server",
                 "--train_steps=40", "--checkpoint_every_n_steps=10",
                 "--eval_every_n_steps=20", "--ps_min_shard_bytes=1024",
                 f"--export_dir={export_dir}")
  servers = {(kind, i): _train(*flags, env=_tf_config(cluster, kind, i))
             for kind in ("worker", "ps") for i in range(2)}
  chief = _train(*flags, env=_tf_config(cluster, "chief"))
  try:
    lines = []
    for line in chief.stdout:
      lines.append(line)
      if line.startswith("Epoch 2/"):
        servers[("worker", 1)].kill()
        break
    code, out, err = _finish(chief)
    alive = {task: process.poll() is None
             for task, process in servers.items()}
  finally:
    for process in servers.values():
      process.kill()
      process.communicate()
  assert code == 0, err[-3000:]
  return {"model_dir": model_dir, "export_dir": export_dir,
          "out": "".join(lines) + out, "alive": alive}


def test_local_cluster_trains_shards_tables_survives_a_worker_and_exports(
    cluster_run, data_dir):  # noqa: F811
  model_dir, export_dir = cluster_run["model_dir"], cluster_run["export_dir"]
  out = cluster_run["out"]
  # The run finished with worker 1 dead since step 10 and worker 0 alive.
  assert not cluster_run["alive"][("worker", 1)]
  assert cluster_run["alive"][("worker", 0)]
  assert cluster_run["alive"][("ps", 0)] and cluster_run["alive"][("ps", 1)]

  losses = [float(v) for v in re.findall(r" loss: ([0-9.]+)", out)]
  assert len(losses) == 4, out[-2000:]  # one line per 10-step Keras epoch
  assert losses[-1] < losses[0], losses

  summary = json.load(open(model_dir / "summary.json"))
  assert summary["steps"] == 40
  shards = summary["embedding_shards"]
  assert len(shards) >= 2  # every table (views 0 and 1 share one)
  for table, parts in shards.items():
    # Every table is cut in two, one part on each parameter server.
    assert sorted(re.search(r"/job:ps/.*task:(\d)", device).group(1)
                  for _, _, device in parts) == ["0", "1"], (table, parts)
    assert abs(parts[0][0] - parts[1][0]) <= 1, parts
  assert max(sum(part[0] for part in parts) for parts in shards.values()
             ) > 1000

  # The export is one ordinary SavedModel: it answers with every parameter
  # server gone, as the final checkpoint restored outside the strategy does
  # (which the trainer checked against the sharded model itself).
  assert "export validation passed" in out
  final, schema = restore.model_from_model_dir(str(model_dir))
  for name, parts in shards.items():
    assert final.embedding.tables[name].shape == (
        sum(p[0] for p in parts), parts[0][1]), (name, parts)
  serialized = input_pipeline.read_examples(f"{data_dir}/eval-*", 16)
  exported = tf.saved_model.load(str(export_dir / "rankup" / "1"))
  served = exported.signatures["serving_default"](
      **{export_lib.EXAMPLES_INPUT: tf.constant(serialized)})
  features, _ = features_lib.FeatureTransform(schema).parse(
      tf.constant(serialized), with_labels=False)
  expected = final(features, training=False)
  for task in schema.task_names:
    np.testing.assert_allclose(served[task].numpy(),
                               tf.sigmoid(expected[task]).numpy(),
                               atol=1e-5)
  assert np.isfinite(summary["eval"]["click"]["auc"])


# A process that is the chief of a cluster whose worker and parameter
# servers it runs itself; its last argument is the JSON list of ports
# (chief, worker, then one per parameter server).
_IN_PROCESS_CLUSTER = """
import json, os, sys
import rankup_tf  # Keras 2 before TensorFlow
import tensorflow as tf

ports = json.loads(sys.argv[-1])
cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
           "worker": [f"127.0.0.1:{ports[1]}"],
           "ps": [f"127.0.0.1:{p}" for p in ports[2:]]}
servers = [tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job,
                                task_index=i, protocol="grpc", start=True)
           for job in ("worker", "ps") for i in range(len(cluster[job]))]
os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                      "task": {"type": "chief", "index": 0}})
"""

_RESTORE_SHARDED = _IN_PROCESS_CLUSTER + """
import numpy as np
from rankup_tf.trainer import strategy as strategy_lib
from rankup_tf import run_dir
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import optimizers

model_dir = sys.argv[1]
config = config_lib.TrainConfig.load(os.path.join(model_dir,
                                                  run_dir.CONFIG_FILE))
latest = tf.train.latest_checkpoint(os.path.join(model_dir,
                                                 run_dir.CHECKPOINT_DIR))

# The model and its tables' optimizer (Adagrad), restored under `strategy`
# as a resumed run restores them.
def restored(strategy):
  with strategy.scope():
    model, _ = run_dir.build_model(model_dir)
    optimizer = optimizers.make_optimizer(config, model)
  tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
      latest).expect_partial()
  return model, optimizer._optimizers_and_vars[0][0]

model, sparse = restored(strategy_lib.make_strategy("parameter_server",
                                                    1024, 0))
plain, plain_sparse = restored(tf.distribute.get_strategy())
result = {}
for name, table in model.embedding.tables.items():
  parts = table.variables
  whole = np.concatenate([p.numpy() for p in parts])
  accumulator = np.concatenate([sparse.get_slot(p, "accumulator").numpy()
                                for p in parts])
  plain_accumulator = plain_sparse.get_slot(
      plain.embedding.tables[name], "accumulator").numpy()
  result[name] = {
      "shards": len(parts),
      "same": bool(np.array_equal(whole,
                                  plain.embedding.tables[name].numpy())),
      "same_accumulator": bool(np.array_equal(accumulator, plain_accumulator)),
      # Adagrad's accumulators start at 0.1.
      "trained_rows": int((plain_accumulator.max(axis=1) > 0.1 + 1e-6
                           ).sum())}
print("RESULT " + json.dumps(result), flush=True)
"""


def test_checkpoint_restores_into_another_number_of_parameter_servers(
    cluster_run):
  """The run's checkpoint (tables in 2 shards) restored under a cluster of
  3 parameter servers gives 3 shards holding the same rows, and the same
  Adagrad accumulators, as a restore without a strategy (a resumed run
  keeps its tables' optimizer state)."""
  ports = [_free_port() for _ in range(5)]
  result = subprocess.run(
      [sys.executable, "-c", _RESTORE_SHARDED, str(cluster_run["model_dir"]),
       json.dumps(ports)], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  tables = json.loads(result.stdout.split("RESULT ")[1])
  assert len(tables) >= 2
  for name, table in tables.items():
    assert table.pop("trained_rows") > 0, name
    assert table == {"shards": 3, "same": True, "same_accumulator": True
                     }, name


_EARLY_STOPPING = _IN_PROCESS_CLUSTER + """
from rankup_tf import metrics as metrics_lib
from rankup_tf import models
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import train

data_dir, model_dir, export_dir = sys.argv[1:4]
# A scripted click AUC per evaluation (every 4 steps): best at step 8, then
# two evaluations without a new best stop the run at step 16 of 32.
scripted = iter([0.60, 0.70, 0.65, 0.69] + [0.99] * 10)
real = metrics_lib.task_metrics
calls = []
def task_metrics(labels, probabilities, groups=None):
  values = real(labels, probabilities, groups)
  if len(calls) % 2 == 0:  # the first task (click) of each evaluation
    values["auc"] = next(scripted)
  calls.append(1)
  return values
metrics_lib.task_metrics = task_metrics
config = config_lib.TrainConfig(
    train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
    schema=f"{data_dir}/small.json", model_dir=model_dir,
    export_dir=export_dir, global_batch_size=256, train_steps=32,
    eval_every_n_steps=4, checkpoint_every_n_steps=4,
    early_stopping_patience=2, export_best=True,
    strategy="parameter_server", ps_min_shard_bytes=1024,
    model_config=models.RankUpConfig(
        num_tokens=8, token_dim=16, embedding_dim=4, tower_units=(8,),
        ffn_expansion=1))
summary = train.run(config)
print("RESULT " + json.dumps(summary), flush=True)
"""


def test_early_stopping_and_export_best_under_parameter_servers(
    data_dir, tmp_path):  # noqa: F811
  """The coordinator evaluates after each Keras epoch, stops on patience
  and exports the best evaluation's checkpoint, as without a strategy."""
  model_dir, export_dir = tmp_path / "run", tmp_path / "export"
  ports = [_free_port() for _ in range(4)]
  result = subprocess.run(
      [sys.executable, "-c", _EARLY_STOPPING, data_dir, str(model_dir),
       str(export_dir), json.dumps(ports)], cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.split("RESULT ")[1])
  assert "Early stopping at step 16" in result.stdout
  assert summary["steps"] == 16 and summary["exported_step"] == 8
  assert summary["eval"]["click"]["auc"] == 0.70  # the exported step's
  assert len(summary["embedding_shards"]) >= 1
  assert all(len(parts) == 2
             for parts in summary["embedding_shards"].values())
  metrics = json.load(open(model_dir / "metrics.json"))
  assert [h["step"] for h in metrics["history"]] == [4, 8, 12, 16]
  assert metrics["best"] == {"metric": "click/auc", "step": 8, "value": 0.70}
  assert metrics["early_stopping"] == {"patience": 2, "stopped": True,
                                       "step": 16}
  # Only the best survives in best/ (one data file per parameter server
  # and the coordinator).
  best = os.listdir(model_dir / "best")
  assert "ckpt-8.index" in best and all(n.startswith("ckpt-8.") for n in best)
  assert "export validation passed" in result.stdout
  assert os.listdir(export_dir / "rankup") == ["1"]
