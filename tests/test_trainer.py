"""The trainer: end to end, replica-count invariance, multi-worker, resume,
bad settings."""

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

from absl import flags as absl_flags
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import trainer_overhead
import rankup_tf
from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf import models
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import flags as flags_lib
from rankup_tf.trainer import optimizers
from rankup_tf.trainer import train
from tests import tfexamples
from tests.conftest import REPO

SMALL_MODEL_FLAGS = trainer_overhead.MODEL_FLAGS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """12,000 rows, tables cut to 1,000 rows (small.json); the same log
  benchmarks.trainer_overhead times runs on."""
  out = str(tmp_path_factory.mktemp("trainer_data"))
  trainer_overhead.make_data(out)
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
  # The last evaluation is of the exported (final) weights: recompute its
  # numbers from the export's predictions on every eval example, by brute
  # force (pairwise AUC per user for GAUC), not with rankup_tf.metrics.
  # Tolerances: export and in-memory predictions differ by ~1e-6, which
  # can flip only near-tied pairs.
  examples = input_pipeline.read_examples(f"{data_dir}/eval-*", 10**6)
  assert len(examples) == metrics["final"]["tasks"]["click"]["examples"]
  loaded = tf.saved_model.load(str(tmp_path / "export" / "rankup" / "1"))
  predicted = loaded.signatures["serving_default"](
      **{export_lib.EXAMPLES_INPUT: tf.constant(examples)})
  features, labels = features_lib.FeatureTransform(rankup_tf.Schema.load(
      f"{data_dir}/small.json")).parse(tf.constant(examples))
  users = features[schema_lib.USER_ID_KEY].numpy()
  for task, values in history[-1]["tasks"].items():
    y = labels[task].numpy().astype(int)
    p = predicted[task].numpy().astype(np.float64)
    assert values["auc"] == pytest.approx(_brute_force_auc(y, p), abs=1e-4)
    assert values["logloss"] == pytest.approx(-np.mean(
        y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-5)
    per_user = [(np.sum(users == u), _brute_force_auc(y[users == u],
                                                      p[users == u]))
                for u in np.unique(users) if 0 < y[users == u].sum()
                < np.sum(users == u)]
    sizes, aucs = np.array(per_user).T
    assert values["gauc"] == pytest.approx(np.sum(sizes * aucs)
                                           / np.sum(sizes), abs=1e-4)
  saved = config_lib.TrainConfig.load(str(tmp_path / "run" /
                                          "train_config.json"))
  assert saved.model_config == config.model_config
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")
                                    ).endswith("ckpt-60")


def _brute_force_auc(labels, scores) -> float:
  """P(positive's score > negative's), ties one half, over all pairs."""
  positives, negatives = scores[labels == 1], scores[labels == 0]
  diff = positives[:, None] - negatives[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


@pytest.fixture
def validated(monkeypatch):
  """train.run's export validation in this process: the same checks
  (serving.validate.validate with the same arguments) without starting a
  fresh process, which costs a TensorFlow import. test_end_to_end and the
  multi-worker test keep the fresh process. Lists the reports."""
  from rankup_tf.serving import validate as validate_lib
  reports = []
  def validate_here(path, config, checkpoint):
    reports.append(dict(validate_lib.validate(
        path, config.eval_files or config.train_files, config.model_dir,
        checkpoint=checkpoint), checkpoint=checkpoint))
  monkeypatch.setattr(train, "_validate_export", validate_here)
  return reports


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
    model.compile(optimizer=optimizers.make_optimizer(config, model))
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
    (["--train_files=/nonexistent/train-*"],
     "No files match '/nonexistent/train-*'"),
    (["--num_tokens=12"],
     "token_dim D=32 is not divisible by num_tokens T=12"),
    (["--schema={mismatch}"], "dense feature(s) ['not_in_data'] of the "
     "schema are in none of the first"),
    (["--schema={vector_mismatch}"], "does not match the schema"),
])
def test_bad_flags_stop_the_run_with_a_clear_message(data_dir, tmp_path,
                                                     extra, message):
  """In-process; main prints these as one line and exits 1 (the real CLI's
  error path is tested once, in test_config.py)."""
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
  flag_values = absl_flags.FlagValues()
  flags_lib.define_flags(flag_values)
  flag_values(["train", *_flags(data_dir, tmp_path / "run",
                                "--train_steps=2"), *extra])
  config = flags_lib.config_from_flags(flag_values)
  with pytest.raises((ValueError, FileNotFoundError, rankup_tf.SchemaError,
                      train.TrainingError, tf.errors.OpError)) as error:
    train.run(config)
  assert message in str(error.value)


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
  # The evaluation is of the trained weights: the final checkpoint, restored
  # in float32, reproduces it on every eval example. Tolerances: the run's
  # logits are rounded to 16 bits (bfloat16: 8 significant bits, ~0.4%),
  # which moves the logloss by ~1e-3 and ties or flips a few close pairs.
  from rankup_tf.serving import restore
  model, _ = restore.model_from_model_dir(str(tmp_path / "run"), "")
  examples = input_pipeline.read_examples(f"{data_dir}/eval-*", 10**6)
  features, labels = features_lib.FeatureTransform(model.schema).parse(
      tf.constant(examples))
  predicted = model.probabilities(features)
  assert set(summary["eval"]) == {"click", "conversion"}
  for task, values in summary["eval"].items():
    y = labels[task].numpy().astype(int)
    p = predicted[task].numpy().astype(np.float64)
    assert values["examples"] == len(examples)
    assert values["auc"] == pytest.approx(_brute_force_auc(y, p), abs=0.02)
    assert values["logloss"] == pytest.approx(-np.mean(
        y * np.log(p) + (1 - y) * np.log(1 - p)), abs=0.01)


