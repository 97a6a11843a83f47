r"""Per-token FFN and block-stack formulations, timed in one run.

    python -m benchmarks.per_token_ffn --batch=2048 --tokens=16 --dim=128 \
        --expansion=4 --experts=4

Part 1, one per-token FFN (GELU, SwiGLU, sparse MoE), forward and
forward + backward:
  dense      T separate Dense layers (E per token for the MoE): the naive
             formulation the layers must beat;
  batched    the layer with implementation="batched";
  unstacked  the layer with implementation="unstacked".
Part 2, a stack of two blocks (RankMixer post-LN GELU, RankUp pre-LN SwiGLU),
forward + backward + Adam, the layer's implementations against the same
stack whose per-token FFN is T separate Dense layers. The timed step also
runs a float32 2048^2 matmul, giving the machine's matmul GFLOP/s in this
run, and each row's share of it.

Rounds alternate the formulations (noisy shared CPUs); the figures are
medians over rounds, and "speed" is the dense row's time over the row's.
"""

import time
from typing import Callable, Dict, List

from absl import app
from absl import flags

import numpy as np
import rankup_tf  # noqa: F401  (Keras 2)
from rankup_tf.layers import backbone
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 2048, "B")
flags.DEFINE_integer("tokens", 16, "T")
flags.DEFINE_integer("dim", 128, "D")
flags.DEFINE_integer("expansion", 4, "k")
flags.DEFINE_integer("experts", 4, "E, experts per token of the MoE FFN.")
flags.DEFINE_integer("rounds", 7, "Alternating rounds; medians over them.")
flags.DEFINE_integer("calls", 3, "Calls per formulation per round.")
flags.DEFINE_list("parts", ["ffn", "block"], "Which parts to run.")
flags.DEFINE_list("ffns", ["gelu", "swiglu", "moe"], "FFNs of part 1.")

IMPLEMENTATIONS = ("batched", "unstacked")
NUM_BLOCKS = 2


class DenseFFN(tf.keras.layers.Layer):
  """A per-token FFN (or sparse MoE) as T separate Dense layers: the
  formulation of public TF2 RankMixer code, for reference."""

  def __init__(self, expansion, activation="gelu", num_experts=0, **kwargs):
    super().__init__(**kwargs)
    self.expansion, self.activation = expansion, activation
    self.num_experts = num_experts

  def build(self, input_shape):
    t, d = int(input_shape[1]), int(input_shape[2])
    h, dense = self.expansion * d, tf.keras.layers.Dense
    if self.num_experts:
      e = self.num_experts
      self.experts = [[(dense(h, activation="gelu"), dense(d))
                       for _ in range(e)] for _ in range(t)]
      self.routers = [[dense(e, activation="relu", use_bias=False)
                       for _ in range(2)] for _ in range(t)]
    elif self.activation == "gelu":
      self.layers = [(dense(h, activation="gelu"), dense(d))
                     for _ in range(t)]
    else:
      self.layers = [(dense(h, use_bias=False), dense(h, use_bias=False),
                      dense(d, use_bias=False)) for _ in range(t)]
    super().build(input_shape)

  def call(self, tokens, training=None):
    xs = tf.unstack(tokens, axis=1)
    if not self.num_experts:
      if self.activation == "gelu":
        return tf.stack([w2(w1(x)) for x, (w1, w2) in zip(xs, self.layers)],
                        axis=1)
      return tf.stack([w3(tf.nn.silu(w1(x)) * w2(x))
                       for x, (w1, w2, w3) in zip(xs, self.layers)], axis=1)
    ys = [[], []]
    for x, experts, routers in zip(xs, self.experts, self.routers):
      outs = [w2(w1(x)) for w1, w2 in experts]
      for r, router in enumerate(routers[:2 if training else 1]):
        gates = router(x)
        ys[r].append(tf.add_n([gates[:, e, tf.newaxis] * out
                               for e, out in enumerate(outs)]))
    y_infer = tf.stack(ys[0], axis=1)
    if not training:
      return y_infer
    y_train = tf.stack(ys[1], axis=1)
    self.add_loss(tf.reduce_mean(tf.reduce_sum(
        tf.square(y_infer - tf.stop_gradient(y_train)), axis=[1, 2])))
    return y_train


def interleaved(steps: Dict[str, Callable], x, rounds: int, calls: int
                ) -> Dict[str, float]:
  """Median ms per call of each step, over rounds that alternate them."""
  for step in steps.values():  # trace, build, warm up
    for _ in range(2):
      _sync(step(x))
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      start = time.perf_counter()
      for _ in range(calls):
        out = step(x)
      _sync(out)
      times[name].append((time.perf_counter() - start) / calls * 1000)
  return {name: float(np.median(t)) for name, t in times.items()}


def _sync(out):
  tf.nest.map_structure(lambda t: t.numpy(), out)


