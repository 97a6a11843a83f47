"""The card's serving/ folder, installed as rankup_tf.serving: Keras 2 (tf-keras)
only, like rankup_tf.models."""

from rankup_tf import keras_compat
from rankup_tf import startup

# A command line (`python -m serving.<module>` in a checkout, or its rankup-*
# script) imports TensorFlow first here: quietly (rankup_tf/startup.py).
with startup.quiet_start():
  keras_compat.require_keras_2("rankup_tf.serving")