def test_nan_loss_stops_the_run_naming_the_step(tmp_path):
  schema = tfexamples.all_kinds_schema()
  schema.save(str(tmp_path / "schema.json"))
  rows = []
  for i in range(64):
    row = tfexamples.all_kinds_row(i)
    # Finite, but z_user * z_item (the crossed token's input) is 1e60,
    # which overflows float32.
    row["u_vec"] = row["v_vec"] = [1e30] * 4
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
  from rankup_tf.trainer import callbacks as callbacks_lib
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


@pytest.mark.parametrize("per_epoch", [False, True])
def test_kept_checkpoints_fall_on_every_n_steps_and_the_last(tmp_path,
                                                            per_epoch):
  """Every 4th step and the final one, counted across resumes; keep 3. A
  resume at a multiple of 4 whose checkpoint a kill prevented writes it."""
  from rankup_tf.trainer import callbacks as callbacks_lib
  kept = (callbacks_lib.EpochKeptCheckpoints if per_epoch
          else callbacks_lib.KeptCheckpoints)
  model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
  model.compile(tf.keras.optimizers.legacy.SGD(0.1), loss="mse")
  data = tf.data.Dataset.from_tensor_slices(
      (np.ones([2, 2], np.float32), np.ones([2, 1]))).batch(1).repeat()

  def fit(steps, directory):
    # Per epoch: Keras epochs of 2 steps, which divide every 4 steps.
    model.fit(data, epochs=steps // 2 if per_epoch else 1,
              steps_per_epoch=2 if per_epoch else steps,
              callbacks=[kept(str(directory), 4, keep=3)], verbose=0)
    state = tf.train.get_checkpoint_state(str(directory))
    return [int(p.rsplit("-", 1)[1])
            for p in state.all_model_checkpoint_paths]

  assert fit(6, tmp_path / "run") == [4, 6]
  assert fit(6, tmp_path / "run") == [6, 8, 12]
  assert fit(4, tmp_path / "run") == [8, 12, 16]
  assert fit(2, tmp_path / "killed") == [16, 18]


def test_rerun_of_a_finished_run_exports_without_training_again(
    data_dir, tmp_path, capsys, validated):
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
  assert len(validated) == 1 and validated[0]["examples"] == 64


TINY_RANKUP = models.RankUpConfig(num_tokens=8, token_dim=16, embedding_dim=4,
                                  tower_units=(8,), ffn_expansion=1)


