"""Feature schema: the one description of a dataset that every part reads.

A schema is a JSON file. Converters write it next to the TFRecords they
produce, the input pipeline parses and preprocesses records with it, the models
size their embedding tables and tokens from it, and the serving export builds
its signatures from it.

Format (every key not marked optional is required)::

    {
      "name": "criteo",                        # optional, free text
      "sparse_features": [
        {"name": "C1",                         # [A-Za-z_][A-Za-z0-9_]*
         "dtype": "string",                    # "string" or "int64"
         "hash_buckets": 100000,               # either this ...
         "vocabulary": ["a", "b"],             # ... or this, never both
         "group": "ad",                        # optional semantic group
         "multivalent": false,                 # optional, default false
         "max_length": 8,                      # multivalent only: the first
                                               # max_length values are kept
         "combiner": "mean",                   # multivalent only:
                                               # "mean" | "sum" | "sqrtn"
         "min_count": 5,                       # optional: values seen fewer
                                               # times in training map to
                                               # the OOV row; 0 = off
         "frequent_values": ["a"]}             # written by the trainer
      ],                                       # (rankup_tf.id_counts)
      "dense_features": [
        {"name": "I1",
         "default": 0.0,                       # optional, used when missing
         "normalization": "log1p",             # "none" | "log1p" |
         "mean": 0.0, "std": 1.0,              # "standardize" (needs both)
         "optional": false}                    # optional: true allows a
                                               # field no record holds (the
                                               # trainer's preflight fails
                                               # by name otherwise)
      ],
      "pretrained_features": [
        {"name": "user_vec", "dim": 16}        # fixed-dim float vector
      ],
      "crosses": [["user_vec", "item_vec"]],   # optional pairs of two
                                               # pretrained features of equal
                                               # dim, or of two sparse features
      "tasks": [
        {"name": "click"},                     # binary label feature
        {"name": "conversion",
         "weight": "conversion_weight"}        # optional float weight feature
      ],
      "user_id": {"name": "user_id",           # optional, groups GAUC
                  "dtype": "int64"}
    }

How values map to ids (see `rankup_tf.features`): a sparse value is hashed
into `hash_buckets` buckets or looked up in `vocabulary`; id 0 is reserved for
a missing value and, for vocabularies, id 1 for an out-of-vocabulary value.
`SparseFeature.table_size` is the number of embedding rows a field needs.

Rare ids (`min_count` >= 2): a value seen fewer than `min_count` times in
the training data, or never, maps to the OOV row, which the rare training
values train, instead of a row of its own (vocabulary) or a hash bucket; a
hashed field then gets an OOV row too (id 1, buckets from id 2).
`frequent_values` lists the values that keep their ids. The trainer counts
them over the training files (`rankup_tf.id_counts`) and saves the schema
with them, so the exported transform maps ids exactly as training did. They
are listed inline, like a vocabulary: the schema, and the SavedModel's
lookup table, grow with the number of frequent values.

`log1p` normalization is sign(x) * log(1 + |x|), so negative counts (Criteo's
I2) stay finite and keep their sign.
"""

import dataclasses
import json
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SPARSE_DTYPES = ("string", "int64")
COMBINERS = ("mean", "sum", "sqrtn")
NORMALIZATIONS = ("none", "log1p", "standardize")

# Ids reserved in front of every sparse field's own ids.
MISSING_ID = 0
OOV_ID = 1

# Keys the input pipeline adds next to the schema's own names.
USER_ID_KEY = "__user_id__"
WEIGHT_SUFFIX = "/weight"


class SchemaError(ValueError):
  """A schema file or dict that does not describe a usable dataset."""


