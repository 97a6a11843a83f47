r"""The ablation ladder, effective-rank study and efficiency, on one dataset.

    python -m benchmarks.ablation --data_dir=/tmp/synthetic \
        --output_dir=docs/results/synthetic --seeds=0,1,2 --epochs=1

Trains, on the same data, batch, steps and seeds, the ladder

    DNN . DLRM . DCNv2 . RankMixer . + random permutation split
    . + global token & multi-embedding . + crossed pretrained token
    . + task tokens . full RankUp (+ pre-LN SwiGLU blocks)

(each step adds to the one before; token models share T, D, L), evaluates
each on the whole eval split, and writes to --output_dir:

* results.csv: one row per model, seed and task (AUC, GAUC, logloss,
  calibration, params, FLOPs/example, train examples/s, MFU);
* results.md: mean +- std over seeds per model and task, with deltas
  against RankMixer, and the efficiency table;
* erank.json / erank.png / erank_normalized.png / per_token_erank.png:
  token effective rank after every mixer and FFN for RankMixer, the random
  split, multi-embedding and full RankUp (seed 0, a fixed eval batch);
* auc.png: AUC per model with the seed spread.

MFU here is the achieved training FLOP/s (3x the profiled forward FLOPs per
example, times examples/s) over the FLOP/s of a large float32 matmul
measured in the same process.
"""

import csv
import dataclasses
import gc
import json
import os
import time
from typing import Dict, List, Tuple

import numpy as np
from absl import app
from absl import flags

import rankup_tf
import tensorflow as tf

from rankup_tf import diagnostics
from rankup_tf import models
from trainer import config as config_lib
from trainer import train

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "A converter's output (schema.json, "
                    "stats.json, train-*, eval-*).")
flags.DEFINE_string("output_dir", None, "Where the results go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (>= 3 for real runs).")
flags.DEFINE_list("models", [], "Ladder rows to run (default: all).")
flags.DEFINE_integer("epochs", 1, "Passes over the training data.")
flags.DEFINE_integer("train_steps", 0, "Steps per run (overrides epochs).")
flags.DEFINE_integer("global_batch_size", 1024, "Batch size.")
flags.DEFINE_integer("num_tokens", 16, "T of every token model.")
flags.DEFINE_integer("token_dim", 64, "D of every token model.")
flags.DEFINE_integer("num_layers", 2, "L of every token model.")
flags.DEFINE_integer("embedding_dim", 16, "d of every model.")
flags.DEFINE_float("dense_learning_rate", 1e-3, "Dense learning rate.")
flags.DEFINE_boolean("resume", True, "Keep the (row, seed) runs already in "
                     "<output_dir>/summaries.json and run only the rest.")
flags.mark_flags_as_required(["data_dir", "output_dir"])

ERANK_MODELS = ("rankmixer", "random_split", "global_multi_embedding",
                "full_rankup")