def test_early_stopping_stops_and_export_best_exports_the_best_step(
    data_dir, tmp_path, monkeypatch, capsys, validated):
  """A scripted click AUC per evaluation (every 2 steps): best at step 4,
  then two evaluations without a new best stop the run at step 8 of 16;
  the export holds step 4's weights, not step 8's."""
  from rankup_tf import features as features_lib
  from rankup_tf import metrics as metrics_lib
  from rankup_tf.serving import export as export_lib
  from rankup_tf.serving import restore
  scripted = iter([0.60, 0.70, 0.65, 0.69] + [0.99] * 10)
  real = metrics_lib.task_metrics
  def task_metrics(labels, probabilities, groups=None):
    values = real(labels, probabilities, groups)
    if task_metrics.calls % 2 == 0:  # the first task (click) of each eval
      values["auc"] = next(scripted)
    task_metrics.calls += 1
    return values
  task_metrics.calls = 0
  monkeypatch.setattr(metrics_lib, "task_metrics", task_metrics)
  model_dir = tmp_path / "run"
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
      schema=f"{data_dir}/small.json", model_dir=str(model_dir),
      export_dir=str(tmp_path / "export"), global_batch_size=256,
      train_steps=16, eval_every_n_steps=2, checkpoint_every_n_steps=4,
      early_stopping_patience=2, export_best=True, model_config=TINY_RANKUP)
  summary = train.run(config)
  assert "Early stopping at step 8" in capsys.readouterr().out
  assert summary["steps"] == 8 and summary["exported_step"] == 4
  assert summary["eval"]["click"]["auc"] == 0.70  # the exported step's
  metrics = json.load(open(model_dir / "metrics.json"))
  assert [h["step"] for h in metrics["history"]] == [2, 4, 6, 8]
  assert [h["tasks"]["click"]["auc"] for h in metrics["history"]] == [
      0.60, 0.70, 0.65, 0.69]
  assert metrics["final"]["step"] == 8
  assert metrics["best"] == {"metric": "click/auc", "step": 4, "value": 0.70}
  assert metrics["early_stopping"] == {"patience": 2, "stopped": True,
                                       "step": 8}
  assert metrics["exported_step"] == 4
  # Validated against the best checkpoint, to the validator's tolerance.
  assert len(validated) == 1
  assert validated[0]["checkpoint"] == str(model_dir / "best" / "ckpt-4")
  assert validated[0]["in_memory_max_abs_diff"] <= 1e-5
  # Only the best survives in best/; the kept checkpoints end at step 8.
  assert sorted(os.listdir(model_dir / "best")) == [
      "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
  assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")
                                    ).endswith("ckpt-8")

  examples = input_pipeline.read_examples(f"{data_dir}/eval-*", 64)
  loaded = tf.saved_model.load(str(tmp_path / "export" / "rankup" / "1"))
  exported = loaded.signatures["serving_default"](
      **{export_lib.EXAMPLES_INPUT: tf.constant(examples)})
  features, _ = features_lib.FeatureTransform(
      rankup_tf.Schema.load(f"{data_dir}/small.json")).parse(
          tf.constant(examples), with_labels=False)
  def predictions(checkpoint):
    model, _ = restore.model_from_model_dir(str(model_dir), checkpoint)
    return {t: tf.sigmoid(v).numpy()
            for t, v in model(features, training=False).items()}
  best = predictions(str(model_dir / "best" / "ckpt-4"))
  last = predictions("")
  for task in ("click", "conversion"):
    np.testing.assert_allclose(exported[task].numpy(), best[task],
                               atol=1e-5)
    assert np.max(np.abs(exported[task].numpy() - last[task])) > 1e-4

  # A rerun finds the early-stopped run finished instead of training anew
  # (without an export this time, which takes long).
  capsys.readouterr()
  summary = train.run(dataclasses.replace(config, export_dir=""))
  assert "Training already finished" in capsys.readouterr().out
  assert summary["steps_run_by_this_process"] == 0
  assert summary["steps"] == 8 and summary["eval"]["click"]["auc"] == 0.70
  assert json.load(open(model_dir / "metrics.json"))["best"]["step"] == 4


def test_a_resume_keeps_the_best_checkpoint_its_history_names(tmp_path):
  """Evaluator.resume(step) after a kill: evaluations after the backup step
  are forgotten, and so are best checkpoints other than the best among
  the remembered evaluations (the one a newer best superseded survived,
  since that newer best was after the last backup)."""
  from rankup_tf.trainer import evaluation

  class Stub(tf.Module):
    schema = None  # Evaluator reads it; resume needs none

    def __init__(self):
      super().__init__()
      self.w = tf.Variable(0.0)
  model = Stub()
  checkpoints = evaluation.BestCheckpoints(model, str(tmp_path),
                                           backup_every_n_steps=10)
  best = evaluation.BestEvaluation("click", "auc", patience=3)
  evaluator = evaluation.Evaluator(model, "unused", 8, str(tmp_path),
                                   best=best, best_checkpoints=checkpoints)
  history = []
  for step, auc in [(5, 0.6), (10, 0.7), (15, 0.8), (18, 0.75)]:
    history.append({"step": step, "tasks": {"click": {"auc": auc}}})
    if best.update(history[-1]):
      model.w.assign(step)
      checkpoints.save(step)
    checkpoints.prune(step)
  # The backup at step 10 made step 5's best unreachable; 15 is after it.
  assert checkpoints.steps() == [10, 15]
  evaluator.history = history
  evaluator.write()
  evaluator.resume(10)  # killed at 19; the last backup is step 10's
  assert [h["step"] for h in evaluator.history] == [5, 10]
  assert (best.step, best.value, best.since) == (10, 0.7, 0)
  assert checkpoints.steps() == [10]
  restored = Stub()
  tf.train.Checkpoint(model=restored).restore(checkpoints.path(10))
  assert float(restored.w) == 10.0
  evaluator.resume(0)  # a fresh run in the same model_dir
  assert evaluator.history == [] and best.step is None
  assert checkpoints.steps() == []


