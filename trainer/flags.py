"""absl flags of `python -m trainer.train`, made from the config dataclasses,
and their conversion to a TrainConfig. Nothing else in the project reads
flags.

Every TrainConfig field and every model config field is a flag of the same
name (or the field's `flag` metadata: --hidden_units sets DNNConfig's
hidden_units, DCNv2Config's deep_units and DLRMConfig's top_units), with the
field's type, default, help and allowed values (`configs.config_field`). A
model flag sets that field of the model --model picks; the other models'
flags are ignored.

Precedence, lowest first: the dataclass defaults, --config_file (JSON or
YAML, as train_config.json), flags set on the command line (or in a
--flagfile), --params_override.
"""

import dataclasses
import typing
from typing import Dict, List, Tuple

from absl import flags

from rankup_tf import models
from rankup_tf.trainer import config as config_lib

FLAGS = flags.FLAGS


class _IntListParser(flags.ListParser):
  """Comma-separated integers (a Tuple[int, ...] field)."""

  def parse(self, argument):
    values = super().parse(argument)
    try:
      return [int(v) for v in values]
    except ValueError:
      raise ValueError(f"expected integers, got {values}") from None

  def flag_type(self):
    return "comma separated list of integers"


class _WeightsParser(flags.ListParser):
  """Comma-separated name=number pairs (a Dict[str, float] field)."""

  def parse(self, argument):
    if isinstance(argument, dict):
      return argument
    weights = {}
    for item in super().parse(argument):
      name, sep, weight = item.partition("=")
      if not sep:
        raise ValueError(f"entry {item!r} is not task=weight")
      try:
        weights[name] = float(weight)
      except ValueError:
        raise ValueError(f"entry {item!r}: {weight!r} is not a "
                         "number") from None
    return weights

  def flag_type(self):
    return "comma separated list of task=weight"


class _WeightsSerializer(flags.ArgumentSerializer):
  """A dict as name=number,... (so --help shows the default as a flag)."""

  def serialize(self, value):
    return ",".join(f"{name}={weight}" for name, weight in value.items())


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines every training flag (call once, before parsing).

  Example:

  ```python
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  flag_values(["train", "--config_file=run.yaml", "--train_steps=10"])
  config = config_from_flags(flag_values)
  ```

  Args:
    flag_values: where to define them.
  """
  flags.DEFINE_string(
      "config_file", "", "JSON or YAML file of TrainConfig settings, as the "
      "train_config.json a run saves; flags set on the command line win.",
      flag_values=flag_values)
  flags.DEFINE_string(
      "params_override", "", "Settings that win over everything: a YAML or "
      "JSON mapping, or key=value,... (model fields as model_config.<field>, "
      "e.g. train_steps=100,model_config.dropout=0.1).",
      flag_values=flag_values)
  for name, field in _run_fields().items():
    _define(flag_values, name, field, field.metadata["help"])
  for name, owners in _model_flags().items():
    first = owners[0][1]
    if any(_default(f) != _default(first) or f.type != first.type
           for _, f in owners):
      raise TypeError(f"The fields behind --{name} differ in type or "
                      "default.")
    texts = {f.metadata["help"] for _, f in owners}
    if len(texts) > 1:
      text = " ".join(f"{model}: {f.metadata['help']}" for model, f in owners)
    elif len(owners) < len(models.CONFIGS):
      text = (f"{texts.pop()} (models: "
              f"{', '.join(model for model, _ in owners)})")
    else:
      text = texts.pop()
    _define(flag_values, name, first, text)


def config_from_flags(
    flag_values: flags.FlagValues = FLAGS) -> config_lib.TrainConfig:
  """The TrainConfig the parsed flags describe (see the module docstring).

  Example:

  ```python
  config = config_from_flags()  # after app.run parsed FLAGS
  ```

  Args:
    flag_values: parsed flags that `define_flags` defined.

  Returns:
    The TrainConfig; ValueError names a bad or unknown setting and where it
    came from.
  """
  layers = []
  if flag_values.config_file:
    layers.append((f"config file {flag_values.config_file}",
                   config_lib.read_config_file(flag_values.config_file)))
  command_line = {name: flag_values[name].value for name in _run_fields()
                  if flag_values[name].present}
  layers.append(("command line", command_line))
  if flag_values.params_override:
    layers.append(("params_override",
                   config_lib.parse_override(flag_values.params_override)))
  # The model flags to read are those of the model the layers choose.
  model = next((settings["model"] for _, settings in reversed(layers)
                if "model" in settings), flag_values.model)
  if model in models.CONFIGS:
    command_line["model_config"] = {
        f.name: flag_values[_flag_name(f)].value
        for f in dataclasses.fields(models.CONFIGS[model])
        if flag_values[_flag_name(f)].present}
  return config_lib.from_layers(layers)


def _run_fields() -> Dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)
          if f.name != "model_config"}


def _flag_name(field: dataclasses.Field) -> str:
  return field.metadata.get("flag", field.name)


def _model_flags() -> Dict[str, List[Tuple[str, dataclasses.Field]]]:
  """Flag name -> the (model, field) pairs it sets."""
  owners = {}
  for model, config_class in sorted(models.CONFIGS.items()):
    for field in dataclasses.fields(config_class):
      owners.setdefault(_flag_name(field), []).append((model, field))
  return owners


def _default(field: dataclasses.Field):
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return None if field.default is dataclasses.MISSING else field.default


def _define(flag_values: flags.FlagValues, name: str,
            field: dataclasses.Field, text: str) -> None:
  """Defines the flag `name` of the field's type, default and choices."""
  default, origin = _default(field), typing.get_origin(field.type)
  choices = field.metadata.get("choices")
  if origin is tuple:
    flags.DEFINE(_IntListParser(), name, list(default), text, flag_values,
                 flags.CsvListSerializer(","))
  elif origin is dict:
    flags.DEFINE(_WeightsParser(), name, default, text, flag_values,
                 _WeightsSerializer())
  elif choices is not None:
    flags.DEFINE_enum(name, default, list(choices), text,
                      flag_values=flag_values)
  else:
    define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, str: flags.DEFINE_string}
    define[field.type](name, default, text, flag_values=flag_values)
