"""Configs the tf-models way: flags made from the config fields, config files,
params_override, their precedence and errors (in-process), and the real CLI
once."""

import dataclasses
import json
import os
import subprocess
import sys

from absl import flags
import pytest

import rankup_tf
from rankup_tf import models
from rankup_tf.data import synthetic
from rankup_tf.trainer import config as config_lib
from rankup_tf.trainer import flags as flags_lib
from tests.conftest import REPO

REQUIRED = ["--train_files=t", "--schema=s", "--model_dir=m"]


def _config(*args):
  """The TrainConfig of a command line, parsed in-process."""
  flag_values = flags.FlagValues()
  flags_lib.define_flags(flag_values)
  flag_values(["train", *args])
  return flags_lib.config_from_flags(flag_values)


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_flag_defaults_are_the_dataclass_defaults():
  assert _config(*REQUIRED) == config_lib.TrainConfig(
      train_files="t", schema="s", model_dir="m")


def test_every_config_field_has_its_flag():
  flag_values = flags.FlagValues()
  flags_lib.define_flags(flag_values)
  names = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
  for config_class in models.CONFIGS.values():
    names |= {f.metadata.get("flag", f.name)
              for f in dataclasses.fields(config_class)}
  names -= {"model_config"}
  assert set(flag_values) == names | {"config_file", "params_override"}


@pytest.mark.parametrize("model, field", [
    ("dnn", "hidden_units"), ("dcnv2", "deep_units"), ("dlrm", "top_units")])
def test_hidden_units_sets_each_baselines_mlp(model, field):
  config = _config(*REQUIRED, f"--model={model}", "--hidden_units=32,16")
  assert getattr(config.model_config, field) == (32, 16)


def test_model_flags_reach_the_chosen_model_only():
  config = _config(*REQUIRED, "--model=rankmixer", "--num_tokens=8",
                   "--num_cross_layers=5", "--loss_weights=click=2")
  assert config.model_config == models.RankMixerConfig(
      num_tokens=8, loss_weights={"click": 2.0})


def test_precedence_defaults_file_command_line_override(tmp_path):
  path = _write(tmp_path / "run.yaml", """
      train_files: t
      schema: s
      model_dir: m
      train_steps: 10
      epochs: 2
      seed: 1
      model_config: {dropout: 0.1, num_tokens: 8, token_dim: 32}
  """.replace("\n      ", "\n"))
  config = _config(f"--config_file={path}", "--seed=2", "--dropout=0.2",
                   "--epochs=1", "--params_override=seed=3,"
                   "model_config.num_tokens=4")
  assert (config.train_steps, config.epochs, config.seed) == (10, 1, 3)
  assert config.model_config == models.RankUpConfig(
      dropout=0.2, num_tokens=4, token_dim=32)


def test_json_files_and_yaml_overrides(tmp_path):
  path = _write(tmp_path / "run.json", json.dumps(
      {"train_files": "t", "schema": "s", "model_dir": "m", "model": "dnn",
       "model_config": {"hidden_units": [8]}}))
  config = _config(f"--config_file={path}", "--params_override="
                   "{dense_learning_rate: 1e-2, model_config: "
                   "{loss_weights: {click: 3}}}")
  assert config.model_config == models.DNNConfig(
      hidden_units=(8,), loss_weights={"click": 3.0})
  assert config.dense_learning_rate == 0.01


def test_params_override_reads_lists_globs_and_exponents():
  assert config_lib.parse_override(
      "train_files=/d/*.tfrecord,model_config.tower_units=[32,16],"
      "dense_learning_rate=1e-3,ffn=") == {
          "train_files": "/d/*.tfrecord", "dense_learning_rate": "1e-3",
          "model_config": {"tower_units": [32, 16]}, "ffn": ""}
  config = _config(*REQUIRED, "--params_override=dense_learning_rate=1e-3,"
                   "model_config.tower_units=[32,16]")
  assert (config.dense_learning_rate, config.model_config.tower_units) == (
      1e-3, (32, 16))


@pytest.mark.parametrize("text, message", [
    ("trian_steps: 5", "config file {path}: unknown key 'trian_steps' for "
     "TrainConfig"),
    ("model_config: {num_cross_layers: 2}", "config file {path}: unknown "
     "key 'model_config.num_cross_layers' for RankUpConfig (model "
     "'rankup')"),
    ("model_config: {split: hash}", "config file {path}: model_config.split "
     "'hash' is unknown; expected one of ['random', 'semantic', 'ordered']"),
    ("strategy: gpu", "strategy 'gpu' is unknown; expected one of ['auto', "
     "'mirrored', 'multi_worker', 'one_device', 'parameter_server']"),
    ("train_steps: ten", "config file {path}: train_steps must be an "
     "integer, got 'ten'"),
    ("[1, 2]", "config file {path}: expected a mapping of settings"),
])
def test_bad_config_files_are_refused_naming_key_and_file(tmp_path, text,
                                                          message):
  path = _write(tmp_path / "bad.yaml", text)
  with pytest.raises(ValueError) as error:
    _config(*REQUIRED, f"--config_file={path}")
  assert message.format(path=path) in str(error.value)


