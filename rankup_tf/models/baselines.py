"""Baselines on the same embedding stage and inputs: DCNv2, DLRM, DNN.

Each uses single embedding (one view of every sparse field), reads the same
dense and pretrained inputs, and ends in the same per-task towers as
RankMixer's readout, so comparisons change only the interaction part. The
config's `dropout` follows every MLP hidden layer and `dense_l2` covers
every kernel (MLPs, cross layers, towers), as in the token models.
"""

from typing import Dict

import tensorflow as tf
import tensorflow_recommenders as tfrs

from rankup_tf.layers import backbone
from rankup_tf.layers import heads
from rankup_tf.models import base
from rankup_tf.models import configs


def _mlp(units, config: configs.ModelConfig, name):
  return tf.keras.Sequential(
      heads.mlp_layers(units, config.dropout, config.dense_l2), name=name)


class _VectorModel(base.RankingModel):
  """Embeds, builds one vector per example, and reads it with task towers."""

  def __init__(self, schema, config, **kwargs):
    super().__init__(schema, config, **kwargs)
    self._embedding_stage([config.embedding_dim])
    self.towers = heads.TaskTowers(schema.task_names, config.tower_units,
                                   dropout=config.dropout,
                                   kernel_l2=config.dense_l2, name="towers")

  def representation(self, dense, embeddings, training) -> tf.Tensor:
    raise NotImplementedError

  def interact(self, views, dense: Dict[str, tf.Tensor], training=None
               ) -> Dict[str, tf.Tensor]:
    vector = self.representation(dense, views[0], training)
    return self.towers(vector[:, tf.newaxis], training=training)


class DCNv2Model(_VectorModel):
  """DCN-V2, stacked: x_{l+1} = x0 * (W x_l + b) + x_l, then an MLP.

  Example:

  ```python
  model = rankup_tf.models.DCNv2Model(schema, rankup_tf.models.DCNv2Config())
  ```
  """

  config_class = configs.DCNv2Config

  def __init__(self, schema, config: configs.DCNv2Config, **kwargs):
    super().__init__(schema, config, **kwargs)
    self.cross_layers = [
        tfrs.layers.dcn.Cross(
            projection_dim=config.projection_dim or None,
            kernel_regularizer=backbone.kernel_regularizer(config.dense_l2),
            name=f"cross{i + 1}")
        for i in range(config.num_cross_layers)]
    self.deep = _mlp(config.deep_units, config, "deep")

  def representation(self, dense, embeddings, training):
    x0 = x = self.flat_inputs(dense, embeddings)
    for cross in self.cross_layers:
      x = cross(x0, x)
    return self.deep(x, training=training)


class DLRMModel(_VectorModel):
  """DLRM: a bottom MLP maps dense and pretrained inputs to d dims; all
  pairwise dot products between it and the field embeddings, concatenated
  with it, go through a top MLP.

  Example:

  ```python
  model = rankup_tf.models.DLRMModel(schema, rankup_tf.models.DLRMConfig())
  ```
  """

  config_class = configs.DLRMConfig

  def __init__(self, schema, config: configs.DLRMConfig, **kwargs):
    super().__init__(schema, config, **kwargs)
    # Dropout after the hidden layers, not after the d-dim output that
    # meets the embeddings in the dot products.
    self.bottom = tf.keras.Sequential(
        heads.mlp_layers(config.bottom_units, config.dropout, config.dense_l2)
        + heads.mlp_layers([config.embedding_dim], 0.0, config.dense_l2),
        name="bottom")
    self.interaction = tfrs.layers.feature_interaction.DotInteraction(
        self_interaction=False, skip_gather=False, name="interaction")
    self.top = _mlp(config.top_units, config, "top")

  def representation(self, dense, embeddings, training):
    vector = self.dense_vector(dense)
    fields = tf.unstack(embeddings, axis=1)
    if vector is not None:
      fields = [self.bottom(vector, training=training)] + fields
    interactions = self.interaction(fields)
    return self.top(tf.concat([interactions] + fields[:1], axis=1),
                    training=training)


class DNNModel(_VectorModel):
  """A plain MLP over all inputs concatenated.

  Example:

  ```python
  model = rankup_tf.models.DNNModel(schema, rankup_tf.models.DNNConfig())
  ```
  """

  config_class = configs.DNNConfig

  def __init__(self, schema, config: configs.DNNConfig, **kwargs):
    super().__init__(schema, config, **kwargs)
    self.mlp = _mlp(config.hidden_units, config, "mlp")

  def representation(self, dense, embeddings, training):
    return self.mlp(self.flat_inputs(dense, embeddings), training=training)