@dataclasses.dataclass(frozen=True)
class SparseFeature:
  """A categorical field, hashed or looked up into embedding ids."""
  name: str
  dtype: str = "string"
  hash_buckets: Optional[int] = None
  vocabulary: Optional[Tuple[Any, ...]] = None
  group: Optional[str] = None
  multivalent: bool = False
  max_length: Optional[int] = None
  combiner: str = "mean"
  min_count: Optional[int] = None
  frequent_values: Optional[Tuple[Any, ...]] = None

  def __post_init__(self):
    # JSON and Keras configs hand lists over; a frozen dataclass needs
    # hashable tuples.
    for key in ("vocabulary", "frequent_values"):
      if isinstance(getattr(self, key), list):
        object.__setattr__(self, key, tuple(getattr(self, key)))

  @property
  def filters_rare_ids(self) -> bool:
    """Whether values below `min_count` map to the OOV row."""
    return bool(self.min_count) and self.min_count >= 2

  @property
  def first_value_id(self) -> int:
    """Id of the first vocabulary entry or hash bucket: after the missing
    id, and after the OOV id when a field has one."""
    if self.vocabulary is not None or self.filters_rare_ids:
      return OOV_ID + 1
    return MISSING_ID + 1

  @property
  def table_size(self) -> int:
    """Rows of an embedding table for this field, reserved ids included."""
    if self.vocabulary is not None:
      return self.first_value_id + len(self.vocabulary)
    return self.first_value_id + self.hash_buckets

  @property
  def semantic_group(self) -> str:
    return self.group if self.group is not None else "ungrouped"


@dataclasses.dataclass(frozen=True)
class DenseFeature:
  """A float field with a missing-value default and a normalization."""
  name: str
  default: float = 0.0
  normalization: str = "none"
  mean: Optional[float] = None
  std: Optional[float] = None
  optional: bool = False


@dataclasses.dataclass(frozen=True)
class PretrainedFeature:
  """A fixed-dim float vector, e.g. one tower's output of a two-tower model."""
  name: str
  dim: int


@dataclasses.dataclass(frozen=True)
class Task:
  """A binary label to predict, with an optional example-weight feature."""
  name: str
  weight: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class UserId:
  """The feature GAUC groups examples by."""
  name: str
  dtype: str = "int64"


