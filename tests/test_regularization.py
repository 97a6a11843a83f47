"""Regularization (dropout, dense L2, embedding L2, embedding init scale):
off by default, and each one changes training the way it says."""

import math

import numpy as np
import pytest
import tensorflow as tf

import rankup_tf
from rankup_tf import models
from rankup_tf.layers import backbone
from rankup_tf.layers import embedding as embedding_lib
from rankup_tf.layers import heads
from rankup_tf.layers import tokenizers

SMALL = dict(embedding_dim=4, tower_units=(8,))
CONFIGS = {
    "rankup": models.RankUpConfig(num_tokens=8, token_dim=16, **SMALL),
    "rankmixer": models.RankMixerConfig(num_tokens=4, token_dim=16, **SMALL),
    "dcnv2": models.DCNv2Config(deep_units=(16,), **SMALL),
    "dlrm": models.DLRMConfig(bottom_units=(8,), top_units=(16,), **SMALL),
    "dnn": models.DNNConfig(hidden_units=(16,), **SMALL),
}
# Names of the weights dense_l2 covers: Dense / cross / split kernels,
# per-token FFN matrices and MoE routers.
KERNEL_NAMES = {"kernel", "w1", "w2", "w3", "train_router",
                "inference_router"}


def _model(schema, name, **change):
  config = CONFIGS[name]
  config = type(config).from_dict(dict(config.to_dict(), **change))
  model = models.build_model(name, schema, config)
  model.build_from_schema()
  return model


def _copy_weights(source, target):
  """Trainable weights only: a regularized model has one more metric."""
  for a, b in zip(source.trainable_variables, target.trainable_variables):
    b.assign(a)


def _twins(schema, name, **change):
  """An unregularized model and one with `change`, holding equal weights."""
  plain, changed = _model(schema, name), _model(schema, name, **change)
  _copy_weights(plain, changed)
  return plain, changed


def _sgd_steps(model, batch, steps, learning_rate):
  model.compile(optimizer=tf.keras.optimizers.legacy.SGD(learning_rate))
  for _ in range(steps):
    model.train_step(batch)


def _short_name(variable) -> str:
  return variable.name.split("/")[-1].split(":")[0]


# -- config -------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(dropout=1.0), "dropout must be in [0, 1), got 1.0"),
    (dict(dropout=-0.1), "dropout must be in [0, 1), got -0.1"),
    (dict(dense_l2=-1e-4), "dense_l2 must be a finite number >= 0"),
    (dict(embedding_l2=float("nan")),
     "embedding_l2 must be a finite number >= 0, got nan"),
    (dict(embedding_init_scale=-0.5),
     "embedding_init_scale must be a finite number >= 0, got -0.5"),
])
def test_bad_values_are_refused_by_field_name(change, message):
  for config_class in models.CONFIGS.values():
    with pytest.raises(ValueError, match=message.replace("[", r"\[")
                       .replace("(", r"\(").replace(")", r"\)")):
      config_class(**change)


def test_fields_survive_json_and_rankmixer_passes_them_on():
  values = dict(dropout=0.2, dense_l2=1e-4, embedding_l2=1e-5,
                embedding_init_scale=0.5)
  for config_class in models.CONFIGS.values():
    config = config_class(**values)
    assert config_class.from_dict(config.to_dict()) == config
  rankup = models.RankMixerConfig(**values).as_rankup()
  assert {k: getattr(rankup, k) for k in values} == values


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_defaults_add_no_dropout_no_loss_and_no_metric(schema, batch, name):
  model = _model(schema, name)
  model(batch[0], training=True)
  assert not model.losses
  assert not [l for l in model._flatten_layers()  # pylint: disable=protected-access
              if isinstance(l, tf.keras.layers.Dropout)]
  assert "regularization_loss" not in [m.name for m in model.metrics]


# -- dropout ------------------------------------------------------------------
@pytest.mark.parametrize("block_class", [backbone.RankUpBlock,
                                         backbone.RankMixerBlock])
def test_block_dropout_acts_only_while_training(block_class):
  tokens = tf.random.stateless_normal([32, 4, 16], seed=[1, 2])
  plain, dropped = block_class(), block_class(dropout=0.5)
  plain(tokens)
  dropped(tokens)
  dropped.set_weights(plain.get_weights())
  np.testing.assert_allclose(dropped(tokens, training=False),
                             plain(tokens, training=False), atol=1e-6)
  first = dropped(tokens, training=True)
  assert not np.allclose(first, dropped(tokens, training=True))
  assert not np.allclose(first, plain(tokens, training=True), atol=1e-3)
  # The config travels with the layer.
  clone = block_class.from_config(dropped.get_config())
  assert clone.dropout == 0.5


