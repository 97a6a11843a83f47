"""Layers: equations, configs, SavedModel round trips, use in user models."""

import inspect
import math

import numpy as np
import pytest
import tensorflow as tf

from rankup_tf import layers
from rankup_tf import schema as schema_lib
from rankup_tf.layers import backbone
from rankup_tf.layers import embedding
from rankup_tf.layers import heads
from rankup_tf.layers import tokenizers


def _np_gelu(x):
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _np_silu(x):
  return x / (1.0 + np.exp(-x))


def _np_layer_norm(x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps)


def _np_mix(x):
  b, t, d = x.shape
  out = np.zeros_like(x)
  for h in range(t):
    for s in range(t):
      out[:, h, s * (d // t):(s + 1) * (d // t)] = \
          x[:, s, h * (d // t):(h + 1) * (d // t)]
  return out


def test_token_mixing_matches_index_formula_and_has_no_weights():
  x = np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float32)
  mixer = layers.TokenMixing()
  np.testing.assert_array_equal(mixer(x).numpy(), _np_mix(x))
  assert mixer.weights == []


def test_token_mixing_names_t_and_d_when_not_divisible():
  with pytest.raises(ValueError, match="D=10 is not divisible by the number "
                     "of tokens T=4"):
    layers.TokenMixing()(tf.zeros([2, 4, 10]))


@pytest.mark.parametrize("implementation", ["batched", "unstacked"])
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_per_token_ffn_equals_independent_ffns(activation, implementation):
  x = np.random.default_rng(1).normal(size=(5, 3, 8)).astype(np.float32)
  ffn = layers.PerTokenFFN(expansion=2, activation=activation,
                           implementation=implementation)
  got = ffn(x).numpy()
  w = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in ffn.weights}
  for t in range(3):
    s = x[:, t]
    if activation == "gelu":
      want = _np_gelu(s @ w["w1"][t] + w["b1"][t]) @ w["w2"][t] + w["b2"][t]
    else:
      want = (_np_silu(s @ w["w1"][t]) * (s @ w["w2"][t])) @ w["w3"][t]
    np.testing.assert_allclose(got[:, t], want, rtol=1e-4, atol=1e-5)
  # One [T, D, h] tensor, not T layers (SwiGLU: h = 2kD/3, rounded).
  assert w["w1"].shape == (3, 8, 16 if activation == "gelu" else 11)


def test_swiglu_ffn_has_gelu_parameters_at_one_expansion():
  tokens = tf.zeros([2, 4, 48])

  def matrices(layer):
    layer(tokens, training=True)
    names = {v.name.split("/")[-1].split(":")[0]: tuple(v.shape)
             for v in layer.weights}
    return {n: s for n, s in names.items() if n in ("w1", "w2", "w3")}
  gelu = matrices(layers.PerTokenFFN(expansion=4, activation="gelu"))
  swiglu = matrices(layers.PerTokenFFN(expansion=4, activation="swiglu"))
  assert gelu == {"w1": (4, 48, 192), "w2": (4, 192, 48)}
  assert swiglu == {"w1": (4, 48, 128), "w2": (4, 48, 128),
                    "w3": (4, 128, 48)}
  count = lambda shapes: sum(np.prod(s) for s in shapes.values())
  assert count(gelu) == count(swiglu)
  # The experts of a sparse MoE follow the same rule.
  moe = matrices(layers.SparseMoEFFN(num_experts=2, expansion=4,
                                     activation="swiglu"))
  assert moe["w1"] == (8, 48, 128)
  # hidden_dim overrides the rule (e.g. a checkpoint from before it) and
  # survives get_config.
  wide = layers.PerTokenFFN(expansion=4, activation="swiglu", hidden_dim=192)
  assert matrices(wide)["w3"] == (4, 192, 48)
  assert matrices(layers.PerTokenFFN.from_config(
      wide.get_config()))["w3"] == (4, 192, 48)
  assert matrices(layers.RankUpBlock(expansion=4, hidden_dim=192))[
      "w1"] == (4, 48, 192)
  with pytest.raises(ValueError, match="hidden_dim must be >= 0"):
    layers.PerTokenFFN(hidden_dim=-1)
  # Both FFN layers check their arguments the same way.
  with pytest.raises(ValueError, match="SparseMoEFFN: hidden_dim must be "):
    layers.SparseMoEFFN(hidden_dim=-1)
  with pytest.raises(ValueError, match="SparseMoEFFN: expansion must be "
                     "positive, got 0"):
    layers.SparseMoEFFN(expansion=0)


def _block_weights(block):
  return {v.name.split("/", 1)[1].split(":")[0]: v.numpy()
          for v in block.weights}


def test_gelu_training_gradient_matches_autodiff_of_tf_gelu():
  z = tf.constant(np.linspace(-12, 12, 2001), tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(z)
    ours = backbone.gelu(z, training=True)
    reference = tf.nn.gelu(z)
  np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(tape.gradient(ours, z),
                             tape.gradient(reference, z), rtol=1e-5,
                             atol=1e-6)


def _ffn_pair(kind, implementation, **kwargs):
  if kind.startswith("moe"):
    activation = "swiglu" if kind == "moe_swiglu" else "gelu"
    return layers.SparseMoEFFN(3, 2, implementation=implementation,
                               activation=activation, **kwargs)
  if kind == "rankup_block":
    return layers.RankUpBlock(2, implementation=implementation, **kwargs)
  return layers.PerTokenFFN(2, kind, implementation=implementation, **kwargs)


@pytest.mark.parametrize("kind", ["gelu", "swiglu", "moe", "moe_swiglu",
                                  "rankup_block"])
def test_implementations_share_checkpoints_outputs_and_gradients(kind,
                                                                 tmp_path):
  x = tf.constant(np.random.default_rng(6).normal(size=(5, 4, 8)),
                  tf.float32)
  batched = _ffn_pair(kind, "batched", name="ffn")
  unstacked = _ffn_pair(kind, "unstacked", name="ffn")
  batched(x), unstacked(x)
  assert ([(w.name, w.shape) for w in batched.weights]
          == [(w.name, w.shape) for w in unstacked.weights])
  path = tf.train.Checkpoint(layer=batched).save(str(tmp_path / "ck"))
  tf.train.Checkpoint(layer=unstacked).restore(path).assert_consumed()
  for training in (False, True):
    results = []
    for layer in (batched, unstacked):
      with tf.GradientTape() as tape:
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.square(y)) + tf.add_n(
            layer.losses + [0.0])
      grads = tape.gradient(loss, layer.trainable_weights,
                            unconnected_gradients="zero")
      results.append((y, loss, grads))
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
        results[0], results[1])
  # The training GELU (own gradient) computes what inference's does.
  if not kind.startswith("moe"):  # the MoE trains with another router
    np.testing.assert_allclose(unstacked(x, training=True),
                               batched(x, training=False), rtol=1e-5,
                               atol=1e-6)


def test_auto_implementation_is_batched_only_where_a_gpu_is(monkeypatch):
  monkeypatch.setattr(tf.config, "list_logical_devices",
                      lambda kind=None: [])
  assert layers.PerTokenFFN(implementation="auto")._implementation == \
      "unstacked"
  monkeypatch.setattr(tf.config, "list_logical_devices",
                      lambda kind=None: ["/GPU:0"] if kind == "GPU" else [])
  assert layers.SparseMoEFFN(implementation="auto")._implementation == \
      "batched"
  with pytest.raises(ValueError, match=r"Unknown implementation 'fast'; "
                     r"expected one of \('auto', 'batched', 'unstacked'\)"):
    layers.RankMixerBlock(implementation="fast")


def test_rankmixer_block_matches_spec_equations():
  x = np.random.default_rng(2).normal(size=(2, 2, 4)).astype(np.float32)
  block = layers.RankMixerBlock(expansion=1)
  got = block(x).numpy()
  w = _block_weights(block)
  s = _np_layer_norm(_np_mix(x) + x)
  ffn = np.stack([_np_gelu(s[:, t] @ w["ffn/w1"][t] + w["ffn/b1"][t])
                  @ w["ffn/w2"][t] + w["ffn/b2"][t] for t in range(2)], 1)
  np.testing.assert_allclose(got, _np_layer_norm(ffn + s), rtol=1e-4,
                             atol=1e-5)


def test_rankup_block_matches_spec_equations():
  x = np.random.default_rng(3).normal(size=(2, 2, 4)).astype(np.float32)
  block = layers.RankUpBlock(expansion=1)
  got, states = block(x, return_states=True)
  w = _block_weights(block)
  s = _np_mix(_np_layer_norm(x)) + x
  n = _np_layer_norm(s)
  ffn = np.stack([(_np_silu(n[:, t] @ w["ffn/w1"][t]) * (n[:, t]
                                                         @ w["ffn/w2"][t]))
                  @ w["ffn/w3"][t] for t in range(2)], 1)
  np.testing.assert_allclose(states["mixer"].numpy(), s, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.numpy(), ffn + s, rtol=1e-4, atol=1e-5)


def test_random_permutation_is_fixed_by_seed():
  e = tf.random.normal([4, 10, 3])
  a = layers.RandomPermutationSplit(3, 6, seed=5)
  b = layers.RandomPermutationSplit(3, 6, seed=5)
  c = layers.RandomPermutationSplit(3, 6, seed=6)
  for layer in (a, b, c):
    layer(e)
  assert a.permutation == b.permutation != c.permutation
  assert sorted(a.permutation) == list(range(10))
  assert [f for group in a.token_fields for f in group] == a.permutation
  assert a.get_config()["permutation"] == a.permutation


def test_random_split_projects_the_permuted_groups():
  e = np.random.default_rng(4).normal(size=(2, 5, 3)).astype(np.float32)
  split = layers.RandomPermutationSplit(2, 4, seed=1)
  got = split(e).numpy()
  kernel, bias = split.kernel.numpy(), split.bias.numpy()
  for t, fields in enumerate(split.token_fields):
    flat = e[:, fields].reshape(2, -1)
    width = kernel.shape[1]
    flat = np.pad(flat, [(0, 0), (0, width - flat.shape[1])])
    np.testing.assert_allclose(got[:, t], flat @ kernel[t] + bias[t],
                               rtol=1e-5, atol=1e-5)


def test_checkpointed_permutation_wins_over_the_seed(tmp_path):
  e = tf.random.normal([4, 6, 2])
  trained = layers.RandomPermutationSplit(2, 4, seed=1)
  trained(e)
  checkpoint = tf.train.Checkpoint(layer=trained).save(str(tmp_path / "ck"))
  restored = layers.RandomPermutationSplit(2, 4, seed=99)
  restored(e)
  assert restored.permutation != trained.permutation  # seed 99's own sigma
  tf.train.Checkpoint(layer=restored).restore(checkpoint)
  np.testing.assert_allclose(restored(e), trained(e))
  # Every report of sigma follows the checkpoint, not the constructor.
  assert restored.permutation == trained.permutation
  assert restored.token_fields == trained.token_fields
  assert restored.get_config()["permutation"] == trained.permutation
  rebuilt = layers.RandomPermutationSplit.from_config(restored.get_config())
  rebuilt(e)
  rebuilt.set_weights(restored.get_weights())
  np.testing.assert_allclose(rebuilt(e), trained(e))


def test_semantic_split_never_mixes_groups():
  groups = ["u"] * 5 + ["i"] * 3 + ["c"] * 2
  split = layers.SemanticGroupSplit(4, 8, groups=groups)
  split(tf.zeros([1, 10, 2]))
  for fields in split.token_fields:
    assert len({groups[f] for f in fields}) == 1
  assert sorted(f for g in split.token_fields for f in g) == list(range(10))
  with pytest.raises(ValueError, match="cannot keep 3 semantic groups"):
    layers.SemanticGroupSplit(2, 8, groups=groups)(tf.zeros([1, 10, 2]))


def _all_layers():
  """(layer, inputs) for every public layer."""
  rng = np.random.default_rng(5)
  tokens = rng.normal(size=(4, 4, 8)).astype(np.float32)
  view = rng.normal(size=(4, 6, 3)).astype(np.float32)
  vec = rng.normal(size=(4, 5)).astype(np.float32)
  fields = [schema_lib.SparseFeature("a", hash_buckets=7),
            schema_lib.SparseFeature("b", dtype="int64", vocabulary=(3, 4))]
  ids = {"a": tf.constant([1, 2, 3, 0], tf.int64),
         "b": tf.constant([2, 3, 1, 0], tf.int64)}
  return [
      (layers.MultiEmbedding(fields, [3, 2], name="multi_embedding"), ids),
      (layers.RandomPermutationSplit(3, 8, seed=2), view),
      (layers.SemanticGroupSplit(2, 8, groups=["x"] * 3 + ["y"] * 3), view),
      (layers.OrderedSplit(2, 8), view),
      (layers.GlobalToken(8, "mlp", hidden_units=[6]), view),
      (layers.GlobalToken(8, "fm"), view),
      (layers.GlobalToken(8, "fwfm"), view),
      (layers.GlobalToken(8, "dcn"), view),
      (layers.GlobalToken(8, "dcn", cross_projection_dim=4), view),
      (layers.CrossedPretrainedToken(8), [(vec, vec * 2)]),
      (layers.DenseToken(8, num_tokens=2), vec),
      (layers.TaskTokens(2, 8), vec),
      (layers.TokenMixing(), tokens),
      (layers.PerTokenFFN(2, "gelu"), tokens),
      (layers.PerTokenFFN(2, "swiglu"), tokens),
      (layers.PerTokenFFN(2, "gelu", implementation="batched"), tokens),
      (layers.SparseMoEFFN(3, 2), tokens),
      (layers.SparseMoEFFN(3, 2, implementation="batched"), tokens),
      (layers.SparseMoEFFN(3, 2, activation="swiglu"), tokens),
      (layers.RankMixerBlock(2), tokens),
      (layers.RankUpBlock(2), tokens),
      (layers.TaskTowers(["p", "q"], [4], use_task_tokens=True), tokens),
  ]


_LAYER_CASES = [f"{i}-{type(layer).__name__}"
                for i, (layer, _) in enumerate(_all_layers())]


def _case(name):
  return _all_layers()[int(name.split("-")[0])]


@pytest.mark.parametrize("case", _LAYER_CASES)
def test_get_config_round_trip_gives_the_same_layer(case):
  layer, inputs = _case(case)
  out = layer(inputs)
  config = layer.get_config()
  clone = type(layer).from_config(config)
  clone(inputs)
  clone.set_weights(layer.get_weights())
  tf.nest.map_structure(np.testing.assert_allclose, clone(inputs), out)
  assert clone.get_config() == config


@pytest.mark.parametrize("case", _LAYER_CASES)
def test_saved_model_reload_gives_identical_outputs(case, tmp_path):
  layer, inputs = _case(case)
  module = tf.Module()
  module.layer = layer
  module.serve = tf.function(lambda: layer(inputs, training=False))
  expected = module.serve()
  tf.saved_model.save(module, str(tmp_path / "saved"))
  loaded = tf.saved_model.load(str(tmp_path / "saved"))
  tf.nest.map_structure(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
      loaded.serve(), expected)


def test_layers_work_in_a_users_functional_model(tmp_path):
  """A user's own inputs and embeddings, RankUp layers in the middle."""
  user = tf.keras.Input(shape=(), dtype=tf.int64, name="user")
  item = tf.keras.Input(shape=(), dtype=tf.int64, name="item")
  hour = tf.keras.Input(shape=(), dtype=tf.int64, name="hour")
  own_embedding = tf.keras.layers.Embedding(100, 8)
  fields = tf.stack([own_embedding(user), own_embedding(item),
                     own_embedding(hour)], axis=1)
  tokens = layers.RandomPermutationSplit(2, 16, seed=3)(fields)
  tokens = tf.concat([tokens, layers.TaskTokens(2, 16)(tokens)], axis=1)
  tokens = layers.RankUpBlock(expansion=2)(tokens)
  tokens = layers.RankMixerBlock(expansion=2)(tokens)
  logits = layers.TaskTowers(["click", "buy"], [8],
                             use_task_tokens=True)(tokens)
  model = tf.keras.Model([user, item, hour], logits)
  rng = np.random.default_rng(0)
  x = [rng.integers(0, 100, 64) for _ in range(3)]
  y = {"click": (x[0] % 2).astype(np.float32),
       "buy": (x[1] % 3 == 0).astype(np.float32)}
  model.compile("adam", loss=tf.keras.losses.BinaryCrossentropy(
      from_logits=True))
  history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
  assert history.history["loss"][-1] < history.history["loss"][0]
  path = str(tmp_path / "user_model")
  model.save(path)
  reloaded = tf.keras.models.load_model(path)
  tf.nest.map_structure(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      reloaded(x), model(x))


def test_sparse_moe_trains_with_penalty_and_infers_with_its_router():
  x = tf.random.normal([6, 4, 8])
  moe = layers.SparseMoEFFN(num_experts=3, expansion=2, l1_penalty=0.5)
  train_out = moe(x, training=True)
  assert len(moe.losses) == 2  # imitation + L1 gate penalty
  losses = [l.numpy() for l in moe.losses]
  infer_out = moe(x, training=False)
  # The imitation loss: per-example squared distance of the inference
  # router's output to the training output, batch mean. The L1 penalty:
  # 0.5 * per-example sum of the inference router's (ReLU) gates, batch
  # mean (NumPy, from the weights).
  xs = x.numpy()
  gates = np.stack([np.maximum(xs[:, t] @ moe.inference_router.numpy()[t],
                               0.0) for t in range(4)], 1)  # [B, T, E]
  imitation = np.mean(np.sum(np.square(infer_out.numpy()
                                       - train_out.numpy()), axis=(1, 2)))
  np.testing.assert_allclose(losses[0], imitation, rtol=1e-4)
  np.testing.assert_allclose(losses[1],
                             0.5 * np.mean(gates.sum(axis=(1, 2))),
                             rtol=1e-5)
  assert not np.allclose(train_out, infer_out)
  moe.inference_router.assign(moe.train_router)
  np.testing.assert_allclose(moe(x, training=False), train_out, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("implementation", ["batched", "unstacked"])
def test_sparse_moe_swiglu_experts_follow_the_swiglu_equation(implementation):
  x = np.random.default_rng(7).normal(size=(5, 2, 8)).astype(np.float32)
  moe = layers.SparseMoEFFN(3, 2, activation="swiglu",
                            implementation=implementation)
  got = moe(x, training=False).numpy()
  w = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in moe.weights}
  # T*E = 6 SwiGLU experts: W1 and the gate W2 [D, h], W3 [h, D], with
  # h = 2kD/3 = 11.
  assert {k: v.shape for k, v in w.items()} == {
      "w1": (6, 8, 11), "w2": (6, 8, 11), "w3": (6, 11, 8),
      "train_router": (2, 8, 3), "inference_router": (2, 8, 3)}
  for t in range(2):
    s = x[:, t]
    gates = np.maximum(s @ w["inference_router"][t], 0.0)
    want = sum(gates[:, [e]] * ((_np_silu(s @ w["w1"][3 * t + e])
                                 * (s @ w["w2"][3 * t + e]))
                                @ w["w3"][3 * t + e]) for e in range(3))
    np.testing.assert_allclose(got[:, t], want, rtol=1e-4, atol=1e-5)


def test_moe_in_a_rankup_block_has_swiglu_experts():
  """A block's MoE experts use the block's FFN activation."""
  x = tf.random.normal([4, 2, 8])
  rankup = layers.RankUpBlock(2, num_experts=3)
  rankup(x)
  assert rankup.ffn.activation == "swiglu"
  assert rankup.ffn.w3.shape == (6, 11, 8)  # h = 2kD/3
  gelu_moe = layers.SparseMoEFFN(3, 2, activation="gelu", hidden_dim=11)
  gelu_moe(x)
  # Same width, first matrix and routers, GELU instead of the SwiGLU gate.
  gelu_moe.w1.assign(rankup.ffn.w1)
  gelu_moe.inference_router.assign(rankup.ffn.inference_router)
  assert not np.allclose(gelu_moe(x), rankup.ffn(x))
  assert layers.RankMixerBlock(2, num_experts=3).ffn.activation == "gelu"
  with pytest.raises(ValueError, match="SparseMoEFFN: unknown activation "
                     "'relu'"):
    layers.SparseMoEFFN(activation="relu")


def test_fwfm_global_token_weights_every_field_pair():
  e = np.random.default_rng(8).normal(size=(5, 4, 3)).astype(np.float32)
  fm = layers.GlobalToken(6, "fm")
  fwfm = layers.GlobalToken(6, "fwfm")
  fm(e), fwfm(e)
  assert fwfm.pair_weights.shape == (6,)  # M(M-1)/2 pairs
  fwfm._project.set_weights(fm._project.get_weights())
  # All r_ij = 1 at initialization: FwFM starts as FM.
  np.testing.assert_allclose(fwfm(e), fm(e), rtol=1e-5, atol=1e-5)
  r = np.arange(1.0, 7.0, dtype=np.float32)
  fwfm.pair_weights.assign(r)
  kernel, bias = fwfm._project.get_weights()
  pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
  pooled = sum(w * e[:, i] * e[:, j] for w, (i, j) in zip(r, pairs))
  np.testing.assert_allclose(fwfm(e)[:, 0], pooled @ kernel + bias,
                             rtol=1e-4, atol=1e-5)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(fwfm(e)))
  assert np.all(tape.gradient(loss, fwfm.pair_weights).numpy() != 0)


