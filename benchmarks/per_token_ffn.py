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

With --against=REV (a git revision) both parts add a row for the layers
of rankup_tf/layers/backbone.py at REV, default arguments: before/after
figures from one run. (At a revision before `ffn_hidden_dim`, SwiGLU ran
at width kD, not 2kD/3: its rows then do 1.5x the work.)

Rounds alternate the formulations (noisy shared CPUs); the figures are
medians over rounds, and "speed" is the dense row's time over the row's.
"""

import os
import subprocess
import time
import types
from typing import Callable, Dict, List

from absl import app
from absl import flags

import numpy as np
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
flags.DEFINE_string("against", "", "Git revision whose backbone.py layers "
                    "get a row too (before/after).")

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
    h = backbone.ffn_hidden_dim(self.expansion, self.activation, d)
    dense = tf.keras.layers.Dense
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


def backbone_at(revision: str) -> types.ModuleType:
  """rankup_tf/layers/backbone.py as it was at a git revision."""
  source = subprocess.run(
      ["git", "show", f"{revision}:rankup_tf/layers/backbone.py"],
      check=True, capture_output=True, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
  # Keras refuses a second registration of today's names.
  source = source.replace('register_keras_serializable("rankup_tf")',
                          f'register_keras_serializable("at_{revision}")')
  module = types.ModuleType(f"backbone_at_{revision}")
  code = compile(source, f"{revision}:backbone.py", "exec")
  exec(code, module.__dict__)  # pylint: disable=exec-used
  return module


def _formulations() -> Dict[str, types.ModuleType]:
  """Row name -> the backbone module its layers come from (None: dense)."""
  rows = {"dense": None}
  rows.update({i: backbone for i in IMPLEMENTATIONS})
  if FLAGS.against:
    rows[FLAGS.against] = backbone_at(FLAGS.against)
  return rows


def _ffn_layer(kind: str, formulation: str, module):
  k, e = FLAGS.expansion, FLAGS.experts
  if module is None:
    return DenseFFN(k, "gelu" if kind != "swiglu" else "swiglu",
                    e if kind == "moe" else 0)
  # Another revision's layers run with their defaults.
  kwargs = ({"implementation": formulation}
            if formulation in IMPLEMENTATIONS else {})
  if kind == "moe":
    return module.SparseMoEFFN(e, k, **kwargs)
  return module.PerTokenFFN(k, kind, **kwargs)


def run_ffn(x) -> List[str]:
  lines = ["| FFN | formulation | forward ms | speed | fwd+bwd ms | speed |",
           "|---|---|---|---|---|---|"]
  formulations = _formulations()
  for kind in FLAGS.ffns:
    steps = {}
    for formulation, module in formulations.items():
      layer = _ffn_layer(kind, formulation, module)
      for part, step in _ffn_steps(layer).items():
        steps[formulation, part] = step
    ms = interleaved(steps, x, FLAGS.rounds, FLAGS.calls)
    for formulation in formulations:
      f, b = ms[formulation, "forward"], ms[formulation, "forward+backward"]
      lines.append(
          f"| {kind} | {formulation} | {f:.1f} | "
          f"{ms['dense', 'forward'] / f:.2f}x | {b:.1f} | "
          f"{ms['dense', 'forward+backward'] / b:.2f}x |")
  return lines


def block_stack(style: str, formulation: str, module, num_blocks: int):
  """`num_blocks` blocks of `module` (None: today's blocks, their FFNs
  DenseFFN)."""
  blocks = []
  for i in range(num_blocks):
    if module is None:
      block = backbone.make_block(style, name=f"block{i}")
      block.ffn = DenseFFN(block.expansion, block.activation, name="ffn")
    elif formulation in IMPLEMENTATIONS:
      block = module.make_block(style, name=f"block{i}",
                                implementation=formulation)
    else:
      block = module.make_block(style, name=f"block{i}")
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
  formulations = _formulations()
  for style in ("rankmixer", "rankup"):
    for formulation, module in formulations.items():
      steps[style, formulation] = _train_step(
          block_stack(style, formulation, module, NUM_BLOCKS))
  ms = interleaved(steps, x, FLAGS.rounds, FLAGS.calls)
  peak = 2 * 2048 ** 3 / ms.pop("matmul") / 1e6  # GFLOP/s
  lines = [f"float32 2048^2 matmul in this run: {peak:.1f} GFLOP/s", "",
           "| block | FFN formulation | step ms | speed | FFN share of "
           "matmul peak |", "|---|---|---|---|---|"]
  for style in ("rankmixer", "rankup"):
    # Per block and token, forward: the FFN's 2 (GELU, h = kD) or 3
    # (SwiGLU, h = 2kD/3) [B, D] x [D, h]-sized matmuls, 2BDh FLOPs each;
    # x3 with backward.
    activation = "gelu" if style == "rankmixer" else "swiglu"
    matmuls = 2 if activation == "gelu" else 3
    h = backbone.ffn_hidden_dim(k, activation, d)
    flops = NUM_BLOCKS * 3 * matmuls * 2 * b * t * d * h
    for formulation in formulations:
      step = ms[style, formulation]
      lines.append(
          f"| {style} | {formulation} | {step:.1f} | "
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
