"""A quiet start for the project's command lines.

TensorFlow 2.21 writes its C++ start-up lines (oneDNN, cudart_stub, "Could
not find cuda drivers", absl's "before absl::InitializeLog()" warning) while
it is imported, before it honours TF_CPP_MIN_LOG_LEVEL, then CUDA errors on
the first op of a machine without GPU; absl's app.run then logs at INFO.
In a command line, and only there, `quiet_start()` around TensorFlow's first
import turns that off:

* TF_CPP_MIN_LOG_LEVEL defaults to 3 (a value you set is kept);
* while TensorFlow loads, what it writes to stderr is held back (and shown
  if the import fails), unless TF_CPP_MIN_LOG_LEVEL is 0;
* absl logs warnings and errors only, unless --verbosity is given.

`RANKUP_TF_VERBOSE=1` restores all of it. A program that imports rankup_tf
as a library is left alone. This module imports nothing of TensorFlow.
"""

import contextlib
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

VERBOSE_ENV = "RANKUP_TF_VERBOSE"
# The console scripts (pyproject.toml's [project.scripts]) share this prefix.
SCRIPT_PREFIX = "rankup-"
# The card's folders, imported under these names by `python -m trainer.train`
# (and the like) in a checkout; the code imports them as rankup_tf.trainer.
_FOLDERS = ("trainer", "serving", "data")


def is_command_line() -> bool:
  """Whether this process runs one of the project's command lines."""
  if os.path.basename(sys.argv[0] if sys.argv else "").startswith(
      SCRIPT_PREFIX):
    return True
  root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
  return any(
      os.path.realpath(getattr(sys.modules.get(name), "__file__", None) or "")
      == os.path.join(root, name, "__init__.py") for name in _FOLDERS)


@contextlib.contextmanager
def quiet_start():
  """Wraps TensorFlow's first import: quiet in a command line (see above)."""
  if not is_command_line() or os.environ.get(VERBOSE_ENV, "0") != "0":
    yield
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  app.call_after_init(_warnings_only)
  if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("", "0"):  # asked for INFO lines
    yield
    return
  with _stderr_held():
    yield


def _warnings_only() -> None:
  # app.run raises absl's log to INFO once it has parsed the flags.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def _stderr_held():
  """Sends file descriptor 2 (C++ logs included) to a temporary file, and
  writes that file to stderr if the body raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  failed = True
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
      failed = False
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if failed:
        held.seek(0)
        os.write(2, held.read())