def test_dcn_global_token_cross_rank():
  e = np.random.default_rng(8).normal(size=(5, 4, 3)).astype(np.float32)
  full = layers.GlobalToken(6, "dcn")
  low = layers.GlobalToken(6, "dcn", cross_projection_dim=2)
  full(e), low(e)
  # Md = 12 inputs: full rank is a [12, 12] kernel per layer, rank 2 a
  # [12, 2] down and a [2, 12] up projection.
  assert [w.shape for w in full._cross[0].trainable_weights] == [
      (12, 12), (12,)]
  assert [w.shape for w in low._cross[0].trainable_weights] == [
      (12, 2), (2, 12), (12,)]
  with pytest.raises(ValueError, match="func='mlp' has none"):
    layers.GlobalToken(6, "mlp", cross_projection_dim=2)
  with pytest.raises(ValueError, match="must be >= 0"):
    layers.GlobalToken(6, "dcn", cross_projection_dim=-1)


def test_dense_tokens_are_separate_projections_of_all_dense_inputs():
  dense = np.random.default_rng(9).normal(size=(5, 7)).astype(np.float32)
  one, three = layers.DenseToken(4), layers.DenseToken(4, num_tokens=3)
  assert one(dense).shape == [5, 1, 4] and three(dense).shape == [5, 3, 4]
  # One token keeps the [inputs, D] kernel of checkpoints made before
  # num_tokens existed.
  assert one.weights[0].shape == [7, 4]
  kernel, bias = three.get_weights()
  for t in range(3):
    cols = slice(4 * t, 4 * (t + 1))
    np.testing.assert_allclose(three(dense)[:, t],
                               dense @ kernel[:, cols] + bias[cols],
                               rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="num_tokens must be >= 1, got 0"):
    layers.DenseToken(4, num_tokens=0)


