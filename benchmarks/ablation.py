r"""The ablation ladder, the paper's single-component ablation, an
iso-compute RankUp, the effective-rank study and efficiency, on one dataset.

    python -m benchmarks.ablation --data_dir=/tmp/synthetic \
        --output_dir=docs/results/synthetic --seeds=0,1,2 --epochs=1 \
        [--ablation=both|ladder|single]

Trains, on the same data, batch, steps and seeds, two sets of rows
(token models share T, D, L and d):

* the cumulative ladder (`--ablation=ladder`), each step adding one
  component to the one before:

      DNN . DLRM . DCNv2 . RankMixer . + random permutation split
      . + global token & multi-embedding (K = 2 views)
      . + crossed pretrained token (pretrained pairs only, still K = 2)
      . + sparse cross tokens & third view (sparse pairs, K = 3)
      . full RankUp (+ pre-LN SwiGLU blocks)

  (the two cross rows appear when the schema has such pairs; task tokens
  are off in the shipped RankUp, so they are not a step);
* the paper's table (`--ablation=single`): RankMixer, each RankUp component
  alone on top of it (random split; global token & multi-embedding;
  crossed pretrained token; task tokens; pre-LN SwiGLU blocks), full RankUp,
  and full RankUp at RankMixer's cost: FFN expansion k, embedding dim d and,
  if k alone cannot get there, token dim D picked at start-up by a search
  so its forward FLOPs/example, dense and embedding parameters are each
  within --iso_tolerance of RankMixer's.

`--ablation=both` (the default) runs both. Every row's config is checked
against the schema (its model built) before the first run, so a row the
schema rejects fails at once, by name. Each row is evaluated on the whole
eval split, and --output_dir gets:

* results.csv: one row per model, seed and task (AUC, GAUC, logloss,
  calibration, params, FLOPs/example, train examples/s, MFU);
* results.md: mean +- std over seeds per row and task with deltas against
  RankMixer in AUC and in seed-std units and a verdict for each row, the
  iso-compute setting, and the efficiency table;
* iso_compute.json: the iso-compute search (every candidate considered);
* erank.json / erank.png / erank_normalized.png / per_token_erank.png:
  token effective rank after every mixer and FFN for RankMixer, the random
  split, multi-embedding and full RankUp (first seed, a fixed eval batch);
* auc.png: AUC per row with the seed spread.

MFU here is the achieved training FLOP/s (3x the profiled forward FLOPs per
example, times examples/s) over the FLOP/s of a large float32 matmul
measured in the same process.
"""

import csv
import dataclasses
import json
import math
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
from absl import app
from absl import flags

import rankup_tf
import tensorflow as tf

from benchmarks import common
from benchmarks.common import Row
from rankup_tf import diagnostics

FLAGS = flags.FLAGS

ERANK_MODELS = ("rankmixer", "random_split", "global_multi_embedding",
                "full_rankup")
ISO_ROW = "iso_rankup"
COST_KEYS = ("flops_per_example", "dense", "embedding")
# |delta| / seed std below WEAK is noise; at or above STRONG, a clear
# difference; between, a likely one.
WEAK, STRONG = 1.0, 2.0


def rows_for(schema: rankup_tf.Schema, token: Dict, ablation: str
             ) -> List[Row]:
  """The rows of --ablation (ladder, single or both), without the
  iso-compute row (which needs the others' costs)."""
  ladder = common.ladder(schema, token)
  single = ([common.rankmixer_row(token)]
            + common.single_component_rows(schema, token)
            + [common.full_rankup_row(schema, token)])
  if ablation == "ladder":
    return ladder
  if ablation == "single":
    return single
  names = {r.name for r in ladder}
  return ladder + [r for r in single if r.name not in names]


def _resized(config, width: int, dim: int, expansion: int):
  return dataclasses.replace(config, token_dim=width, embedding_dim=dim,
                             ffn_expansion=expansion)


def _deviation(cost: Dict, reference: Dict) -> float:
  """The largest relative difference over FLOPs, dense and embedding
  parameters."""
  return max(abs(cost[k] / reference[k] - 1) for k in COST_KEYS)