@pytest.mark.parametrize("override, message", [
    ("model_config.bogus=1", "params_override: unknown key "
     "'model_config.bogus' for RankUpConfig"),
    ("model=xgboost", "params_override: model 'xgboost' is unknown; expected "
     "one of ['dcnv2', 'dlrm', 'dnn', 'rankmixer', 'rankup']"),
    ("model_config.tower_units=[a]", "params_override: "
     "model_config.tower_units must be a list of integers"),
    ("train_steps", "params_override: 'train_steps' is not key=value"),
])
def test_bad_overrides_are_refused_naming_the_key(override, message):
  with pytest.raises(ValueError) as error:
    _config(*REQUIRED, f"--params_override={override}")
  assert message in str(error.value)


def test_a_model_switch_names_the_fields_the_new_model_lacks(tmp_path):
  path = _write(tmp_path / "run.yaml", "model_config: {num_tokens: 8}")
  with pytest.raises(ValueError, match="unknown key "
                     "'model_config.num_tokens' for DNNConfig"):
    _config(*REQUIRED, f"--config_file={path}", "--model=dnn")


@pytest.mark.parametrize("args, message", [
    (["--loss_weights=click"], "entry 'click' is not task=weight"),
    (["--loss_weights=click=x"], "entry 'click=x': 'x' is not a number"),
    (["--tower_units=64,a"], "expected integers, got ['64', 'a']"),
    (["--split=hash"], "random|semantic|ordered"),
    (["--model=xgboost"], "value should be one of"),
])
def test_bad_flag_values_fail_at_parsing(args, message):
  with pytest.raises(flags.IllegalFlagValueError) as error:
    _config(*REQUIRED, *args)
  assert message in str(error.value)


def test_missing_required_settings_are_named():
  with pytest.raises(ValueError, match="schema, model_dir not set"):
    _config("--train_files=t")


def test_token_model_fields_are_declared_once_and_passed_on():
  token = {f.name for f in dataclasses.fields(models.TokenModelConfig)}
  assert {f.name for f in dataclasses.fields(models.RankMixerConfig)} == token
  values = dict(num_tokens=8, token_dim=32, num_layers=3, ffn_expansion=2,
                dense_token=False, num_experts=4, moe_l1_penalty=0.01,
                embedding_dim=8, tower_units=(16,), loss_weights={"c": 2.0})
  rankup = models.RankMixerConfig(**values).as_rankup()
  assert {k: getattr(rankup, k) for k in values} == values
  assert (rankup.split, rankup.block, rankup.num_embedding_views) == (
      "semantic", "rankmixer", 1)


def test_the_cli_helps_trains_from_a_flagfile_and_its_config_reloads(
    tmp_path):
  """The one test of the real command line (the rest parse in-process)."""
  helped = subprocess.run([sys.executable, "-m", "trainer.train", "--help"],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert helped.returncode == 0, helped.stderr[-2000:]
  for name in ("--num_tokens", "--config_file", "--params_override",
               "--hidden_units", "--train_files"):
    assert name in helped.stdout
  data = tmp_path / "data"
  synthetic.generate(str(data), rows=600, seed=1, num_users=50,
                     num_items=40, num_shards=1, eval_fraction=0.2)
  spec = rankup_tf.Schema.load(f"{data}/schema.json").to_dict()
  for feature in spec["sparse_features"]:
    if "hash_buckets" in feature:
      feature["hash_buckets"] = min(feature["hash_buckets"], 1000)
  rankup_tf.Schema.from_dict(spec).save(f"{data}/small.json")
  args = [f"--train_files={data}/train-*", f"--schema={data}/small.json",
          f"--model_dir={tmp_path}/run", "--global_batch_size=64",
          "--train_steps=2", "--num_tokens=8", "--token_dim=16",
          "--embedding_dim=4", "--tower_units=8", "--ffn_expansion=1",
          "--loss_weights=click=2", "--dropout=0.1"]
  flagfile = _write(tmp_path / "run.flags", "\n".join(args) + "\n")
  trained = subprocess.run(
      [sys.executable, "-m", "trainer.train", f"--flagfile={flagfile}"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert trained.returncode == 0, trained.stderr[-3000:]
  saved = f"{tmp_path}/run/train_config.json"
  assert _config(f"--config_file={saved}") == _config(*args)
  bad = subprocess.run(
      [sys.executable, "-m", "trainer.train", f"--flagfile={flagfile}",
       "--params_override=model_config.split=hash"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode == 1
  assert "error: params_override: model_config.split 'hash'" in bad.stderr
  assert "Traceback" not in bad.stderr
