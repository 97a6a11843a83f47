"""What every ranking model shares: losses, metrics, steps and reports."""

from typing import Dict, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from rankup_tf import features as features_lib
from rankup_tf import profiler
from rankup_tf import schema as schema_lib
from rankup_tf.layers import embedding as embedding_lib
from rankup_tf.models import configs


class RankingModel(tfrs.Model):
  """Multi-task binary ranking on a schema; subclasses define `call`.

  `call(features)` looks up the embedding views and hands them, with the
  dense and pretrained inputs, to `interact(views, dense, training)`, the
  model's own part, which returns {task: logit [B]}. `use_xla()` compiles
  `interact` with XLA: embedding lookups and sparse optimizer updates (which
  XLA cannot compile) stay outside. Each task has a
  `tfrs.tasks.Ranking` with a summed binary cross-entropy; the loss divides
  by the *global* batch size, so gradients summed across replicas of a
  distribution strategy equal those of one replica on the whole batch.
  Layer losses (the MoE penalty, and the config's `dense_l2` kernel L2 and
  `embedding_l2` looked-up-row L2) are divided by the replica count for the
  same reason. With either L2 on or a sparse MoE, training logs
  `regularization_loss`: everything the step adds to the task losses.

  Subclasses set `self.embedding` (a MultiEmbedding): its tables are the
  `embedding_variables` a separate sparse optimizer trains.
  """

  config_class = configs.ModelConfig

  def __init__(self, schema: schema_lib.Schema, config: configs.ModelConfig,
               **kwargs):
    super().__init__(**kwargs)
    if not isinstance(config, self.config_class):
      raise TypeError(f"{self.__class__.__name__} needs a "
                      f"{self.config_class.__name__}, got "
                      f"{type(config).__name__}.")
    unknown = sorted(set(config.loss_weights) - set(schema.task_names))
    if unknown:
      raise ValueError(f"loss_weights name unknown task(s) {unknown}; the "
                       f"schema's tasks are {schema.task_names}.")
    self.schema = schema
    self.config = config
    self.loss_weights = {t: float(config.loss_weights.get(t, 1.0))
                         for t in schema.task_names}
    self.tasks = {
        t: tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name=f"{t}_auc")],
            name=f"{t}_task")
        for t in schema.task_names}
    self.loss_tracker = tf.keras.metrics.Mean(name="loss")
    # Only a model with layer losses (an L2, or a sparse MoE's imitation and
    # gate penalties) logs it, so the other models' logs stay as they were.
    self.regularization_tracker = (
        tf.keras.metrics.Mean(name="regularization_loss")
        if (config.dense_l2 or config.embedding_l2
            or getattr(config, "num_experts", 0)) else None)

  def _embedding_stage(self, view_dims, view_features=None):
    self.embedding = embedding_lib.MultiEmbedding(
        self.schema.sparse_features, view_dims, view_features,
        init_scale=self.config.embedding_init_scale,
        l2=self.config.embedding_l2, name="embedding")

  def flat_inputs(self, dense: Dict[str, tf.Tensor],
                  embeddings: tf.Tensor) -> tf.Tensor:
    """[B, M*d + dense + pretrained]: every input as one vector."""
    flat = tf.reshape(embeddings, [-1, embeddings.shape[1]
                                   * embeddings.shape[2]])
    vector = self.dense_vector(dense)
    return flat if vector is None else tf.concat([flat, vector], axis=1)

  def dense_vector(self, dense: Dict[str, tf.Tensor]) -> Optional[tf.Tensor]:
    """[B, dense fields + pretrained dims]: the dense fields and pretrained
    vectors as one vector, or None when the schema has neither."""
    parts = [dense[n][:, tf.newaxis] for n in self.schema.dense_names]
    parts += [dense[n] for n in self.schema.pretrained_names]
    return tf.concat(parts, axis=1) if parts else None

  # -- forward --------------------------------------------------------------
  def dense_inputs(self, features: Dict[str, tf.Tensor]
                   ) -> Dict[str, tf.Tensor]:
    """The dense and pretrained inputs of a feature dict."""
    return {n: features[n] for n in self.schema.dense_names
            + self.schema.pretrained_names}

  def interact(self, views, dense: Dict[str, tf.Tensor], training=None
               ) -> Dict[str, tf.Tensor]:
    """The model after the embedding lookup: views -> {task: logit}."""
    raise NotImplementedError

  def use_xla(self) -> None:
    """XLA-compiles `interact` (call after the variables exist)."""
    self._interact = tf.function(self.interact, jit_compile=True,
                                 autograph=False)

  # The forward pass and the steps are traced as written: they have no Python
  # control flow on tensors, and AutoGraph would otherwise convert the
  # source of every layer's `call` (do_not_convert disables it for the
  # calls inside too), about half of the time a model takes to trace.
  @tf.autograph.experimental.do_not_convert
  def call(self, features: Dict[str, tf.Tensor], training=None
           ) -> Dict[str, tf.Tensor]:
    views = self.embedding(features, training=training)
    interact = getattr(self, "_interact", self.interact)
    return interact(views, self.dense_inputs(features), training=training)

  def probabilities(self, features: Dict[str, tf.Tensor]
                    ) -> Dict[str, tf.Tensor]:
    """Each task's predicted probability at inference, in float32 whatever
    the precision policy (what evaluation, export and checks compare)."""
    return {task: tf.sigmoid(tf.cast(logit, tf.float32))
            for task, logit in self(features, training=False).items()}

  # -- training -------------------------------------------------------------
  @property
  def metrics(self):
    trackers = [self.loss_tracker]
    if self.regularization_tracker is not None:
      trackers.append(self.regularization_tracker)
    return trackers + [m for task in self.tasks.values()
                       for m in task.metrics]

  @property
  def embedding_variables(self):
    return self.embedding.embedding_variables

  @property
  def dense_variables(self):
    embedding_ids = {id(v) for v in self.embedding_variables}
    return [v for v in self.trainable_variables
            if id(v) not in embedding_ids]

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    """Weighted task losses, each summed and divided by the global batch."""
    features, labels = inputs
    logits = self(features, training=training)
    total = 0.0
    for name, task in self.tasks.items():
      weight = labels.get(name + schema_lib.WEIGHT_SUFFIX)
      predictions = tf.cast(logits[name], tf.float32)[:, tf.newaxis]
      per_example = task(labels=labels[name][:, tf.newaxis],
                         predictions=predictions, sample_weight=weight,
                         training=training)
      total += self.loss_weights[name] * tf.nn.compute_average_loss(
          per_example)
    return total

  def _layer_loss(self):
    if not self.losses:
      return tf.constant(0.0)
    return tf.nn.scale_regularization_loss(
        tf.add_n([tf.cast(l, tf.float32) for l in self.losses]))

  def _track_loss(self, loss, healthy=True):
    """Feeds the loss tracker this replica's mean loss, or NaN when the
    step was not healthy (CPU kernels can hide NaN weights: ReLU maps NaN
    to 0 and the sigmoid cross-entropy gives NaN logits a finite loss, so
    the loss alone may look fine)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    self.loss_tracker.update_state(
        tf.where(healthy, loss * replicas, tf.constant(float("nan"))))

  @tf.autograph.experimental.do_not_convert
  def train_step(self, inputs):
    scaling = isinstance(self.optimizer,
                         tf.keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      task_loss = self.compute_loss(inputs, training=True)
      layer_loss = self._layer_loss()
      loss = task_loss + layer_loss
      if scaling:
        loss = self.optimizer.get_scaled_loss(loss)
    gradients = tape.gradient(loss, self.trainable_variables)
    if scaling:
      # Overflowing steps are the loss scale's business: it skips them.
      gradients = self.optimizer.get_unscaled_gradients(gradients)
      healthy = tf.math.is_finite(task_loss)
    else:
      healthy = tf.math.is_finite(tf.linalg.global_norm(
          [g for g in gradients if g is not None]))
    self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    self._track_loss(task_loss, healthy)
    if self.regularization_tracker is not None:
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      self.regularization_tracker.update_state(layer_loss * replicas)
    return {m.name: m.result() for m in self.metrics}

  @tf.autograph.experimental.do_not_convert
  def test_step(self, inputs):
    self._track_loss(self.compute_loss(inputs, training=False))
    # Evaluation adds no regularization: leave its tracker out of the logs.
    return {m.name: m.result() for m in self.metrics
            if m is not self.regularization_tracker}

  # -- reports --------------------------------------------------------------
  def build_from_schema(self) -> None:
    """Creates every variable by calling the model on a placeholder batch."""
    self(features_lib.placeholder_features(self.schema, 2), training=False)

  def parameter_counts(self) -> Dict[str, int]:
    """Trainable parameters: embedding tables, the rest, and the total."""
    embedding = sum(int(tf.size(v)) for v in self.embedding_variables)
    dense = sum(int(tf.size(v)) for v in self.dense_variables)
    return {"embedding": embedding, "dense": dense, "total": embedding + dense}

  def flops_per_example(self) -> int:
    """Floating-point ops of one forward pass for one example.

    Counted by TensorFlow's profiler on the frozen inference graph at batch
    1 (matmuls as 2 per multiply-add, element-wise ops as 1 per element)
    of everything after the embedding lookups, which count 0: the graph
    takes the looked-up views as inputs, so freezing it never copies the
    embedding tables.
    """
    placeholder = features_lib.placeholder_features(self.schema, 1)
    views = self.embedding(placeholder)
    # The plain (not XLA-compiled) interaction: the profiler cannot see
    # inside an XLA cluster.
    function = tf.function(lambda views, dense: self.interact(
        views, dense, training=False), autograph=False)
    return profiler.float_ops(function.get_concrete_function(
        views, self.dense_inputs(placeholder)))

  def get_config(self):
    return {"schema": self.schema.to_dict(), "config": self.config.to_dict()}

  @classmethod
  def from_config(cls, config):
    return cls(schema_lib.Schema.from_dict(config["schema"]),
               cls.config_class.from_dict(config["config"]))
