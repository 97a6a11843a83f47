"""The ablation and tuning benchmarks on tiny data: outputs well-formed,
rows as documented, checks before runs, tuning never reads the eval split."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import pytest

import rankup_tf
from benchmarks import ablation
from benchmarks import common
from benchmarks import tuning
from rankup_tf.data import synthetic
from rankup_tf import models
from tests.conftest import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKEN = common.token_shape(8, 32, 2, 8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """3000 synthetic rows, 2 training shards, tables cut to 300 rows."""
  path = str(tmp_path_factory.mktemp("ablation") / "data")
  synthetic.generate(path, rows=3000, seed=4, num_users=200, num_items=100,
                     num_shards=2)
  spec = rankup_tf.Schema.load(os.path.join(path, "schema.json")).to_dict()
  for f in spec["sparse_features"]:
    if "hash_buckets" in f:
      f["hash_buckets"] = min(f["hash_buckets"], 300)
  rankup_tf.Schema.from_dict(spec).save(os.path.join(path, "schema.json"))
  return path


def _setup(data, out, **kwargs):
  values = dict(data_dir=data, output_dir=str(out), seeds=(0,),
                train_steps=2, global_batch_size=128, token=TOKEN)
  values.update(kwargs)
  return common.Setup(**values)


def test_ablation_runner_writes_every_output(data, tmp_path):
  out = tmp_path / "out"
  # The ladder table needs a row besides RankMixer and full RankUp.
  rows = ["dnn", "rankmixer", "only_task_tokens", "full_rankup"]
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.ablation", f"--data_dir={data}",
       f"--output_dir={out}", "--seeds=0,1", f"--models={','.join(rows)}",
       "--train_steps=2", "--global_batch_size=128", "--num_tokens=8",
       "--token_dim=32", "--embedding_dim=8"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]

  with open(out / "results.csv") as f:
    records = list(csv.DictReader(f))
  assert len(records) == len(rows) * 2 * 2  # rows x seeds x tasks
  assert {r["row"] for r in records} == set(rows)
  for record in records:
    assert 0.0 <= float(record["auc"]) <= 1.0
    assert float(record["flops_per_example"]) > 0
    assert float(record["train_examples_per_sec"]) > 0
    assert 0.0 < float(record["mfu"]) < 1.0
  table = (out / "results.md").read_text()
  ladder = table[table.index("### Ladder: task `click`"):
                 table.index("### Ladder: task `conversion`")]
  for label in ("DNN", "RankMixer", "full RankUp"):
    assert f"| {label}" in ladder
  assert "task tokens alone" not in ladder
  single = table[table.index("### Each component alone on top of RankMixer: "
                             "task `click`"):]
  line = next(l for l in single.splitlines()
              if l.startswith("| RankMixer + task tokens alone |"))
  assert line.split(" | ")[4] in ("within noise", "likely gain",
                                  "likely loss", "gain", "loss")
  assert "| RankMixer | " in single and "| reference |" in single
  assert "### Cost" in table and "± " in table

  erank = json.loads((out / "erank.json").read_text())
  assert set(erank) == {"RankMixer", "full RankUp (+ pre-LN SwiGLU)"}
  for trajectory in erank.values():
    assert trajectory["points"] == ["input", "block1_mixer", "block1_ffn",
                                    "block2_mixer", "block2_ffn"]
    assert len(trajectory["per_token_erank"][0]) == 8
  for png in ("auc.png", "erank.png", "erank_normalized.png",
              "per_token_erank.png"):
    data_bytes = (out / png).read_bytes()
    assert data_bytes.startswith(PNG_MAGIC) and len(data_bytes) > 5000, png


def _component_of(field):
  owners = [c.name for c in common.COMPONENTS if field in c.fields]
  assert len(owners) == 1, field
  return owners[0]


def _components_switched(config, reference):
  """The components whose fields differ (K follows from them)."""
  differing = {f.name for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(reference, f.name)}
  return {_component_of(f) for f in differing - {"num_embedding_views"}}


def test_rows_differ_from_rankmixer_in_the_documented_components(data):
  schema = rankup_tf.Schema.load(os.path.join(data, "schema.json"))
  rankmixer = models.RankMixerConfig(**TOKEN).as_rankup()
  single = {r.name: r for r in common.single_component_rows(schema, TOKEN)}
  assert sorted(single) == sorted(f"only_{c.name}" for c in common.COMPONENTS
                                  if c.in_paper_table)
  for name, row in single.items():
    assert _components_switched(row.config, rankmixer) == {name[5:]}, name
  def views(row):  # K resolved by the model: one table per role
    return models.build_model("rankup", schema, row.config).num_embedding_views
  assert views(single["only_global_multi_embedding"]) == 2

  # Task tokens are the one component the shipped RankUp leaves off: the
  # paper's table has them, the ladder and full RankUp do not.
  shipped = [c for c in common.COMPONENTS if c.shipped]
  assert [c.name for c in common.COMPONENTS if not c.shipped] == [
      "task_tokens"]
  assert single["only_task_tokens"].config.task_tokens
  ladder = [r for r in common.ladder(schema, TOKEN) if r.model == "rankup"]
  assert [r.name for r in ladder] == [c.name for c in shipped[:-1]
                                      ] + ["full_rankup"]
  previous = rankmixer
  for row, component in zip(ladder, shipped):
    assert _components_switched(row.config, previous) == {component.name}
    previous = row.config
  by_name = {r.name: r for r in ladder}
  assert (views(by_name["crossed"]), views(by_name["sparse_crosses"])) == (
      2, 3)
  # The last step is the shipped RankUp.
  assert ladder[-1].config == models.RankUpConfig(**TOKEN)

  # Crossed pretrained token alone: the one pretrained pair, no sparse pair.
  crossed = models.build_model("rankup", schema,
                               single["only_crossed"].config)
  assert crossed.token_counts["cross"] == 1
  assert crossed.pretrained_crosses and not crossed.sparse_crosses


def test_every_row_is_checked_before_the_first_run(data, tmp_path,
                                                   monkeypatch):
  # T = 4 fits the baselines and RankMixer, not the sparse cross tokens'
  # row (global, dense and three cross tokens leave no sparse token).
  runs = []
  monkeypatch.setattr(common, "run", runs.append)
  setup = _setup(data, tmp_path, token=common.token_shape(4, 32, 2, 8))
  with pytest.raises(common.RowError, match="Row 'sparse_crosses'.*"
                     "leaves no sparse tokens"):
    ablation.ablate(setup, "both", 0.1)
  assert not runs
  assert not os.path.exists(tmp_path / "summaries.json")


def test_iso_compute_row_matches_rankmixer_cost(data, tmp_path):
  schema = rankup_tf.Schema.load(os.path.join(data, "schema.json"))
  rows, iso = ablation.plan(
      _setup(data, tmp_path, models=("iso_rankup",)), "single", 0.1)
  assert [r.name for r in rows] == ["iso_rankup"]

  def cost(name, config):
    model = models.build_model(name, schema, config)
    model.build_from_schema()
    return dict(model.parameter_counts(),
                flops=model.flops_per_example())

  reference = cost("rankmixer", models.RankMixerConfig(**TOKEN))
  resized = cost("rankup", rows[0].config)
  for key in ("flops", "dense", "embedding"):
    assert abs(resized[key] / reference[key] - 1) <= 0.1, (key, resized,
                                                           reference)
  # It is full RankUp, resized: its components are all on.
  full = common.full_rankup_row(schema, TOKEN).config
  assert rows[0].config == dataclasses.replace(full, **iso["setting"])
  assert iso["within_tolerance"] and iso["cost"]["dense"] == resized["dense"]


def test_tuning_compares_defaults_and_tuned_without_the_eval_split(
    data, tmp_path, monkeypatch):
  out = tmp_path / "tuning"
  # Two epochs: the validation runs are scored after each, and the epoch
  # count is picked with the setting.
  setup = _setup(data, out, models=("dnn",), train_steps=0, epochs=2,
                 deterministic_input=True)
  budget = tuning.Budget(trials=1, finalists=1, repeats=2,
                         candidate={"dropout": 0.1})
  tuning.study(setup, budget)

  log = json.loads((out / "trials.json").read_text())
  split = log["splits"]
  train_files = sorted(os.path.join(data, f) for f in os.listdir(data)
                       if f.startswith("train-"))
  assert split["validation"] == train_files[-1:]
  assert split["train"] == train_files[:-1]
  assert split["eval"] and not set(split["eval"]) & set(
      split["validation"] + split["train"])
  trials = log["trials"]["dnn"]
  validated = log["defaults"]["dnn"]
  repeats = log["repeats"]["dnn"]
  assert len(trials) == 1
  for name, distribution in tuning.SEARCH_SPACE.items():
    assert distribution.low <= trials[0]["params"][name] <= distribution.high
  # The defaults are validated too, and compete with the trials.
  assert validated["params"] == tuning.defaults(
      setup, tuning.model_rows(setup)[0])
  # The finalists (the defaults and the best trial) are validated again
  # at the next seed.
  assert sorted((str(r["number"]), r["seed"]) for r in repeats) == [
      ("0", 1), ("defaults", 1)]
  for run in trials + [validated] + repeats:
    with open(os.path.join(run["model_dir"], "train_config.json")) as f:
      used = json.load(f)
    assert used["train_files"] == split["train"][0]
    assert used["eval_files"] == split["validation"][0]
    assert used["eval_every_epoch"] and used["epochs"] == 2
    assert used["seed"] == run["seed"] and used["deterministic_input"]
    assert used["model_config"]["dropout"] == run["params"]["dropout"]
    assert [epochs for epochs, _ in run["curve"]] == [1, 2]
    assert run["value"] == max(auc for _, auc in run["curve"])

  # The pick: the finalist and epoch count of the best mean validation AUC.
  def mean_curve(number):
    runs = [r for r in trials + [validated] + repeats
            if r["number"] == number]
    assert len(runs) == 2
    return [(sum(r["curve"][i][1] for r in runs) / 2, i + 1)
            for i in range(2)]
  value, number, epochs = max(
      ((auc, number, epochs) for number in (0, "defaults")
       for auc, epochs in mean_curve(number)), key=lambda p: p[0])
  best = validated if number == "defaults" else trials[0]

  with open(out / "results.csv") as f:
    records = list(csv.DictReader(f))
  assert {(r["model"], r["setting"], r["seed"]) for r in records} == {
      ("dnn", "defaults", "0"), ("dnn", "candidate", "0"),
      ("dnn", "tuned", "0")}
  candidate = [r for r in records if r["setting"] == "candidate"]
  assert float(candidate[0]["dropout"]) == 0.1
  assert float(candidate[0]["dense_learning_rate"]) == (
      setup.dense_learning_rate)
  tuned = [r for r in records if r["setting"] == "tuned"]
  assert float(tuned[0]["dense_learning_rate"]) == pytest.approx(
      best["params"]["dense_learning_rate"])
  assert int(tuned[0]["epochs"]) == epochs
  # Tuning that keeps the defaults at all epochs reuses their runs.
  made_by = ("defaults" if best is validated and epochs == setup.epochs
             else "tuned")
  with open(out / "runs" / f"dnn_{made_by}_seed0" / "train_config.json"
            ) as f:
    used = json.load(f)
  assert used["eval_files"] == os.path.join(data, "eval-*")
  assert used["model_config"]["dense_l2"] == best["params"]["dense_l2"]
  assert used["epochs"] == epochs and not used["eval_every_epoch"]
  table = (out / "results.md").read_text()
  assert "| DNN | " in table and "AUC tuned" in table
  assert f"| {epochs} | {value:.4f} (" in table
  assert "AUC candidate" in table and "Candidate: dropout 0.10" in table

  # A rerun keeps every trial and run.
  monkeypatch.setattr(common, "run", lambda config: pytest.fail(
      f"reran {config.model_dir}"))
  tuning.study(setup, budget)
  assert json.loads((out / "trials.json").read_text()) == log

  # A row whose config changed since (a new field or default) is tuned
  # and run again, not reported from the old runs.
  row = tuning.model_rows(setup)[0]
  changed = row._replace(config=dataclasses.replace(row.config,
                                                    hidden_units=(16,)))
  monkeypatch.setattr(tuning, "model_rows", lambda setup: [changed])
  with pytest.raises(pytest.fail.Exception, match="reran .*dnn_trial00"):
    tuning.study(setup, budget)
  # So is a study rerun with another run flag (here the batch size).
  monkeypatch.setattr(tuning, "model_rows", lambda setup: [row])
  with pytest.raises(pytest.fail.Exception, match="reran .*dnn_trial00"):
    tuning.study(dataclasses.replace(setup, global_batch_size=64), budget)


def test_tuning_refuses_to_resume_a_study_of_the_older_format(data,
                                                              tmp_path):
  out = tmp_path / "old"
  out.mkdir()
  # Written before validation runs were scored per epoch: no curve.
  (out / "trials.json").write_text(json.dumps({
      "trials": {"dnn": [{"number": 0, "params": {}, "value": 0.7}]}}))
  setup = _setup(data, out, models=("dnn",))
  with pytest.raises(ValueError, match="older benchmarks.tuning"):
    tuning.study(setup, tuning.Budget(trials=1))


def test_tuning_pick_skips_epochs_a_repeat_did_not_score():
  # A repeat that diverged after epoch 1 leaves epoch 2 without a mean.
  runs = [{"curve": [[1, 0.70], [2, 0.74]]},
          {"curve": [[1, 0.72], [2, None]]}]
  mean = tuning._mean_curve(runs)
  assert [epochs for epochs, _ in mean] == [1, 2]
  assert mean[0][1] == pytest.approx(0.71) and mean[1][1] is None
  assert tuning._best_point(mean) == (pytest.approx(0.71), 1)
  # A run that failed before its first evaluation disqualifies the setting.
  assert tuning._best_point(tuning._mean_curve(
      runs + [{"curve": []}])) == (None, None)
  # Equal AUCs: the shorter run.
  assert tuning._best_point([[1, 0.7], [2, 0.7]]) == (0.7, 1)


def test_ablation_resume_reruns_only_rows_whose_config_or_flags_changed(
    data, tmp_path, monkeypatch):
  made = []

  def fake_run(config):
    made.append(os.path.basename(config.model_dir))
    return {"model": config.model, "eval": {}}
  monkeypatch.setattr(common, "run", fake_run)
  monkeypatch.setattr(ablation, "write_tables", lambda rows, summaries,
                      peak, out, iso: open(os.path.join(out, "results.md"),
                                           "w").close())
  monkeypatch.setattr(ablation, "write_plots", lambda *args: None)
  monkeypatch.setattr(common, "matmul_peak_flops", lambda: 1.0)
  setup = _setup(data, tmp_path, models=("dnn", "dlrm"))
  ablation.ablate(setup, "ladder", 0.1)
  assert made == ["dnn_seed0", "dlrm_seed0"]
  ablation.ablate(setup, "ladder", 0.1)
  assert made == ["dnn_seed0", "dlrm_seed0"]  # both kept
  baselines = common.baseline_rows
  monkeypatch.setattr(common, "baseline_rows", lambda emb: [
      r._replace(config=dataclasses.replace(r.config, tower_units=(4,)))
      if r.name == "dlrm" else r for r in baselines(emb)])
  ablation.ablate(setup, "ladder", 0.1)
  assert made == ["dnn_seed0", "dlrm_seed0", "dlrm_seed0"]
  # The same rows with another schedule or epoch count: every row again.
  for changed in (dict(dense_learning_rate_decay="cosine"),
                  dict(train_steps=0, epochs=2)):
    made.clear()
    ablation.ablate(dataclasses.replace(setup, **changed), "ladder", 0.1)
    assert made == ["dnn_seed0", "dlrm_seed0"]


def test_a_decaying_rate_scores_each_validation_run_at_its_end(data,
                                                               tmp_path):
  # Epoch 1 of a 2-epoch cosine run is not a 1-epoch run: the epoch count
  # is not tuned, and every run carries the schedule.
  setup = _setup(data, tmp_path, models=("dnn",), train_steps=0, epochs=2,
                 dense_learning_rate_decay="cosine")
  assert tuning._per_epoch(dataclasses.replace(
      setup, dense_learning_rate_decay="none"))
  assert not tuning._per_epoch(setup)
  row = tuning.model_rows(setup)[0]
  config = common.train_config(setup, row, 0, str(tmp_path / "run"),
                               train_files="t", eval_files="v",
                               eval_every_epoch=tuning._per_epoch(setup))
  assert config.dense_learning_rate_decay == "cosine"
  assert config.epochs == 2 and not config.eval_every_epoch
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "metrics.json").write_text(json.dumps({"history": [
      {"tasks": {"click": {"auc": 0.61}}},
      {"tasks": {"click": {"auc": 0.64}}}]}))
  assert tuning._curve(setup, str(tmp_path / "run"), "click") == [[2, 0.64]]
