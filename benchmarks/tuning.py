r"""A fair comparison: every model tuned with the same budget, then seeds.

    python -m benchmarks.tuning --data_dir=runs/criteo_8k \
        --output_dir=runs/tuning_criteo --trials=10 --seeds=0,1,2 \
        --epochs=5 --global_batch_size=256

For each model of --models (default: DNN, DLRM, DCNv2, RankMixer and full
RankUp, configured as in the ablation ladder with the same T, D, L, d):

1. Tuning. --trials trials (default 10) over the dense learning rate
   (log-uniform), dropout, dense_l2 and embedding_l2 (SEARCH_SPACE), each
   a training run on the training shards but the last --validation_shards,
   scored by the AUC of the schema's first task on those held-out training
   shards. The eval split is never read while tuning. Every model gets the
   same trials and, since trial n's sampler is seeded by (--tuning_seed, n),
   the same random start-up points. The defaults are validated the same way
   (one more run, kept apart from the sampler because their zero L2 lies
   outside the log-scaled space). With --epochs > 1 every validation run
   is scored after each epoch, and the epoch count is tuned with the rest
   (not with --dense_learning_rate_decay=cosine: a run decays over its
   whole length, so it is scored at its end, after --epochs).
2. Selection. One validation run's AUC is too noisy to pick by (on a
   small log a trial that beat the defaults by 0.0002 lost to them by
   0.007 on the eval split), so the defaults and the --finalists best
   trials are validated --repeats times in all (seeds --tuning_seed,
   +1, ...), and "tuned" is the finalist, and epoch count, of the best mean
   validation AUC: tuning never ships a setting that validates worse than
   the defaults on average.
3. Seeds. Each of --seeds trains on all training shards, at the defaults
   (the model config's own, --dense_learning_rate), at the --candidate
   setting if one is given (e.g. --candidate=dropout=0.1: proposed new
   defaults, the same for every model) and at the tuned setting (with its
   epoch count), and is evaluated on the eval split.

--output_dir gets trials.json (the splits, the search space, every trial
and repeat: setting, seed, validation AUC after each epoch, time),
runs.json (the seed runs' summaries), results.csv (one line per model,
setting, seed and task) and results.md
(defaults and tuned side by side, mean +- std AUC and GAUC per task, the
best setting per model). Each trial and run is written down when it ends;
with --resume (the default) a rerun keeps them and runs only the rest (the
seeding makes a resumed study propose what an uninterrupted one would);
a model whose row config changed since (new fields or defaults), or a
rerun with other run flags (data, epochs, steps, batch, learning rate or
its schedule, input order), is tuned and run again.

Tuning library: Optuna (TPE), picked over KerasTuner by measuring both in
this venv (tf-keras 2.21, Keras 3.15 beside it):

* KerasTuner 1.4.8 imports Keras 3, not tf-keras: a hypermodel returning a
  tf-keras model is refused ("FatalTypeError: ... to return a valid Keras
  Model instance"), so it cannot tune our models the way it is meant to.
  Only a Tuner subclass overriding run_trial to call trainer.train.run
  works, which uses KerasTuner as a bare trial loop; its Bayesian oracle
  needs scipy besides. Import 3.5 s (it imports TensorFlow through Keras 3).
* Optuna 5.0.0 knows no framework: a trial is a function around
  trainer.train.run (worked at once, 2 trials of a 3-step DNN). Import
  0.3 s. Trials can be replayed into a fresh study (`add_trial`), which is
  what makes resuming exact. Installed size about 40 MB with its
  dependencies (SQLAlchemy 29 MB, alembic, Mako, colorlog, PyYAML);
  KerasTuner adds 1.4 MB but only because Keras 3 is already here.
"""

import csv
import dataclasses
import json
import os
import time
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np
import optuna
from absl import app
from absl import flags

import tensorflow as tf

from benchmarks import common
from benchmarks.common import Row
from rankup_tf import run_dir
from rankup_tf.trainer import callbacks as callbacks_lib
from rankup_tf.trainer import train

FLAGS = flags.FLAGS

