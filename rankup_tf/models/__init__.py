"""Ranking models built from (schema, config); Keras 2 (tf-keras) only.

They are TensorFlow-Recommenders models, so importing this package selects
Keras 2, or raises an ImportError with the fix where the process already
uses Keras 3 (`rankup_tf.keras_compat.require_keras_2`).
"""

from typing import Dict, Type

from rankup_tf import keras_compat

keras_compat.require_keras_2("rankup_tf.models")

# pylint: disable=g-import-not-at-top,wrong-import-position
from rankup_tf import schema as schema_lib  # noqa: E402
from rankup_tf.models.base import RankingModel  # noqa: E402
from rankup_tf.models.baselines import DCNv2Model  # noqa: E402
from rankup_tf.models.baselines import DLRMModel  # noqa: E402
from rankup_tf.models.baselines import DNNModel  # noqa: E402
from rankup_tf.models.configs import CONFIGS  # noqa: E402
from rankup_tf.models.configs import DCNv2Config  # noqa: E402
from rankup_tf.models.configs import DLRMConfig  # noqa: E402
from rankup_tf.models.configs import DNNConfig  # noqa: E402
from rankup_tf.models.configs import ModelConfig  # noqa: E402
from rankup_tf.models.configs import RankMixerConfig  # noqa: E402
from rankup_tf.models.configs import RankUpConfig  # noqa: E402
from rankup_tf.models.configs import TokenModelConfig  # noqa: E402
from rankup_tf.models.rankup import RankMixerModel  # noqa: E402
from rankup_tf.models.rankup import RankUpModel  # noqa: E402

MODELS: Dict[str, Type[RankingModel]] = {
    "rankup": RankUpModel, "rankmixer": RankMixerModel, "dcnv2": DCNv2Model,
    "dlrm": DLRMModel, "dnn": DNNModel,
}


def build_model(name: str, schema: schema_lib.Schema,
                config: ModelConfig) -> RankingModel:
  """The model called `name` (a key of MODELS) for a schema and config."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; expected one of "
                     f"{sorted(MODELS)}.")
  return MODELS[name](schema, config)


__all__ = [
    "RankingModel", "RankUpModel", "RankMixerModel", "DCNv2Model",
    "DLRMModel", "DNNModel", "RankUpConfig", "RankMixerConfig", "DCNv2Config",
    "DLRMConfig", "DNNConfig", "ModelConfig", "MODELS", "CONFIGS",
    "build_model",
]
