"""Which Keras this process uses, for layers written once for Keras 2 and 3.

`tf.keras` is Keras 2 (`tf_keras`) when `TF_USE_LEGACY_KERAS=1` is set
before TensorFlow first resolves it, and Keras 3 (`keras`) otherwise, for
the rest of the process. The token layers (`rankup_tf.layers`) are written
against `keras` from here, which is whichever of the two `tf.keras` is, so a
Keras 3 program gets Keras 3 layers and a Keras 2 program Keras 2 layers,
and importing them never switches the process's Keras.

The TFRS-based parts (`rankup_tf.models`, the trainer, serving) need Keras 2
and call `require_keras_2` when imported: it selects Keras 2 if `tf.keras`
is not resolved yet, and otherwise says how to fix the process.

Example:

```python
from rankup_tf.keras_compat import keras

@keras.saving.register_keras_serializable("rankup_tf")
class Scale(keras.layers.Layer):
  ...
```
"""

import functools
import os

_TRUE = ("1", "true", "True")

_FIX = (
    "{what} needs Keras 2 (tf-keras), because it builds on "
    "TensorFlow-Recommenders, which is Keras 2 only, but {problem}. Fix: set "
    "the environment variable TF_USE_LEGACY_KERAS=1 before Python starts "
    "(`export TF_USE_LEGACY_KERAS=1`), or `import {what}` before the first "
    "use of `tf.keras` or `rankup_tf.layers`, and make sure tf-keras is "
    "installed (`pip install tf-keras==2.21.0`). The token layers in "
    "rankup_tf.layers (all but MultiEmbedding) also work in a Keras 3 "
    "program without this."
)


@functools.lru_cache(maxsize=None)
def _keras_of_tf():
  """The Keras package `tf.keras` is, resolving `tf.keras` if needed."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.keras.layers.Layer.__module__.startswith("tf_keras"):
    import tf_keras  # pylint: disable=g-import-not-at-top
    return tf_keras
  import keras  # pylint: disable=g-import-not-at-top
  if not keras.__version__.startswith("3."):
    raise ImportError(f"rankup_tf supports tf-keras (Keras 2) and Keras 3; "
                      f"tf.keras is keras {keras.__version__}.")
  return keras


def _is_keras_3() -> bool:
  return _keras_of_tf().__name__ == "keras"


def require_keras_2(what: str) -> None:
  """Selects Keras 2 for this process, or raises an ImportError with the fix.

  Call before anything touches `tf.keras` (at the top of a Keras 2 only
  package).

  Args:
    what: the importable name of the Keras 2 only part, for the message.
  """
  before = os.environ.get("TF_USE_LEGACY_KERAS")
  if before is not None and before not in _TRUE:
    raise ImportError(_FIX.format(
        what=what, problem=f"TF_USE_LEGACY_KERAS is set to {before!r}"))
  # TensorFlow reads this when tf.keras is first used; too late is caught
  # below.
  os.environ["TF_USE_LEGACY_KERAS"] = "1"
  if _is_keras_3():
    if before is None:
      del os.environ["TF_USE_LEGACY_KERAS"]
    raise ImportError(_FIX.format(
        what=what, problem="this process already uses Keras 3 (TensorFlow "
        "bound tf.keras to Keras 3 before)"))


def build_sublayer(layer, input_shape) -> None:
  """Builds a sublayer from its parent's `build`, under the sublayer's name.

  Keras 3 needs the parent's `build` to build its sublayers to load a
  `.keras` file; Keras 3 opens the sublayer's name scope itself, Keras 2
  only when the sublayer is called, so its weights keep the names they get
  from a call (parent/sublayer/kernel).
  """
  if _is_keras_3():
    layer.build(input_shape)
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.name_scope(layer.name):
    layer.build(input_shape)


def __getattr__(name):
  # Resolved on first use, not at import, so that `require_keras_2` can
  # still select Keras 2.
  if name == "keras":
    return _keras_of_tf()
  if name == "KERAS_3":
    return _is_keras_3()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