def test_tower_dropout_acts_only_while_training():
  tokens = tf.random.stateless_normal([32, 4, 16], seed=[3, 4])
  towers = heads.TaskTowers(["click"], [64], dropout=0.5)
  assert not np.allclose(towers(tokens, training=True)["click"],
                         towers(tokens, training=True)["click"])
  np.testing.assert_array_equal(towers(tokens)["click"],
                                towers(tokens)["click"])
  assert heads.TaskTowers.from_config(towers.get_config()).dropout == 0.5


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dropout_makes_training_stochastic_and_inference_not(schema, batch,
                                                             name):
  plain, dropped = _twins(schema, name, dropout=0.5)
  features = batch[0]
  for task, logit in plain(features, training=True).items():
    np.testing.assert_allclose(logit, plain(features, training=True)[task],
                               atol=1e-6)
  a, b = (dropped(features, training=True) for _ in range(2))
  assert all(not np.allclose(a[t], b[t]) for t in a), name
  inference = dropped(features, training=False)
  for task, logit in plain(features, training=False).items():
    np.testing.assert_allclose(inference[task], logit, atol=1e-5)


# -- dense L2 -----------------------------------------------------------------
@pytest.mark.parametrize("name, change", [
    ("rankup", dict(num_experts=2, global_token_func="dcn", token_dim=32)),
    ("dcnv2", {}), ("dlrm", {}), ("dnn", {})])
def test_dense_l2_decays_exactly_the_kernels(schema, batch, name, change):
  """One SGD step: the regularized step differs by -lr * 2 * l2 * w on
  every kernel and by nothing on biases, LayerNorms and embeddings."""
  learning_rate, l2 = 0.1, 0.05
  plain = _model(schema, name, **change)
  regularized = _model(schema, name, dense_l2=l2, **change)
  _copy_weights(plain, regularized)
  before = [v.numpy() for v in plain.trainable_variables]
  _sgd_steps(plain, batch, 1, learning_rate)
  _sgd_steps(regularized, batch, 1, learning_rate)
  kernels = set()
  for start, p, r in zip(before, plain.trainable_variables,
                         regularized.trainable_variables):
    short = _short_name(r)
    expected = (-learning_rate * 2 * l2 * start if short in KERNEL_NAMES
                else np.zeros_like(start))
    np.testing.assert_allclose(r.numpy() - p.numpy(), expected, atol=1e-6,
                               err_msg=r.name)
    if short in KERNEL_NAMES:
      kernels.add(short)
  assert "kernel" in kernels
  if name == "rankup":  # per-token weights and routers too
    assert {"w1", "w2", "w3", "train_router"} <= kernels


def test_dense_l2_shrinks_kernel_norms_and_is_logged(schema, batch):
  plain, regularized = _twins(schema, "rankup", dense_l2=0.5)

  def kernel_norm(model):
    return sum(float(tf.reduce_sum(tf.square(v)))
               for v in model.dense_variables
               if _short_name(v) in KERNEL_NAMES)

  assert kernel_norm(plain) == pytest.approx(kernel_norm(regularized))
  _sgd_steps(plain, batch, 5, 0.05)
  _sgd_steps(regularized, batch, 5, 0.05)
  assert kernel_norm(regularized) < 0.9 * kernel_norm(plain)
  data = tf.data.Dataset.from_tensors(batch).repeat(2)
  history = regularized.fit(data, epochs=1, verbose=0).history
  assert history["regularization_loss"][0] > 0
  assert "regularization_loss" not in regularized.evaluate(
      data, verbose=0, return_dict=True)


# -- embedding L2 -------------------------------------------------------------
def test_embedding_l2_loss_is_the_mean_row_square_with_sparse_gradient():
  features = [rankup_tf.schema.SparseFeature("user", hash_buckets=10),
              rankup_tf.schema.SparseFeature("tags", hash_buckets=10,
                                             multivalent=True, max_length=3,
                                             combiner="mean")]
  layer = embedding_lib.MultiEmbedding(features, [4], l2=0.5)
  inputs = {"user": tf.constant([1, 1, 3], tf.int64),
            "tags": tf.ragged.constant([[2], [2, 5], []], tf.int64)}
  layer(inputs)
  assert not layer.losses  # inference: no loss
  table = layer.embedding_variables[0]
  with tf.GradientTape() as tape:
    layer(inputs, training=True)
    (loss,) = layer.losses
  rows = table.numpy()
  # One table (one combiner): "tags" rows start after the "user" rows.
  (stack,) = layer._stacks  # pylint: disable=protected-access
  tags = stack.offsets[1]
  counts = {1: 2, 3: 1, tags + 2: 2, tags + 5: 1}
  expected = 0.5 * sum(c * np.sum(rows[i] ** 2) for i, c in counts.items())
  assert float(loss) == pytest.approx(expected / 3, rel=1e-5)
  gradient = tape.gradient(loss, table)
  assert isinstance(gradient, tf.IndexedSlices)
  dense = tf.convert_to_tensor(gradient).numpy()
  for i in range(len(rows)):
    want = 2 * 0.5 * counts.get(i, 0) * rows[i] / 3
    np.testing.assert_allclose(dense[i], want, atol=1e-6)
  config = layer.get_config()
  assert (config["l2"], config["init_scale"]) == (0.5, 1.0)


