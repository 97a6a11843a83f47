"""rankup_tf: RankUp ranking models and token layers for TensorFlow / Keras.

Importing this package does not choose a Keras: its parts load on first use
(`rankup_tf.layers`, `rankup_tf.models`, ...), and each follows its own rule
(`rankup_tf.keras_compat` has the details):

* `rankup_tf.layers`: the token layers use whichever Keras `tf.keras` is,
  Keras 3 or Keras 2 (`TF_USE_LEGACY_KERAS=1`), without changing it (all
  but `MultiEmbedding`, which is Keras 2 only);
* `rankup_tf.models`, `rankup_tf.trainer`, `rankup_tf.serving`: built on
  TensorFlow-Recommenders, Keras 2 only. Importing them selects Keras 2 if
  `tf.keras` is still unresolved, and otherwise raises an ImportError that
  says how to fix the process;
* `Schema`, `make_dataset`, `metrics`, `diagnostics`: either Keras.
"""

import importlib
import os

# In a source tree without an install (Bazel's runfiles, PYTHONPATH=repo)
# the folders trainer/, serving/ and data/ beside this package are its
# subpackages rankup_tf.trainer, ... as an install maps them (pyproject's
# package-dir). The tree's other folders (benchmarks, tests) become
# importable under rankup_tf too, harmlessly; an installed package finds
# its own copies first and has no such neighbours.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_SOURCE_ROOT, "trainer", "train.py")):
  __path__.append(_SOURCE_ROOT)

_LAZY = {
    "Schema": ("rankup_tf.schema", "Schema"),
    "SchemaError": ("rankup_tf.schema", "SchemaError"),
    "make_dataset": ("rankup_tf.input_pipeline", "make_dataset"),
    "layers": ("rankup_tf.layers", None),
    "metrics": ("rankup_tf.metrics", None),
    "models": ("rankup_tf.models", None),
    "diagnostics": ("rankup_tf.diagnostics", None),
}

__all__ = ["Schema", "SchemaError", "make_dataset", "layers", "metrics",
           "models", "diagnostics"]
__version__ = "0.1.0"


def __getattr__(name):
  # PEP 562: a part is imported when first used, so `import rankup_tf`
  # alone fixes no Keras for the process.
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attribute is None else getattr(module, attribute)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
