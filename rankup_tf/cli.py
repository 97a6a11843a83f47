"""Command-line errors: one line `error: ...` on stderr, exit status 1.

Every command line of the project (converters, serving tools) runs its main
inside `one_line_errors()`, so bad input and bad arguments print what is
wrong instead of a traceback:

```python
def main(argv):
  with cli.one_line_errors():
    ...
```
"""

import contextlib
import re
import sys

import tensorflow as tf

# What bad input and bad arguments raise; anything else is a bug and keeps
# its traceback.
INPUT_ERRORS = (ValueError, OSError, tf.errors.OpError)

# How TensorFlow wraps a runtime error's message (graph mode, then eager).
_TF_CONTEXT = ("Graph execution error:", "Detected at node", "File ", "[[")
_ASSERTION = re.compile(r"assertion failed: \[(.*)\]$|"
                        r"Summarized data: b'(.*)'$")


def error_line(error: BaseException) -> str:
  """The one line that says what went wrong.

  TensorFlow's runtime errors wrap the message in the Python stack that
  built the failing op and the graph's node context; an assertion's text
  comes back without its "assertion failed: [...]" wrapping.
  """
  if isinstance(error, tf.errors.OpError):
    lines = [l.strip() for l in error.message.splitlines()]
    lines = [l for l in lines if l and not l.startswith(_TF_CONTEXT)]
    for line in lines:
      match = _ASSERTION.search(line)
      if match:
        return match.group(1) or match.group(2)
    return lines[0] if lines else type(error).__name__
  if isinstance(error, OSError) and error.filename and error.strerror:
    return f"{error.filename}: {error.strerror}"
  return " ".join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def one_line_errors(*extra: type):
  """Turns INPUT_ERRORS (and `extra` types) into `error: ...` and exit 1."""
  try:
    yield
  except INPUT_ERRORS + extra as e:
    print(f"error: {error_line(e)}", file=sys.stderr, flush=True)
    sys.exit(1)
