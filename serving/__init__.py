"""Serving (export, restore, predict): Keras 2 (tf-keras) only."""

from rankup_tf import keras_compat

keras_compat.require_keras_2("rankup_tf.serving")
