"""Which Keras each part of rankup_tf uses, and the fixes it names.

`import rankup_tf` picks no Keras; `rankup_tf.layers` follows `tf.keras`;
the Keras 2 only parts select Keras 2 or raise an ImportError with the fix.
"""

import json
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


_KERAS_3_PROCESS = r"""
import json
import rankup_tf
from rankup_tf import layers
import tensorflow as tf

report = {"tf_keras": tf.keras.layers.Layer.__module__,
          "layer_base": layers.RankUpBlock.__mro__[2].__module__}
attempts = {
    "dcn": lambda: layers.GlobalToken(8, func="dcn"),
    "multi_embedding": lambda: layers.MultiEmbedding([], [8]),
    "models": lambda: __import__("rankup_tf.models"),
    "trainer": lambda: __import__("rankup_tf.trainer"),
}
for name, attempt in attempts.items():
  try:
    attempt()
    report[name] = "no error"
  except Exception as e:  # pylint: disable=broad-except
    report[name] = f"{type(e).__name__}: {e}"
print(json.dumps(report))
"""


def test_layers_follow_keras_3_and_keras_2_parts_refuse_with_the_fix():
  result = _python(_KERAS_3_PROCESS)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["tf_keras"].startswith("keras."), report
  assert report["layer_base"].startswith("keras."), report
  assert report["dcn"].startswith("ValueError: GlobalToken(func='dcn')")
  assert "Use func='mlp', 'fm' or 'fwfm'" in report["dcn"]
  assert report["multi_embedding"].startswith(
      "NotImplementedError: MultiEmbedding is Keras 2 (tf-keras) only")
  for part in ("models", "trainer"):
    message = report[part]
    assert message.startswith(
        f"ImportError: rankup_tf.{part} needs Keras 2 (tf-keras)"), message
    assert "already uses Keras 3" in message
    assert "TF_USE_LEGACY_KERAS=1" in message
    assert (f"`import rankup_tf.{part}` before the first use of `tf.keras`"
            in message)


def test_importing_models_first_selects_keras_2_for_everything():
  result = _python("import rankup_tf.models, tensorflow as tf; "
                   "from rankup_tf import layers; "
                   "print(tf.keras.layers.Layer.__module__, "
                   "layers.RankUpBlock.__mro__[2].__module__)")
  assert result.returncode == 0, result.stderr
  tf_keras, layer_base = result.stdout.split()
  assert tf_keras.startswith("tf_keras") and layer_base.startswith("tf_keras")


def test_conflicting_environment_value_raises():
  result = _python("import rankup_tf.models", TF_USE_LEGACY_KERAS="0")
  assert result.returncode != 0
  assert "TF_USE_LEGACY_KERAS is set to '0'" in result.stderr