@dataclasses.dataclass(frozen=True)
class Schema:
  """A validated dataset description. Build it with `from_dict`/`load`."""
  sparse_features: Tuple[SparseFeature, ...]
  dense_features: Tuple[DenseFeature, ...] = ()
  pretrained_features: Tuple[PretrainedFeature, ...] = ()
  crosses: Tuple[Tuple[str, str], ...] = ()
  tasks: Tuple[Task, ...] = ()
  user_id: Optional[UserId] = None
  name: str = ""

  def __post_init__(self):
    _validate(self)

  # -- lookups --------------------------------------------------------------
  @property
  def sparse_names(self) -> List[str]:
    return [f.name for f in self.sparse_features]

  @property
  def dense_names(self) -> List[str]:
    return [f.name for f in self.dense_features]

  @property
  def pretrained_names(self) -> List[str]:
    return [f.name for f in self.pretrained_features]

  @property
  def task_names(self) -> List[str]:
    return [t.name for t in self.tasks]

  def sparse(self, name: str) -> SparseFeature:
    return _by_name(self.sparse_features, name, "sparse feature")

  def pretrained(self, name: str) -> PretrainedFeature:
    return _by_name(self.pretrained_features, name, "pretrained feature")

  def cross_kind(self, pair: Sequence[str]) -> str:
    """'pretrained' or 'sparse': what the two sides of a cross pair are."""
    return "pretrained" if pair[0] in self.pretrained_names else "sparse"

  # -- (de)serialization ----------------------------------------------------
  @classmethod
  def from_dict(cls, spec: Dict[str, Any], source: str = "schema") -> "Schema":
    """Builds and validates a schema; errors name `source` and the field."""
    if not isinstance(spec, dict):
      raise SchemaError(f"{source}: the top level must be a JSON object.")
    known = {"name", "sparse_features", "dense_features",
             "pretrained_features", "crosses", "tasks", "user_id"}
    _reject_unknown_keys(spec, known, source)
    try:
      return cls(
          name=spec.get("name", ""),
          sparse_features=tuple(
              _make(SparseFeature, f, source, "sparse feature", i)
              for i, f in enumerate(_list(spec, "sparse_features", source))),
          dense_features=tuple(
              _make(DenseFeature, f, source, "dense feature", i)
              for i, f in enumerate(_list(spec, "dense_features", source))),
          pretrained_features=tuple(
              _make(PretrainedFeature, f, source, "pretrained feature", i)
              for i, f in enumerate(
                  _list(spec, "pretrained_features", source))),
          crosses=tuple(tuple(p) if isinstance(p, list) else p
                        for p in _list(spec, "crosses", source)),
          tasks=tuple(_make(Task, t, source, "task", i)
                      for i, t in enumerate(_list(spec, "tasks", source))),
          user_id=(_make(UserId, spec["user_id"], source, "user_id", 0)
                   if spec.get("user_id") is not None else None),
      )
    except SchemaError as e:
      if str(e).startswith(source):
        raise
      raise SchemaError(f"{source}: {e}") from None

  @classmethod
  def load(cls, path: str) -> "Schema":
    """Reads and validates a schema JSON file (any tf.io.gfile path)."""
    import tensorflow as tf  # local: keeps this module importable without TF
    if not tf.io.gfile.exists(path):
      raise SchemaError(f"Schema file {path} does not exist.")
    with tf.io.gfile.GFile(path) as f:
      text = f.read()
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as e:
      raise SchemaError(f"{path}: not valid JSON: {e}") from None
    return cls.from_dict(spec, source=path)

  def to_dict(self) -> Dict[str, Any]:
    def clean(obj):
      d = dataclasses.asdict(obj)
      return {k: (list(v) if isinstance(v, tuple) else v)
              for k, v in d.items() if v is not None}
    out = {
        "name": self.name,
        "sparse_features": [clean(f) for f in self.sparse_features],
        "dense_features": [clean(f) for f in self.dense_features],
        "pretrained_features": [clean(f) for f in self.pretrained_features],
        "crosses": [list(p) for p in self.crosses],
        "tasks": [clean(t) for t in self.tasks],
    }
    if self.user_id is not None:
      out["user_id"] = clean(self.user_id)
    return out

  def save(self, path: str) -> None:
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(json.dumps(self.to_dict(), indent=2) + "\n")

  def with_dense_stats(self, stats: Dict[str, Dict[str, float]]) -> "Schema":
    """A copy whose standardized dense fields take mean/std from `stats`."""
    dense = []
    for f in self.dense_features:
      if f.normalization == "standardize" and f.name in stats:
        s = stats[f.name]
        f = dataclasses.replace(f, mean=float(s["mean"]),
                                std=float(s["std"]) if s["std"] > 0 else 1.0)
      dense.append(f)
    return dataclasses.replace(self, dense_features=tuple(dense))


def _by_name(items, name, what):
  for item in items:
    if item.name == name:
      return item
  raise KeyError(f"No {what} named {name!r}.")


def _list(spec, key, source):
  value = spec.get(key, [])
  if not isinstance(value, list):
    raise SchemaError(f"{source}: {key!r} must be a list, got "
                      f"{type(value).__name__}.")
  return value


def _reject_unknown_keys(spec, known, where):
  unknown = sorted(set(spec) - known)
  if unknown:
    raise SchemaError(f"{where}: unknown key(s) {unknown}; allowed: "
                      f"{sorted(known)}.")


def _make(cls, spec, source, what, index):
  if not isinstance(spec, dict):
    raise SchemaError(f"{source}: {what} #{index} must be a JSON object, got "
                      f"{spec!r}.")
  label = f"{what} {spec.get('name', '#' + str(index))!r}"
  fields = {f.name for f in dataclasses.fields(cls)}
  _reject_unknown_keys(spec, fields, f"{source}: {label}")
  if "name" not in spec:
    raise SchemaError(f"{source}: {what} #{index} has no 'name'.")
  spec = dict(spec)
  if "vocabulary" in spec and isinstance(spec["vocabulary"], list):
    spec["vocabulary"] = tuple(spec["vocabulary"])
  required = [f.name for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING and f.name not in spec]
  if required:
    raise SchemaError(f"{source}: {label} is missing {required}.")
  return cls(**spec)


