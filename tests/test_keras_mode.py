"""Importing rankup_tf selects Keras 2, or says exactly how to fix it."""

import os
import subprocess
import sys

from tests.conftest import REPO


def _python(code, **env_changes):
  env = dict(os.environ)
  env.pop("TF_USE_LEGACY_KERAS", None)
  env.update(env_changes)
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_import_selects_keras_2_before_tensorflow():
  result = _python("import rankup_tf, tensorflow as tf; "
                   "print(tf.keras.layers.Layer.__module__)")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().startswith("tf_keras")


def test_keras_3_already_bound_raises_with_the_fix():
  result = _python("import tensorflow as tf; tf.keras.layers.Dense; "
                   "import rankup_tf")
  assert result.returncode != 0
  assert "ImportError" in result.stderr
  assert "TF_USE_LEGACY_KERAS=1" in result.stderr
  assert "import rankup_tf` before the first use of `tf.keras`" in \
      result.stderr


def test_conflicting_environment_value_raises():
  result = _python("import rankup_tf", TF_USE_LEGACY_KERAS="0")
  assert result.returncode != 0
  assert "TF_USE_LEGACY_KERAS is set to '0'" in result.stderr