def _ffn_steps(layer) -> Dict[str, Callable]:
  @tf.function
  def forward(x):
    return layer(x, training=False)

  @tf.function
  def backward(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(layer(x, training=True)))
      loss += tf.add_n(layer.losses) if layer.losses else 0.0
    return tape.gradient(loss, layer.trainable_weights)

  return {"forward": forward, "forward+backward": backward}


def _ffn_layers(kind: str, implementation: str):
  k, e = FLAGS.expansion, FLAGS.experts
  if implementation == "dense":
    return DenseFFN(k, "gelu" if kind != "swiglu" else "swiglu",
                    e if kind == "moe" else 0)
  if kind == "moe":
    return backbone.SparseMoEFFN(e, k, implementation=implementation)
  return backbone.PerTokenFFN(k, kind, implementation=implementation)


def run_ffn(x) -> List[str]:
  lines = ["| FFN | formulation | forward ms | speed | fwd+bwd ms | speed |",
           "|---|---|---|---|---|---|"]
  for kind in FLAGS.ffns:
    steps = {}
    for implementation in ("dense",) + IMPLEMENTATIONS:
      layer = _ffn_layers(kind, implementation)
      for part, step in _ffn_steps(layer).items():
        steps[implementation, part] = step
    ms = interleaved(steps, x, FLAGS.rounds, FLAGS.calls)
    for implementation in ("dense",) + IMPLEMENTATIONS:
      f, b = ms[implementation, "forward"], ms[implementation,
                                               "forward+backward"]
      lines.append(
          f"| {kind} | {implementation} | {f:.1f} | "
          f"{ms['dense', 'forward'] / f:.2f}x | {b:.1f} | "
          f"{ms['dense', 'forward+backward'] / b:.2f}x |")
  return lines


def block_stack(style: str, implementation: str, num_blocks: int):
  """`num_blocks` blocks; implementation "dense": their FFNs are DenseFFN."""
  blocks = []
  for i in range(num_blocks):
    block = backbone.make_block(
        style, name=f"block{i}",
        implementation="auto" if implementation == "dense" else
        implementation)
    if implementation == "dense":
      block.ffn = DenseFFN(block.expansion, block.activation, name="ffn")
    blocks.append(block)
  return tf.keras.Sequential(blocks)


def _train_step(model):
  optimizer = tf.keras.optimizers.legacy.Adam(1e-4)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(model(x, training=True)))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return step


def run_blocks(x) -> List[str]:
  b, t, d, k = FLAGS.batch, FLAGS.tokens, FLAGS.dim, FLAGS.expansion
  square = tf.random.normal([2048, 2048])
  steps = {"matmul": tf.function(lambda unused_x: tf.matmul(square, square))}
  for style in ("rankmixer", "rankup"):
    for implementation in ("dense",) + IMPLEMENTATIONS:
      steps[style, implementation] = _train_step(
          block_stack(style, implementation, NUM_BLOCKS))
  ms = interleaved(steps, x, FLAGS.rounds, FLAGS.calls)
  peak = 2 * 2048 ** 3 / ms.pop("matmul") / 1e6  # GFLOP/s
  lines = [f"float32 2048^2 matmul in this run: {peak:.1f} GFLOP/s", "",
           "| block | FFN formulation | step ms | speed | FFN share of "
           "matmul peak |", "|---|---|---|---|---|"]
  for style in ("rankmixer", "rankup"):
    # Per block and token, forward: the FFN's 2 (GELU) or 3 (SwiGLU)
    # [B, D] x [D, kD]-sized matmuls, 2BDkD FLOPs each; x3 with backward.
    matmuls = 2 if style == "rankmixer" else 3
    flops = NUM_BLOCKS * 3 * matmuls * 2 * b * t * d * k * d
    for implementation in ("dense",) + IMPLEMENTATIONS:
      step = ms[style, implementation]
      lines.append(
          f"| {style} | {implementation} | {step:.1f} | "
          f"{ms[style, 'dense'] / step:.2f}x | "
          f"{flops / step / 1e6 / peak:.0%} |")
  return lines


def main(argv):
  del argv
  tf.get_logger().setLevel("ERROR")  # retracing notes: one trace per step
  b, t, d = FLAGS.batch, FLAGS.tokens, FLAGS.dim
  x = tf.random.normal([b, t, d])
  print(f"B={b} T={t} D={d} k={FLAGS.expansion} E={FLAGS.experts}; "
        f"{FLAGS.rounds} rounds x {FLAGS.calls} calls; medians; speed = "
        "dense time / time")
  if "ffn" in FLAGS.parts:
    print("\n".join(run_ffn(x)) + "\n")
  if "block" in FLAGS.parts:
    print(f"{NUM_BLOCKS}-block stack, forward + backward + Adam")
    print("\n".join(run_blocks(x)))


if __name__ == "__main__":
  app.run(main)
