"""The token backbone: token mixing, per-token FFNs and the two block styles.

Every layer takes and returns tokens shaped [B, T, D] (SPEC section 2).
"""

from typing import Dict, Optional, Tuple

import tensorflow as tf

from rankup_tf.keras_compat import keras

FFN_ACTIVATIONS = ("gelu", "swiglu")


def ffn_hidden_dim(expansion: int, activation: str, token_dim: int,
                   hidden_dim: int = 0) -> int:
  """The per-token FFN's hidden width: `hidden_dim` if > 0 (the layers
  refuse < 0), else kD for GELU and round(2kD/3) for SwiGLU.

  SwiGLU has three D x h matrices to GELU's two; at 2/3 of the width it has
  GELU's parameters and FLOPs at the same k (Shazeer 2020, "GLU Variants
  Improve Transformer", as PaLM and LLaMA do), so SPEC 2's 2kLTD^2 holds
  for both and swapping the activation does not change the capacity.
  """
  if hidden_dim:
    return hidden_dim
  if activation == "swiglu":
    return max(1, round(2 * expansion * token_dim / 3))
  return expansion * token_dim


def _check_ffn_args(layer: str, activation: str, expansion: int,
                    hidden_dim: int) -> None:
  """Refuses an FFN's (or MoE expert's) bad arguments, naming the layer."""
  if activation not in FFN_ACTIVATIONS:
    raise ValueError(f"{layer}: unknown activation {activation!r}; "
                     f"expected one of {FFN_ACTIVATIONS}.")
  if expansion <= 0:
    raise ValueError(f"{layer}: expansion must be positive, got "
                     f"{expansion}.")
  if hidden_dim < 0:
    raise ValueError(f"{layer}: hidden_dim must be >= 0 (0: from the "
                     f"expansion), got {hidden_dim}.")


