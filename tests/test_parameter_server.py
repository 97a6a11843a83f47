"""--strategy=parameter_server on a local cluster: a coordinator, two
workers and two parameter servers, each `python -m trainer.train` in its own
process on 127.0.0.1 (as the README launches them on several hosts)."""

import json
import os
import re
import socket

import numpy as np
import tensorflow as tf

from serving import restore
from tests.test_trainer import _finish, _flags, _train, data_dir  # noqa: F401


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tf_config(cluster, task_type, index=0):
  return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                   "task": {"type": task_type,
                                            "index": index}})}


def test_local_cluster_trains_shards_tables_survives_a_worker_and_exports(
    data_dir, tmp_path):  # noqa: F811
  cluster = {"chief": [f"127.0.0.1:{_free_port()}"],
             "worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)],
             "ps": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
  model_dir, export_dir = tmp_path / "run", tmp_path / "export"
  flags = _flags(data_dir, model_dir, "--strategy=parameter_server",
                 "--train_steps=60", "--checkpoint_every_n_steps=10",
                 "--eval_every_n_steps=30", "--ps_min_shard_bytes=1024",
                 f"--export_dir={export_dir}")
  servers = {(kind, i): _train(*flags, env=_tf_config(cluster, kind, i))
             for kind in ("worker", "ps") for i in range(2)}
  chief = _train(*flags, env=_tf_config(cluster, "chief"))
  try:
    # Kill worker 1 once the coordinator reports its first Keras epoch: the
    # coordinator must finish the run on worker 0.
    lines = []
    for line in chief.stdout:
      lines.append(line)
      if line.startswith("Epoch 2/"):
        servers[("worker", 1)].kill()
        break
    code, out, err = _finish(chief)
    out = "".join(lines) + out
  finally:
    for process in servers.values():
      process.kill()
      process.communicate()
  assert code == 0, err[-3000:]
  assert servers[("worker", 1)].returncode != 0  # it was killed mid-run

  losses = [float(v) for v in re.findall(r" loss: ([0-9.]+)", out)]
  assert len(losses) == 6, out[-2000:]  # one line per 10-step Keras epoch
  assert losses[-1] < losses[0], losses

  summary = json.load(open(model_dir / "summary.json"))
  assert summary["steps"] == 60
  shards = summary["embedding_shards"]
  assert len(shards) >= 3  # every view's table
  for table, parts in shards.items():
    # Every table is cut in two, one part on each parameter server.
    assert [re.search(r"/job:ps/.*task:(\d)", device).group(1)
            for _, _, device in parts] == ["0", "1"], (table, parts)
    rows = sum(part[0] for part in parts)
    assert abs(parts[0][0] - parts[1][0]) <= 1 and rows >= 1000, parts

  # The export (validated in a fresh process against the final checkpoint,
  # which the trainer checked against the sharded model) is one ordinary
  # SavedModel: no parameter server in it.
  assert "export validation passed" in out
  exported = tf.saved_model.load(str(export_dir / "rankup" / "1"))
  devices = {v.device for v in exported.variables}
  assert not any("/job:ps" in d for d in devices), devices
  final, _ = restore.model_from_model_dir(str(model_dir))
  tables = {v.name.split("/")[-1].split(":")[0]: v.shape
            for v in final.embedding_variables}
  for table, parts in shards.items():
    name = table.split("/")[-1].split(":")[0]
    assert tables[name][0] == sum(p[0] for p in parts), (name, parts)
  assert np.isfinite(summary["eval"]["click"]["auc"])
