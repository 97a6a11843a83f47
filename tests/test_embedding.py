"""MultiEmbedding: lookup values, and sparse reads and updates under a
distribution strategy (the cost of a step must not grow with the table)."""

import numpy as np
import pytest
import tensorflow as tf

from rankup_tf import layers
from rankup_tf import schema as schema_lib


def _fields():
  return [schema_lib.SparseFeature("user", hash_buckets=50),
          schema_lib.SparseFeature("tags", hash_buckets=20, multivalent=True,
                                   max_length=4, combiner="sum"),
          schema_lib.SparseFeature("item", hash_buckets=30),
          schema_lib.SparseFeature("topics", hash_buckets=10,
                                   multivalent=True, max_length=3,
                                   combiner="sqrtn"),
          schema_lib.SparseFeature("city", hash_buckets=7, multivalent=True,
                                   max_length=2, combiner="mean")]


def _inputs():
  return {"user": tf.constant([3, 49, 0], tf.int64),
          "item": tf.constant([1, 2, 29], tf.int64),
          "tags": tf.ragged.constant([[1, 5, 5], [], [19]], tf.int64),
          "topics": tf.ragged.constant([[2, 3], [9], [0, 1, 4]], tf.int64),
          "city": tf.ragged.constant([[1, 6], [2], []], tf.int64)}


def _expected(embed, view, inputs):
  """Per field: its own rows of the view's tables, pooled by hand."""
  by_name = {f.name: f for f in embed.features}
  tables = {name: table.numpy() for name, table in embed.tables.items()}
  columns = []
  for name in embed.view_features[view]:
    field = by_name[name]
    stack = next(s for s in embed._stacks  # pylint: disable=protected-access
                 if view in s.views and name in s.fields)
    column = stack.views.index(view) * stack.dim
    table = tables[stack.name][stack.offsets[stack.fields.index(name)]:,
                               column:column + stack.dim]
    if not field.multivalent:
      columns.append(table[inputs[name].numpy()])
      continue
    pooled = []
    for ids in inputs[name].to_list():
      rows = table[ids].sum(axis=0) if ids else np.zeros(table.shape[1])
      if ids and field.combiner == "mean":
        rows = rows / len(ids)
      if ids and field.combiner == "sqrtn":
        rows = rows / np.sqrt(len(ids))
      pooled.append(rows)
    columns.append(np.stack(pooled))
  return np.stack(columns, axis=1)


def test_each_field_reads_its_own_rows_pooled_by_its_combiner():
  view_features = [["user", "tags", "item", "topics", "city"],
                   ["city", "item", "user"]]
  embed = layers.MultiEmbedding(_fields(), [4, 3], view_features)
  inputs = _inputs()
  views = embed(inputs)
  assert [v.shape for v in views] == [(3, 5, 4), (3, 3, 3)]
  for k, view in enumerate(views):
    np.testing.assert_allclose(view.numpy(), _expected(embed, k, inputs),
                               rtol=1e-6, atol=1e-6)
  # Views are independent tables; fields of one view share one table per
  # combiner (sum, sqrtn, mean stacks in view 0; one in view 1).
  assert sorted(embed.tables) == ["view0_mean", "view0_sqrtn", "view0_sum",
                                  "view1_mean"]
  assert embed.tables["view0_mean"].shape == (
      sum(f.table_size for f in _fields() if f.name in ("user", "item",
                                                         "city")), 4)


def test_views_of_the_same_fields_share_one_table_side_by_side():
  """Views 0 and 2 cover the same fields at the same dim: one gather of a
  [rows, 2 x 4] table serves both, each view reading its own columns."""
  view_features = [["user", "tags", "item"], ["item"],
                   ["user", "tags", "item"]]
  embed = layers.MultiEmbedding(_fields()[:3], [4, 4, 4], view_features)
  inputs = _inputs()
  views = embed(inputs)
  assert sorted(embed.tables) == ["view0_2_mean", "view0_2_sum",
                                  "view1_mean"]
  assert embed.tables["view0_2_mean"].shape == (51 + 31, 8)
  for k, view in enumerate(views):
    np.testing.assert_allclose(view.numpy(), _expected(embed, k, inputs),
                               rtol=1e-6, atol=1e-6)
  # Same table, independent embeddings: the two views differ.
  assert not np.allclose(views[0].numpy(), views[2].numpy())


def test_mirrored_training_reads_and_updates_tables_sparsely(
    mirrored_strategy):
  """The traced step never reads a whole table (the old lookup did, and its
  step time grew with the table), and replicas agree after the update."""
  fields = [schema_lib.SparseFeature(n, hash_buckets=20000)
            for n in ("a", "b", "c")]
  with mirrored_strategy.scope():
    embed = layers.MultiEmbedding(fields, [8, 8])
    dense = tf.keras.layers.Dense(1)
    optimizer = tf.keras.optimizers.legacy.Adagrad(0.1)
    ids = {n: tf.constant([1, 2, 3, 4], tf.int64) * (i + 1)
           for i, n in enumerate("abc")}
    dense(tf.concat([tf.reshape(v, [-1, 24]) for v in embed(ids)], 1))
  data = mirrored_strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((ids, tf.ones([4, 1]))).repeat().unbatch()
      .batch(4))

  def step(features, labels):
    with tf.GradientTape() as tape:
      views = embed(features)
      logits = dense(tf.concat([tf.reshape(v, [-1, 24]) for v in views], 1))
      loss = tf.reduce_sum(tf.square(logits - labels)) / 4
    variables = embed.trainable_variables + dense.trainable_variables
    gradients = tape.gradient(loss, variables)
    assert all(isinstance(g, tf.IndexedSlices)
               for g in gradients[:len(embed.trainable_variables)])
    optimizer.apply_gradients(zip(gradients, variables))

  @tf.function
  def train(batch):
    mirrored_strategy.run(step, args=batch)

  iterator = iter(data)
  before = [t.numpy() for t in embed.embedding_variables]
  train(next(iterator))
  graph = train.get_concrete_function(next(iterator)).graph
  rows = embed.embedding_variables[0].shape[0]
  whole_reads = [op.name for op in graph.get_operations()
                 if op.type == "ReadVariableOp"
                 and op.outputs[0].shape.rank == 2
                 and op.outputs[0].shape[0] == rows]
  assert not whole_reads, whole_reads
  for table, old in zip(embed.embedding_variables, before):
    replicas = [v.numpy() for v in table.values]
    np.testing.assert_array_equal(replicas[0], replicas[1])
    changed = np.flatnonzero(np.any(replicas[0] != old, axis=1))
    # Exactly the rows of the batch's ids (field i owns rows from i * 20001).
    touched = sorted(int(v) + i * fields[i].table_size
                     for i, n in enumerate("abc") for v in ids[n].numpy())
    assert changed.tolist() == touched


@pytest.mark.parametrize("kwargs, message", [
    (dict(view_dims=[4, 0]), "view dims must be positive"),
    (dict(view_dims=[4], view_features=[[]]), "view 0 is empty"),
])
def test_bad_views_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    layers.MultiEmbedding(_fields(), **kwargs)