@pytest.mark.parametrize("name", ["rankup", "dnn"])
def test_embedding_l2_shrinks_looked_up_rows_only(schema, batch, name):
  plain, regularized = _twins(schema, name, embedding_l2=2.0)
  initial = [v.numpy() for v in regularized.embedding_variables]
  with tf.GradientTape() as tape:
    loss = (regularized.compute_loss(batch, training=True)
            + regularized._layer_loss())  # pylint: disable=protected-access
  gradients = tape.gradient(loss, regularized.embedding_variables)
  assert all(isinstance(g, tf.IndexedSlices) for g in gradients)
  looked_up = [np.unique(g.indices.numpy()) for g in gradients]
  _sgd_steps(plain, batch, 5, 0.1)
  _sgd_steps(regularized, batch, 5, 0.1)
  for start, rows, p, r in zip(initial, looked_up,
                               plain.embedding_variables,
                               regularized.embedding_variables):
    unseen = np.setdiff1d(np.arange(len(start)), rows)
    assert len(unseen)
    np.testing.assert_array_equal(r.numpy()[unseen], start[unseen])
    assert (np.sum(r.numpy()[rows] ** 2)
            < 0.9 * np.sum(p.numpy()[rows] ** 2)), r.name


# -- embedding initializer scale ----------------------------------------------
def test_init_scale_multiplies_the_initializer_stddev():
  feature = rankup_tf.schema.SparseFeature("f", hash_buckets=20000)

  def std(scale):
    layer = embedding_lib.MultiEmbedding([feature], [16], init_scale=scale)
    layer.build()
    return float(np.std(layer.embedding_variables[0].numpy()))

  assert std(0.0) == 0.0
  assert std(0.5) / std(1.0) == pytest.approx(0.5, rel=0.02)
  # A truncated (at 2 stddev) normal keeps 0.88 of the stddev 1/sqrt(16).
  assert std(1.0) == pytest.approx(0.88 / math.sqrt(16), rel=0.02)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_init_scale_zero_gives_zero_tables(schema, name):
  model = _model(schema, name, embedding_init_scale=0.0)
  assert all(not np.any(v.numpy()) for v in model.embedding_variables)
  assert any(np.any(v.numpy()) for v in model.dense_variables)


# -- layers and flags ---------------------------------------------------------
@pytest.mark.parametrize("layer", [
    backbone.PerTokenFFN(kernel_l2=0.1),
    backbone.SparseMoEFFN(num_experts=2, kernel_l2=0.1),
    backbone.RankUpBlock(kernel_l2=0.1, dropout=0.2),
    tokenizers.OrderedSplit(2, 8, kernel_l2=0.1),
    tokenizers.GlobalToken(8, kernel_l2=0.1),
    tokenizers.DenseToken(8, kernel_l2=0.1),
    tokenizers.CrossedPretrainedToken(8, kernel_l2=0.1),
    heads.TaskTowers(["click"], kernel_l2=0.1),
], ids=lambda layer: type(layer).__name__)
def test_layers_keep_their_regularization_in_get_config(layer):
  config = layer.get_config()
  assert config["kernel_l2"] == 0.1
  assert type(layer).from_config(config).get_config() == config


def test_flags_reach_every_model_config():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rankup_tf.trainer import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  trainer_flags.define_flags(flag_values)
  for name in models.MODELS:
    flag_values(["train", "--train_files=t", "--schema=s", "--model_dir=m",
                 f"--model={name}", "--dropout=0.1", "--dense_l2=1e-4",
                 "--embedding_l2=1e-5", "--embedding_init_scale=0.5"])
    config = trainer_flags.config_from_flags(flag_values).model_config
    assert (config.dropout, config.dense_l2, config.embedding_l2,
            config.embedding_init_scale) == (0.1, 1e-4, 1e-5, 0.5), name