def ladder(schema: rankup_tf.Schema, t: int, d: int, layers: int,
           emb: int) -> List[Tuple[str, str, models.ModelConfig, str]]:
  """(row name, model, config, label) of every ladder row for a schema."""
  token = dict(num_tokens=t, token_dim=d, num_layers=layers,
               embedding_dim=emb)
  sparse_crosses = any(schema.cross_kind(p) == "sparse"
                       for p in schema.crosses)
  mixer_block = dict(block="rankmixer", ffn_activation="gelu")
  rows = [
      ("dnn", "dnn", models.DNNConfig(embedding_dim=emb), "DNN"),
      ("dlrm", "dlrm", models.DLRMConfig(embedding_dim=emb), "DLRM"),
      ("dcnv2", "dcnv2", models.DCNv2Config(embedding_dim=emb), "DCNv2"),
      ("rankmixer", "rankmixer", models.RankMixerConfig(**token),
       "RankMixer"),
      ("random_split", "rankup", models.RankUpConfig(
          **token, num_embedding_views=1, global_token=False,
          cross_tokens=False, task_tokens=False, **mixer_block),
       "+ random permutation split"),
      ("global_multi_embedding", "rankup", models.RankUpConfig(
          **token, num_embedding_views=2, cross_tokens=False,
          task_tokens=False, **mixer_block),
       "+ global token & multi-embedding"),
  ]
  if schema.crosses:
    rows.append(("crossed", "rankup", models.RankUpConfig(
        **token, num_embedding_views=3 if sparse_crosses else 2,
        task_tokens=False, **mixer_block), "+ crossed pretrained token"))
  views = 3 if sparse_crosses else 2
  rows += [
      ("task_tokens", "rankup", models.RankUpConfig(
          **token, num_embedding_views=views, **mixer_block),
       "+ task tokens"),
      ("full_rankup", "rankup", models.RankUpConfig(
          **token, num_embedding_views=views), "full RankUp (+ pre-LN SwiGLU)"),
  ]
  return rows


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a size x size float32 matmul on this machine, now."""
  a = tf.random.normal([size, size])
  b = tf.random.normal([size, size])
  matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  matmul().numpy()
  start = time.perf_counter()
  for _ in range(repeats):
    matmul().numpy()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def _erank_of_run(model_dir: str) -> Dict:
  history = json.load(open(os.path.join(model_dir, "erank.json")))
  return history[-1]


def run_one(name, model, config, seed) -> Dict:
  """Trains one ladder row with one seed; returns its summary."""
  model_dir = os.path.join(FLAGS.output_dir, "runs", f"{name}_seed{seed}")
  if tf.io.gfile.exists(model_dir):
    tf.io.gfile.rmtree(model_dir)
  schema_path = os.path.join(FLAGS.data_dir, "schema.json")
  if model in ("rankup", "rankmixer"):
    config = dataclasses.replace(config, **(
        {"permutation_seed": seed} if model == "rankup" else {}))
  run_config = config_lib.TrainConfig(
      train_files=os.path.join(FLAGS.data_dir, "train-*"),
      eval_files=os.path.join(FLAGS.data_dir, "eval-*"),
      schema=schema_path, model_dir=model_dir, model=model,
      model_config=config, global_batch_size=FLAGS.global_batch_size,
      train_steps=FLAGS.train_steps, epochs=FLAGS.epochs, seed=seed,
      dense_learning_rate=FLAGS.dense_learning_rate,
      checkpoint_every_n_steps=10 ** 6,
      erank_every_n_steps=(10 ** 9 if model in ("rankup", "rankmixer")
                           and seed == int(FLAGS.seeds[0]) else 0))
  summary = train.run(run_config)  # --strategy=auto
  if run_config.erank_every_n_steps:
    summary["erank"] = _erank_of_run(model_dir)
  # Keep the run's configs, metrics and logs; its checkpoints are not
  # needed by the study and hold the large embedding tables.
  tf.io.gfile.rmtree(os.path.join(model_dir, "checkpoints"))
  tf.keras.backend.clear_session()
  gc.collect()
  return summary


def _mean_std(values: List[float]) -> str:
  values = [v for v in values if v == v]  # drop NaN
  if not values:
    return "n/a"
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def write_tables(rows, summaries, peak, output_dir) -> None:
  """results.csv and results.md."""
  tasks = list(next(iter(summaries.values()))[0]["eval"])
  records = []
  for name, _, _, label in rows:
    for summary in summaries.get(name, []):
      flops = summary["flops_per_example"]
      rate = summary["train_examples_per_sec"]
      for task, values in summary["eval"].items():
        records.append({
            "row": name, "label": label, "seed": summary["seed"],
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

  lines = []
  for task in tasks:
    base = np.mean(metric("rankmixer", task, "auc")) if summaries.get(
        "rankmixer") else float("nan")
    lines += [f"### Task `{task}`", "",
              "| model | AUC | ΔAUC vs RankMixer | GAUC | logloss |",
              "|---|---|---|---|---|"]
    for name, _, _, label in rows:
      if name not in summaries:
        continue
      aucs = metric(name, task, "auc")
      delta = np.mean(aucs) - base
      lines.append(f"| {label} | {_mean_std(aucs)} | "
                   f"{delta:+.4f} | {_mean_std(metric(name, task, 'gauc'))} "
                   f"| {_mean_std(metric(name, task, 'logloss'))} |")
    lines.append("")
  lines += ["### Cost", "",
            f"Matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s "
            "(float32, 2048x2048).", "",
            "| model | dense params | embedding params | FLOPs/example "
            "(forward) | train examples/s | MFU |", "|---|---|---|---|---|---|"]
  for name, _, _, label in rows:
    if name not in summaries:
      continue
    first = [r for r in records if r["row"] == name][0]
    rates = [s["train_examples_per_sec"] for s in summaries[name]]
    mfu = [3 * first["flops_per_example"] * r / peak for r in rates]
    lines.append(f"| {label} | {first['dense_params']:,} | "
                 f"{first['embedding_params']:,} | "
                 f"{first['flops_per_example']:,} | {np.mean(rates):,.0f} | "
                 f"{100 * np.mean(mfu):.1f}% |")
  with open(os.path.join(output_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def write_plots(rows, summaries, output_dir) -> None:
  """auc.png and the effective-rank plots."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  tasks = list(next(iter(summaries.values()))[0]["eval"])
  labels = [label for name, _, _, label in rows if name in summaries]
  names = [name for name, _, _, _ in rows if name in summaries]
  figure, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5),
                              squeeze=False)
  for axis, task in zip(axes[0], tasks):
    values = [[s["eval"][task]["auc"] for s in summaries[n]] for n in names]
    axis.errorbar(range(len(names)), [np.mean(v) for v in values],
                  yerr=[np.std(v) for v in values], fmt="o", capsize=4)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("eval AUC (mean ± std over seeds)")
    axis.set_title(task)
    axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(os.path.join(output_dir, "auc.png"), dpi=110)
  plt.close(figure)

  trajectories = {label: summaries[name][0]["erank"]
                  for name, _, _, label in rows
                  if name in summaries and "erank" in summaries[name][0]
                  and name in ERANK_MODELS}
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


