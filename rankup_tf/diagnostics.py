"""Rank diagnostics of token representations (SPEC 4).

* `effective_rank`: entropy effective rank (Roy and Vetterli, 2007),
  exp(-sum p_i ln p_i) with p_i = s_i / sum_j s_j over singular values;
* `stable_rank`: ||X||_F^2 / ||X||_2^2;
* `information_abundance`: sum(s) / max(s).

Each accepts a matrix [m, n] or a batch [..., m, n] and returns one value
per matrix. A zero matrix has rank 0 under all three.
"""

import json
import os
from typing import Dict, List, Mapping, Optional

import tensorflow as tf

_EPS = 1e-12


def _singular_values(x) -> tf.Tensor:
  return tf.linalg.svd(tf.cast(x, tf.float64), compute_uv=False)


def effective_rank(x) -> tf.Tensor:
  """Entropy effective rank, in [1, min(m, n)] (0 for a zero matrix)."""
  s = _singular_values(x)
  total = tf.reduce_sum(s, axis=-1, keepdims=True)
  p = s / tf.maximum(total, _EPS)
  entropy = -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(
      tf.maximum(p, _EPS)), tf.zeros_like(p)), axis=-1)
  return tf.where(total[..., 0] > _EPS, tf.exp(entropy),
                  tf.zeros_like(entropy))


def stable_rank(x) -> tf.Tensor:
  """||X||_F^2 / ||X||_2^2 (RankElastor's measure)."""
  s = _singular_values(x)
  top = tf.reduce_max(s, axis=-1)
  return tf.reduce_sum(tf.square(s), axis=-1) / tf.maximum(tf.square(top),
                                                           _EPS)


def information_abundance(x) -> tf.Tensor:
  """sum(s) / max(s) (the multi-embedding paper's measure)."""
  s = _singular_values(x)
  return tf.reduce_sum(s, axis=-1) / tf.maximum(tf.reduce_max(s, axis=-1),
                                                _EPS)


def token_erank_trajectory(model, features: Mapping[str, tf.Tensor]
                           ) -> Dict[str, object]:
  """Effective rank of a token model's states after every mixer and FFN.

  Args:
    model: a model with `token_states(features)` (RankUpModel,
      RankMixerModel).
    features: one batch of model inputs (B examples).
  Returns:
    {"points": names in order ("input", "block1_mixer", "block1_ffn", ...),
     "erank": per point, the per-example T x D effective rank averaged over
       the batch,
     "erank_normalized": the same divided by min(T, D),
     "per_token_erank": per point, a list over tokens of the effective rank
       of that token's B x D matrix across the batch,
     "num_tokens": T, "token_dim": D, "batch_size": B}
  """
  if not hasattr(model, "token_states"):
    raise TypeError(f"{type(model).__name__} has no token backbone "
                    "(token_states); effective-rank trajectories need a "
                    "RankUpModel or RankMixerModel.")
  states = model.token_states(features)
  first = next(iter(states.values()))
  batch, num_tokens, token_dim = (int(d) for d in first.shape)
  ceiling = min(num_tokens, token_dim)
  result = {"points": list(states), "erank": [], "erank_normalized": [],
            "per_token_erank": [], "num_tokens": num_tokens,
            "token_dim": token_dim, "batch_size": batch}
  for tokens in states.values():
    per_example = float(tf.reduce_mean(effective_rank(tokens)))
    result["erank"].append(per_example)
    result["erank_normalized"].append(per_example / ceiling)
    per_token = effective_rank(tf.transpose(tokens, [1, 0, 2]))
    result["per_token_erank"].append([float(v) for v in per_token.numpy()])
  return result


def plot_trajectories(trajectories: Mapping[str, Mapping], path: str,
                      normalized: bool = False,
                      title: Optional[str] = None) -> str:
  """One line per trajectory: measuring point on x, effective rank on y."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  key = "erank_normalized" if normalized else "erank"
  figure, axes = plt.subplots(figsize=(7, 4))
  for label, trajectory in trajectories.items():
    axes.plot(trajectory["points"], trajectory[key], marker="o", label=label)
  axes.set_xlabel("measuring point")
  axes.set_ylabel("erank / min(T, D)" if normalized
                  else "effective rank (per example, T x D)")
  axes.set_title(title or "Token effective rank by layer")
  axes.grid(alpha=0.3)
  axes.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


class EffectiveRankCallback(tf.keras.callbacks.Callback):
  """Tracks the token effective-rank trajectory on a fixed batch.

  Every `every_n_steps` training steps (and at the end of training) it
  computes `token_erank_trajectory` on `features`, writes TensorBoard
  scalars `erank/<point>` and `erank_normalized/<point>` to `log_dir`, and
  rewrites `<output_dir>/erank.json` (all recorded steps) and
  `<output_dir>/erank.png` (one line per recorded step).

  Example:

  ```python
  features, _ = next(iter(eval_dataset))
  callback = EffectiveRankCallback(features, every_n_steps=500,
                                   output_dir=model_dir)
  model.fit(train_dataset, callbacks=[callback], ...)
  ```
  """

  def __init__(self, features: Mapping[str, tf.Tensor], every_n_steps: int,
               output_dir: str, log_dir: Optional[str] = None):
    super().__init__()
    if every_n_steps < 1:
      raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
    self.features = features
    self.every_n_steps = every_n_steps
    self.output_dir = output_dir
    self.log_dir = log_dir
    self.history: List[Dict[str, object]] = []
    self._writer = None
    self._step = 0

  def on_train_begin(self, logs=None):
    tf.io.gfile.makedirs(self.output_dir)
    if self.log_dir:
      self._writer = tf.summary.create_file_writer(
          os.path.join(self.log_dir, "erank"))
    self._step = int(self.model.optimizer.iterations.numpy())

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._step % self.every_n_steps == 0:
      self.record(self._step)

  def on_train_end(self, logs=None):
    if not self.history or self.history[-1]["step"] != self._step:
      self.record(self._step)

  def record(self, step: int) -> Dict[str, object]:
    trajectory = token_erank_trajectory(self.model, self.features)
    trajectory["step"] = step
    self.history.append(trajectory)
    if self._writer is not None:
      with self._writer.as_default(step=step):
        for point, value, normalized in zip(trajectory["points"],
                                            trajectory["erank"],
                                            trajectory["erank_normalized"]):
          tf.summary.scalar(f"erank/{point}", value)
          tf.summary.scalar(f"erank_normalized/{point}", normalized)
      self._writer.flush()
    with tf.io.gfile.GFile(os.path.join(self.output_dir, "erank.json"),
                           "w") as f:
      json.dump(self.history, f, indent=1)
    plot_trajectories({f"step {h['step']}": h for h in self.history},
                      os.path.join(self.output_dir, "erank.png"))
    return trajectory