DEFAULT_MODELS = ("dnn", "dlrm", "dcnv2", "rankmixer", "full_rankup")
# dense_learning_rate is a TrainConfig field, the rest ModelConfig fields.
# The L2 floors are small enough to be "off" (dense_l2 * sum(w^2) and
# embedding_l2 * sum(looked-up rows^2) / B stay far below the loss there).
SEARCH_SPACE = {
    "dense_learning_rate": optuna.distributions.FloatDistribution(
        1e-4, 1e-2, log=True),
    "dropout": optuna.distributions.FloatDistribution(0.0, 0.3),
    "dense_l2": optuna.distributions.FloatDistribution(1e-8, 1e-4, log=True),
    "embedding_l2": optuna.distributions.FloatDistribution(1e-7, 1e-2,
                                                           log=True),
}


@dataclasses.dataclass(frozen=True)
class Budget:
  trials: int = 10
  validation_shards: int = 1
  tuning_seed: int = 0
  # The best trials validated again beside the defaults, and the number of
  # validation runs (seeds) each of them gets in all.
  finalists: int = 2
  repeats: int = 3
  # Proposed defaults (SEARCH_SPACE names -> values), seeded beside the
  # current defaults and the tuned setting; empty: no candidate.
  candidate: Dict[str, float] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.trials < 1 or self.finalists < 0 or self.repeats < 1:
      raise ValueError(f"A tuning budget needs trials >= 1, finalists >= 0 "
                       f"and repeats >= 1; got trials={self.trials}, "
                       f"finalists={self.finalists}, "
                       f"repeats={self.repeats}.")

  @property
  def settings(self) -> Tuple[str, ...]:
    return ("defaults",) + (("candidate",) if self.candidate else ()) + (
        "tuned",)


def parse_candidate(items: List[str]) -> Dict[str, float]:
  """["dropout=0.1", ...] -> {"dropout": 0.1}, names from SEARCH_SPACE."""
  candidate = {}
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or name not in SEARCH_SPACE:
      raise app.UsageError(f"--candidate item {item!r} is not NAME=VALUE "
                           f"with NAME one of {sorted(SEARCH_SPACE)}.")
    candidate[name] = float(value)
  return candidate


def model_rows(setup: common.Setup) -> List[Row]:
  schema = setup.schema()
  rows = {r.name: r for r in common.ladder(schema, setup.token)}
  names = setup.models or DEFAULT_MODELS
  unknown = sorted(set(names) - set(rows))
  if unknown:
    raise app.UsageError(f"--models names unknown rows {unknown}; rows: "
                         f"{sorted(rows)}")
  return [rows[n] for n in names]


# Setting names that are TrainConfig fields; the others are ModelConfig
# fields. A seed run's setting carries its epoch count; a validation run
# trains --epochs and is scored after each.
TRAIN_FIELDS = ("dense_learning_rate", "epochs")


def defaults(setup: common.Setup, row: Row) -> Dict[str, float]:
  values = {k: getattr(row.config, k) for k in SEARCH_SPACE
            if k not in TRAIN_FIELDS}
  return dict(values, dense_learning_rate=setup.dense_learning_rate)


def with_params(row: Row, params: Dict[str, float]):
  """(the row at a setting, its TrainConfig overrides)."""
  model_fields = {k: v for k, v in params.items() if k not in TRAIN_FIELDS}
  return (row._replace(config=dataclasses.replace(row.config,
                                                  **model_fields)),
          {k: v for k, v in params.items() if k in TRAIN_FIELDS})


def _count_records(paths: List[str]) -> int:
  compression = "GZIP" if paths[0].endswith(".gz") else ""
  dataset = tf.data.TFRecordDataset(paths, compression_type=compression)
  return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def splits(setup: common.Setup, validation_shards: int) -> Dict:
  """Training shards for tuning, held-out training shards for validation
  (the converters deal rows round-robin, so each shard is a random slice
  of the training rows), and the eval shards the seeds are scored on."""
  train_files = setup.files("train")
  if len(train_files) <= validation_shards:
    raise ValueError(
        f"{setup.data_dir} has {len(train_files)} training shard(s); "
        f"tuning holds out {validation_shards} for validation and needs at "
        "least one more (convert with a larger --num_shards).")
  with open(os.path.join(setup.data_dir, "stats.json")) as f:
    rows = json.load(f)["train"]["rows"]
  validation = train_files[-validation_shards:]
  validation_rows = _count_records(validation)
  return {"train": train_files[:-validation_shards],
          "validation": validation, "eval": setup.files("eval"),
          "train_rows": rows - validation_rows,
          "validation_rows": validation_rows}


