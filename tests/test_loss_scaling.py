"""Global-batch loss scaling: `tf.nn.compute_average_loss` and
`tf.nn.scale_regularization_loss` give the loss and gradients of the
hand-written scaling they replaced, alone and under MirroredStrategy."""

import numpy as np
import pytest
import tensorflow as tf

from rankup_tf import models
from rankup_tf import schema as schema_lib

# Layer losses too: the MoE penalty and both L2 terms.
CONFIG = models.RankUpConfig(
    num_tokens=8, token_dim=32, global_token_func="fm", num_experts=2,
    split="ordered", embedding_dim=4, tower_units=(8,), dense_l2=1e-3,
    embedding_l2=1e-3, loss_weights={"buy": 0.5})


def _hand_scaled_loss(model, inputs):
  """The scaling before the library: summed weighted cross-entropies over
  the replica batch times the replica count, layer losses over the replica
  count."""
  features, labels = inputs
  logits = model(features, training=True)
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  batch = tf.shape(logits["click"])[0]
  global_batch = tf.cast(batch * replicas, tf.float32)
  summed = tf.keras.losses.BinaryCrossentropy(
      from_logits=True, reduction=tf.keras.losses.Reduction.SUM)
  total = 0.0
  for name in model.schema.task_names:
    total += model.loss_weights[name] * summed(
        labels[name][:, tf.newaxis],
        tf.cast(logits[name], tf.float32)[:, tf.newaxis],
        sample_weight=labels.get(name + schema_lib.WEIGHT_SUFFIX))
  layer_loss = tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
  return total / tf.maximum(global_batch, 1.0) + layer_loss / replicas


def _losses_and_gradients(model, inputs):
  """(library loss, hand loss, their gradients) on one replica's batch."""
  with tf.GradientTape(persistent=True) as tape:
    library = (model.compute_loss(inputs, training=True)
               + model._layer_loss())  # pylint: disable=protected-access
    hand = _hand_scaled_loss(model, inputs)
  variables = model.trainable_variables
  library_grads, hand_grads = (
      [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
      for loss in (library, hand))
  return library, hand, library_grads, hand_grads


def _model(schema):
  tf.keras.utils.set_random_seed(0)
  model = models.build_model("rankup", schema, CONFIG)
  model.build_from_schema()
  return model


@pytest.mark.parametrize("rows", [16, 12])
def test_library_scaling_equals_the_hand_scaling(schema, batch, rows):
  """Bit for bit at a power-of-two batch (every trainer batch size); at
  12 rows dividing each task's sum may round apart by an ulp (measured:
  equal too)."""
  inputs = tf.nest.map_structure(lambda t: t[:rows], batch)
  library, hand, library_grads, hand_grads = _losses_and_gradients(
      _model(schema), inputs)
  if rows == 16:
    assert library.numpy() == hand.numpy()
    for a, b in zip(library_grads, hand_grads):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  else:
    np.testing.assert_allclose(library.numpy(), hand.numpy(), rtol=1.2e-7)
    for a, b in zip(library_grads, hand_grads):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9)


def test_library_scaling_equals_the_hand_scaling_under_mirrored(
    schema, batch, mirrored_strategy):
  """On each replica (8 of the 16 rows) bit for bit."""
  strategy = mirrored_strategy
  with strategy.scope():
    model = _model(schema)
  inputs = next(iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).unbatch().batch(16))))
  library, hand, library_grads, hand_grads = strategy.run(
      lambda x: _losses_and_gradients(model, x), args=(inputs,))
  local = strategy.experimental_local_results
  assert len(local(library)) == 2
  for replica in range(2):
    assert local(library)[replica].numpy() == local(hand)[replica].numpy()
    for a, b in zip(library_grads, hand_grads):
      np.testing.assert_array_equal(local(a)[replica].numpy(),
                                    local(b)[replica].numpy())