def iso_compute_row(schema: rankup_tf.Schema, full: Row, full_cost: Dict,
                    reference: Dict, tolerance: float) -> Tuple[Row, Dict]:
  """Full RankUp resized to the reference's (RankMixer's) cost.

  Embedding parameters are linear in d (every view has d), so d is the
  integer nearest the reference's. FLOPs and dense parameters are affine in
  the FFN expansion k (only the FFN width depends on it), so two builds per
  (D, d) give every k. D (a multiple of T) is searched outward from the
  shared D and the search stops at the first D that has a setting within
  tolerance: D changes only when k and d alone cannot match.
  """
  c = full.config
  per_dim = full_cost["embedding"] / c.embedding_dim
  target = reference["embedding"] / per_dim
  dims = sorted({max(1, math.floor(target)), max(1, math.ceil(target))})
  widths = sorted(range(c.num_tokens, 2 * c.token_dim + 1, c.num_tokens),
                  key=lambda w: (abs(w - c.token_dim), w))
  expansions = range(1, 2 * c.ffn_expansion + 1)
  candidates = []
  for width in widths:
    for dim in dims:
      at = [common.build(schema, full._replace(
          config=_resized(c, width, dim, k))) for k in (1, 2)]
      for k in expansions:
        cost = {key: at[0][key] + (k - 1) * (at[1][key] - at[0][key])
                for key in COST_KEYS}
        candidates.append({"token_dim": width, "embedding_dim": dim,
                           "ffn_expansion": k, "estimated_cost": cost,
                           "deviation": _deviation(cost, reference)})
    if min(x["deviation"] for x in candidates) <= tolerance:
      break
  best = min(candidates, key=lambda x: x["deviation"])
  config = _resized(c, best["token_dim"], best["embedding_dim"],
                    best["ffn_expansion"])
  row = Row(ISO_ROW, "rankup", config, "full RankUp at RankMixer's cost")
  cost = common.build(schema, row)
  deviation = _deviation(cost, reference)
  return row, {
      "setting": {k: best[k] for k in ("token_dim", "embedding_dim",
                                       "ffn_expansion")},
      "cost": cost, "reference": reference, "full_rankup": full_cost,
      "deviation": deviation, "tolerance": tolerance,
      "within_tolerance": deviation <= tolerance, "candidates": candidates}


def run_one(setup: common.Setup, row: Row, seed: int) -> Dict:
  """Trains one row with one seed on train-*, evaluated on eval-*."""
  model_dir = os.path.join(setup.output_dir, "runs", f"{row.name}_seed{seed}")
  erank = (row.model in ("rankup", "rankmixer")
           and seed == setup.seeds[0])
  config = common.train_config(
      setup, row, seed, model_dir,
      train_files=os.path.join(setup.data_dir, "train-*"),
      eval_files=os.path.join(setup.data_dir, "eval-*"),
      erank_every_n_steps=10 ** 9 if erank else 0)
  summary = dict(common.run(config),
                 made_with=common.provenance(setup, row))
  if erank:
    with open(os.path.join(model_dir, "erank.json")) as f:
      summary["erank"] = json.load(f)[-1]
  return summary


def verdict(delta: float, z: float, seeds: int) -> str:
  """A row against RankMixer, from the difference in seed-std units."""
  if seeds < 2 or z != z:
    return "n/a (one seed)" if seeds < 2 else "n/a"
  if abs(z) < WEAK:
    return "within noise"
  word = "gain" if delta > 0 else "loss"
  return word if abs(z) >= STRONG else f"likely {word}"


def _versus(values: List[float], reference: List[float]) -> Tuple[float,
                                                                   float]:
  """(mean difference, difference in pooled seed-std units)."""
  values, reference = common.finite(values), common.finite(reference)
  if not values or not reference:
    return float("nan"), float("nan")
  delta = float(np.mean(values) - np.mean(reference))
  spread = math.sqrt((np.var(values) + np.var(reference)) / 2)
  if spread == 0:  # identical seeds: any difference is all signal
    return delta, math.copysign(math.inf, delta) if delta else 0.0
  return delta, delta / spread


