"""Effective rank and the token trajectory tooling."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import diagnostics
from rankup_tf import models
from tests import tfexamples


def test_effective_rank_of_identity_rank_one_and_zero():
  assert float(diagnostics.effective_rank(np.eye(6))) == pytest.approx(6.0)
  rank_one = np.outer(np.arange(1, 5), np.arange(1, 8)).astype(np.float32)
  assert float(diagnostics.effective_rank(rank_one)) == pytest.approx(1.0)
  assert float(diagnostics.effective_rank(np.zeros((3, 4)))) == 0.0
  # Entropy form on known singular values (diag(3, 1)): p = (0.75, 0.25).
  p = np.array([0.75, 0.25])
  assert float(diagnostics.effective_rank(np.diag([3.0, 1.0]))) == \
      pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_batched_ranks_and_other_measures():
  batch = np.stack([np.eye(4), np.diag([1.0, 0, 0, 0])])
  np.testing.assert_allclose(diagnostics.effective_rank(batch), [4.0, 1.0])
  np.testing.assert_allclose(diagnostics.stable_rank(batch), [4.0, 1.0])
  np.testing.assert_allclose(diagnostics.information_abundance(batch),
                             [4.0, 1.0])
  assert float(diagnostics.stable_rank(np.diag([2.0, 1.0]))) == \
      pytest.approx(5.0 / 4.0)


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
  schema = tfexamples.all_kinds_schema()
  path = str(tmp_path_factory.mktemp("d") / "b.tfrecord")
  tfexamples.write_records(path, [tfexamples.example(
      tfexamples.all_kinds_row(i)) for i in range(32)])
  features, labels = next(iter(rankup_tf.make_dataset(path, schema, 32)))
  model = models.RankUpModel(schema, models.RankUpConfig(
      num_tokens=8, token_dim=16, embedding_dim=4))
  model.build_from_schema()
  return model, features, labels


def test_trajectory_points_and_normalization(model_and_batch):
  model, features, _ = model_and_batch
  trajectory = diagnostics.token_erank_trajectory(model, features)
  assert trajectory["points"] == ["input", "block1_mixer", "block1_ffn",
                                  "block2_mixer", "block2_ffn"]
  assert (trajectory["num_tokens"], trajectory["token_dim"],
          trajectory["batch_size"]) == (8, 16, 32)
  states = model.token_states(features)
  direct = float(tf.reduce_mean(diagnostics.effective_rank(
      states["block2_ffn"])))
  assert trajectory["erank"][-1] == pytest.approx(direct, rel=1e-6)
  for raw, normalized in zip(trajectory["erank"],
                             trajectory["erank_normalized"]):
    assert normalized == pytest.approx(raw / 8)
    assert 1.0 <= raw <= 8.0
  assert all(len(t) == 8 for t in trajectory["per_token_erank"])
  with pytest.raises(TypeError, match="no token backbone"):
    diagnostics.token_erank_trajectory(
        models.DNNModel(model.schema, models.DNNConfig()), features)


def test_callback_writes_json_png_and_tensorboard(model_and_batch, tmp_path):
  model, features, labels = model_and_batch
  model.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3))
  callback = diagnostics.EffectiveRankCallback(
      features, every_n_steps=2, output_dir=str(tmp_path / "out"),
      log_dir=str(tmp_path / "logs"))
  ds = tf.data.Dataset.from_tensors((features, labels)).repeat()
  model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0, callbacks=[callback])
  history = json.load(open(tmp_path / "out" / "erank.json"))
  assert [h["step"] for h in history] == [2, 4, 5]
  assert os.path.getsize(tmp_path / "out" / "erank.png") > 1000
  events = tf.io.gfile.glob(str(tmp_path / "logs" / "erank" / "events.*"))
  assert events
  tags = set()
  for event in tf.compat.v1.train.summary_iterator(events[0]):
    tags |= {v.tag for v in event.summary.value}
  assert "erank/block2_ffn" in tags and "erank_normalized/input" in tags
