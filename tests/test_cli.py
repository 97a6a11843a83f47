"""Command lines: console scripts, --help and the quiet start."""

import glob
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import rankup_tf  # noqa: F401
from rankup_tf import schema as schema_lib
from rankup_tf import startup
from tests.conftest import REPO

# A C++ log line (I0000 00:00:...), or absl's note that precedes them.
_CPP_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog",
                      re.MULTILINE)


def _declared_scripts():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def test_every_console_script_is_installed_and_resolves():
  declared = _declared_scripts()
  installed = {ep.name: ep for ep in
               importlib.metadata.distribution("rankup_tf").entry_points
               if ep.group == "console_scripts"}
  assert {n: ep.value for n, ep in installed.items()} == declared, (
      "stale install: run `pip install --no-deps -e .`")
  for name, entry_point in installed.items():
    assert name.startswith(startup.SCRIPT_PREFIX), name
    assert callable(entry_point.load()), name


def test_every_command_has_a_console_script():
  targets = set(_declared_scripts().values())
  for folder in ("trainer", "serving", "data"):
    for path in glob.glob(os.path.join(REPO, folder, "*.py")):
      with open(path) as f:
        if "\ndef cli_main(" in f.read():
          module = os.path.splitext(os.path.basename(path))[0]
          assert f"rankup_tf.{folder}.{module}:cli_main" in targets, path


def test_a_library_import_is_not_a_command_line():
  assert not startup.is_command_line()


def test_console_script_help_lists_its_own_flags():
  script = os.path.join(os.path.dirname(sys.executable),
                        "rankup-serving-config")
  result = subprocess.run([script, "--help"], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr
  assert "--export_base:" in result.stdout
  assert "TF Serving configuration for an export" in result.stdout
  assert not _CPP_LOG.search(result.stderr), result.stderr


def _convert(tmp_path, output, **env):
  """A tiny csv_to_tfrecord run, whose extra column is logged at INFO."""
  schema_lib.Schema.from_dict({
      "sparse_features": [{"name": "item", "dtype": "string",
                           "hash_buckets": 5}],
      "tasks": [{"name": "y"}]}).save(str(tmp_path / "schema.json"))
  (tmp_path / "in.csv").write_text("y,item,extra\n1,a,z\n0,b,z\n")
  clean = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", startup.VERBOSE_ENV)}
  result = subprocess.run(
      [sys.executable, "-m", "data.csv_to_tfrecord",
       f"--input={tmp_path}/in.csv", f"--schema={tmp_path}/schema.json",
       f"--output_dir={tmp_path}/{output}", "--num_shards=1"],
      cwd=REPO, env=dict(clean, **env), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr
  return result.stderr


def test_a_command_starts_quietly_unless_asked(tmp_path):
  quiet = _convert(tmp_path, "quiet")
  assert not _CPP_LOG.search(quiet), quiet
  assert "not converted" not in quiet
  verbose = _convert(tmp_path, "verbose", **{startup.VERBOSE_ENV: "1"})
  assert _CPP_LOG.search(verbose), verbose
  assert "columns not in the schema, not converted: ['extra']" in verbose