def main(argv):
  del argv
  tf.io.gfile.makedirs(FLAGS.output_dir)
  schema = rankup_tf.Schema.load(os.path.join(FLAGS.data_dir, "schema.json"))
  rows = ladder(schema, FLAGS.num_tokens, FLAGS.token_dim, FLAGS.num_layers,
                FLAGS.embedding_dim)
  if FLAGS.models:
    unknown = set(FLAGS.models) - {r[0] for r in rows}
    if unknown:
      raise app.UsageError(f"--models names unknown rows {sorted(unknown)}; "
                           f"rows: {[r[0] for r in rows]}")
    rows = [r for r in rows if r[0] in FLAGS.models]
  peak = matmul_peak_flops()
  print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  summaries: Dict[str, List[Dict]] = {}
  summaries_path = os.path.join(FLAGS.output_dir, "summaries.json")
  if FLAGS.resume and tf.io.gfile.exists(summaries_path):
    with open(summaries_path) as f:
      summaries = json.load(f)["runs"]
  for name, model, config, label in rows:
    for seed in FLAGS.seeds:
      if any(s["seed"] == int(seed) for s in summaries.get(name, [])):
        print(f"=== {label} (seed {seed}): kept from an earlier run ===")
        continue
      print(f"=== {label} (seed {seed}) ===", flush=True)
      summary = run_one(name, model, config, int(seed))
      summary["seed"] = int(seed)
      summaries.setdefault(name, []).append(summary)
      with open(summaries_path, "w") as f:
        json.dump({"peak_flops": peak, "runs": summaries}, f, indent=1)
  summaries = {n: sorted(v, key=lambda s: s["seed"])
               for n, v in summaries.items() if n in {r[0] for r in rows}}
  write_tables(rows, summaries, peak, FLAGS.output_dir)
  write_plots(rows, summaries, FLAGS.output_dir)
  print(open(os.path.join(FLAGS.output_dir, "results.md")).read())


if __name__ == "__main__":
  app.run(main)
