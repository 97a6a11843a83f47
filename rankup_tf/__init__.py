"""rankup_tf: RankUp ranking models for TensorFlow / Keras 2.

Importing this package selects Keras 2 (`tf-keras`), which
TensorFlow-Recommenders requires, by setting `TF_USE_LEGACY_KERAS=1` before
TensorFlow resolves `tf.keras`. Import `rankup_tf` before touching `tf.keras`.
"""

import os

_FIX = (
    "rankup_tf needs Keras 2 (tf-keras), but {problem}. Fix: set the "
    "environment variable TF_USE_LEGACY_KERAS=1 before Python starts "
    "(`export TF_USE_LEGACY_KERAS=1`), or `import rankup_tf` before the first "
    "use of `tf.keras`, and make sure tf-keras is installed "
    "(`pip install tf-keras==2.21.0`)."
)

if os.environ.get("TF_USE_LEGACY_KERAS", "1") not in ("1", "true", "True"):
    raise ImportError(
        _FIX.format(problem="TF_USE_LEGACY_KERAS is set to "
                    f"{os.environ['TF_USE_LEGACY_KERAS']!r}"))
os.environ["TF_USE_LEGACY_KERAS"] = "1"

# pylint: disable=g-import-not-at-top,wrong-import-position
from rankup_tf import startup  # noqa: E402  (imports no TensorFlow)

# A command line starts quietly (rankup_tf/startup.py); TensorFlow's start-up
# logs are settled at its first import, so the quiet start wraps this one.
with startup.quiet_start():
    import tensorflow as tf  # noqa: E402  (must follow the environment setup)

if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
    raise ImportError(
        _FIX.format(problem="TensorFlow has already bound tf.keras to Keras 3 "
                    f"({tf.keras.layers.Layer.__module__})"))

from rankup_tf import diagnostics  # noqa: E402
from rankup_tf import layers  # noqa: E402
from rankup_tf import metrics  # noqa: E402
from rankup_tf import models  # noqa: E402
from rankup_tf.input_pipeline import make_dataset  # noqa: E402
from rankup_tf.schema import Schema, SchemaError  # noqa: E402

__all__ = ["Schema", "SchemaError", "make_dataset", "layers", "metrics",
           "models", "diagnostics"]
__version__ = "0.1.0"
