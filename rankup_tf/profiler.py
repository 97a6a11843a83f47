"""Floating-point ops of a traced TensorFlow function, counted by
TensorFlow's (v1) profiler on its frozen graph."""

import contextlib
import os
import sys

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants


@contextlib.contextmanager
def _quiet_stdio():
  """Silences file descriptors 1 and 2 (C++ and Python prints) for a while."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(os.devnull, "w") as null:
    os.dup2(null.fileno(), 1)
    os.dup2(null.fileno(), 2)
    try:
      yield
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for fd in saved:
        os.close(fd)


def float_ops(concrete: tf.types.experimental.ConcreteFunction) -> int:
  """The floating-point ops of one call of `concrete`: matmuls as 2 per
  multiply-add, element-wise ops as 1 per element.

  The profiler needs a graph without variables, so the variables `concrete`
  reads are copied into constants first: trace a function that reads no
  large ones (no embedding tables).
  """
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  with _quiet_stdio():  # the v1 profiler prints warnings we cannot act on
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph,
                                            options=options)
  return int(profile.total_float_ops)
