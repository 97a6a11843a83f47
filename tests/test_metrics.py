"""rankup_tf.metrics against brute-force definitions (the numbers of
docs/results.md come from these functions)."""

import itertools

import numpy as np
import pytest

from rankup_tf import metrics


def pairwise_auc(labels, scores) -> float:
  """P(score of a positive > score of a negative), ties count one half."""
  positives = [s for y, s in zip(labels, scores) if y == 1]
  negatives = [s for y, s in zip(labels, scores) if y == 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
             for p, n in itertools.product(positives, negatives))
  return wins / (len(positives) * len(negatives))


def pairwise_gauc(labels, scores, groups) -> float:
  """Impression-weighted mean of per-group pairwise AUCs over groups that
  have both classes."""
  total, weight = 0.0, 0
  for group in sorted(set(groups)):
    members = [i for i, g in enumerate(groups) if g == group]
    ys = [labels[i] for i in members]
    if 0 < sum(ys) < len(ys):
      total += len(members) * pairwise_auc(ys, [scores[i] for i in members])
      weight += len(members)
  return total / weight


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  # Scores from a few values: most pairs are ties.
  scores = rng.integers(0, 5, 200) / 4 + 0.3 * labels * rng.random(200)
  scores = np.round(scores, 1)
  assert metrics.auc(labels, scores) == pytest.approx(
      pairwise_auc(labels, scores), abs=1e-12)


def test_auc_known_values():
  assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert metrics.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
  assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  # One positive above one of two negatives, tied with the other.
  assert metrics.auc([1, 0, 0], [0.5, 0.2, 0.5]) == 0.75


def test_auc_single_class_is_nan():
  assert np.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
  assert np.isnan(metrics.auc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_pairwise_per_user_with_single_class_users(seed):
  rng = np.random.default_rng(seed)
  groups = rng.integers(0, 12, 150)
  labels = (rng.random(150) < 0.3).astype(int)
  labels[groups == 0] = 1  # a user with positives only
  labels[groups == 1] = 0  # a user with negatives only
  scores = np.round(rng.random(150) + 0.5 * labels, 1)  # ties within users
  expected = pairwise_gauc(list(labels), list(scores), list(groups))
  assert metrics.gauc(labels, scores, groups) == pytest.approx(
      expected, abs=1e-12)


def test_gauc_weights_users_by_impressions_and_drops_single_class():
  # User "a": 2 impressions, AUC 1. User "b": 4 impressions, AUC 0.
  # User "c": one class only, ignored whatever its scores.
  labels = [0, 1, 1, 1, 0, 0, 1, 1, 1]
  scores = [0.1, 0.9, 0.2, 0.3, 0.8, 0.9, 0.0, 0.5, 0.7]
  groups = ["a", "a", "b", "b", "b", "b", "c", "c", "c"]
  assert metrics.gauc(labels, scores, groups) == pytest.approx(
      (2 * 1.0 + 4 * 0.0) / 6)
  assert np.isnan(metrics.gauc([1, 0], [0.3, 0.2], ["x", "y"]))


def test_gauc_differs_from_auc_when_users_differ_in_base_rate():
  # Within each user the ranking is perfect; across users, user 1's
  # negative outranks user 2's positive.
  labels = [0, 1, 0, 1]
  scores = [0.8, 0.9, 0.1, 0.2]
  groups = [1, 1, 2, 2]
  assert metrics.gauc(labels, scores, groups) == 1.0
  assert metrics.auc(labels, scores) == 0.75


def test_logloss_and_calibration_match_their_formulas():
  labels = np.array([1, 0, 1, 0, 0])
  p = np.array([0.9, 0.2, 0.6, 0.1, 0.4])
  expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  assert metrics.logloss(labels, p) == pytest.approx(expected, rel=1e-12)
  assert metrics.calibration(labels, p) == pytest.approx(p.mean() / 0.4)
  # Saturated predictions stay finite (clipped), and wrong ones cost most.
  assert np.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))
  assert metrics.logloss([1], [1e-9]) > metrics.logloss([1], [0.5])


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="differ in length"):
    metrics.auc([0, 1], [0.5])
  with pytest.raises(ValueError, match="0 or 1"):
    metrics.auc([0, 2], [0.5, 0.5])


def test_task_metrics_reports_every_metric():
  out = metrics.task_metrics([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4],
                             groups=[1, 1, 2, 2])
  assert out["auc"] == 1.0 and out["gauc"] == 1.0
  assert out["examples"] == 4 and out["label_rate"] == 0.5
  assert out["mean_prediction"] == pytest.approx(0.475)
  assert "gauc" not in metrics.task_metrics([0, 1], [0.2, 0.7])


# -- weights, larger sets, degenerate inputs ----------------------------------
def weighted_pairwise_auc(labels, scores, weights) -> float:
  """Brute force with example weights: a (positive, negative) pair counts
  w_pos * w_neg, ties one half of that."""
  wins = total = 0.0
  for (yp, sp, wp), (yn, sn, wn) in itertools.product(
      zip(labels, scores, weights), repeat=2):
    if yp == 1 and yn == 0:
      total += wp * wn
      wins += wp * wn * (1.0 if sp > sn else 0.5 if sp == sn else 0.0)
  return wins / total