def _validate(schema: Schema) -> None:
  """Raises SchemaError naming the field and what is wrong."""
  seen = {}

  def claim(name, what):
    if not isinstance(name, str) or not _NAME_RE.match(name):
      raise SchemaError(f"{what} name {name!r} is not a valid identifier "
                        "([A-Za-z_][A-Za-z0-9_]*).")
    if name.startswith("__"):
      raise SchemaError(f"{what} {name!r}: names starting with '__' are "
                        "reserved.")
    if name in seen:
      raise SchemaError(f"duplicate name {name!r}: used by {seen[name]} and "
                        f"{what}.")
    seen[name] = what

  if not schema.sparse_features:
    raise SchemaError("no sparse_features: RankUp needs at least one.")
  for f in schema.sparse_features:
    _validate_sparse(f)
    claim(f.name, "sparse feature")
  for f in schema.dense_features:
    _validate_dense(f)
    claim(f.name, "dense feature")
  for f in schema.pretrained_features:
    if not isinstance(f.dim, int) or isinstance(f.dim, bool) or f.dim <= 0:
      raise SchemaError(f"pretrained feature {f.name!r}: dim must be a "
                        f"positive integer, got {f.dim!r}.")
    claim(f.name, "pretrained feature")
  if not schema.tasks:
    raise SchemaError("no tasks: at least one binary label is required.")
  for t in schema.tasks:
    claim(t.name, "task")
    if t.weight is not None:
      claim(t.weight, f"weight of task {t.name!r}")
  if schema.user_id is not None:
    _validate_user_id(schema.user_id, schema, seen)
  _validate_crosses(schema)


def _validate_sparse(f: SparseFeature) -> None:
  where = f"sparse feature {f.name!r}"
  if f.dtype not in SPARSE_DTYPES:
    raise SchemaError(f"{where}: unknown dtype {f.dtype!r}; expected one of "
                      f"{SPARSE_DTYPES}.")
  if (f.hash_buckets is None) == (f.vocabulary is None):
    raise SchemaError(f"{where}: set exactly one of 'hash_buckets' and "
                      "'vocabulary'.")
  if f.hash_buckets is not None and (
      not isinstance(f.hash_buckets, int) or isinstance(f.hash_buckets, bool)
      or f.hash_buckets <= 0):
    raise SchemaError(f"{where}: hash_buckets must be a positive integer, got "
                      f"{f.hash_buckets!r}.")
  if f.vocabulary is not None:
    if not f.vocabulary:
      raise SchemaError(f"{where}: vocabulary is empty.")
    _check_values(f.vocabulary, "vocabulary", f.dtype, where)
  if f.group is not None and (not isinstance(f.group, str) or not f.group):
    raise SchemaError(f"{where}: group must be a non-empty string.")
  if f.multivalent:
    if (not isinstance(f.max_length, int) or isinstance(f.max_length, bool)
        or f.max_length <= 0):
      raise SchemaError(f"{where}: a multivalent feature needs a positive "
                        f"integer max_length, got {f.max_length!r}.")
    if f.combiner not in COMBINERS:
      raise SchemaError(f"{where}: unknown combiner {f.combiner!r}; expected "
                        f"one of {COMBINERS}.")
  elif f.max_length is not None:
    raise SchemaError(f"{where}: max_length is only for multivalent "
                      "features.")
  _validate_min_count(f, where)


def _validate_min_count(f: SparseFeature, where: str) -> None:
  check_min_count(f.min_count, where + ": min_count")
  if f.frequent_values is None:
    return
  if not f.filters_rare_ids:
    raise SchemaError(f"{where}: frequent_values needs a min_count of 2 or "
                      f"more, got {f.min_count!r}.")
  _check_values(f.frequent_values, "frequent_values", f.dtype, where)


def _check_values(values, name: str, dtype: str, where: str) -> None:
  """A list of a field's values (vocabulary, frequent values): each of the
  field's dtype, none twice."""
  kind = str if dtype == "string" else int
  bad = [v for v in values if not isinstance(v, kind) or isinstance(v, bool)]
  if bad:
    raise SchemaError(f"{where}: {name} entries must be {dtype}, got "
                      f"{bad[0]!r}.")
  if len(set(values)) != len(values):
    raise SchemaError(f"{where}: {name} has duplicate entries.")


