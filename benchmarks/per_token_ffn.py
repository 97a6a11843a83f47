r"""Per-token FFN formulations, timed in one run (ratios matter, not ms).

    python -m benchmarks.per_token_ffn --batch=2048 --tokens=16 --dim=128 \
        --expansion=4

Compares, for one GELU per-token FFN (forward, and forward + backward):
  einsum   einsum('btd,tdh->bth') over the [T, D, kD] weight;
  bmm      transpose to [T, B, D] + batched tf.matmul (PerTokenFFN's choice);
  dense    T separate Dense layers (what the SPEC forbids, for reference).
"""

import time

from absl import app
from absl import flags

import rankup_tf  # noqa: F401  (Keras 2)
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 2048, "B")
flags.DEFINE_integer("tokens", 16, "T")
flags.DEFINE_integer("dim", 128, "D")
flags.DEFINE_integer("expansion", 4, "k")
flags.DEFINE_integer("repeats", 20, "Timed calls per formulation.")


def _time(fn, x, repeats):
  for _ in range(3):
    fn(x)
  start = time.perf_counter()
  for _ in range(repeats):
    fn(x)
  return (time.perf_counter() - start) / repeats * 1000


def main(argv):
  del argv
  b, t, d, k = FLAGS.batch, FLAGS.tokens, FLAGS.dim, FLAGS.expansion
  x = tf.random.normal([b, t, d])
  w1 = tf.Variable(tf.random.normal([t, d, k * d]) * 0.05)
  w2 = tf.Variable(tf.random.normal([t, k * d, d]) * 0.05)
  b1 = tf.Variable(tf.zeros([t, k * d]))
  b2 = tf.Variable(tf.zeros([t, d]))
  first = [tf.keras.layers.Dense(k * d, activation="gelu") for _ in range(t)]
  second = [tf.keras.layers.Dense(d) for _ in range(t)]

  def einsum(x):
    h = tf.nn.gelu(tf.einsum("btd,tdh->bth", x, w1) + b1)
    return tf.einsum("bth,thd->btd", h, w2) + b2

  def bmm(x):
    xt = tf.transpose(x, [1, 0, 2])
    h = tf.nn.gelu(tf.matmul(xt, w1) + b1[:, tf.newaxis])
    return tf.transpose(tf.matmul(h, w2) + b2[:, tf.newaxis], [1, 0, 2])

  def dense(x):
    return tf.stack([second[i](first[i](x[:, i])) for i in range(t)], axis=1)

  dense(x)  # builds the layers
  variables = {"einsum": [w1, w2, b1, b2], "bmm": [w1, w2, b1, b2],
               "dense": [v for l in first + second for v in l.weights]}
  print(f"B={b} T={t} D={d} k={k}, {FLAGS.repeats} calls each")
  results = {}
  for name, fn in [("einsum", einsum), ("bmm", bmm), ("dense", dense)]:
    forward = tf.function(fn)

    @tf.function
    def train(x, fn=fn, name=name):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(fn(x)))
      return tape.gradient(loss, variables[name])

    results[name] = (_time(forward, x, FLAGS.repeats),
                     _time(train, x, FLAGS.repeats))
  base = results["bmm"]
  for name, (fwd, both) in results.items():
    print(f"{name:7s} forward {fwd:8.1f} ms ({fwd / base[0]:.2f}x bmm)   "
          f"forward+backward {both:8.1f} ms ({both / base[1]:.2f}x bmm)")


if __name__ == "__main__":
  app.run(main)
