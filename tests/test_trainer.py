"""The trainer: end to end, replica-count invariance, multi-worker, resume,
bad flags."""

import ast
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import models
from data import synthetic
from trainer import config as config_lib
from trainer import train
from tests import tfexamples
from tests.conftest import REPO

SMALL_MODEL_FLAGS = ["--num_tokens=8", "--token_dim=32", "--embedding_dim=8",
                     "--tower_units=16", "--ffn_expansion=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("trainer_data"))
  synthetic.generate(out, rows=12000, seed=5, num_users=400, num_items=300,
                     num_shards=4, eval_fraction=0.15)
  spec = rankup_tf.Schema.load(os.path.join(out, "schema.json")).to_dict()
  for f in spec["sparse_features"]:
    if "hash_buckets" in f:
      f["hash_buckets"] = min(f["hash_buckets"], 1000)
  rankup_tf.Schema.from_dict(spec).save(os.path.join(out, "small.json"))
  return out


def _flags(data_dir, model_dir, *extra):
  return [f"--train_files={data_dir}/train-*",
          f"--eval_files={data_dir}/eval-*",
          f"--schema={data_dir}/small.json", f"--model_dir={model_dir}",
          "--global_batch_size=256", *SMALL_MODEL_FLAGS, *extra]


def _train(*args, env=None, **kwargs):
  return subprocess.Popen(
      [sys.executable, "-m", "trainer.train", *args], cwd=REPO,
      env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(process, timeout=600):
  out, err = process.communicate(timeout=timeout)
  return process.returncode, out, err


def test_end_to_end_under_mirrored_strategy(data_dir, tmp_path,
                                            mirrored_strategy):
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
      schema=f"{data_dir}/small.json", model_dir=str(tmp_path / "run"),
      export_dir=str(tmp_path / "export"), global_batch_size=256,
      train_steps=60, eval_every_n_steps=30, checkpoint_every_n_steps=30,
      model_config=models.RankUpConfig(num_tokens=8, token_dim=32,
                                       embedding_dim=8, tower_units=(16,),
                                       ffn_expansion=2))
  summary = train.run(config, strategy=mirrored_strategy)
  assert summary["replicas"] == 2 and summary["steps"] == 60
  metrics = json.load(open(tmp_path / "run" / "metrics.json"))
  history = metrics["history"]
  assert [h["step"] for h in history] == [30, 60]
  click = history[-1]["tasks"]["click"]
  # The teacher's signal is strong: even 60 small steps clear 0.70 AUC.
  assert click["auc"] > 0.70, click
  assert history[-1]["tasks"]["click"]["logloss"] < \
      history[0]["tasks"]["click"]["logloss"] + 0.01
  assert 0.5 < click["gauc"] < 1.0
  assert os.path.isdir(tmp_path / "export" / "rankup" / "1")
  saved = config_lib.TrainConfig.load(str(tmp_path / "run" /
                                          "train_config.json"))
  assert saved.model_config == config.model_config
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")
                                    ).endswith("ckpt-60")


def _weights_after(strategy, data_dir, steps, batch):
  schema = rankup_tf.Schema.load(f"{data_dir}/small.json")
  config = config_lib.TrainConfig(
      train_files="unused", schema="unused", model_dir="unused",
      model_config=models.RankUpConfig(num_tokens=8, token_dim=16,
                                       embedding_dim=4, tower_units=(8,),
                                       ffn_expansion=1))
  tf.keras.utils.set_random_seed(1)
  with strategy.scope():
    model = models.build_model("rankup", schema, config.model_config)
    model.build_from_schema()
    model.compile(optimizer=train.make_optimizer(config, model))
  data = strategy.distribute_datasets_from_function(
      lambda ctx: rankup_tf.make_dataset(
          f"{data_dir}/train-00000-*", schema,
          ctx.get_per_replica_batch_size(batch), shuffle=False,
          deterministic=True, repeat=True, input_context=ctx))
  model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
  # Keras uniquifies names per process; the variable order is stable.
  return [(v.name, v.numpy()) for v in model.trainable_variables]


def test_one_and_two_replicas_reach_the_same_weights(data_dir,
                                                     mirrored_strategy):
  one = _weights_after(tf.distribute.get_strategy(), data_dir, 4, 64)
  two = _weights_after(mirrored_strategy, data_dir, 4, 64)
  assert [v.shape for _, v in one] == [v.shape for _, v in two]
  for (name, value), (_, other) in zip(one, two):
    np.testing.assert_allclose(other, value, rtol=2e-3, atol=2e-5,
                               err_msg=name)
  assert len(one) > 20


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_multi_worker_two_processes(data_dir, tmp_path):
  ports = [_free_port(), _free_port()]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  model_dir, export_dir = tmp_path / "run", tmp_path / "export"
  processes = [
      _train(*_flags(data_dir, model_dir, "--strategy=multi_worker",
                     "--train_steps=20", "--checkpoint_every_n_steps=10",
                     f"--export_dir={export_dir}"),
             env={"TF_CONFIG": json.dumps({
                 "cluster": cluster, "task": {"type": "worker",
                                              "index": i}})})
      for i in range(2)]
  results = [_finish(p) for p in processes]
  for code, out, err in results:
    assert code == 0, err[-3000:]
  assert "export validation passed" in results[0][1]
  assert "export" not in results[1][1].lower()
  assert os.listdir(export_dir / "rankup") == ["1"]  # only the chief
  chief = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
  worker = tf.train.load_checkpoint(str(model_dir / "workers" / "worker_1" /
                                        "checkpoints"))
  names = [n for n, _ in tf.train.list_variables(str(model_dir /
                                                     "checkpoints"))
           if n.startswith("model/") and "OPTIMIZER_SLOT" not in n]
  assert len(names) > 20
  for name in names:
    np.testing.assert_allclose(worker.get_tensor(name),
                               chief.get_tensor(name), err_msg=name)