def _small_dnn(data_dir):
  """The suite's small DNN on the trainer log, built."""
  schema = rankup_tf.Schema.load(f"{data_dir}/small.json")
  model = models.build_model("dnn", schema, models.DNNConfig(
      embedding_dim=4, hidden_units=(8,), tower_units=(8,)))
  model.build_from_schema()
  return model, schema


def test_evaluator_builds_its_pipeline_and_step_once_and_reads_new_weights(
    data_dir, tmp_path):
  from rankup_tf.trainer import evaluation
  model, schema = _small_dnn(data_dir)
  traces = []
  probabilities = model.probabilities
  model.probabilities = lambda f: traces.append(1) or probabilities(f)
  evaluator = evaluation.Evaluator(model, f"{data_dir}/eval-*", 256,
                                   str(tmp_path))
  first, again = evaluator(1), evaluator(2)
  rows = sum(1 for _ in tf.data.TFRecordDataset(
      tf.io.gfile.glob(f"{data_dir}/eval-*")))
  assert rows % 256  # a last, smaller batch
  for result in (first, again):
    assert {t: v["examples"] for t, v in result["tasks"].items()} == {
        t: rows for t in schema.task_names}
  assert again["tasks"] == first["tasks"]
  # Traced for full batches and the last, smaller one; never again.
  assert len(traces) == 2
  for variable in model.dense_variables:  # constant predictions
    variable.assign(tf.zeros_like(variable))
  assert all(v["auc"] == 0.5 for v in evaluator(3)["tasks"].values())
  assert len(traces) == 2


def test_best_evaluation_picks_by_direction_and_counts_patience():
  from rankup_tf.trainer import evaluation
  def result(step, value):
    return {"step": step, "tasks": {"click": {"logloss": value}}}
  best = evaluation.BestEvaluation("click", "logloss", patience=2)
  improved = [best.update(result(s, v)) for s, v in
              [(1, 0.5), (2, float("nan")), (3, 0.4), (4, 0.4), (5, 0.45)]]
  assert improved == [True, False, True, False, False]
  assert (best.step, best.value, best.stopped_at) == (3, 0.4, 5)


@pytest.mark.parametrize("setting, message", [
    (dict(early_stopping_patience=2, eval_files="e"),
     "early_stopping_patience needs evaluations during training"),
    (dict(export_best=True, eval_every_n_steps=5),
     "export_best needs evaluations during training: eval_files"),
    (dict(early_stopping_patience=-1), "early_stopping_patience must be"),
    (dict(early_stopping_metric="click/precision"),
     "early_stopping_metric 'click/precision' is not <task>/<metric>"),
    (dict(eval_every_epoch=True, eval_every_n_steps=5),
     "Set eval_every_n_steps or eval_every_epoch, not both"),
    (dict(export_best=True, eval_files="e", eval_every_n_steps=5,
          strategy="multi_worker"),
     "export_best is not supported with strategy multi_worker"),
])
def test_bad_early_stopping_settings_are_refused_by_name(setting, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.TrainConfig(train_files="t", schema="s", model_dir="m",
                           **setting)


def test_early_stopping_metric_must_name_a_task_of_the_schema(data_dir,
                                                              tmp_path):
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
      schema=f"{data_dir}/small.json", model_dir=str(tmp_path / "run"),
      train_steps=4, eval_every_n_steps=2, early_stopping_patience=1,
      early_stopping_metric="purchase/auc", model_config=TINY_RANKUP)
  with pytest.raises(ValueError, match=re.escape(
      "early_stopping_metric 'purchase/auc': the schema has no task "
      "'purchase'; its tasks are ['click', 'conversion']")):
    train.run(config)