def check_min_count(value, what: str) -> None:
  """A minimum id count is None or 0 (off), or an integer >= 2.

  1 is refused: it would send only never-seen values to the OOV row, a row
  that training then never updates, so serving would read an untrained row.
  """
  if value is None:
    return
  if (not isinstance(value, int) or isinstance(value, bool) or value < 0
      or value == 1):
    raise SchemaError(
        f"{what} must be 0 (off) or an integer >= 2, got {value!r} (1 would "
        "map only never-seen values to the OOV row, which training never "
        "updates).")


def _validate_dense(f: DenseFeature) -> None:
  where = f"dense feature {f.name!r}"
  if f.normalization not in NORMALIZATIONS:
    raise SchemaError(f"{where}: unknown normalization {f.normalization!r}; "
                      f"expected one of {NORMALIZATIONS}.")
  if not _is_finite_number(f.default):
    raise SchemaError(f"{where}: default must be a finite number, got "
                      f"{f.default!r}.")
  if not isinstance(f.optional, bool):
    raise SchemaError(f"{where}: optional must be true or false, got "
                      f"{f.optional!r}.")
  if f.normalization == "standardize":
    if not _is_finite_number(f.mean) or not _is_finite_number(f.std):
      raise SchemaError(f"{where}: 'standardize' needs finite 'mean' and "
                        f"'std' (got mean={f.mean!r}, std={f.std!r}); the "
                        "converters fill them from the data.")
    if f.std <= 0:
      raise SchemaError(f"{where}: std must be positive, got {f.std!r}.")


def _validate_user_id(user_id: UserId, schema: Schema, seen) -> None:
  if not isinstance(user_id.name, str) or not _NAME_RE.match(user_id.name):
    raise SchemaError(f"user_id name {user_id.name!r} is not a valid "
                      "identifier.")
  if user_id.dtype not in SPARSE_DTYPES:
    raise SchemaError(f"user_id {user_id.name!r}: unknown dtype "
                      f"{user_id.dtype!r}; expected one of {SPARSE_DTYPES}.")
  owner = seen.get(user_id.name)
  if owner is None:
    return
  if owner != "sparse feature":
    raise SchemaError(f"user_id {user_id.name!r} names a {owner}; it must be "
                      "a sparse feature or a feature of its own.")
  sparse = schema.sparse(user_id.name)
  if sparse.dtype != user_id.dtype or sparse.multivalent:
    raise SchemaError(f"user_id {user_id.name!r} must be a single-valued "
                      f"{user_id.dtype} like the sparse feature of that name.")


def _validate_crosses(schema: Schema) -> None:
  for pair in schema.crosses:
    if (not isinstance(pair, tuple) or len(pair) != 2
        or not all(isinstance(n, str) for n in pair)):
      raise SchemaError(f"cross {pair!r} must be a pair of feature names.")
    a, b = pair
    if a == b:
      raise SchemaError(f"cross {list(pair)} crosses {a!r} with itself.")
    kinds = []
    for name in pair:
      if name in schema.pretrained_names:
        kinds.append("pretrained")
      elif name in schema.sparse_names:
        kinds.append("sparse")
      else:
        raise SchemaError(f"cross {list(pair)} names {name!r}, which is "
                          "neither a pretrained nor a sparse feature.")
    if kinds[0] != kinds[1]:
      raise SchemaError(f"cross {list(pair)} mixes a {kinds[0]} and a "
                        f"{kinds[1]} feature; cross two pretrained vectors or "
                        "two sparse features.")
    if kinds[0] == "pretrained":
      da, db = schema.pretrained(a).dim, schema.pretrained(b).dim
      if da != db:
        raise SchemaError(f"cross {list(pair)}: pretrained dims differ "
                          f"({da} vs {db}); an element-wise product needs "
                          "equal dims.")
    elif any(schema.sparse(n).multivalent for n in pair):
      raise SchemaError(f"cross {list(pair)}: sparse crosses need "
                        "single-valued features.")
  if len(set(schema.crosses)) != len(schema.crosses):
    raise SchemaError("crosses lists the same pair twice.")


def _is_finite_number(x) -> bool:
  return (isinstance(x, (int, float)) and not isinstance(x, bool)
          and math.isfinite(x))
