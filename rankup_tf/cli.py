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
import sys

import tensorflow as tf

# What bad input and bad arguments raise; anything else is a bug and keeps
# its traceback.
INPUT_ERRORS = (ValueError, OSError, tf.errors.OpError)


def error_line(error: BaseException) -> str:
  """The one line that says what went wrong.

  TensorFlow's runtime errors carry the graph's node context and the Python
  stack that built the op after the message; the message is the line that
  names the input (an assertion's text, a parse error's record).
  """
  if isinstance(error, tf.errors.OpError):
    lines = [l.strip() for l in error.message.splitlines() if l.strip()]
    for marker in ("assertion failed:", "Name: ", "Could not parse"):
      for line in lines:
        if marker in line:
          return line[line.index(marker):] if marker == "assertion failed:" \
              else line
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
