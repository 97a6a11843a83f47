"""The card's data/ folder, installed as rankup_tf.data."""

from rankup_tf import startup

# A command line (`python -m data.<module>` in a checkout, or its rankup-*
# script) imports TensorFlow first here: quietly (rankup_tf/startup.py).
with startup.quiet_start():
  import tensorflow  # noqa: F401  pylint: disable=unused-import
