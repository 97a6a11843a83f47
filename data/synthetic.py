r"""A synthetic ads log that exercises what RankUp claims.

    python -m data.synthetic --output_dir=/tmp/synthetic --rows=1000000
    python -m data.synthetic --output_dir=/tmp/synthetic_ids --teacher=ids

Generative story (all draws from `numpy.random.default_rng`, seeded by --seed,
so the same seed and flags give byte-identical output):

1. **Entities.** `num_users` users and `num_items` items, each with a latent
   vector (8 dims, N(0, 1/8)) and a bias. User attributes are drawn once per
   user, item attributes once per item, so each impression repeats them.
2. **Impressions.** A user and an item are drawn from Zipf-like popularity
   laws (weight ~ rank^-1.05), plus context (hour, slot, page, ...).
3. **Fields** (33 sparse, in semantic groups `user`, `item`, `context`):
   * near-collinear chains inside a group: city -> region -> country,
     device_model -> os, subcategory -> category, campaign -> advertiser,
     hour -> day_part, seller -> seller_tier, each "derived" field copying
     its parent's coarse value except for 3-5% random noise;
   * long-tail fields: user_id, item_id, brand, campaign and query (with
     20% missing) are Zipf-distributed over large id spaces;
   * one multivalent field (user_interests, up to 5 categories, biased to
     the user's segment) and string fields looked up in vocabularies.
   6 dense fields (historical CTRs with noise and missing values, price,
   activity, recency, a pure-noise field).
4. **Pretrained vectors** (16 dims, fixed per user and per item), by
   `--teacher`:
   * "affinity" (default): user_vec = P u + noise and item_vec = P v + noise
     with P a random 16x8 matrix with orthonormal columns, so the
     element-wise product user_vec * item_vec sums to about <u, v>: the
     crossed pretrained token can recover a signal the sparse ids only carry
     per entity. This favours that token by construction: the vectors are
     an oracle of u and v, as exact for a user seen once as for the most
     active one, and their product is the teacher's main term.
   * "ids": the vectors add nothing the ids do not already carry.
     user_vec = S[segment] + G[age] + c_user and item_vec = K[category] +
     Q[price_bucket] + c_item: random tables over fields the log contains
     (and that enter the teacher's tables below), plus a random code per
     id (c_user, c_item, standing for a two-tower model's estimation noise).
     The vectors are thus functions of the ids (the entity id and its
     attribute fields) and independent of u, v and the biases given those
     fields: a model that learns the fields' embeddings can know all they
     know, so no component is favoured by construction. Their product is a
     random low-rank feature of (segment, age) x (category, price bucket),
     pairs the sparse fields carry too (a sparse cross token sees segment x
     category), not of <u, v>.
   Everything else (entities, fields, teacher, labels) is drawn from the
   same random stream under both teachers, so one seed gives the same
   clicks and conversions under both: only the vectors differ, so what a
   component gains under "affinity" beyond its gain under "ids" is what
   the oracle vectors gave it.
5. **Teacher.** The click logit sums user and item biases, 1.5 <u, v>, and
   interaction tables *across* groups: user segment x item category, hour x
   item category, age x price bucket, os x creative type, slot position,
   and a bonus when the item's category is among the user's interests.
   The intercept is calibrated on a pilot sample to a click rate near 12%.
   click ~ Bernoulli(sigmoid(logit)).
6. **Conversion** happens only after a click:
   conversion ~ click * Bernoulli(sigmoid(c0 + income x price table +
   seller tier + 0.8 <u, v> + user bias)), calibrated to about 15% of
   clicks (the pilot's click probabilities weight the calibration).

The labels depend on the user and the item only through per-id effects
(biases, u and v, which a model can learn from the ids of a log large
enough) and their attribute fields; under "affinity" the vectors hand the
model u and v on top, under "ids" nothing on top. stats.json records the
teacher under "generator".

Documented bounds (checked by tests on 20k+ rows): click rate in
[0.08, 0.16]; conversion rate in [0.008, 0.035]; every conversion is a click.
"""

from typing import Dict, List

import numpy as np
from absl import flags

from rankup_tf import cli
from rankup_tf import schema as schema_lib
from rankup_tf.data import records

LATENT_DIM = 8
VECTOR_DIM = 16
TEACHERS = ("affinity", "ids")
CLICK_RATE_TARGET = 0.12
CONVERSION_GIVEN_CLICK_TARGET = 0.15
CLICK_RATE_BOUNDS = (0.08, 0.16)
CONVERSION_RATE_BOUNDS = (0.008, 0.035)
INTEREST_CATEGORIES = 50
GENDERS = ("female", "male", "unknown")
CREATIVE_TYPES = ("image", "video", "carousel", "text", "playable", "story")
PAGE_TYPES = ("feed", "search", "detail", "home", "cart", "video", "profile",
              "explore")


