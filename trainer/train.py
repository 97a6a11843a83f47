r"""Trains a ranking model on TFRecords of tf.Example.

    python -m trainer.train --train_files=/tmp/data/train-* \
        --eval_files=/tmp/data/eval-* --schema=/tmp/data/schema.json \
        --model=rankup --model_dir=/tmp/run --export_dir=/tmp/export

or `--flagfile=run.flags`. One machine with several GPUs:
`--strategy=auto` (MirroredStrategy; no strategy on one device). Several
hosts: `--strategy=multi_worker` (synchronous, tables replicated) or
`--strategy=parameter_server` (tables sharded over parameter servers), with
TF_CONFIG set on every host (README); under parameter_server the same
command on a worker or ps task only serves. Without GPUs,
`--strategy=mirrored --num_logical_cpus=2` exercises MirroredStrategy.

What happens: flags -> TrainConfig (saved as model_dir/train_config.json,
with the schema as model_dir/schema.json) -> with --min_id_count or a
schema min_count, a pass counting sparse values (the frequent ones go into
the saved schema) -> a preflight read of one batch
(schema/data mismatches fail here, by name) -> model and composite optimizer
(sparse optimizer for embedding tables, dense optimizer for the rest) under
the strategy -> Keras fit with BackupAndRestore (a killed run resumes at its
last backup step), kept checkpoints, a NaN guard, TensorBoard and the
effective-rank callback, periodic evaluation with early stopping and the
best checkpoint -> whole-eval-set metrics (metrics.json) -> export of the
final (--export_best: the best) checkpoint, restored into a model outside
any strategy (so a sharded or mirrored model exports as one ordinary
SavedModel), validated in a fresh process -> a summary table.
"""

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from typing import Dict, Optional, Tuple

import rankup_tf
import tensorflow as tf

from rankup_tf import cli
from rankup_tf import diagnostics
from rankup_tf import id_counts
from rankup_tf import input_pipeline
from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib
from rankup_tf.serving import restore
from rankup_tf.trainer import callbacks as callbacks_lib
from rankup_tf.trainer import checks
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import evaluation
from rankup_tf.trainer import flags as flags_lib
from rankup_tf.trainer import optimizers
from rankup_tf.trainer import strategy as strategy_lib


class TrainingError(RuntimeError):
  """A run that cannot go on; the message says why."""


def _steps_per_data_epoch(config: config_lib.TrainConfig) -> int:
  per_epoch = config.steps_per_epoch
  if not per_epoch:
    stats_path = os.path.join(os.path.dirname(config.schema), "stats.json")
    if not tf.io.gfile.exists(stats_path):
      raise ValueError(f"Set --train_steps or --steps_per_epoch: there is "
                       f"no {stats_path} to count training rows from.")
    with tf.io.gfile.GFile(stats_path) as f:
      rows = json.load(f)["train"]["rows"]
    per_epoch = rows // config.global_batch_size
    if per_epoch < 1:
      raise ValueError(f"{stats_path} counts {rows} training rows, fewer "
                       f"than one global batch of "
                       f"{config.global_batch_size}.")
  return per_epoch