def per_token_matmul(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """[B, T, I] x [T, I, O] -> [B, T, O]: every token its own matrix.

  One batched contraction (the SPEC rules out T separate layers). Chosen by
  measurement on the 2-core development CPU, GELU PFFN at B=2048, T=16,
  D=128, k=4 (`python -m benchmarks.per_token_ffn`): einsum('btd,tdh->bth')
  took 1.17x the time of this transpose + batched tf.matmul forward and 1.38x
  forward + backward. (T separate Dense layers took 0.69x / 0.80x there:
  oneDNN fuses bias and GELU into 2-D matmuls but not into batched ones.)
  """
  y = tf.matmul(tf.transpose(x, [1, 0, 2]), kernel)
  return tf.transpose(y, [1, 0, 2])


def per_token_uniform(fan_in: int, fan_out: int):
  """Glorot-uniform scaled per token (Keras would count T into the fans)."""
  limit = (6.0 / (fan_in + fan_out)) ** 0.5
  return keras.initializers.RandomUniform(-limit, limit)


def kernel_regularizer(kernel_l2: float):
  """The L2 regularizer kernel_l2 * sum(w^2) of a kernel, or None for 0 (no
  layer loss at all, so the unregularized model is unchanged)."""
  if kernel_l2 < 0:
    raise ValueError(f"kernel_l2 must be >= 0, got {kernel_l2}.")
  return keras.regularizers.L2(kernel_l2) if kernel_l2 else None


def maybe_dropout(rate: float, name: Optional[str] = None):
  """A Dropout layer of `rate`, or None for 0 (no layer, no op)."""
  if not 0 <= rate < 1:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
  return keras.layers.Dropout(rate, name=name) if rate else None


def static_dims(input_shape, layer, expected: str = "tokens shaped [B, T, D]"
                ) -> Tuple[int, int]:
  """The two known trailing dims of a rank-3 input, or a ValueError that
  names the layer and what it expects."""
  shape = tf.TensorShape(input_shape)
  if shape.rank != 3 or shape[1] is None or shape[2] is None:
    raise ValueError(f"{layer.__class__.__name__} {layer.name!r} expects "
                     f"{expected} with known trailing dims, got {shape}.")
  return int(shape[1]), int(shape[2])


@keras.saving.register_keras_serializable("rankup_tf")
class TokenMixing(keras.layers.Layer):
  """Parameter-free token mixing with H = T heads (RankMixer).

  Token t is cut into T heads of D/T dims; output token h concatenates head
  h of every input token:

      X [B, T, D] -> [B, T, H, D/H] -> transpose [B, H, T, D/H] -> [B, T, D]

  Example:

  ```python
  tokens = tf.random.normal([32, 8, 64])
  mixed = rankup_tf.layers.TokenMixing()(tokens)   # [32, 8, 64]
  ```
  """

  def build(self, input_shape):
    num_tokens, token_dim = static_dims(input_shape, self)
    if token_dim % num_tokens:
      raise ValueError(
          f"TokenMixing {self.name!r}: token dim D={token_dim} is not "
          f"divisible by the number of tokens T={num_tokens}; the mixer cuts "
          "every token into T heads. Choose D as a multiple of T.")
    self._num_tokens, self._token_dim = num_tokens, token_dim
    super().build(input_shape)

  def call(self, tokens: tf.Tensor) -> tf.Tensor:
    t, d = self._num_tokens, self._token_dim
    heads = tf.reshape(tokens, [-1, t, t, d // t])
    return tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [-1, t, d])


IMPLEMENTATIONS = ("auto", "batched", "unstacked")

_SQRT_HALF = 0.7071067811865476
_RSQRT_PI = 0.5641895835477563


@tf.custom_gradient
def _gelu_reusing_cdf(z):
  """Exact GELU, z * Phi(z), whose gradient reuses the forward's Phi(z).

  Forward + backward build 11 elementwise ops over the [B, kD] hidden
  layer where autodiff of tf.nn.gelu builds 16. With m = -z/sqrt(2):
  Phi(z) = erfc(m)/2 and GELU'(z) = Phi(z) - m exp(-m^2)/sqrt(pi).
  """
  m = z * -_SQRT_HALF
  cdf = 0.5 * tf.math.erfc(m)

  def grad(dy):
    return dy * (cdf - _RSQRT_PI * m * tf.exp(-tf.square(m)))

  return z * cdf, grad


def gelu(z: tf.Tensor, training=None) -> tf.Tensor:
  """Exact GELU. Training: the cheaper gradient above. Inference:
  tf.nn.gelu, which oneDNN fuses into the matmul before it (a custom
  gradient keeps its input alive, which blocks that fusion)."""
  return _gelu_reusing_cdf(z) if training else tf.nn.gelu(z)


@tf.custom_gradient
def swiglu(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """SiLU(a) * b in 9 elementwise ops, forward + backward, where
  tf.nn.silu(a) * b builds 19 (some pruned at run time): with
  s = sigmoid(a) and g = dy * b, da = g * s + a * g * s * (1 - s), the
  last term one SigmoidGrad op."""
  s = tf.sigmoid(a)
  silu = a * s

  def grad(dy):
    g = dy * b
    return g * s + tf.raw_ops.SigmoidGrad(y=s, dy=a * g), dy * silu

  return silu * b, grad


def resolve_implementation(implementation: str) -> str:
  """"auto" -> "batched" where the process sees a GPU, else "unstacked".

  On the 2-core development CPU (`python -m benchmarks.per_token_ffn`),
  T 2-D matmuls on slices of the [T, D, kD] weight beat one batched matmul:
  oneDNN fuses bias + activation into 2-D matmuls, not into batched ones,
  and the slices need no transposes. On a GPU one batched matmul is one
  kernel launch instead of T (not measured here: no GPU).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {implementation!r}; expected "
                     f"one of {IMPLEMENTATIONS}.")
  if implementation != "auto":
    return implementation
  return "batched" if tf.config.list_logical_devices("GPU") else "unstacked"


def _per_token(weight: tf.Tensor, num_tokens: int) -> list:
  """[T, ...] -> T tensors; a [T, 1, N] bias -> T [N] vectors (BiasAdd's
  shape, which oneDNN fuses into the matmul)."""
  if weight.shape.rank == 3 and weight.shape[1] == 1:
    weight = tf.reshape(weight, [num_tokens, -1])
  return tf.unstack(weight, num=num_tokens)


@keras.saving.register_keras_serializable("rankup_tf")
class PerTokenFFN(keras.layers.Layer):
  """T feed-forward networks, one per token, in one [T, D, h] weight.

      gelu:   v_t = W2_t GELU(W1_t s_t + b1_t) + b2_t     (hidden kD)
      swiglu: v_t = W3_t (SiLU(W1_t s_t) * (W2_t s_t))   (hidden 2kD/3)

  Both have about 2kD^2 weights per token (see `ffn_hidden_dim`).

  Example:

  ```python
  ffn = rankup_tf.layers.PerTokenFFN(expansion=4, activation="swiglu")
  out = ffn(tf.random.normal([32, 8, 64]))          # [32, 8, 64]
  ```

  Args:
    expansion: k: hidden width kD (GELU) or 2kD/3 (SwiGLU).
    activation: "gelu" or "swiglu".
    hidden_dim: the hidden width itself, overriding the expansion's (0:
      from the expansion); e.g. 4D to restore a SwiGLU FFN trained when
      its width was kD.
    implementation: how the T FFNs run; every choice holds the same weights
      (names and shapes), so checkpoints and exports are interchangeable.
      "batched": transpose to [T, B, D] and one batched matmul per weight.
      "unstacked": T 2-D matmuls on slices of the weight (bias and
      activation fuse into them on CPU). "auto": unstacked on CPU, batched
      where a GPU is visible (see `resolve_implementation`).
    kernel_l2: L2 coefficient on the weight matrices (not the biases), a
      layer loss kernel_l2 * sum(w^2).
  """

  def __init__(self, expansion: int = 4, activation: str = "gelu",
               implementation: str = "auto", kernel_l2: float = 0.0,
               hidden_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    _check_ffn_args("PerTokenFFN", activation, expansion, hidden_dim)
    self.expansion = expansion
    self.hidden_dim = hidden_dim
    self.activation = activation
    self.implementation = implementation
    self._implementation = resolve_implementation(implementation)
    self.kernel_l2 = kernel_l2
    self._regularizer = kernel_regularizer(kernel_l2)

  def build(self, input_shape):
    t, d = static_dims(input_shape, self)
    self._t = t
    self._ffn_weights = _add_ffn_weights(
        self, self.activation, t, d,
        ffn_hidden_dim(self.expansion, self.activation, d, self.hidden_dim),
        self._regularizer)
    super().build(input_shape)

  def call(self, tokens: tf.Tensor, training=None) -> tf.Tensor:
    if self._implementation == "batched":
      x = tf.transpose(tokens, [1, 0, 2])  # [T, B, D]
      return tf.transpose(
          _ffn(self.activation, x, self._ffn_weights, training), [1, 0, 2])
    per_token = zip(*[_per_token(w, self._t) for w in self._ffn_weights])
    return tf.stack([_ffn(self.activation, x, weights, training)
                     for x, weights in zip(tf.unstack(tokens, axis=1),
                                           per_token)], axis=1)

  def get_config(self):
    return dict(super().get_config(), expansion=self.expansion,
                activation=self.activation,
                implementation=self.implementation, kernel_l2=self.kernel_l2,
                hidden_dim=self.hidden_dim)


def _add_bias(x: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
  """BiasAdd for a per-token [N] bias (fusable), broadcast add for [T, 1, N]."""
  return tf.nn.bias_add(x, bias) if bias.shape.rank == 1 else x + bias


def _add_ffn_weights(layer, activation: str, n: int, d: int, h: int,
                     regularizer=None) -> list:
  """Adds the weights of n FFNs D -> h -> D (n = T tokens, or T*E experts)
  to `layer`, as attributes and in this order: gelu w1, b1, w2, b2; swiglu
  w1, w2 (gate), w3, with `regularizer` on the matrices. Returns them in
  that order."""
  specs = {"gelu": [("w1", [n, d, h]), ("b1", [n, 1, h]),
                    ("w2", [n, h, d]), ("b2", [n, 1, d])],
           "swiglu": [("w1", [n, d, h]), ("w2", [n, d, h]),
                      ("w3", [n, h, d])]}[activation]
  weights = []
  for name, shape in specs:
    bias = name.startswith("b")
    weight = layer.add_weight(
        name=name, shape=shape,
        initializer="zeros" if bias else per_token_uniform(shape[1],
                                                           shape[2]),
        regularizer=None if bias else regularizer)
    setattr(layer, name, weight)
    weights.append(weight)
  return weights


def _ffn(activation: str, x: tf.Tensor, weights, training) -> tf.Tensor:
  """One FFN on [B, D] with unstacked weights, or n on [n, B, D] with the
  stacked weights of `_add_ffn_weights`."""
  if activation == "gelu":
    w1, b1, w2, b2 = weights
    hidden = gelu(_add_bias(tf.matmul(x, w1), b1), training)
    return _add_bias(tf.matmul(hidden, w2), b2)
  w1, w2, w3 = weights
  return tf.matmul(swiglu(tf.matmul(x, w1), tf.matmul(x, w2)), w3)


@keras.saving.register_keras_serializable("rankup_tf")
class SparseMoEFFN(keras.layers.Layer):
  """Per-token sparse mixture of experts with ReLU routing (RankMixer).

  Token t has E experts (FFNs of width kD, GELU or SwiGLU as in
  `PerTokenFFN`) and routers:

      y_t = sum_e G_e(s_t) * expert_{t,e}(s_t),   G = ReLU(router_t(s_t))

  Dense-training / sparse-inference (SPEC 2). **Decision** (the papers leave
  how the inference router learns open): training outputs use the training
  router, which has no penalty; a second, inference router is trained to
  reproduce that output, ||y_infer - stop_gradient(y_train)||^2, under the
  L1 penalty l1 * sum(G_infer), both added as layer losses (mean over the
  batch). At inference (training=False) the inference router's gates are
  used; its zero gates are what a sparse kernel would skip (this dense graph
  still evaluates every expert).

  Example:

  ```python
  moe = rankup_tf.layers.SparseMoEFFN(num_experts=4, expansion=2)
  out = moe(tf.random.normal([32, 8, 64]), training=True)  # [32, 8, 64]
  ```

  Args:
    num_experts: E experts per token.
    expansion: k: each expert's hidden width, kD (GELU) or 2kD/3 (SwiGLU),
      as in `PerTokenFFN`.
    l1_penalty: weight of the inference router's L1 gate penalty.
    implementation: "auto", "batched" or "unstacked", as in `PerTokenFFN`
      (same weights whichever runs).
    activation: the experts' FFN, "gelu" or "swiglu" (a RankUp block's MoE
      has SwiGLU experts).
    kernel_l2: L2 coefficient on the experts' weight matrices and both
      routers (not the biases), a layer loss kernel_l2 * sum(w^2).
    hidden_dim: each expert's hidden width itself (0: from the expansion).
  """

  def __init__(self, num_experts: int = 4, expansion: int = 4,
               l1_penalty: float = 1e-3, implementation: str = "auto",
               activation: str = "gelu", kernel_l2: float = 0.0,
               hidden_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    if num_experts < 1:
      raise ValueError(f"SparseMoEFFN: num_experts must be >= 1, got "
                       f"{num_experts}.")
    _check_ffn_args("SparseMoEFFN", activation, expansion, hidden_dim)
    self.hidden_dim = hidden_dim
    self.num_experts = num_experts
    self.activation = activation
    self.expansion = expansion
    self.l1_penalty = l1_penalty
    self.implementation = implementation
    self._implementation = resolve_implementation(implementation)
    self.kernel_l2 = kernel_l2
    self._regularizer = kernel_regularizer(kernel_l2)

  def build(self, input_shape):
    t, d = static_dims(input_shape, self)
    e = self.num_experts
    h = ffn_hidden_dim(self.expansion, self.activation, d, self.hidden_dim)
    self._t, self._d = t, d
    self._expert_weights = _add_ffn_weights(self, self.activation, t * e, d,
                                            h, self._regularizer)
    self.train_router = self.add_weight(
        name="train_router", shape=[t, d, e],
        initializer=per_token_uniform(d, e),
        regularizer=self._regularizer)
    self.inference_router = self.add_weight(
        name="inference_router", shape=[t, d, e],
        initializer=per_token_uniform(d, e),
        regularizer=self._regularizer)
    super().build(input_shape)

  def call(self, tokens: tf.Tensor, training=None) -> tf.Tensor:
    routers = [self.inference_router]
    if training:
      routers.append(self.train_router)
    mix = (self._batched if self._implementation == "batched"
           else self._unstacked)
    (y_infer, infer_gates), *train = mix(tokens, routers, training)
    if not training:
      return y_infer
    y_train = train[0][0]
    self.add_loss(tf.reduce_mean(tf.reduce_sum(
        tf.square(y_infer - tf.stop_gradient(y_train)), axis=[1, 2])))
    self.add_loss(self.l1_penalty * tf.reduce_mean(
        tf.reduce_sum(infer_gates, axis=[1, 2])))
    return y_train

  def _batched(self, tokens, routers, training):
    """Per router: (y [B, T, D], gates [B, T, E]), from [T*E, B, *] batched
    matmuls."""
    t, e = self._t, self.num_experts
    x = tf.transpose(tokens, [1, 0, 2])  # [T, B, D]
    batch = tf.shape(x)[1]
    # Every expert of token t sees token t: [T*E, B, D].
    expert_in = tf.reshape(tf.repeat(x[:, tf.newaxis], e, axis=1),
                           [t * e, batch, self._d])
    experts = tf.reshape(
        _ffn(self.activation, expert_in, self._expert_weights, training),
        [t, e, batch, self._d])
    mixes = []
    for router in routers:
      gates = tf.nn.relu(tf.matmul(x, router))  # [T, B, E]
      gates_e = tf.transpose(gates, [0, 2, 1])[..., tf.newaxis]
      y = tf.reduce_sum(gates_e * experts, axis=1)
      mixes.append((tf.transpose(y, [1, 0, 2]),
                    tf.transpose(gates, [1, 0, 2])))
    return mixes

  def _unstacked(self, tokens, routers, training):
    """As `_batched`, from 2-D matmuls on slices of the same weights."""
    t, e = self._t, self.num_experts
    per_expert = list(zip(*[_per_token(w, t * e)
                            for w in self._expert_weights]))
    per_router = [_per_token(r, t) for r in routers]
    ys, gates = [[] for _ in routers], [[] for _ in routers]
    for i, x in enumerate(tf.unstack(tokens, axis=1)):
      experts = [_ffn(self.activation, x, per_expert[j], training)
                 for j in range(i * e, (i + 1) * e)]
      for r, router in enumerate(per_router):
        g = tf.nn.relu(tf.matmul(x, router[i]))  # [B, E]
        ys[r].append(tf.add_n([g[:, k, tf.newaxis] * experts[k]
                               for k in range(e)]))
        gates[r].append(g)
    return [(tf.stack(y, axis=1), tf.stack(g, axis=1))
            for y, g in zip(ys, gates)]

  def get_config(self):
    return dict(super().get_config(), num_experts=self.num_experts,
                expansion=self.expansion, l1_penalty=self.l1_penalty,
                implementation=self.implementation,
                activation=self.activation, kernel_l2=self.kernel_l2,
                hidden_dim=self.hidden_dim)


def _make_ffn(expansion, activation, num_experts, moe_l1_penalty,
              implementation, kernel_l2, hidden_dim, name):
  if num_experts:
    return SparseMoEFFN(num_experts, expansion, moe_l1_penalty,
                        implementation=implementation, activation=activation,
                        kernel_l2=kernel_l2, hidden_dim=hidden_dim, name=name)
  return PerTokenFFN(expansion, activation, implementation=implementation,
                     kernel_l2=kernel_l2, hidden_dim=hidden_dim, name=name)


class _Block(keras.layers.Layer):
  """A token mixer and a per-token FFN with residuals and LayerNorms.

  Args:
    expansion, activation: the per-token FFN's (see `PerTokenFFN`).
    num_experts: 0 for a `PerTokenFFN`, E > 0 for a `SparseMoEFFN`.
    moe_l1_penalty: the MoE's `l1_penalty`.
    layer_norm_epsilon: of both LayerNorms.
    implementation: the FFN's (see `PerTokenFFN`).
    dropout: rate of the dropout (training only) on the token mixer's and
      the FFN's outputs, before each residual add.
    kernel_l2: the FFN's L2 coefficient on its weight matrices.
    hidden_dim: the FFN's hidden width (0: from the expansion).
  """

  def __init__(self, expansion: int = 4, activation: str = "gelu",
               num_experts: int = 0, moe_l1_penalty: float = 1e-3,
               layer_norm_epsilon: float = 1e-6, implementation: str = "auto",
               dropout: float = 0.0, kernel_l2: float = 0.0,
               hidden_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.expansion = expansion
    self.activation = activation
    self.num_experts = num_experts
    self.moe_l1_penalty = moe_l1_penalty
    self.layer_norm_epsilon = layer_norm_epsilon
    self.implementation = implementation
    self.dropout = dropout
    self.kernel_l2 = kernel_l2
    self.hidden_dim = hidden_dim
    self.mixer = TokenMixing(name="token_mixing")
    self.ffn = _make_ffn(expansion, activation, num_experts, moe_l1_penalty,
                         implementation, kernel_l2, hidden_dim, name="ffn")
    self._dropout = maybe_dropout(dropout, name="dropout")
    self.norm1 = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, name="norm1")
    self.norm2 = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, name="norm2")

  def build(self, input_shape):
    static_dims(input_shape, self)
    super().build(input_shape)

  def call(self, tokens, training=None, return_states: bool = False):
    """Returns the new tokens, or (tokens, {"mixer": S, "ffn": X'})."""
    mixed, out = self._forward(tokens, training)
    if return_states:
      return out, {"mixer": mixed, "ffn": out}
    return out

  def _forward(self, x, training) -> Tuple[tf.Tensor, tf.Tensor]:
    raise NotImplementedError

  def _drop(self, x, training):
    """Drop(x): dropout while training, identity otherwise or at rate 0."""
    return x if self._dropout is None else self._dropout(x, training=training)

  def get_config(self):
    return dict(super().get_config(), expansion=self.expansion,
                activation=self.activation, num_experts=self.num_experts,
                moe_l1_penalty=self.moe_l1_penalty,
                layer_norm_epsilon=self.layer_norm_epsilon,
                implementation=self.implementation, dropout=self.dropout,
                kernel_l2=self.kernel_l2, hidden_dim=self.hidden_dim)


@keras.saving.register_keras_serializable("rankup_tf")
class RankMixerBlock(_Block):
  """RankMixer's post-LN block (GELU per-token FFN by default):

      S = LN(Drop(TM(X)) + X);    X' = LN(Drop(PFFN(S)) + S)

  Example:

  ```python
  block = rankup_tf.layers.RankMixerBlock(expansion=4)
  out = block(tf.random.normal([32, 8, 64]))        # [32, 8, 64]
  ```
  """

  def _forward(self, x, training):
    s = self.norm1(self._drop(self.mixer(x), training) + x)
    return s, self.norm2(
        self._drop(self.ffn(s, training=training), training) + s)


@keras.saving.register_keras_serializable("rankup_tf")
class RankUpBlock(_Block):
  """RankUp's pre-LN block with a SwiGLU per-token FFN:

      S = Drop(TM(LN(X))) + X;    X' = Drop(PFFN(LN(S))) + S

  Example:

  ```python
  block = rankup_tf.layers.RankUpBlock(expansion=4)
  out = block(tf.random.normal([32, 8, 64]))        # [32, 8, 64]
  ```
  """

  def __init__(self, expansion: int = 4, activation: str = "swiglu",
               **kwargs):
    super().__init__(expansion=expansion, activation=activation, **kwargs)

  def _forward(self, x, training):
    s = self._drop(self.mixer(self.norm1(x)), training) + x
    return s, self._drop(self.ffn(self.norm2(s), training=training),
                         training) + s


BLOCKS: Dict[str, type] = {"rankmixer": RankMixerBlock, "rankup": RankUpBlock}


def make_block(style: str, name: Optional[str] = None, **kwargs) -> _Block:
  if style not in BLOCKS:
    raise ValueError(f"Unknown block style {style!r}; expected one of "
                     f"{sorted(BLOCKS)}.")
  return BLOCKS[style](name=name, **kwargs)
