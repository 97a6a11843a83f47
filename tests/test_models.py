"""Models: shapes for every config, bad configs, reports, distributed training."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import rankup_tf
from rankup_tf import features as features_lib
from rankup_tf import models
from rankup_tf.data import criteo_to_tfrecord
from rankup_tf.data import synthetic
from tests import tfexamples


SMALL = dict(embedding_dim=4, tower_units=(8,))
LADDER = {
    "rankmixer": ("rankmixer", models.RankMixerConfig(
        num_tokens=4, token_dim=16, **SMALL)),
    "random_split": ("rankup", models.RankUpConfig(
        num_tokens=4, token_dim=16, num_embedding_views=1, global_token=False,
        cross_tokens=False, block="rankmixer", ffn_activation="gelu",
        **SMALL)),
    "global_multi_embedding": ("rankup", models.RankUpConfig(
        num_tokens=4, token_dim=16, num_embedding_views=2, cross_tokens=False,
        block="rankmixer", ffn_activation="gelu", **SMALL)),
    "crossed": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, num_embedding_views=3, block="rankmixer",
        ffn_activation="gelu", **SMALL)),
    "task_tokens": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, task_tokens=True, block="rankmixer",
        ffn_activation="gelu", **SMALL)),
    "full_rankup": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, **SMALL)),
    "rankup_fm_moe": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=32, global_token_func="fm", num_experts=2,
        split="ordered", **SMALL)),
    "rankup_dcn": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, global_token_func="dcn", **SMALL)),
    "rankup_fwfm": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, global_token_func="fwfm", **SMALL)),
    "rankup_view_dims": ("rankup", models.RankUpConfig(
        num_tokens=8, token_dim=16, view_embedding_dims=(4, 8, 6), **SMALL)),
    "dcnv2": ("dcnv2", models.DCNv2Config(deep_units=(16,), **SMALL)),
    "dlrm": ("dlrm", models.DLRMConfig(top_units=(16,), **SMALL)),
    "dnn": ("dnn", models.DNNConfig(hidden_units=(16,), **SMALL)),
}


@pytest.mark.parametrize("case", sorted(LADDER))
def test_output_shapes_for_every_config(schema, batch, case):
  name, config = LADDER[case]
  model = models.build_model(name, schema, config)
  logits = model(batch[0])
  assert sorted(logits) == ["buy", "click"]
  assert all(v.shape == [16] for v in logits.values())
  if hasattr(model, "token_states"):
    states = model.token_states(batch[0])
    assert list(states)[:3] == ["input", "block1_mixer", "block1_ffn"]
    assert all(s.shape == [16, config.num_tokens, config.token_dim]
               for s in states.values())


def test_token_layout_and_views(schema):
  model = models.RankUpModel(schema, LADDER["full_rankup"][1])
  # global 1 + cross 2 (one pretrained, one sparse) leave 5: the dense
  # inputs' share (5 of 10 fields) is 2. No task tokens by default.
  assert model.token_counts == {"global": 1, "dense": 2, "cross": 2,
                                "task": 0, "sparse": 3}
  assert model.embedding.view_features == [
      schema.sparse_names, schema.sparse_names, ["s_hash", "i_hash"]]
  # The dense tokens see the 3 dense fields and both 4-dim vectors, so a
  # model without cross tokens (RankMixer) still gets the vectors.
  model.build_from_schema()
  assert model.dense_token.weights[0].shape == [3 + 4 + 4, 2 * 16]
  # Two task tokens take input tokens' places: T stays 8.
  with_tasks = models.RankUpModel(schema, dataclasses.replace(
      LADDER["full_rankup"][1], task_tokens=True))
  assert with_tasks.token_counts == {"global": 1, "dense": 1, "cross": 2,
                                     "task": 2, "sparse": 2}


def test_gradients_reach_every_view_and_weight(schema, batch):
  model = models.RankUpModel(schema, LADDER["rankup_fm_moe"][1])
  model.build_from_schema()
  with tf.GradientTape() as tape:
    loss = model.compute_loss(batch, training=True) + model._layer_loss()
  variables = model.trainable_variables
  gradients = tape.gradient(loss, variables)
  by_variable = {}
  for variable, gradient in zip(variables, gradients):
    assert gradient is not None, variable.name
    if isinstance(gradient, tf.IndexedSlices):
      gradient = tf.convert_to_tensor(gradient)
    assert float(tf.norm(gradient)) > 0, variable.name
    by_variable[id(variable)] = gradient.numpy()
  # Every view's own columns of its table get a gradient.
  views = set()
  for stack in model.embedding._stacks:  # pylint: disable=protected-access
    gradient = by_variable[id(model.embedding.tables[stack.name])]
    for i, view in enumerate(stack.views):
      block = gradient[:, i * stack.dim:(i + 1) * stack.dim]
      assert np.abs(block).sum() > 0, (stack.name, view)
      views.add(view)
  assert views == {0, 1, 2}


def test_view_embedding_dims_size_each_views_table_and_train(schema, batch):
  model = models.RankUpModel(schema, LADDER["rankup_view_dims"][1])
  views = model.embedding(batch[0])
  assert [v.shape[-1] for v in views] == [4, 8, 6]
  # Views of different dims never share a table: one table per view here.
  assert sorted((s.views, s.dim, model.embedding.tables[s.name].shape[1])
                for s in model.embedding._stacks) == [  # pylint: disable=protected-access
                    ((0,), 4, 4), ((1,), 8, 8), ((2,), 6, 6)]
  optimizer = tf.keras.optimizers.legacy.Adam(1e-2)
  losses = []
  for _ in range(5):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    optimizer.apply_gradients(zip(
        tape.gradient(loss, model.trainable_variables),
        model.trainable_variables))
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  assert all(v.shape == [16] for v in model(batch[0]).values())


@pytest.mark.parametrize("change, message", [
    (dict(num_tokens=7, token_dim=16),
     r"token_dim D=16 is not divisible by num_tokens T=7 .* T can be one of "
     r"\[8\]"),
    (dict(num_embedding_views=4), "num_embedding_views must be 1, 2 or 3"),
    (dict(num_embedding_views=3, cross_tokens=False),
     r"view\(s\) \[3\] would feed nothing"),
    (dict(num_tokens=4, token_dim=16), "num_tokens=4 leaves no sparse tokens"),
    (dict(num_tokens=16, token_dim=32, num_dense_tokens=1),
     "asks for 12 sparse tokens but the schema has 5 sparse fields"),
    (dict(split="hash"), "Unknown split 'hash'"),
    (dict(block="transformer"), "Unknown block style 'transformer'"),
    (dict(global_token_func="ffm"), "unknown func 'ffm'"),
    (dict(global_token_projection_dim=-1, global_token_func="mlp"),
     r"global_token_projection_dim must be >= 0 \(0: full rank\), got -1"),
    (dict(view_embedding_dims=(8, 8)),
     r"view_embedding_dims=\[8, 8\] has 2 entries but num_embedding_views=3"),
    (dict(view_embedding_dims=(8, 0, 8)),
     "view_embedding_dims must be positive"),
    (dict(loss_weights={"purchase": 2.0}),
     r"loss_weights name unknown task\(s\) \['purchase'\]"),
])
def test_bad_configs_raise_clear_errors(schema, change, message):
  config = models.RankUpConfig(**dict(dict(num_tokens=8, token_dim=16,
                                           **SMALL), **change))
  with pytest.raises(ValueError, match=message):
    models.RankUpModel(schema, config)


def test_global_token_rank_reaches_its_cross_layers(schema):
  def cross_kernels(**change):
    model = models.RankUpModel(schema, models.RankUpConfig(
        num_tokens=8, token_dim=16, **SMALL, **change))
    model.build_from_schema()
    return [tuple(w.shape) for layer in model.global_token._cross
            for w in layer.trainable_weights if len(w.shape) == 2]
  full = cross_kernels(global_token_projection_dim=0)
  md = full[0][0]
  assert full == [(md, md)] * 2
  assert cross_kernels() == [(md, 64), (64, md)] * 2  # the default
  assert cross_kernels(global_token_projection_dim=4) == [(md, 4), (4, md)] * 2
  # The rank is the dcn token's alone: an MLP token builds without it.
  assert cross_kernels(global_token_func="mlp") == []


def test_bad_schema_cross_pair_and_model_name(schema):
  spec = dict(tfexamples.ALL_KINDS_SCHEMA,
              crosses=[["u_vec", "missing_vec"]])
  with pytest.raises(rankup_tf.SchemaError, match="names 'missing_vec'"):
    rankup_tf.Schema.from_dict(spec)
  with pytest.raises(ValueError, match="Unknown model 'xgboost'"):
    models.build_model("xgboost", schema, models.DNNConfig())
  with pytest.raises(TypeError, match="needs a RankUpConfig"):
    models.RankUpModel(schema, models.DNNConfig())


def test_parameter_counts_and_flops(schema):
  def build(layers):
    model = models.RankMixerModel(schema, models.RankMixerConfig(
        num_tokens=4, token_dim=16, num_layers=layers, ffn_expansion=2,
        **SMALL))
    model.build_from_schema()
    return model
  one, two = build(1), build(2)
  tables = sum(f.table_size * 4 for f in schema.sparse_features)
  assert one.parameter_counts()["embedding"] == tables
  block_params = (two.parameter_counts()["dense"]
                  - one.parameter_counts()["dense"])
  ffn_params = 2 * 4 * 16 * 32  # two [T, D, kD] kernels
  # T=4, D=16, kD=32: the kernels, biases b1 [T, kD] and b2 [T, D], and
  # two LayerNorms' gamma and beta [D]; the token mixer has no weights.
  assert block_params == ffn_params + 4 * 32 + 4 * 16 + 2 * 2 * 16
  extra_flops = two.flops_per_example() - one.flops_per_example()
  # 2 per multiply-add of the two matmuls, plus element-wise ops: at least
  # the bias adds (4*32 + 4*16) and the two residual adds (2 * 4*16); at
  # most 12 ops per element of the 128 hidden and the 2 x 64 normalized
  # values (GELU, the LayerNorms' moments and scaling, the adds).
  matmul_flops = 2 * ffn_params
  assert matmul_flops + 192 + 128 <= extra_flops <= (
      matmul_flops + 12 * (128 + 2 * 64))


def test_swiglu_blocks_are_two_thirds_wide_unless_pinned(schema):
  def ffn_width(config):
    model = models.build_model("rankup", schema, config)
    model.build_from_schema()
    return model.blocks[0].ffn.w1.shape[-1]
  config = models.RankUpConfig(num_tokens=8, token_dim=16, ffn_expansion=2,
                               **SMALL)
  assert ffn_width(config) == 21  # 2kD/3: GELU's parameters at this k
  assert ffn_width(dataclasses.replace(config, ffn_activation="gelu")) == 32
  # A checkpoint from before the 2/3 width restores with the width pinned.
  assert ffn_width(dataclasses.replace(config, ffn_hidden_dim=32)) == 32


def test_dense_inputs_get_their_share_of_the_free_tokens():
  criteo = criteo_to_tfrecord.criteo_schema(hash_buckets=10)  # 26 + 13
  token = dict(num_tokens=16, token_dim=64, **SMALL)
  # The global token leaves 15: 13/39 of them is 5.
  full = models.RankUpModel(criteo, models.RankUpConfig(**token))
  assert full.token_counts == {"global": 1, "dense": 5, "cross": 0,
                               "task": 0, "sparse": 10}
  full.build_from_schema()
  assert full.dense_token.weights[0].shape == [13, 5 * 64]
  # Global and task tokens leave 14: 13/39 of them is 4.67, rounded down.
  with_task = models.RankUpModel(criteo, models.RankUpConfig(
      task_tokens=True, **token))
  assert with_task.token_counts == {"global": 1, "dense": 4, "cross": 0,
                                    "task": 1, "sparse": 10}
  # An explicit count; RankMixer keeps its one dense token.
  five = models.RankUpModel(criteo, models.RankUpConfig(
      num_dense_tokens=5, **token))
  assert (five.token_counts["dense"], five.token_counts["sparse"]) == (5, 10)
  rankmixer = models.RankMixerModel(criteo, models.RankMixerConfig(**token))
  assert rankmixer.token_counts["dense"] == 1
  # None without dense_token.
  assert models.RankUpModel(criteo, models.RankUpConfig(
      dense_token=False, **token)).token_counts["dense"] == 0
  with pytest.raises(ValueError, match="num_dense_tokens must be >= 0"):
    models.RankUpModel(criteo, models.RankUpConfig(num_dense_tokens=-1,
                                                   **token))


def test_final_norm_normalizes_what_the_towers_read(schema, batch):
  def build(**change):
    model = models.RankUpModel(schema, dataclasses.replace(
        LADDER["full_rankup"][1], **change))
    model.build_from_schema()
    return model
  model, without = build(), build(final_norm=False)
  d = model.config.token_dim
  assert model.config.final_norm  # the default
  assert (model.parameter_counts()["dense"]
          - without.parameter_counts()["dense"]) == 2 * d  # gamma, beta
  # Post-LN blocks already end in a LayerNorm: no second one.
  post_ln = dataclasses.replace(LADDER["task_tokens"][1], final_norm=True)
  assert models.RankUpModel(schema, post_ln).final_norm is None
  # The towers read the normalized tokens of the last block.
  features = batch[0]
  tokens = model.input_tokens(features)
  for block in model.blocks:
    tokens = block(tokens, training=False)
  normalized = model.final_norm(tokens)
  logits = model(features)
  expected = model.towers(normalized, training=False)
  unnormalized = model.towers(tokens, training=False)
  for task in logits:
    np.testing.assert_allclose(logits[task], expected[task], atol=1e-5)
    assert np.abs(logits[task] - unnormalized[task]).max() > 1e-3


def test_config_round_trip(schema):
  for name, config in LADDER.values():
    again = type(config).from_dict(config.to_dict())
    assert again == config
    model = models.build_model(name, schema, config)
    clone = type(model).from_config(model.get_config())
    assert clone.config == config


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.generate(out, rows=6000, seed=1, num_users=300, num_items=200,
                     num_shards=2, eval_fraction=0.0)
  return out


def _small_tables(schema):
  """The same fields hashed into at most 500 buckets (fast tests)."""
  spec = schema.to_dict()
  for f in spec["sparse_features"]:
    if "hash_buckets" in f:
      f["hash_buckets"] = min(f["hash_buckets"], 500)
  return rankup_tf.Schema.from_dict(spec)


def _composite_optimizer(model):
  return tfrs.experimental.optimizers.CompositeOptimizer([
      (tf.keras.optimizers.legacy.Adagrad(0.05),
       lambda: model.embedding_variables),
      (tf.keras.optimizers.legacy.Adam(3e-3), lambda: model.dense_variables),
  ])


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_trains_under_mirrored_strategy(synthetic_dir, name,
                                                   mirrored_strategy):
  schema = _small_tables(rankup_tf.Schema.load(
      f"{synthetic_dir}/schema.json"))
  strategy = mirrored_strategy
  assert strategy.num_replicas_in_sync == 2
  config = models.CONFIGS[name](embedding_dim=8, tower_units=(16,))
  if name in ("rankup", "rankmixer"):
    config = type(config).from_dict(dict(config.to_dict(), num_tokens=8,
                                         token_dim=32))
  with strategy.scope():
    model = models.build_model(name, schema, config)
    model.build_from_schema()
    model.compile(optimizer=_composite_optimizer(model))
  ds = strategy.distribute_datasets_from_function(
      lambda ctx: rankup_tf.make_dataset(
          f"{synthetic_dir}/train-*", schema,
          ctx.get_per_replica_batch_size(128), repeat=True, input_context=ctx,
          deterministic=True))
  history = model.fit(ds, epochs=3, steps_per_epoch=8, verbose=0)
  losses = history.history["loss"]
  assert losses[-1] < losses[0], losses
  assert np.isfinite(losses).all()


def test_xla_compiled_interaction_matches_and_is_profiled(schema, batch):
  model = models.RankUpModel(schema, LADDER["full_rankup"][1])
  model.build_from_schema()
  plain = model(batch[0])
  flops = model.flops_per_example()
  model.use_xla()
  compiled = model(batch[0])
  for task in plain:
    np.testing.assert_allclose(compiled[task], plain[task], rtol=1e-4,
                               atol=1e-5)
  assert model.flops_per_example() == flops


def test_default_views_are_the_ones_with_a_role(schema):
  config = models.RankUpConfig(num_tokens=8, token_dim=16, **SMALL)
  kinds = [schema.cross_kind(p) for p in schema.crosses]
  assert "sparse" in kinds  # the fixture has a sparse cross pair
  assert models.build_model("rankup", schema,
                            config).num_embedding_views == 3
  # Without sparse cross pairs (Criteo), no third view: the default model
  # builds instead of asking for num_embedding_views=2.
  no_sparse_pairs = dataclasses.replace(schema, crosses=tuple(
      p for p in schema.crosses if schema.cross_kind(p) != "sparse"))
  model = models.build_model("rankup", no_sparse_pairs, config)
  assert model.num_embedding_views == 2
  assert len(model.embedding.view_dims) == 2
  # Without a global token, one view.
  assert models.build_model("rankup", no_sparse_pairs, dataclasses.replace(
      config, global_token=False)).num_embedding_views == 1


@pytest.mark.parametrize("extra", [{}, dict(dense_l2=1e-3)])
def test_moe_layer_losses_are_logged_by_training_only(schema, batch, extra):
  """The sparse MoE's imitation and gate losses are part of what a step
  minimizes; `regularization_loss` logs them: on one step it equals
  sum(model.losses) of that step's forward pass (weights before the
  update), and `loss` stays the task loss alone. (Without an L2 it was not
  logged at all; with one, it holds the L2 and the MoE losses.)"""
  config = models.RankUpConfig(num_tokens=8, token_dim=16, num_experts=2,
                               **SMALL, **extra)
  model = models.build_model("rankup", schema, config)
  model.build_from_schema()
  task_loss = float(model.compute_loss(batch, training=True))
  expected = float(tf.add_n(model.losses))
  assert len(model.losses) >= 2 * config.num_layers  # two per MoE block
  assert expected > 0
  model.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.1))
  history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1,
                      verbose=0).history
  assert history["regularization_loss"][0] == pytest.approx(expected,
                                                            rel=1e-5)
  assert history["loss"][0] == pytest.approx(task_loss, rel=1e-5)
  assert "regularization_loss" not in model.evaluate(
      tf.data.Dataset.from_tensors(batch), verbose=0, return_dict=True)