def steps_plan(config: config_lib.TrainConfig) -> Dict[str, int]:
  """Total steps and the Keras epoch length (an evaluation interval)."""
  total = config.train_steps or (_steps_per_data_epoch(config)
                                 * config.epochs)
  if config.eval_every_epoch:
    loop, setting = _steps_per_data_epoch(config), "--eval_every_epoch"
  else:
    loop = config.eval_every_n_steps or total
    setting = f"--eval_every_n_steps={loop}"
  if total % loop:
    raise ValueError(f"{total} training steps are not a whole number of "
                     f"{setting} intervals ({loop} steps).")
  return {"total": total, "loop": loop, "loops": total // loop}


def _preflight(config: config_lib.TrainConfig,
               schema: schema_lib.Schema) -> None:
  """Reads one batch of each split so a schema/data mismatch fails now,
  naming the file and feature, before any model is built."""
  for name, pattern in (("train", config.train_files),
                        ("eval", config.eval_files)):
    if not pattern:
      continue
    checks.check_dense_fields_present(pattern, schema)
    dataset = rankup_tf.make_dataset(
        pattern, schema, batch_size=8, shuffle=False, deterministic=True,
        drop_remainder=False,
        bad_records=(input_pipeline.BadRecordCounter()
                     if config.skip_bad_records else None))
    try:
      next(iter(dataset))
    except tf.errors.OpError as e:
      raise TrainingError(f"The {name} data does not match the schema "
                          f"{config.schema}: {cli.error_line(e)}") from None


def _frequent_values(config: config_lib.TrainConfig,
                     schema: schema_lib.Schema) -> schema_lib.Schema:
  """The schema with the frequent values of every field that maps rare ids
  to its OOV row (`rankup_tf.id_counts`); the schema itself when none does.
  Saved as model_dir/schema.json, it carries the mapping into the export."""
  try:
    schema, report = id_counts.with_frequent_values(
        schema, config.train_files, config.min_id_count,
        config.skip_bad_records)
  except tf.errors.OpError as e:
    raise TrainingError(f"Counting the sparse values of the train data "
                        f"failed: {cli.error_line(e)}") from None
  for name, r in report.items():
    print(f"min_count {r['min_count']} on {name}: {r['kept']:,} of "
          f"{r['distinct']:,} values kept; {r['rare_share']:.1%} of its "
          "training values map to the OOV row.", flush=True)
  return schema


def _write_run_files(config: config_lib.TrainConfig,
                     schema: schema_lib.Schema) -> None:
  tf.io.gfile.makedirs(config.model_dir)
  config.save()
  schema.save(os.path.join(config.model_dir, run_dir.SCHEMA_FILE))


def _validate_export(path: str, config: config_lib.TrainConfig,
                     checkpoint: str) -> None:
  """serving.validate in a fresh process, against `checkpoint` ('': the
  latest); raises if it fails."""
  examples = config.eval_files or config.train_files
  result = subprocess.run(
      [sys.executable, "-m", "serving.validate", f"--export_dir={path}",
       f"--model_dir={config.model_dir}", f"--checkpoint={checkpoint}",
       f"--examples={examples}"],
      capture_output=True, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if result.returncode != 0:
    raise TrainingError(f"Export {path} failed validation:\n"
                        f"{result.stdout}{result.stderr[-3000:]}")
  print(result.stdout.strip(), flush=True)


@contextlib.contextmanager
def _precision(policy: str):
  """Keras' global dtype policy for the models built inside."""
  tf.keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")


def _check_same_predictions(trained, final_model, config, schema) -> None:
  """The checkpoint restored outside the strategy predicts what the trained
  model (holding the same checkpoint's weights) does (catches a checkpoint
  that missed or mangled a sharded table)."""
  features, _ = next(iter(rankup_tf.make_dataset(
      config.eval_files or config.train_files, schema, 64, shuffle=False,
      deterministic=True, drop_remainder=False,
      bad_records=(input_pipeline.BadRecordCounter()
                   if config.skip_bad_records else None))))
  expected = trained.probabilities(features)
  actual = final_model.probabilities(features)
  # A mixed-precision model computed in 16 bits (bfloat16 keeps 8
  # significant bits); the restored one computes in float32.
  tolerance = 1e-4 if config.precision == "float32" else 2e-2
  for task in schema.task_names:
    difference = float(tf.reduce_max(tf.abs(expected[task]
                                            - actual[task])))
    if not difference <= tolerance:
      raise TrainingError(
          f"The checkpoint restored outside the strategy predicts "
          f"{task} up to {difference} away from the trained model.")


def _shard_layout(model) -> Dict:
  """{table: [[rows, dim, device] per shard]} of the embedding tables (one
  shard each unless ParameterServerStrategy cut them)."""
  return {name: [[int(part.shape[0]), int(part.shape[1]), part.device]
                 for part in getattr(table, "variables", [table])]
          for name, table in model.embedding.tables.items()}


def _summary(config, model, strategy, steps, throughput, wall_seconds,
             eval_result, export_path) -> Dict:
  counts = model.parameter_counts()
  summary = {
      "model": config.model, "steps": steps,
      "steps_run_by_this_process": throughput.batches,
      "global_batch_size": config.global_batch_size,
      "replicas": strategy.num_replicas_in_sync,
      "parameters": counts, "flops_per_example": model.flops_per_example(),
      "wall_seconds": round(wall_seconds, 1),
      "train_examples_per_sec": (round(throughput.rate, 1)
                                 if throughput.seconds else None),
      "eval": eval_result["tasks"] if eval_result else None,
      "export": export_path,
  }
  rows = [("model", config.model), ("steps", steps),
          ("replicas", summary["replicas"]),
          ("params (embedding / dense)",
           f"{counts['embedding']:,} / {counts['dense']:,}"),
          ("FLOPs per example (forward)",
           f"{summary['flops_per_example']:,}"),
          ("wall time", f"{wall_seconds:.1f} s"),
          ("train examples/s", f"{throughput.rate:,.0f}"
           if throughput.seconds else "-")]
  for task, values in (summary["eval"] or {}).items():
    rows.append((f"{task} AUC / GAUC / logloss / calibration",
                 " / ".join(f"{values[k]:.4f}" if k in values else "-"
                            for k in ("auc", "gauc", "logloss",
                                      "calibration"))))
  if export_path:
    rows.append(("export", export_path))
  width = max(len(r[0]) for r in rows)
  print("\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows),
        flush=True)
  return summary


def _finished_step(config: config_lib.TrainConfig, plan: Dict[str, int],
                   checkpoint_dir: str) -> Optional[int]:
  """The step a finished run in model_dir ended at, if its final checkpoint
  is there: the planned total, or the step early stopping ended it at."""
  steps = [plan["total"]]
  if config.early_stopping_patience:
    stopped = evaluation.early_stopped_step(config.model_dir)
    if stopped is not None:
      steps.append(stopped)
  for step in steps:
    if tf.io.gfile.exists(os.path.join(checkpoint_dir,
                                       f"ckpt-{step}.index")):
      return step
  return None


def _best_checkpoint(evaluator: evaluation.Evaluator) -> Tuple[str, Dict]:
  """The best evaluation's checkpoint path and that evaluation."""
  best = evaluator.best
  if best.step is None:
    raise TrainingError(f"export_best: no evaluation had a finite "
                        f"{best.name}; there is no best checkpoint.")
  path = evaluator.best_checkpoints.path(best.step)
  if not tf.io.gfile.exists(path + ".index"):
    raise TrainingError(f"export_best: the best checkpoint {path} (step "
                        f"{best.step}) is missing.")
  return path, next(h for h in evaluator.history if h["step"] == best.step)


def run(config: config_lib.TrainConfig,
        strategy: Optional[tf.distribute.Strategy] = None) -> Dict:
  """Trains, evaluates and exports as `config` says; returns the summary."""
  strategy = strategy or strategy_lib.make_strategy(
      config.strategy, config.ps_min_shard_bytes, config.ps_max_shards)
  chief = strategy_lib.is_chief(strategy)
  parameter_server = strategy_lib.is_parameter_server(strategy)
  tf.keras.utils.set_random_seed(config.seed)
  schema = schema_lib.Schema.load(config.schema)
  plan = steps_plan(config)
  best_task, best_metric = evaluation.selection_metric(
      config.early_stopping_metric, schema)
  if ((config.early_stopping_patience or config.export_best)
      and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
    raise ValueError("early_stopping_patience and export_best are not "
                     "supported under MultiWorkerMirroredStrategy: only the "
                     "chief evaluates, and stopping or saving the best would "
                     "need every worker.")
  schema = _frequent_values(config, schema)
  _preflight(config, schema)
  if chief:
    _write_run_files(config, schema)
  # Non-chief workers write their (required) copies to scratch folders.
  work_dir = (config.model_dir if chief else os.path.join(
      config.model_dir, run_dir.WORKERS_DIR,
      strategy_lib.task_name(strategy)))
  with _precision(config.precision), strategy.scope():
    model = models.build_model(config.model, schema, config.model_config)
    model.build_from_schema()
    if config.jit_compile:
      model.use_xla()
    model.compile(optimizer=optimizers.make_optimizer(config, model,
                                                      plan["total"]))

  bad_records = (input_pipeline.BadRecordCounter()
                 if config.skip_bad_records else None)
  def dataset_fn(context):
    return rankup_tf.make_dataset(
        config.train_files, schema,
        context.get_per_replica_batch_size(config.global_batch_size),
        repeat=True, input_context=context, seed=config.seed,
        deterministic=config.deterministic_input, bad_records=bad_records)

  checkpoint_dir = os.path.join(work_dir, run_dir.CHECKPOINT_DIR)
  backup_dir = os.path.join(config.model_dir, run_dir.BACKUP_DIR)
  callbacks, throughput = callbacks_lib.fault_tolerance(
      backup_dir, checkpoint_dir, config.checkpoint_every_n_steps,
      config.keep_checkpoints, config.global_batch_size,
      per_epoch=parameter_server)
  if parameter_server:
    # Keras epochs end on every checkpoint and evaluation step.
    train_data = tf.keras.utils.experimental.DatasetCreator(dataset_fn)
    epoch_steps = math.gcd(plan["loop"], config.checkpoint_every_n_steps)
  else:
    train_data = strategy.distribute_datasets_from_function(dataset_fn)
    epoch_steps = plan["loop"]
  evaluator = None
  if chief:
    log_dir = os.path.join(config.model_dir, run_dir.LOG_DIR)
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir,
                                                    update_freq=100))
    if config.eval_files:
      # Under parameter_server a backup ends every Keras epoch.
      best_checkpoints = (evaluation.BestCheckpoints(
          model, config.model_dir,
          epoch_steps if parameter_server
          else config.checkpoint_every_n_steps)
                          if config.export_best else None)
      evaluator = evaluation.Evaluator(
          model, config.eval_files, config.global_batch_size,
          config.model_dir, log_dir,
          best=evaluation.BestEvaluation(best_task, best_metric,
                                         config.early_stopping_patience),
          best_checkpoints=best_checkpoints)
      if config.eval_every_n_steps or config.eval_every_epoch:
        callbacks.append(callbacks_lib.PeriodicEvaluation(evaluator,
                                                          plan["loop"]))
    if config.erank_every_n_steps and hasattr(model, "token_states"):
      probe, _ = next(iter(rankup_tf.make_dataset(
          config.eval_files or config.train_files, schema, 256,
          shuffle=False, deterministic=True)))
      callbacks.append(diagnostics.EffectiveRankCallback(
          probe, config.erank_every_n_steps, config.model_dir, log_dir))

  finished = _finished_step(config, plan, checkpoint_dir)
  start = time.time()
  if finished is not None:
    # A rerun of a finished run (its export failed or was killed): the
    # backup is gone but the final checkpoint is not; evaluate and export
    # that instead of training again from step 0.
    final_checkpoint = os.path.join(checkpoint_dir, f"ckpt-{finished}")
    print(f"Training already finished: {final_checkpoint}; evaluating and "
          "exporting it.", flush=True)
    tf.train.Checkpoint(model=model).restore(final_checkpoint
                                             ).expect_partial()
    if evaluator is not None:
      evaluator.resume(finished)
  else:
    # The progress bar on a terminal; one line per epoch in logs.
    model.fit(train_data, epochs=plan["total"] // epoch_steps,
              steps_per_epoch=epoch_steps, callbacks=callbacks,
              verbose=1 if chief and sys.stdout.isatty() else 2)
  wall = time.time() - start
  if bad_records is not None:
    print(f"bad input skipped: {bad_records.result()}", flush=True)
  # Fewer than planned when early stopping ended the run.
  final_step = int(model.optimizer.iterations.numpy())

  eval_result = None
  if evaluator is not None:
    eval_result = (evaluator.history[-1] if evaluator.history
                   and evaluator.history[-1]["step"] == final_step
                   else evaluator(final_step))
  if not chief:
    return {"model": config.model, "steps": final_step, "chief": False}
  checkpoint, exported_step = "", final_step  # "": the latest, the final
  if config.export_best:
    checkpoint, eval_result = _best_checkpoint(evaluator)
    exported_step = eval_result["step"]
    # The trained model gets the best weights too, for the check below.
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
  # The exported checkpoint in a model outside any strategy: one ordinary
  # model whatever the strategy (sharded tables gathered). In float32
  # whatever the training precision: serving CPUs may lack fast 16-bit
  # matmuls, and the weights are float32 anyway.
  final_model, _ = restore.model_from_model_dir(config.model_dir, checkpoint)
  _check_same_predictions(model, final_model, config, schema)
  export_path = None
  if config.export_dir:
    # Validated in a fresh process before it gets its version number.
    export_path = export_lib.export_saved_model(
        final_model, schema, config.export_dir, config.model_name,
        input_pipeline.read_examples(config.eval_files or config.train_files,
                                     8),
        validate=lambda path: _validate_export(path, config, checkpoint))
  if evaluator is not None:
    evaluator.fields["exported_step"] = exported_step if export_path else None
    evaluator.write()
  summary = _summary(config, final_model, strategy, final_step, throughput,
                     wall, eval_result, export_path)
  summary["exported_step"] = exported_step if export_path else None
  summary["embedding_shards"] = _shard_layout(model)
  with tf.io.gfile.GFile(os.path.join(config.model_dir, run_dir.SUMMARY_FILE),
                         "w") as f:
    json.dump(evaluation.finite_or_none(summary), f, indent=2,
              allow_nan=False)
  return summary


def main(argv):
  del argv
  with cli.one_line_errors(TrainingError, callbacks_lib.NaNLossError):
    config = flags_lib.config_from_flags()
    if (config.strategy == "parameter_server"
        and strategy_lib.server_task()):
      strategy_lib.serve_forever()
    strategy_lib.configure_logical_cpus(config.num_logical_cpus)
    run(config)


def cli_main():
  """Defines the trainer's flags and trains: `python -m trainer.train` and
  the `rankup-train` script.

  Example (shell):

      rankup-train --flagfile=run.flags --params_override=train_steps=10
  """
  cli.run(main, flags_lib.define_flags)


if __name__ == "__main__":
  cli_main()
