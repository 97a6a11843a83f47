"""The benchmarks: Keras 2 (tf-keras) only, like rankup_tf.models."""

from rankup_tf import keras_compat

keras_compat.require_keras_2("benchmarks")
