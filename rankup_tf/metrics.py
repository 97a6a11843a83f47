"""Exact evaluation metrics over a whole evaluation set (NumPy).

Streaming Keras AUCs bucket their thresholds; the numbers users compare
models by (AUC differences of 0.001 matter on Criteo) are computed here
exactly from all predictions:

* `auc`: ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged;
* `gauc`: AUC per user, averaged with weights = the user's impressions,
  users whose examples are all one class excluded;
* `logloss`: mean binary cross-entropy;
* `calibration`: mean prediction / label rate.
"""

from typing import Dict, Optional

import numpy as np

_CLIP = 1e-7


def _grouped_auc(labels: np.ndarray, scores: np.ndarray,
                 groups: np.ndarray):
  """(per-group AUC, impressions, valid mask) for integer group ids."""
  order = np.lexsort((scores, groups))
  g, s, y = groups[order], scores[order], labels[order]
  n = len(g)
  position = np.arange(1, n + 1, dtype=np.float64)
  num_groups = int(g.max()) + 1 if n else 0
  sizes = np.bincount(g, minlength=num_groups)
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  rank = position - starts[g]
  # Average the ranks of ties (same group, same score).
  new_run = np.ones(n, dtype=bool)
  new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
  run_id = np.cumsum(new_run) - 1
  run_mean = (np.bincount(run_id, weights=rank)
              / np.bincount(run_id)).astype(np.float64)
  rank = run_mean[run_id]
  positives = np.bincount(g, weights=y, minlength=num_groups)
  negatives = sizes - positives
  rank_sum = np.bincount(g, weights=rank * y, minlength=num_groups)
  valid = (positives > 0) & (negatives > 0)
  aucs = np.full(num_groups, np.nan)
  aucs[valid] = ((rank_sum[valid] - positives[valid] * (positives[valid] + 1)
                  / 2) / (positives[valid] * negatives[valid]))
  return aucs, sizes, valid


def _as_arrays(labels, scores):
  labels = np.asarray(labels, dtype=np.float64).reshape(-1)
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  if labels.shape != scores.shape:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} "
                     "differ in length.")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("labels must be 0 or 1.")
  return labels, scores


def auc(labels, scores) -> float:
  """Exact ROC AUC; NaN when only one class is present."""
  labels, scores = _as_arrays(labels, scores)
  aucs, _, _ = _grouped_auc(labels, scores, np.zeros(len(labels), np.int64))
  return float(aucs[0]) if len(aucs) else float("nan")


def gauc(labels, scores, groups) -> float:
  """Impression-weighted mean of per-group AUCs over groups with both
  classes; NaN when no group has both."""
  labels, scores = _as_arrays(labels, scores)
  _, group_ids = np.unique(np.asarray(groups).reshape(-1),
                           return_inverse=True)
  aucs, sizes, valid = _grouped_auc(labels, scores,
                                    group_ids.astype(np.int64))
  if not valid.any():
    return float("nan")
  return float(np.sum(aucs[valid] * sizes[valid]) / np.sum(sizes[valid]))


def logloss(labels, probabilities) -> float:
  labels, p = _as_arrays(labels, probabilities)
  p = np.clip(p, _CLIP, 1 - _CLIP)
  return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def calibration(labels, probabilities) -> float:
  """Mean prediction / label rate (1.0 is calibrated; NaN with no
  positives)."""
  labels, p = _as_arrays(labels, probabilities)
  rate = labels.mean() if len(labels) else 0.0
  return float(p.mean() / rate) if rate > 0 else float("nan")


def task_metrics(labels, probabilities,
                 groups: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Every metric of one task, as a dict (GAUC only with groups)."""
  labels, p = _as_arrays(labels, probabilities)
  out = {"auc": auc(labels, p), "logloss": logloss(labels, p),
         "calibration": calibration(labels, p),
         "label_rate": float(labels.mean()) if len(labels) else float("nan"),
         "mean_prediction": float(p.mean()) if len(p) else float("nan"),
         "examples": int(len(labels))}
  if groups is not None:
    out["gauc"] = gauc(labels, p, groups)
  return out
