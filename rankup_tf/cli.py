"""Command lines: how they run, and one-line errors.

Every command line of the project (converters, serving tools) runs under
`run()` (its `cli_main()`, the console script's entry point) and runs its
main inside `one_line_errors()`, so bad input and bad arguments print one
line `error: ...` on stderr and exit 1 instead of a traceback:

```python
def main(argv):
  with cli.one_line_errors():
    ...

def cli_main():
  cli.run(main, define_flags)
```
"""

import contextlib
import itertools
import re
import sys
from typing import Any, Callable, List

from absl import app
from absl import flags
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


# absl's help flags (the short name of --help is -?).
_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")


def run(main: Callable[[List[str]], Any],
        define_flags: Callable[[], None]) -> None:
  """Defines a command's flags and runs `main` under absl's app.run.

  `--help` lists the flags `define_flags` defines and exits 0, also when a
  console script runs the command: absl describes the main module, which is
  then the script, not the command's module.
  """
  before = set(flags.FLAGS)
  define_flags()
  for name in set(flags.FLAGS) - before:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  main_module = sys.modules["__main__"]
  if not main_module.__doc__:  # a console script: help shows the command's
    main_module.__doc__ = sys.modules[main.__module__].__doc__
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv: List[str]) -> List[str]:
  """absl's parser, except that a help flag comes first and exits 0 (absl
  exits 1, and only after parsing the flags before it)."""
  for arg in itertools.takewhile(lambda a: a != "--", argv[1:]):
    if arg.startswith("-") and arg.lstrip("-") in _HELP_FLAGS:
      try:
        app.parse_flags_with_usage(argv[:1] + [arg])  # prints, exits 1
      except SystemExit:
        sys.exit(0)
  return app.parse_flags_with_usage(argv)
