"""Shared test setup: Keras 2 mode, quiet TensorFlow, data locations."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs, so MirroredStrategy has two replicas to test with. Must
# happen before TensorFlow initializes its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get(
    "RANKUP_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
  """../shared/data (CI has it there); RANKUP_SHARED_DATA overrides."""
  if not os.path.isdir(SHARED_DATA):
    raise FileNotFoundError(
        f"Real Criteo samples expected at {SHARED_DATA}; set "
        "RANKUP_SHARED_DATA to their folder.")
  return SHARED_DATA


@pytest.fixture(scope="session")
def mirrored_strategy():
  """One MirroredStrategy over the two logical CPUs for the whole session.

  (Several MirroredStrategy objects in one process can reuse collective
  instance keys and abort each other's all-reduces.)
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="module")
def schema():
  """A schema with every feature kind (tests/tfexamples.py)."""
  from tests import tfexamples  # pylint: disable=import-outside-toplevel
  return tfexamples.all_kinds_schema()


@pytest.fixture(scope="module")
def batch(schema, tmp_path_factory):
  """One parsed batch of 16 rows of `schema`."""
  import rankup_tf  # pylint: disable=import-outside-toplevel
  from tests import tfexamples  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("batch") / "b.tfrecord")
  tfexamples.write_records(path, [tfexamples.example(
      tfexamples.all_kinds_row(i)) for i in range(16)])
  return next(iter(rankup_tf.make_dataset(path, schema, 16, shuffle=False)))