def test_killed_run_resumes_to_the_same_total_steps(data_dir, tmp_path):
  flags = ["--train_steps=40", "--checkpoint_every_n_steps=5",
           "--eval_every_n_steps=20"]
  killed_dir = tmp_path / "killed"
  process = _train(*_flags(data_dir, killed_dir, *flags))
  marker = killed_dir / "checkpoints" / "ckpt-15.index"
  deadline = time.time() + 300
  while not marker.exists() and process.poll() is None:
    assert time.time() < deadline, "training never reached step 15"
    time.sleep(0.2)
  assert process.poll() is None, "finished before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  code, out, err = _finish(_train(*_flags(data_dir, killed_dir, *flags)))
  assert code == 0, err[-3000:]
  code, _, err = _finish(_train(*_flags(data_dir, tmp_path / "straight",
                                        *flags)))
  assert code == 0, err[-3000:]
  resumed = json.load(open(killed_dir / "metrics.json"))["final"]
  straight = json.load(open(tmp_path / "straight" / "metrics.json"))["final"]
  assert resumed["step"] == straight["step"] == 40
  assert tf.train.latest_checkpoint(str(killed_dir / "checkpoints")
                                    ).endswith("ckpt-40")
  # It resumed from a backup (every 5 steps, at least step 15), not step 0.
  summary = json.load(open(killed_dir / "summary.json"))
  assert summary["steps"] == 40
  assert summary["steps_run_by_this_process"] <= 25
  for task in ("click", "conversion"):
    assert abs(resumed["tasks"][task]["auc"]
               - straight["tasks"][task]["auc"]) < 0.05


@pytest.mark.parametrize("extra, message", [
    (["--model=xgboost"], "value should be one of"),
    (["--train_files=/nonexistent/train-*"],
     "No files match '/nonexistent/train-*'"),
    (["--num_tokens=12"],
     "token_dim D=32 is not divisible by num_tokens T=12"),
    (["--schema={mismatch}"], "dense feature(s) ['not_in_data'] of the "
     "schema are in none of the first"),
    (["--schema={vector_mismatch}"], "does not match the schema"),
    (["--loss_weights=click"], "--loss_weights entry 'click' is not "
     "task=weight"),
])
def test_bad_flags_exit_nonzero_with_a_clear_message(data_dir, tmp_path,
                                                     extra, message):
  mismatch = tmp_path / "mismatch.json"
  spec = rankup_tf.Schema.load(f"{data_dir}/small.json").to_dict()
  spec["dense_features"].append({"name": "not_in_data",
                                 "normalization": "none"})
  rankup_tf.Schema.from_dict(spec).save(str(mismatch))
  vector_mismatch = tmp_path / "vector_mismatch.json"
  spec = rankup_tf.Schema.load(f"{data_dir}/small.json").to_dict()
  spec["pretrained_features"].append({"name": "absent_vec", "dim": 3})
  rankup_tf.Schema.from_dict(spec).save(str(vector_mismatch))
  extra = [e.format(mismatch=mismatch, vector_mismatch=vector_mismatch)
           for e in extra]
  code, out, err = _finish(_train(*_flags(data_dir, tmp_path / "run",
                                          "--train_steps=2"), *extra),
                           timeout=300)
  assert code != 0
  assert message in err, err[-2000:]
  assert "Traceback" not in err


@pytest.mark.parametrize("setting, message", [
    (dict(dense_learning_rate=-0.01),
     "dense_learning_rate must be a positive finite number, got -0.01"),
    (dict(sparse_learning_rate=float("nan")),
     "sparse_learning_rate must be a positive finite number, got nan"),
    (dict(model_name="../../x"), "model name '../../x' is not allowed"),
    (dict(strategy="parameter_server", ps_min_shard_bytes=0),
     "ps_min_shard_bytes must be positive"),
])
def test_bad_settings_are_refused_by_name(setting, message):
  """Checked by TrainConfig itself, so flags, config files and code all
  get them (the CLI's one-line error path is tested above)."""
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.TrainConfig(train_files="t", schema="s", model_dir="m",
                           **setting)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(data_dir, tmp_path, mirrored_strategy,
                                precision):
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
      schema=f"{data_dir}/small.json", model_dir=str(tmp_path / "run"),
      global_batch_size=256, train_steps=8, precision=precision,
      model_config=models.RankUpConfig(num_tokens=8, token_dim=16,
                                       embedding_dim=4, tower_units=(8,),
                                       ffn_expansion=1))
  summary = train.run(config, strategy=mirrored_strategy)
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  for values in summary["eval"].values():
    assert np.isfinite(values["logloss"]) and 0 <= values["auc"] <= 1