def propose(history: List[Dict], number: int, budget: Budget
            ) -> Dict[str, float]:
  """Trial `number`'s setting: TPE over the finished trials, the sampler
  seeded by (tuning seed, number) so a resumed study proposes what an
  uninterrupted one would. Half the budget is random start-up trials (TPE's
  default of 10 would make a 10-trial budget a random search)."""
  sampler = optuna.samplers.TPESampler(
      seed=zlib.crc32(f"{budget.tuning_seed}/{number}".encode()),
      n_startup_trials=max(1, budget.trials // 2))
  study = optuna.create_study(direction="maximize", sampler=sampler)
  for trial in history:
    study.add_trial(optuna.trial.create_trial(
        params=trial["params"], distributions=SEARCH_SPACE,
        value=trial["value"],
        state=(optuna.trial.TrialState.COMPLETE if trial["value"] is not None
               else optuna.trial.TrialState.FAIL)))
  return study.ask(SEARCH_SPACE).params


def _write(path: str, value) -> None:
  """Whole or not at all: a killed session leaves the last good copy."""
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def _load(path: str, resume: bool, default):
  if resume and os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return default


def _per_epoch(setup: common.Setup) -> bool:
  # A decaying learning rate makes the run's length part of its schedule:
  # epoch 2 of a 5-epoch run is not a 2-epoch run.
  return (setup.epochs > 1 and not setup.train_steps
          and setup.dense_learning_rate_decay == "none")


def _curve(setup: common.Setup, model_dir: str, task: str) -> List[List]:
  """[[epochs trained, validation AUC], ...] from the run's metrics.json:
  one point per epoch with --epochs > 1, else the final evaluation."""
  with open(os.path.join(model_dir, run_dir.METRICS_FILE)) as f:
    history = json.load(f)["history"]
  if not _per_epoch(setup):
    return [[setup.epochs, history[-1]["tasks"][task]["auc"]]]
  return [[epoch, h["tasks"][task]["auc"]]
          for epoch, h in enumerate(history, 1)]


def _best_point(curve: List[List]) -> Tuple[Optional[float], Optional[int]]:
  """(best AUC, its epochs) of a curve; (None, None) when it has no
  finite point."""
  points = [(auc, epochs) for epochs, auc in curve if common.finite([auc])]
  if not points:
    return None, None
  return max(points, key=lambda p: (p[0], -p[1]))


def _mean_curve(runs: List[Dict]) -> List[List]:
  """The runs' curves averaged point by point; a point where any run has
  no AUC (it diverged) has none."""
  if any(not r["curve"] for r in runs):
    return []
  mean = []
  for points in zip(*(r["curve"] for r in runs)):
    values = [auc for _, auc in points]
    finite = len(common.finite(values)) == len(values)
    mean.append([points[0][0], float(np.mean(values)) if finite else None])
  return mean


def _trial(setup: common.Setup, row: Row, split: Dict, number,
           params: Dict[str, float], seed: int) -> Dict:
  """One validation run of a setting at a seed; its value is the best
  point of its curve, and a run that diverges scores None."""
  task = setup.schema().task_names[0]
  steps = ({} if setup.train_steps else {
      "steps_per_epoch": split["train_rows"] // setup.global_batch_size})
  tuned, overrides = with_params(row, params)
  suffix = f"trial{number:02d}" if isinstance(number, int) else number
  model_dir = os.path.join(setup.output_dir, "trials",
                           f"{row.name}_{suffix}_seed{seed}")
  print(f"=== {row.label}: trial {number} (seed {seed}) {params} ===",
        flush=True)
  start = time.time()
  curve, error = [], None
  try:
    common.run(common.train_config(
        setup, tuned, seed, model_dir,
        train_files=",".join(split["train"]),
        eval_files=",".join(split["validation"]),
        eval_every_epoch=_per_epoch(setup), **overrides, **steps))
    curve = _curve(setup, model_dir, task)
  except (callbacks_lib.NaNLossError, train.TrainingError) as e:
    error = str(e).splitlines()[0]
  value, epochs = _best_point(curve)
  if curve and value is None:
    error = "validation AUC undefined (one class)"
  return {"number": number, "seed": seed, "params": params,
          "value": value, "epochs": epochs, "curve": curve,
          "error": error, "seconds": round(time.time() - start, 1),
          "model_dir": model_dir,
          "made_with": common.provenance(setup, row)}


def tune(setup: common.Setup, budget: Budget, row: Row, split: Dict,
         log: Dict) -> Dict:
  """Runs the row's missing trials, its defaults' validation run and the
  finalists' repeats; returns the pick: the finalist and epoch count of
  the best mean validation AUC (see the module docstring)."""
  path = os.path.join(setup.output_dir, "trials.json")
  history = log["trials"].setdefault(row.name, [])
  validated = log.setdefault("defaults", {})
  repeats = log.setdefault("repeats", {}).setdefault(row.name, [])
  recorded = history + repeats + ([validated[row.name]]
                                  if row.name in validated else [])
  if not all(common.made_with(t, setup, row) for t in recorded):
    # A trial's proposal depends on every earlier trial: all run again.
    print(f"=== {row.label}: trials made with another config or run "
          "flags, tuning again ===")
    history.clear()
    repeats.clear()
    validated.pop(row.name, None)
  seed = budget.tuning_seed
  while len(history) < budget.trials:
    history.append(_trial(setup, row, split, len(history),
                          propose(history, len(history), budget), seed))
    _write(path, log)
  if row.name not in validated:
    validated[row.name] = _trial(setup, row, split, "defaults",
                                 defaults(setup, row), seed)
    _write(path, log)
  trials = sorted((t for t in history[:budget.trials]
                   if t["value"] is not None), key=lambda t: -t["value"])
  finalists = [t for t in [validated[row.name]] + trials[:budget.finalists]
               if t["value"] is not None]
  picks = []
  for finalist in finalists:
    runs = [finalist]
    for repeat_seed in range(seed + 1, seed + budget.repeats):
      runs.append(_repeat(setup, row, split, finalist, repeat_seed,
                          repeats, lambda: _write(path, log)))
    value, epochs = _best_point(_mean_curve(runs))
    if value is not None:
      picks.append({"number": finalist["number"],
                    "params": finalist["params"], "value": value,
                    "epochs": epochs})
  if not picks:
    raise RuntimeError(f"Every finalist of {row.name} failed; see {path}.")
  return max(picks, key=lambda p: p["value"])


def _repeat(setup: common.Setup, row: Row, split: Dict, finalist: Dict,
            seed: int, repeats: List[Dict], save) -> Dict:
  """The finalist's validation run at `seed`: the recorded one, else a new
  one, recorded and saved."""
  for run in repeats:
    if run["number"] == finalist["number"] and run["seed"] == seed:
      return run
  run = _trial(setup, row, split, finalist["number"], finalist["params"],
               seed)
  repeats.append(run)
  save()
  return run


def seed_runs(setup: common.Setup, row: Row, setting: str,
              params: Dict[str, float], runs: Dict) -> None:
  """Trains the missing seeds of a row at a setting on all training
  shards, evaluated on the eval split; runs made at another setting (the
  study found a new best) or row config are replaced, and a seed another
  setting already ran at the same params (tuning kept the defaults) is
  reused."""
  path = os.path.join(setup.output_dir, "runs.json")
  by_setting = runs.setdefault(row.name, {})
  done = by_setting.setdefault(setting, [])
  done[:] = [s for s in done
             if s["params"] == params and common.made_with(s, setup, row)]
  tuned, overrides = with_params(row, params)
  for seed in setup.seeds:
    if any(s["seed"] == seed for s in done):
      print(f"=== {row.label} {setting} (seed {seed}): kept ===")
      continue
    same = [s for name, other in by_setting.items() if name != setting
            for s in other if s["seed"] == seed and s["params"] == params
            and common.made_with(s, setup, row)]
    if same:
      print(f"=== {row.label} {setting} (seed {seed}): same params as a "
            "run already made ===")
      done.append(same[0])
      _write(path, runs)
      continue
    print(f"=== {row.label} {setting} (seed {seed}) ===", flush=True)
    summary = common.run(common.train_config(
        setup, tuned, seed,
        os.path.join(setup.output_dir, "runs",
                     f"{row.name}_{setting}_seed{seed}"),
        train_files=os.path.join(setup.data_dir, "train-*"),
        eval_files=os.path.join(setup.data_dir, "eval-*"), **overrides))
    done.append(dict(summary, seed=seed, params=params,
                     made_with=common.provenance(setup, row)))
    _write(path, runs)


def _finalist_name(number) -> str:
  return f"trial {number}" if isinstance(number, int) else number


def _format(name: str, value: float) -> str:
  return f"{value:.3g}" if name != "dropout" else f"{value:.2f}"


def write_results(setup: common.Setup, budget: Budget, rows: List[Row],
                  log: Dict, best: Dict[str, Dict], runs: Dict) -> None:
  """results.csv and results.md."""
  records = []
  for row in rows:
    for setting in budget.settings:
      for summary in sorted(runs[row.name][setting], key=lambda s: s["seed"]):
        if summary["seed"] not in setup.seeds:
          continue
        for task, values in summary["eval"].items():
          records.append(dict(
              model=row.name, label=row.label, setting=setting,
              seed=summary["seed"], task=task, auc=values["auc"],
              gauc=values.get("gauc"), logloss=values["logloss"],
              calibration=values["calibration"], **summary["params"]))
  with open(os.path.join(setup.output_dir, "results.csv"), "w",
            newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)

  def metric(model, setting, task, key):
    return [r[key] for r in records if r["model"] == model
            and r["setting"] == setting and r["task"] == task]

  split = log["splits"]
  lines = [
      f"Tuning: {budget.trials} trials per model, trained on "
      f"{split['train_rows']:,} rows ({len(split['train'])} training "
      f"shards), scored by validation AUC of `{log['objective_task']}` on "
      f"{split['validation_rows']:,} held-out training rows "
      f"({', '.join(os.path.basename(p) for p in split['validation'])}). "
      f"The defaults validated as one more trial. Then seeds "
      f"{', '.join(map(str, setup.seeds))} on all training rows at "
      + " and ".join(budget.settings) + ", evaluated on the eval split.",
      ""]
  others = budget.settings[1:]
  tasks = list(dict.fromkeys(r["task"] for r in records))
  for task in tasks:
    header = ["model"]
    for key in ("AUC", "GAUC"):
      header += [f"{key} defaults"] + [
          f"{key} {s} | Δ{key} {s}" for s in others]
    lines += [f"### Task `{task}` (eval split, mean ± std over seeds)", "",
              "| " + " | ".join(header) + " |",
              "|---" * (1 + 2 * (1 + 2 * len(others))) + "|"]
    for row in rows:
      cells = []
      for key in ("auc", "gauc"):
        values = [metric(row.name, s, task, key) for s in budget.settings]
        means = [np.mean(common.finite(v)) if common.finite(v)
                 else float("nan") for v in values]
        cells.append(common.mean_std(values[0]))
        for value, mean in zip(values[1:], means[1:]):
          cells += [common.mean_std(value), common.signed(mean - means[0])]
      lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines.append("")
  names = list(SEARCH_SPACE)
  lines += ["### Best setting per model", "",
            f"The finalists (the defaults and the {budget.finalists} best "
            f"trials) validated {budget.repeats} times each; the pick has "
            "the best mean validation AUC, at its best epoch count.", "",
            "| model | " + " | ".join(names) + " | epochs | mean validation "
            "AUC (finalist) | trials failed |",
            "|---|" + "---|" * (len(names) + 3)]
  for row in rows:
    pick = best[row.name]
    failed = sum(t["value"] is None for t in
                 log["trials"][row.name][:budget.trials]
                 + [log["defaults"][row.name]])
    lines.append(f"| {row.label} | " + " | ".join(
        _format(n, pick["params"][n]) for n in names)
                 + f" | {pick['epochs']} | {pick['value']:.4f} "
                 f"({_finalist_name(pick['number'])}) | {failed} |")
  lines += ["", "Defaults: " + ", ".join(
      f"{n} {_format(n, v)}" for n, v in
      defaults(setup, rows[0]).items()) + "."]
  if budget.candidate:
    lines += ["Candidate: " + ", ".join(
        f"{n} {_format(n, v)}" for n, v in budget.candidate.items())
              + " (the defaults otherwise)."]
  lines += ["Every trial: trials.json."]
  with open(os.path.join(setup.output_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _validation_runs(log: Dict) -> List[Dict]:
  """Every trial, defaults run and repeat recorded in trials.json."""
  return ([t for trials in log["trials"].values() for t in trials]
          + list(log.get("defaults", {}).values())
          + [r for repeats in log.get("repeats", {}).values()
             for r in repeats])


def study(setup: common.Setup, budget: Budget) -> None:
  """Tunes every model, runs the seeds, writes the results."""
  os.makedirs(setup.output_dir, exist_ok=True)
  rows = model_rows(setup)
  schema = setup.schema()
  # A model the schema rejects fails now, not after the others' trials.
  common.check_rows(setup, schema, rows)
  split = splits(setup, budget.validation_shards)
  space = {k: repr(v) for k, v in SEARCH_SPACE.items()}
  log = _load(os.path.join(setup.output_dir, "trials.json"), setup.resume,
              None)
  if log and any("curve" not in t for t in _validation_runs(log)):
    raise ValueError(
        f"{setup.output_dir}/trials.json was written by an older "
        "benchmarks.tuning (its validation runs have no per-epoch curve); "
        "use another --output_dir or --noresume.")
  if log and (log["splits"] != split or log["search_space"] != space):
    raise ValueError(
        f"{setup.output_dir}/trials.json was made with other splits or "
        "another search space; use another --output_dir or --noresume.")
  log = log or {"splits": split, "search_space": space,
                "objective_task": schema.task_names[0], "trials": {}}
  runs = _load(os.path.join(setup.output_dir, "runs.json"), setup.resume, {})
  best = {}
  for row in rows:
    best[row.name] = tune(setup, budget, row, split, log)
  for row in rows:
    settings = {
        "defaults": dict(defaults(setup, row), epochs=setup.epochs),
        "candidate": dict(defaults(setup, row), **budget.candidate,
                          epochs=setup.epochs),
        "tuned": dict(best[row.name]["params"],
                      epochs=best[row.name]["epochs"])}
    for setting in budget.settings:
      seed_runs(setup, row, setting, settings[setting], runs)
  write_results(setup, budget, rows, log, best, runs)
  print(open(os.path.join(setup.output_dir, "results.md")).read())


def main(argv):
  del argv
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study(common.Setup.from_flags(),
        Budget(FLAGS.trials, FLAGS.validation_shards, FLAGS.tuning_seed,
               FLAGS.finalists, FLAGS.repeats,
               parse_candidate(FLAGS.candidate)))


if __name__ == "__main__":
  common.define_flags()
  flags.DEFINE_integer("trials", Budget.trials, "Tuning trials per model.")
  flags.DEFINE_integer("validation_shards", Budget.validation_shards,
                       "Training shards held out as the validation split.")
  flags.DEFINE_integer("tuning_seed", Budget.tuning_seed, "Seed of the "
                       "tuning runs and the sampler.")
  flags.DEFINE_integer("finalists", Budget.finalists, "The best trials "
                       "validated again beside the defaults.")
  flags.DEFINE_integer("repeats", Budget.repeats, "Validation runs (seeds) "
                       "of each finalist in all; tuning picks by their "
                       "mean.")
  flags.DEFINE_list("candidate", [], "Proposed defaults seeded beside the "
                    "current ones and the tuned setting, as NAME=VALUE "
                    "items of the search space, e.g. dropout=0.1.")
  app.run(main)