def write_tables(rows: List[Row], summaries: Dict, peak: float,
                 output_dir: str, iso: Dict) -> None:
  """results.csv and results.md."""
  tasks = list(next(iter(summaries.values()))[0]["eval"])
  records = []
  for row in rows:
    for summary in summaries.get(row.name, []):
      flops = summary["flops_per_example"]
      rate = summary["train_examples_per_sec"]
      for task, values in summary["eval"].items():
        records.append({
            "row": row.name, "label": row.label, "seed": summary["seed"],
            "task": task, "auc": values["auc"],
            "gauc": values.get("gauc", float("nan")),
            "logloss": values["logloss"],
            "calibration": values["calibration"],
            "dense_params": summary["parameters"]["dense"],
            "embedding_params": summary["parameters"]["embedding"],
            "flops_per_example": flops, "train_examples_per_sec": rate,
            "mfu": 3 * flops * rate / peak})
  with open(os.path.join(output_dir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)

  def metric(name, task, key):
    return [r[key] for r in records if r["row"] == name and r["task"] == task]

  single = [r for r in rows if r.name.startswith("only_")
            or r.name == ISO_ROW]
  references = [r for r in rows if r.name in ("rankmixer", "full_rankup")]
  ladder = [r for r in rows if r not in single]
  sections = []
  if len(ladder) > len(references):
    sections.append(("Ladder", ladder))
  if single:
    sections.append(("Each component alone on top of RankMixer",
                     references[:1] + [r for r in single if r.name != ISO_ROW]
                     + references[1:] + [r for r in single
                                         if r.name == ISO_ROW]))
  lines = [f"Δ/σ: the difference of means over the pooled seed std; "
           f"|Δ/σ| < {WEAK:g}: within noise, < {STRONG:g}: likely, "
           "else a clear gain or loss.", ""]
  for title, section in sections:
    for task in tasks:
      reference_auc = metric("rankmixer", task, "auc")
      reference_gauc = metric("rankmixer", task, "gauc")
      lines += [f"### {title}: task `{task}`", "",
                "| model | AUC | ΔAUC vs RankMixer | Δ/σ | verdict | GAUC "
                "| ΔGAUC | Δ/σ | logloss |", "|---|---|---|---|---|---|---|"
                "---|---|"]
      for row in section:
        if row.name not in summaries:
          continue
        aucs, gaucs = metric(row.name, task, "auc"), metric(row.name, task,
                                                            "gauc")
        delta, z = _versus(aucs, reference_auc)
        gdelta, gz = _versus(gaucs, reference_gauc)
        judged = ("reference" if row.name == "rankmixer"
                  else verdict(delta, z, len(aucs)))
        lines.append(
            f"| {row.label} | {common.mean_std(aucs)} | "
            f"{common.signed(delta)} | {common.signed(z, 1)} | {judged} | "
            f"{common.mean_std(gaucs)} | {common.signed(gdelta)} | "
            f"{common.signed(gz, 1)} | "
            f"{common.mean_std(metric(row.name, task, 'logloss'))} |")
      lines.append("")
  if iso:
    s = iso["setting"]
    lines += ["### Iso-compute RankUp", "",
              f"Full RankUp with D = {s['token_dim']}, d = "
              f"{s['embedding_dim']}, FFN expansion k = "
              f"{s['ffn_expansion']}: largest deviation from RankMixer "
              f"{100 * iso['deviation']:.1f}% (tolerance "
              f"{100 * iso['tolerance']:.0f}%"
              + ("" if iso["within_tolerance"] else "; NOT within it: no "
                 "candidate was") + ").", "",
              "| model | FLOPs/example | dense params | embedding params |",
              "|---|---|---|---|"]
    for label, cost in (("RankMixer", iso["reference"]),
                        ("full RankUp", iso["full_rankup"]),
                        ("iso-compute RankUp", iso["cost"])):
      lines.append(f"| {label} | {cost['flops_per_example']:,} | "
                   f"{cost['dense']:,} | {cost['embedding']:,} |")
    lines.append("")
  lines += ["### Cost", "",
            f"Matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s "
            "(float32, 2048x2048).", "",
            "| model | dense params | embedding params | FLOPs/example "
            "(forward) | train examples/s | MFU |", "|---|---|---|---|---|---|"]
  for row in rows:
    if row.name not in summaries:
      continue
    first = [r for r in records if r["row"] == row.name][0]
    rates = [s["train_examples_per_sec"] for s in summaries[row.name]]
    mfu = [3 * first["flops_per_example"] * r / peak for r in rates]
    lines.append(f"| {row.label} | {first['dense_params']:,} | "
                 f"{first['embedding_params']:,} | "
                 f"{first['flops_per_example']:,} | {np.mean(rates):,.0f} | "
                 f"{100 * np.mean(mfu):.1f}% |")
  with open(os.path.join(output_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def write_plots(rows: List[Row], summaries: Dict, output_dir: str) -> None:
  """auc.png and the effective-rank plots."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  tasks = list(next(iter(summaries.values()))[0]["eval"])
  shown = [r for r in rows if r.name in summaries]
  figure, axes = plt.subplots(1, len(tasks),
                              figsize=(max(6, 0.5 * len(shown)) * len(tasks),
                                       4.5), squeeze=False)
  for axis, task in zip(axes[0], tasks):
    values = [common.finite(s["eval"][task]["auc"]
                            for s in summaries[r.name]) for r in shown]
    axis.errorbar(range(len(shown)), [np.mean(v) for v in values],
                  yerr=[np.std(v) for v in values], fmt="o", capsize=4)
    axis.set_xticks(range(len(shown)))
    axis.set_xticklabels([r.label for r in shown], rotation=35, ha="right",
                         fontsize=8)
    axis.set_ylabel("eval AUC (mean ± std over seeds)")
    axis.set_title(task)
    axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(os.path.join(output_dir, "auc.png"), dpi=110)
  plt.close(figure)

  trajectories = {r.label: summaries[r.name][0]["erank"] for r in shown
                  if r.name in ERANK_MODELS
                  and "erank" in summaries[r.name][0]}
  if not trajectories:
    return
  with open(os.path.join(output_dir, "erank.json"), "w") as f:
    json.dump(trajectories, f, indent=1)
  diagnostics.plot_trajectories(trajectories,
                                os.path.join(output_dir, "erank.png"))
  diagnostics.plot_trajectories(
      trajectories, os.path.join(output_dir, "erank_normalized.png"),
      normalized=True, title="Token effective rank / min(T, D)")
  figure, axis = plt.subplots(figsize=(7, 4))
  for label, trajectory in trajectories.items():
    axis.plot(trajectory["per_token_erank"][0], marker=".", label=label)
  axis.set_xlabel("token (input to block 1)")
  axis.set_ylabel("effective rank of the B x D token matrix")
  axis.set_title("Per-token effective rank across the batch")
  axis.grid(alpha=0.3)
  axis.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(os.path.join(output_dir, "per_token_erank.png"), dpi=110)
  plt.close(figure)


def plan(setup: common.Setup, ablation: str, tolerance: float
         ) -> Tuple[List[Row], Dict]:
  """The rows to run, every one checked against the schema, and the
  iso-compute search ({} without the single-component set)."""
  schema = setup.schema()
  rows = rows_for(schema, setup.token, ablation)
  known = [r.name for r in rows] + ([ISO_ROW] if ablation != "ladder"
                                    else [])
  unknown = sorted(set(setup.models) - set(known))
  if unknown:
    raise app.UsageError(f"--models names unknown rows {unknown}; rows of "
                         f"--ablation={ablation}: {known}")
  wanted = set(setup.models or known)
  iso = {}
  if ISO_ROW in wanted:
    # The iso row is sized from RankMixer's and full RankUp's costs.
    needed = [r for r in rows if r.name in wanted
              or r.name in ("rankmixer", "full_rankup")]
  else:
    needed = [r for r in rows if r.name in wanted]
  costs = common.check_rows(setup, schema, needed,
                            flops=("rankmixer", "full_rankup"))
  if ISO_ROW in wanted:
    full = next(r for r in rows if r.name == "full_rankup")
    row, iso = iso_compute_row(schema, full, costs["full_rankup"],
                               costs["rankmixer"], tolerance)
    common.check_rows(setup, schema, [row])
    rows.append(row)
  return [r for r in rows if r.name in wanted], iso


def ablate(setup: common.Setup, ablation: str, tolerance: float) -> None:
  """Checks every row, runs the missing (row, seed) runs, writes the
  results."""
  tf.io.gfile.makedirs(setup.output_dir)
  rows, iso = plan(setup, ablation, tolerance)
  if iso:
    with open(os.path.join(setup.output_dir, "iso_compute.json"), "w") as f:
      json.dump(iso, f, indent=1)
    print(f"iso-compute RankUp: {iso['setting']}, largest deviation "
          f"{100 * iso['deviation']:.1f}%", flush=True)
  peak = common.matmul_peak_flops()
  print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  summaries: Dict[str, List[Dict]] = {}
  summaries_path = os.path.join(setup.output_dir, "summaries.json")
  if setup.resume and tf.io.gfile.exists(summaries_path):
    with open(summaries_path) as f:
      summaries = json.load(f)["runs"]
  for row in rows:
    kept = summaries.get(row.name, [])
    current = [s for s in kept if common.made_with(s, setup, row)]
    if len(current) < len(kept):
      print(f"=== {row.label}: {len(kept) - len(current)} run(s) made "
            "with another config or run flags, run again ===")
      summaries[row.name] = current
    for seed in setup.seeds:
      if any(s["seed"] == seed for s in current):
        print(f"=== {row.label} (seed {seed}): kept from an earlier run ===")
        continue
      print(f"=== {row.label} (seed {seed}) ===", flush=True)
      summary = run_one(setup, row, seed)
      summary["seed"] = seed
      summaries.setdefault(row.name, []).append(summary)
      with open(summaries_path, "w") as f:
        json.dump({"peak_flops": peak, "runs": summaries}, f, indent=1)
  summaries = {n: sorted(v, key=lambda s: s["seed"])
               for n, v in summaries.items() if n in {r.name for r in rows}}
  write_tables(rows, summaries, peak, setup.output_dir, iso)
  write_plots(rows, summaries, setup.output_dir)
  print(open(os.path.join(setup.output_dir, "results.md")).read())


def main(argv):
  del argv
  try:
    ablate(common.Setup.from_flags(), FLAGS.ablation, FLAGS.iso_tolerance)
  except common.RowError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  common.define_flags()
  flags.DEFINE_enum("ablation", "both", ["ladder", "single", "both"],
                    "ladder: the cumulative ladder; single: each component "
                    "alone on RankMixer, full and iso-compute RankUp.")
  flags.DEFINE_float("iso_tolerance", 0.1, "Largest relative difference "
                     "of the iso-compute row's FLOPs, dense and embedding "
                     "parameters from RankMixer's.")
  app.run(main)
