"""Shared test setup: Keras 2 mode, quiet TensorFlow, data locations."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import pytest  # noqa: E402

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
