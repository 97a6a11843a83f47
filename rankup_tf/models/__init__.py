"""Ranking models built from (schema, config)."""

from typing import Dict, Type

from rankup_tf import schema as schema_lib
from rankup_tf.models.base import RankingModel
from rankup_tf.models.baselines import DCNv2Model
from rankup_tf.models.baselines import DLRMModel
from rankup_tf.models.baselines import DNNModel
from rankup_tf.models.configs import CONFIGS
from rankup_tf.models.configs import DCNv2Config
from rankup_tf.models.configs import DLRMConfig
from rankup_tf.models.configs import DNNConfig
from rankup_tf.models.configs import ModelConfig
from rankup_tf.models.configs import RankMixerConfig
from rankup_tf.models.configs import RankUpConfig
from rankup_tf.models.configs import TokenModelConfig
from rankup_tf.models.rankup import RankMixerModel
from rankup_tf.models.rankup import RankUpModel

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
    "DLRMConfig", "DNNConfig", "ModelConfig", "TokenModelConfig", "MODELS",
    "CONFIGS", "build_model",
]