def test_multi_embedding_rejects_no_views_and_unknown_fields():
  fields = [schema_lib.SparseFeature("a", hash_buckets=3)]
  with pytest.raises(ValueError, match=r"at least one view \(K >= 1\)"):
    layers.MultiEmbedding(fields, view_dims=[])
  with pytest.raises(ValueError, match=r"view 0: unknown fields \['zz'\]"):
    layers.MultiEmbedding(fields, [4], view_features=[["zz"]])
  with pytest.raises(KeyError, match=r"lack the sparse feature\(s\) \['a'\]"):
    layers.MultiEmbedding(fields, [4])({"b": tf.constant([1], tf.int64)})


def test_exports_are_exactly_the_public_layers_and_all_are_round_tripped():
  """`__all__` names every public Layer class of the layer modules (no
  more, no fewer), each one resolves to that class, and the config and
  SavedModel round-trip cases above cover every one of them."""
  defined = {}
  for module in (backbone, embedding, heads, tokenizers):
    for name, value in vars(module).items():
      if (inspect.isclass(value) and value.__module__ == module.__name__
          and issubclass(value, tf.keras.layers.Layer)
          and not name.startswith("_")):
        defined[name] = value
  assert len(defined) == 14
  assert sorted(layers.__all__) == sorted(defined)
  namespace = {}
  exec("from rankup_tf.layers import *", namespace)  # pylint: disable=exec-used
  for name, cls in defined.items():
    assert namespace[name] is cls
  assert {type(layer).__name__ for layer, _ in _all_layers()} == set(defined)