def _zipf_weights(n: int, exponent: float = 1.05) -> np.ndarray:
  w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
  return w / w.sum()


def _noisy_copy(rng, parent: np.ndarray, cardinality: int,
                noise: float) -> np.ndarray:
  """A near-collinear child: the parent's value, or noise with prob `noise`."""
  flip = rng.random(parent.shape) < noise
  return np.where(flip, rng.integers(0, cardinality, parent.shape), parent)


class World:
  """Users, items and the hidden teacher, drawn once from the seed.

  `teacher` picks the pretrained vectors ("affinity" or "ids", see the
  module docstring); everything else is the same under both.
  """

  def __init__(self, seed: int, num_users: int, num_items: int,
               teacher: str = "affinity"):
    if teacher not in TEACHERS:
      raise ValueError(f"Unknown teacher {teacher!r}; expected one of "
                       f"{TEACHERS}.")
    self.teacher = teacher
    rng = np.random.default_rng([seed, 1])
    self.num_users, self.num_items = num_users, num_items
    self.user_weights = _zipf_weights(num_users)
    self.item_weights = _zipf_weights(num_items)
    # Latent factors and biases.
    self.u = rng.normal(0, LATENT_DIM ** -0.5, (num_users, LATENT_DIM))
    self.v = rng.normal(0, LATENT_DIM ** -0.5, (num_items, LATENT_DIM))
    self.user_bias = rng.normal(0, 0.5, num_users)
    self.item_bias = rng.normal(0, 0.5, num_items)
    # User attributes (ids are permuted so id order is not popularity).
    self.user_id = rng.permutation(num_users * 7)[:num_users] + 1
    self.age = rng.integers(0, 8, num_users)
    self.gender = rng.integers(0, 3, num_users)
    self.city = rng.choice(500, num_users, p=_zipf_weights(500, 0.9))
    self.region = _noisy_copy(rng, self.city // 10, 50, 0.05)
    self.country = _noisy_copy(rng, self.region // 10, 5, 0.03)
    self.device = rng.choice(300, num_users, p=_zipf_weights(300, 1.0))
    self.os = _noisy_copy(rng, self.device % 3, 3, 0.03)
    self.income = np.clip(self.region % 10 + rng.integers(-2, 3, num_users),
                          0, 9)
    segment_axes = rng.normal(size=(LATENT_DIM, 20))
    self.segment = np.argmax(self.u @ segment_axes, axis=1)
    self.cohort = rng.integers(0, 36, num_users)
    popularity_rank = np.argsort(np.argsort(-self.user_weights))
    self.activity = np.minimum(popularity_rank * 10 // num_users, 9)
    self.interest_pref = rng.integers(0, INTEREST_CATEGORIES, (20, 3))
    self.user_days_active = rng.gamma(2.0, 30.0, num_users)
    # Item attributes.
    self.item_id = rng.permutation(num_items * 5)[:num_items] + 1
    self.subcategory = rng.integers(0, 500, num_items)
    self.category = _noisy_copy(rng, self.subcategory // 10, 50, 0.05)
    self.brand = rng.choice(2000, num_items, p=_zipf_weights(2000))
    self.seller = rng.choice(1000, num_items, p=_zipf_weights(1000))
    self.seller_tier = _noisy_copy(rng, self.seller % 5, 5, 0.05)
    self.price_bucket = np.clip(self.category % 20 + rng.integers(-3, 4,
                                                                  num_items),
                                0, 19)
    self.price = np.exp(rng.normal(2.0 + 0.15 * self.price_bucket, 0.3))
    self.item_age = rng.integers(0, 10, num_items)
    self.quality = np.digitize(self.v[:, 0] + self.item_bias * 0.5,
                               np.linspace(-1, 1, 9))
    self.campaign = rng.choice(5000, num_items, p=_zipf_weights(5000))
    self.advertiser = _noisy_copy(rng, self.campaign // 5, 1000, 0.04)
    self.creative = rng.integers(0, len(CREATIVE_TYPES), num_items)
    # Pretrained two-tower vectors: P has orthonormal columns. Drawn under
    # every teacher so that the stream below (teacher, labels) is the same.
    p, _ = np.linalg.qr(rng.normal(size=(VECTOR_DIM, LATENT_DIM)))
    self.user_vec = self.u @ p.T + rng.normal(0, 0.05, (num_users,
                                                         VECTOR_DIM))
    self.item_vec = self.v @ p.T + rng.normal(0, 0.05, (num_items,
                                                         VECTOR_DIM))
    if teacher == "ids":
      self.user_vec, self.item_vec = self._id_vectors(
          np.random.default_rng([seed, 4]))
    # Teacher interaction tables across groups.
    self.seg_x_category = rng.normal(0, 0.8, (20, 50))
    self.hour_x_category = rng.normal(0, 0.5, (24, 50))
    self.age_x_price = rng.normal(0, 0.5, (8, 20))
    self.os_x_creative = rng.normal(0, 0.4, (3, len(CREATIVE_TYPES)))
    self.slot_effect = -0.15 * np.arange(10)
    self.income_x_price = rng.normal(0, 0.7, (10, 20))
    self.tier_effect = rng.normal(0, 0.4, 5)
    pilot = self.impressions(np.random.default_rng([seed, 2]), 50_000)
    self.click_intercept = _calibrate(pilot["click_logit"],
                                      CLICK_RATE_TARGET)
    clicked = _sigmoid(pilot["click_logit"] + self.click_intercept)
    self.conversion_intercept = _calibrate(pilot["conversion_logit"],
                                           CONVERSION_GIVEN_CLICK_TARGET,
                                           weights=clicked)

  def _id_vectors(self, rng):
    """The "ids" teacher's vectors: functions of the ids only (module
    docstring), of about the oracle vectors' norm (1)."""
    def table(rows, variance):
      return rng.normal(0, (variance / VECTOR_DIM) ** 0.5, (rows, VECTOR_DIM))

    user_vec = (table(20, 0.4)[self.segment] + table(8, 0.4)[self.age]
                + table(self.num_users, 0.2))
    item_vec = (table(50, 0.4)[self.category]
                + table(20, 0.4)[self.price_bucket]
                + table(self.num_items, 0.2))
    return user_vec, item_vec

  def impressions(self, rng, n: int) -> Dict[str, np.ndarray]:
    """Index arrays, context and teacher logits (without intercepts)."""
    user = rng.choice(self.num_users, n, p=self.user_weights)
    item = rng.choice(self.num_items, n, p=self.item_weights)
    hour = rng.integers(0, 24, n)
    slot = np.minimum(rng.geometric(0.35, n) - 1, 9)
    interests = self.interest_pref[self.segment[user]]
    match = np.any(interests == self.category[item][:, None], axis=1)
    # Unit-variance user-item affinity.
    affinity = np.einsum("nd,nd->n", self.u[user], self.v[item]) * np.sqrt(
        LATENT_DIM)
    click_logit = (
        self.user_bias[user] + self.item_bias[item] + 1.5 * affinity
        + self.seg_x_category[self.segment[user], self.category[item]]
        + self.hour_x_category[hour, self.category[item]]
        + self.age_x_price[self.age[user], self.price_bucket[item]]
        + self.os_x_creative[self.os[user], self.creative[item]]
        + self.slot_effect[slot] + 0.7 * match)
    conversion_logit = (
        self.income_x_price[self.income[user], self.price_bucket[item]]
        + self.tier_effect[self.seller_tier[item]] + 0.8 * affinity
        + 0.5 * self.user_bias[user])
    return {"user": user, "item": item, "hour": hour, "slot": slot,
            "click_logit": click_logit, "conversion_logit": conversion_logit}


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _calibrate(logits: np.ndarray, target: float, weights=None) -> float:
  """Intercept b with weighted mean(sigmoid(logits + b)) == target."""
  lo, hi = -20.0, 20.0
  for _ in range(60):
    mid = (lo + hi) / 2
    if np.average(_sigmoid(logits + mid), weights=weights) < target:
      lo = mid
    else:
      hi = mid
  return (lo + hi) / 2


def synthetic_schema() -> schema_lib.Schema:
  """The schema of the synthetic log (user_id doubles as the GAUC key)."""
  def sparse(name, group, buckets, **extra):
    return dict({"name": name, "dtype": "int64", "hash_buckets": buckets,
                 "group": group}, **extra)

  def vocab(name, group, values):
    return {"name": name, "dtype": "string", "vocabulary": list(values),
            "group": group}

  return schema_lib.Schema.from_dict({
      "name": "synthetic_ads",
      "sparse_features": [
          sparse("user_id", "user", 200_000), sparse("user_age", "user", 16),
          vocab("user_gender", "user", GENDERS),
          sparse("user_city", "user", 1000), sparse("user_region", "user", 100),
          sparse("user_country", "user", 10),
          sparse("user_device", "user", 600), sparse("user_os", "user", 8),
          sparse("user_income", "user", 20), sparse("user_segment", "user", 40),
          sparse("user_cohort", "user", 72),
          sparse("user_activity", "user", 20),
          sparse("user_interests", "user", 100, multivalent=True,
                 max_length=5, combiner="mean"),
          sparse("item_id", "item", 100_000),
          sparse("item_category", "item", 100),
          sparse("item_subcategory", "item", 1000),
          sparse("item_brand", "item", 4000),
          sparse("item_seller", "item", 2000),
          sparse("item_seller_tier", "item", 10),
          sparse("item_price_bucket", "item", 40),
          sparse("item_age", "item", 20), sparse("item_quality", "item", 20),
          sparse("item_campaign", "item", 10_000),
          sparse("item_advertiser", "item", 2000),
          vocab("item_creative", "item", CREATIVE_TYPES),
          sparse("ctx_hour", "context", 48),
          sparse("ctx_day_part", "context", 8),
          sparse("ctx_weekday", "context", 14),
          sparse("ctx_slot", "context", 20),
          vocab("ctx_page", "context", PAGE_TYPES),
          sparse("ctx_network", "context", 8),
          sparse("ctx_app_version", "context", 100),
          sparse("ctx_query", "context", 100_000),
      ],
      "dense_features": [
          {"name": "user_hist_ctr", "default": 0.0, "normalization":
           "standardize", "mean": 0.0, "std": 1.0},
          {"name": "item_hist_ctr", "default": 0.0, "normalization":
           "standardize", "mean": 0.0, "std": 1.0},
          {"name": "item_price", "normalization": "log1p"},
          {"name": "user_days_active", "normalization": "log1p"},
          {"name": "ctx_seconds_since_last", "normalization": "log1p"},
          {"name": "noise", "normalization": "standardize", "mean": 0.0,
           "std": 1.0},
      ],
      "pretrained_features": [{"name": "user_vec", "dim": VECTOR_DIM},
                              {"name": "item_vec", "dim": VECTOR_DIM}],
      # The teacher's strongest interactions, for the sparse cross tokens.
      "crosses": [["user_vec", "item_vec"], ["user_segment", "item_category"],
                  ["ctx_hour", "item_category"]],
      "tasks": [{"name": "click"}, {"name": "conversion"}],
      "user_id": {"name": "user_id", "dtype": "int64"},
  }, source="synthetic schema")


def generate_chunk(world: World, rng, n: int) -> records.Chunk:
  """n impressions as a converter chunk (columns of Python values)."""
  imp = world.impressions(rng, n)
  user, item, hour = imp["user"], imp["item"], imp["hour"]
  click = rng.random(n) < _sigmoid(imp["click_logit"] + world.click_intercept)
  conversion = click & (rng.random(n) < _sigmoid(
      imp["conversion_logit"] + world.conversion_intercept))
  interest_count = rng.integers(0, 6, n)
  interest_pool = np.concatenate(
      [world.interest_pref[world.segment[user]],
       rng.integers(0, INTEREST_CATEGORIES, (n, 2))], axis=1)
  query = rng.choice(100_000, n, p=_zipf_weights(100_000, 1.1))
  query_missing = rng.random(n) < 0.2
  new_user = rng.random(n) < 0.1
  user_ctr = _sigmoid(world.user_bias[user] - 2 + rng.normal(0, 0.3, n))
  item_ctr = _sigmoid(world.item_bias[item] - 2 + rng.normal(0, 0.3, n))

  def ints(a):
    return a.astype(np.int64).tolist()

  def strings(table, index):
    return [table[i] for i in index]

  def floats(a):
    return a.astype(np.float32).tolist()

  return {
      "user_id": ints(world.user_id[user]), "user_age": ints(world.age[user]),
      "user_gender": strings(GENDERS, world.gender[user]),
      "user_city": ints(world.city[user]),
      "user_region": ints(world.region[user]),
      "user_country": ints(world.country[user]),
      "user_device": ints(world.device[user]), "user_os": ints(world.os[user]),
      "user_income": ints(world.income[user]),
      "user_segment": ints(world.segment[user]),
      "user_cohort": ints(world.cohort[user]),
      "user_activity": ints(world.activity[user]),
      "user_interests": [row[:k] for row, k in
                         zip(ints(interest_pool), interest_count)],
      "item_id": ints(world.item_id[item]),
      "item_category": ints(world.category[item]),
      "item_subcategory": ints(world.subcategory[item]),
      "item_brand": ints(world.brand[item]),
      "item_seller": ints(world.seller[item]),
      "item_seller_tier": ints(world.seller_tier[item]),
      "item_price_bucket": ints(world.price_bucket[item]),
      "item_age": ints(world.item_age[item]),
      "item_quality": ints(world.quality[item]),
      "item_campaign": ints(world.campaign[item]),
      "item_advertiser": ints(world.advertiser[item]),
      "item_creative": strings(CREATIVE_TYPES, world.creative[item]),
      "ctx_hour": ints(hour),
      "ctx_day_part": ints(_noisy_copy(rng, hour // 6, 4, 0.03)),
      "ctx_weekday": ints(rng.integers(0, 7, n)),
      "ctx_slot": ints(imp["slot"]),
      "ctx_page": strings(PAGE_TYPES, rng.integers(0, len(PAGE_TYPES), n)),
      "ctx_network": ints(rng.integers(0, 4, n)),
      "ctx_app_version": ints(rng.choice(50, n, p=_zipf_weights(50))),
      "ctx_query": [None if m else q for q, m in
                    zip(ints(query), query_missing)],
      "user_hist_ctr": [None if m else c for c, m in
                        zip(floats(user_ctr), new_user)],
      "item_hist_ctr": floats(item_ctr),
      "item_price": floats(world.price[item]),
      "user_days_active": floats(world.user_days_active[user]),
      "ctx_seconds_since_last": floats(rng.exponential(600.0, n)),
      "noise": floats(rng.normal(0, 1, n)),
      "user_vec": floats(world.user_vec[user]),
      "item_vec": floats(world.item_vec[item]),
      "click": floats(click), "conversion": floats(conversion),
  }


def generate(output_dir: str, rows: int, seed: int = 0,
             num_users: int = 50_000, num_items: int = 20_000,
             num_shards: int = 8, eval_fraction: float = 0.1,
             compression: str = "", chunk_rows: int = 8192,
             teacher: str = "affinity") -> Dict:
  """Writes the synthetic log; returns stats.json's content.

  `teacher`: "affinity" or "ids", the pretrained vectors' story (module
  docstring); recorded in stats.json under "generator".
  """
  world = World(seed, num_users, num_items, teacher)
  with records.DatasetWriter(synthetic_schema(), output_dir, num_shards,
                             compression=compression,
                             eval_fraction=eval_fraction,
                             seed=seed) as writer:
    with records.progress_bar(rows, "synthetic rows", unit=" rows") as bar:
      for index, start in enumerate(range(0, rows, chunk_rows)):
        n = min(chunk_rows, rows - start)
        writer.add(generate_chunk(
            world, np.random.default_rng([seed, 3, index]), n))
        bar.update(n)
    return writer.close({"generator": {
        "seed": seed, "rows": rows, "teacher": teacher,
        "num_users": num_users,
        "num_items": num_items,
        "click_intercept": world.click_intercept,
        "conversion_intercept": world.conversion_intercept}})


def main(argv: List[str]) -> None:
  del argv
  FLAGS = flags.FLAGS
  stats = generate(FLAGS.output_dir, FLAGS.rows, seed=FLAGS.seed,
                   num_users=FLAGS.num_users, num_items=FLAGS.num_items,
                   num_shards=FLAGS.num_shards,
                   eval_fraction=FLAGS.eval_fraction,
                   compression="GZIP" if FLAGS.gzip else "",
                   teacher=FLAGS.teacher)
  for split in ("train", "eval"):
    if split in stats:
      s = stats[split]
      print(f"{split}: {s['rows']} rows, label rates "
            + ", ".join(f"{k}={v:.4f}" for k, v in s["label_rates"].items()))
  print(f"Wrote {FLAGS.output_dir}")


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("output_dir", None, "Where shards, schema.json and "
                      "stats.json go.")
  flags.DEFINE_integer("rows", 1_000_000, "Impressions to generate.")
  flags.DEFINE_integer("seed", 0, "Seed of everything.")
  flags.DEFINE_integer("num_users", 50_000, "Distinct users.")
  flags.DEFINE_integer("num_items", 20_000, "Distinct items.")
  flags.DEFINE_integer("num_shards", 8, "Training shards.")
  flags.DEFINE_float("eval_fraction", 0.1, "Held-out fraction (eval-* "
                     "shards).")
  flags.DEFINE_boolean("gzip", False, "GZIP-compress the shards.")
  flags.DEFINE_enum("teacher", "affinity", list(TEACHERS), "Pretrained "
                    "vectors: affinity (an oracle of the user-item affinity, "
                    "favouring the crossed pretrained token) or ids "
                    "(functions of the ids, adding nothing they lack).")
  flags.mark_flag_as_required("output_dir")


def cli_main() -> None:
  """`python -m data.synthetic`, the `rankup-synthetic` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