@pytest.mark.parametrize("seed", range(3))
def test_auc_of_repeated_rows_is_the_weighted_pairwise_auc(seed):
  """metrics.py takes no sample_weight; an integer weight is the same
  example repeated, and the AUC of the repeated rows must be the
  weight-product pairwise AUC (ties included)."""
  rng = np.random.default_rng(10 + seed)
  labels = rng.integers(0, 2, 40)
  scores = np.round(rng.random(40) + 0.3 * labels, 1)
  weights = rng.integers(1, 5, 40)
  expected = weighted_pairwise_auc(labels, scores, weights)
  repeated = (np.repeat(labels, weights), np.repeat(scores, weights))
  assert metrics.auc(*repeated) == pytest.approx(expected, abs=1e-12)
  # The unweighted AUC differs: the weights are not a no-op here.
  assert abs(metrics.auc(labels, scores) - expected) > 1e-3


def test_gauc_weight_is_the_users_impressions():
  """Repeating user b's rows 3 times keeps its AUC and triples its weight;
  the single-class user c never counts, however many rows it has."""
  labels = [0, 1, 0, 1, 1, 0, 1, 1]
  scores = [0.2, 0.9, 0.6, 0.3, 0.7, 0.1, 0.5, 0.5]
  groups = ["a", "a", "b", "b", "b", "b", "c", "c"]
  # a: 2 rows, AUC 1. b: 4 rows; positives 0.3, 0.7 vs negatives 0.6, 0.1
  # win 3 of 4 pairs: AUC 0.75.
  assert metrics.gauc(labels, scores, groups) == pytest.approx(
      (2 * 1.0 + 4 * 0.75) / 6, abs=1e-12)
  b = [i for i, g in enumerate(groups) if g == "b"]
  more = lambda xs: list(xs) + [xs[i] for i in b] * 2  # noqa: E731
  assert metrics.gauc(more(labels), more(scores), more(groups)) == \
      pytest.approx((2 * 1.0 + 12 * 0.75) / 14, abs=1e-12)
  many_c = (labels + [1] * 50, scores + [0.0] * 50, groups + ["c"] * 50)
  assert metrics.gauc(*many_c) == pytest.approx((2 + 3) / 6, abs=1e-12)


def test_auc_matches_pairwise_on_a_large_continuous_set():
  # float32 scores as a model gives them, with ties where float32 rounds.
  rng = np.random.default_rng(42)
  labels = (rng.random(1500) < 0.2).astype(int)
  scores = (rng.normal(size=1500) + labels).astype(np.float32)
  scores[::7] = scores[0]  # a large tied block
  assert metrics.auc(labels, scores) == pytest.approx(
      pairwise_auc(labels, scores), abs=1e-12)


def test_auc_depends_only_on_the_order_of_scores():
  """Logits and probabilities rank alike: any increasing map keeps the AUC
  and GAUC; a decreasing one gives 1 - AUC."""
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 300)
  logits = np.round(rng.normal(size=300) + labels, 2)
  groups = rng.integers(0, 9, 300)
  value = metrics.auc(labels, logits)
  probabilities = 1 / (1 + np.exp(-logits))
  assert metrics.auc(labels, probabilities) == pytest.approx(value,
                                                             abs=1e-12)
  assert metrics.auc(labels, -logits) == pytest.approx(1 - value, abs=1e-12)
  assert metrics.gauc(labels, probabilities, groups) == pytest.approx(
      metrics.gauc(labels, logits, groups), abs=1e-12)


def test_gauc_accepts_any_group_ids_and_column_shapes():
  labels = np.array([0, 1, 1, 0, 0, 1])
  scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.6])
  expected = pairwise_gauc(list(labels), list(scores),
                           [7, 7, 7, -3, -3, -3])
  # Ids far apart, negative, as strings or bytes, and [N, 1] columns.
  for groups in ([10**9, 10**9, 10**9, -3, -3, -3],
                 ["u7", "u7", "u7", "u-3", "u-3", "u-3"],
                 [b"x", b"x", b"x", b"y", b"y", b"y"]):
    assert metrics.gauc(labels[:, None], scores[:, None],
                        np.array(groups)[:, None]) == pytest.approx(
                            expected, abs=1e-12)
  assert expected == pytest.approx((3 * 1.0 + 3 * 0.5) / 6)


def test_degenerate_inputs_give_nan_or_clipped_values():
  assert np.isnan(metrics.auc([], []))
  assert np.isnan(metrics.gauc([], [], []))
  assert np.isnan(metrics.calibration([0, 0], [0.1, 0.2]))
  # Single-class users only: no GAUC, while the pooled AUC exists.
  assert np.isnan(metrics.gauc([1, 1, 0], [0.5, 0.2, 0.9], [1, 1, 2]))
  assert metrics.auc([1, 1, 0], [0.5, 0.2, 0.9]) == 0.0
  # A confident wrong prediction costs -log(1e-7), the clip, not inf.
  assert metrics.logloss([1, 0], [0.0, 1.0]) == pytest.approx(
      -np.log(1e-7), rel=1e-6)
  assert metrics.logloss([0, 1], [0.0, 1.0]) == pytest.approx(
      -np.log(1 - 1e-7), rel=1e-6)
  out = metrics.task_metrics([1, 1], [0.5, 0.7], groups=[1, 2])
  assert np.isnan(out["auc"]) and np.isnan(out["gauc"])
  assert out["calibration"] == pytest.approx(0.6)