def test_eval_every_epoch_evaluates_after_each_pass(data_dir, tmp_path):
  config = config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
      schema=f"{data_dir}/small.json", model_dir=str(tmp_path / "run"),
      global_batch_size=256, steps_per_epoch=3, epochs=2,
      eval_every_epoch=True, model_config=TINY_RANKUP)
  assert train.steps_plan(config) == {"total": 6, "loop": 3, "loops": 2}
  train.run(config)
  metrics = json.load(open(tmp_path / "run" / "metrics.json"))
  assert [h["step"] for h in metrics["history"]] == [3, 6]
  assert metrics["early_stopping"]["stopped"] is False
  assert metrics["exported_step"] is None  # no export_dir


def test_deterministic_input_makes_a_seed_reproduce_its_run(data_dir,
                                                             tmp_path):
  # Four shards read in parallel: without the fixed order, two runs of one
  # seed see different batches and end with different metrics.
  def run(name):
    return train.run(config_lib.TrainConfig(
        train_files=f"{data_dir}/train-*", eval_files=f"{data_dir}/eval-*",
        schema=f"{data_dir}/small.json", model_dir=str(tmp_path / name),
        global_batch_size=64, train_steps=12, seed=7,
        deterministic_input=True, model="dnn",
        model_config=models.DNNConfig(embedding_dim=4, hidden_units=(8,),
                                      tower_units=(8,))))["eval"]
  first, second = run("first"), run("second")
  assert first == second
  assert {m for task in first.values() for m in task} >= {"auc", "logloss"}


def _dense_and_sparse(optimizer):
  (sparse, _), (dense, _) = optimizer._optimizers_and_vars
  return dense, sparse


def test_cosine_decay_halves_the_dense_rate_midway_and_needs_the_steps(
    data_dir):
  config = config_lib.TrainConfig(
      train_files="t", schema="s", model_dir="m", dense_learning_rate=0.01,
      sparse_learning_rate=0.05, dense_learning_rate_decay="cosine")
  model, _ = _small_dnn(data_dir)
  dense, sparse = _dense_and_sparse(
      optimizers.make_optimizer(config, model, total_steps=10))
  dense.iterations.assign(5)
  sparse.iterations.assign(5)
  assert float(dense._decayed_lr(tf.float32)) == pytest.approx(0.005)
  assert float(sparse._decayed_lr(tf.float32)) == pytest.approx(0.05)
  constant, _ = _dense_and_sparse(optimizers.make_optimizer(
      dataclasses.replace(config, dense_learning_rate_decay="none"), model))
  constant.iterations.assign(5)
  assert float(constant._decayed_lr(tf.float32)) == pytest.approx(0.01)
  with pytest.raises(ValueError, match="dense_learning_rate_decay='cosine' "
                     r"needs the run's total steps \(got 0\)"):
    optimizers.make_optimizer(config, model)


def test_the_optimizer_has_its_slots_before_the_first_step_so_one_trace(
    data_dir):
  config = config_lib.TrainConfig(train_files="t", schema="s", model_dir="m")
  model, schema = _small_dnn(data_dir)
  model.compile(optimizer=optimizers.make_optimizer(config, model))
  dense, sparse = _dense_and_sparse(model.optimizer)
  assert all(dense.get_slot(v, "m") is not None
             for v in model.dense_variables)
  assert all(sparse.get_slot(v, "accumulator") is not None
             for v in model.embedding_variables)
  traces = []
  step = model.train_step
  model.train_step = lambda data: traces.append(1) or step(data)
  model.fit(rankup_tf.make_dataset(f"{data_dir}/train-00000-*", schema, 32,
                                   repeat=True),
            steps_per_epoch=2, epochs=1, verbose=0)
  assert len(traces) == 1 and int(model.optimizer.iterations) == 2


def test_a_cosine_run_ends_with_its_dense_rate_at_zero(data_dir, tmp_path,
                                                       monkeypatch):
  made = []
  real = optimizers.make_optimizer
  monkeypatch.setattr(optimizers, "make_optimizer",
                      lambda *args: made.append(real(*args)) or made[-1])
  train.run(config_lib.TrainConfig(
      train_files=f"{data_dir}/train-*", schema=f"{data_dir}/small.json",
      model_dir=str(tmp_path / "run"), global_batch_size=64, train_steps=4,
      dense_learning_rate_decay="cosine", model="dnn",
      model_config=models.DNNConfig(embedding_dim=4, hidden_units=(8,),
                                    tower_units=(8,))))
  dense, sparse = _dense_and_sparse(made[0])
  assert int(dense.iterations) == 4
  assert float(dense._decayed_lr(tf.float32)) == pytest.approx(0.0,
                                                               abs=1e-12)
  assert float(sparse._decayed_lr(tf.float32)) == pytest.approx(0.05)