def test_nan_loss_stops_the_run_naming_the_step(tmp_path):
  schema = tfexamples.all_kinds_schema()
  schema.save(str(tmp_path / "schema.json"))
  rows = []
  for i in range(64):
    row = tfexamples.all_kinds_row(i)
    row["d_raw"] = 3e38  # finite, but overflows float32 in the first matmul
    rows.append(tfexamples.example(row))
  tfexamples.write_records(str(tmp_path / "train-0.tfrecord"), rows)
  code, out, err = _finish(_train(
      f"--train_files={tmp_path}/train-*", f"--schema={tmp_path}/schema.json",
      f"--model_dir={tmp_path}/run", "--train_steps=5",
      "--global_batch_size=16", "--num_tokens=8", "--token_dim=16",
      "--embedding_dim=4"), timeout=300)
  assert code != 0
  assert "Training loss became nan at step 1" in err, err[-2000:]
  assert "Traceback" not in err


def test_skip_bad_records_counts_them(tmp_path):
  schema = tfexamples.all_kinds_schema()
  schema.save(str(tmp_path / "schema.json"))
  rows = [tfexamples.example(tfexamples.all_kinds_row(i)) for i in range(63)]
  rows.insert(7, b"not a tf.Example")
  tfexamples.write_records(str(tmp_path / "train-0.tfrecord"), rows)
  flags = [f"--train_files={tmp_path}/train-*",
           f"--schema={tmp_path}/schema.json", "--train_steps=2",
           "--global_batch_size=16", "--num_tokens=8", "--token_dim=16",
           "--embedding_dim=4"]
  code, _, err = _finish(_train(*flags, f"--model_dir={tmp_path}/strict"),
                         timeout=300)
  assert code != 0 and "Could not parse example input" in err
  code, out, err = _finish(_train(*flags, f"--model_dir={tmp_path}/skip",
                                  "--skip_bad_records"), timeout=300)
  assert code == 0, err[-2000:]
  counts = ast.literal_eval(out.split("bad input skipped: ")[1].splitlines()[0])
  # One bad record, skipped on each of the passes the repeating pipeline
  # made over the 64-record file.
  assert counts["skipped_records"] >= 1 and counts["corrupt_files"] == 0


def test_a_nan_step_never_reaches_a_backup_or_checkpoint(tmp_path):
  """The trainer's callbacks in its order: the NaN at step 3 stops the run
  before step 3's backup and checkpoint; both hold step 2's finite weights."""
  from trainer import callbacks as callbacks_lib
  model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
  model.compile(tf.keras.optimizers.legacy.SGD(0.1), loss="mse")
  x = np.ones([5, 4, 2], np.float32)
  x[2] = np.nan  # the third batch
  data = tf.data.Dataset.from_tensor_slices((x, np.ones([5, 4, 1])))
  callbacks, _ = callbacks_lib.fault_tolerance(
      str(tmp_path / "backup"), str(tmp_path / "checkpoints"),
      every_n_steps=1, keep=5, global_batch_size=4)
  with pytest.raises(callbacks_lib.NaNLossError,
                     match="at step 3 .*from step 2 or earlier"):
    model.fit(data, epochs=1, callbacks=callbacks, verbose=0)
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")
                                    ).endswith("ckpt-2")
  backup = tf.train.load_checkpoint(
      tf.train.latest_checkpoint(str(tmp_path / "backup" / "chief")))
  weights = [backup.get_tensor(name) for name, _ in
             tf.train.list_variables(str(tmp_path / "backup" / "chief"))
             if name.startswith("model/")]
  assert weights and all(np.all(np.isfinite(w)) for w in weights)
  assert backup.get_tensor(
      "model/optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE") == 2


def test_rerun_of_a_finished_run_exports_without_training_again(
    data_dir, tmp_path, capsys):
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", schema=f"{data_dir}/small.json",
      model_dir=str(tmp_path / "run"), global_batch_size=256,
      train_steps=6, checkpoint_every_n_steps=3,
      model_config=models.RankUpConfig(num_tokens=8, token_dim=16,
                                       embedding_dim=4, tower_units=(8,),
                                       ffn_expansion=1))
  assert train.run(config)["steps_run_by_this_process"] == 6
  # Say its export was killed: the same run with the export dir.
  capsys.readouterr()
  summary = train.run(dataclasses.replace(
      config, export_dir=str(tmp_path / "export")))
  assert "Training already finished" in capsys.readouterr().out
  assert summary["steps_run_by_this_process"] == 0
  assert summary["train_examples_per_sec"] is None
  assert os.listdir(tmp_path / "export" / "rankup") == ["1"]
