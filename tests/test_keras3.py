"""rankup_tf.layers in a Keras 3 program: the README's examples, and the
same outputs as in Keras 2 from the same config and weights.

This process is Keras 2 (conftest.py), so the Keras 3 side runs once, in a
subprocess that never sets TF_USE_LEGACY_KERAS, and reports JSON.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rankup_tf import layers
from tests.conftest import REPO

# Keras 2 names these sublayer weights without the sublayer's scope (Keras 3
# has <layer>/project_0/kernel, <layer>/tower_p/dense_1/kernel); their leaf
# names and shapes still match (README, "Keras 2 and Keras 3").
_UNSCOPED_IN_KERAS_2 = ("CrossedPretrainedToken", "TaskTowers")


def _unnumbered(name):
  """An unnamed Dense is dense_N, N counting the process's earlier ones."""
  return re.sub(r"/dense_\d+/", "/dense/", name)

_KERAS_3 = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
from rankup_tf import layers

blocks, case_dir = json.loads(sys.argv[1]), sys.argv[2]
report = {"tf_keras": tf.keras.layers.Layer.__module__}

scope = {}
exec(blocks[0], scope)  # the README's Keras 3 example, cwd is a temp dir
x, model, reloaded = scope["x"], scope["model"], scope["reloaded"]
report["losses"] = scope["history"].history["loss"]
want, got = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
report["reload_max_diff"] = max(float(np.max(np.abs(want[k] - got[k])))
                                for k in want)
report["layer_base"] = type(model.layers[-1]).__mro__[1].__module__
scope = {}
exec(blocks[1], scope)  # the README's KerasRS example (requirements.txt)
report["keras_rs"] = list(scope["tokens"].shape)

cases = json.load(open(os.path.join(case_dir, "cases.json")))
arrays = np.load(os.path.join(case_dir, "keras2.npz"))
outputs, report["weights"] = {}, []
for i, case in enumerate(cases):
  inputs = [arrays[f"in{i}_{j}"] for j in range(case["num_inputs"])]
  inputs = [tuple(inputs)] if case["pair"] else inputs[0]
  layer = getattr(layers, case["class"]).from_config(case["config"])
  layer(inputs)
  layer.set_weights([arrays[f"w{i}_{j}"] for j in range(case["num_weights"])])
  report["weights"].append([(w.path, list(w.shape)) for w in layer.weights])
  for mode in (False, True):
    for j, out in enumerate(tf.nest.flatten(layer(inputs, training=mode))):
      outputs[f"out{i}_{int(mode)}_{j}"] = np.asarray(out)
np.savez(os.path.join(case_dir, "keras3.npz"), **outputs)
print(json.dumps(report))
"""


def _readme_keras_3_blocks():
  """The python blocks of the README's "In a Keras 3 program" section."""
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  section = readme.split("### In a Keras 3 program", 1)[1].split("\n## ")[0]
  return re.findall(r"```python\n(.*?)```", section, re.S)


def _parity_cases():
  """(layer, inputs) for every layer that runs in both Kerases (not
  MultiEmbedding, not GlobalToken "dcn"): tiny shapes, no dropout, so
  training=True is deterministic too."""
  rng = np.random.default_rng(5)
  tokens = rng.normal(size=(4, 4, 8)).astype(np.float32)
  view = rng.normal(size=(4, 6, 3)).astype(np.float32)
  vec = rng.normal(size=(4, 5)).astype(np.float32)
  return [
      (layers.RandomPermutationSplit(3, 8, seed=2), view),
      (layers.SemanticGroupSplit(2, 8, groups=["x"] * 3 + ["y"] * 3), view),
      (layers.OrderedSplit(2, 8, kernel_l2=0.1), view),
      (layers.GlobalToken(8, "mlp", hidden_units=[6]), view),
      (layers.GlobalToken(8, "fm"), view),
      (layers.GlobalToken(8, "fwfm"), view),
      (layers.CrossedPretrainedToken(8), [(vec, vec * 2)]),
      (layers.DenseToken(8), vec),
      (layers.TaskTokens(2, 8), vec),
      (layers.TokenMixing(), tokens),
      (layers.PerTokenFFN(2, "gelu"), tokens),
      (layers.PerTokenFFN(2, "swiglu", implementation="batched"), tokens),
      (layers.SparseMoEFFN(3, 2), tokens),
      (layers.SparseMoEFFN(3, 2, activation="swiglu",
                           implementation="batched"), tokens),
      (layers.RankMixerBlock(2), tokens),
      (layers.RankUpBlock(2, num_experts=2), tokens),
      (layers.TaskTowers(["p", "q"], [4], use_task_tokens=True), tokens),
  ]


@pytest.fixture(scope="module")
def keras_2_and_3(tmp_path_factory):
  """Runs the parity cases here (Keras 2) and in the Keras 3 subprocess."""
  case_dir = str(tmp_path_factory.mktemp("cases"))
  cases, arrays, keras_2 = [], {}, []
  for i, (layer, inputs) in enumerate(_parity_cases()):
    pair = isinstance(inputs, list)
    flat = list(inputs[0]) if pair else [inputs]
    layer(inputs)  # random weights: Keras 3 gets them through set_weights
    for j, value in enumerate(flat):
      arrays[f"in{i}_{j}"] = value
    for j, value in enumerate(layer.get_weights()):
      arrays[f"w{i}_{j}"] = value
    for mode in (False, True):
      for j, out in enumerate(tf.nest.flatten(layer(inputs, training=mode))):
        arrays[f"out{i}_{int(mode)}_{j}"] = out.numpy()
    cases.append({"class": type(layer).__name__, "config": layer.get_config(),
                  "pair": pair, "num_inputs": len(flat),
                  "num_weights": len(layer.weights)})
    keras_2.append([(w.name[:-len(":0")], w.shape.as_list())
                    for w in layer.weights])
  with open(os.path.join(case_dir, "cases.json"), "w") as f:
    json.dump(cases, f)
  np.savez(os.path.join(case_dir, "keras2.npz"), **arrays)

  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("TF_USE_LEGACY_KERAS", None)
  work = str(tmp_path_factory.mktemp("readme"))
  result = subprocess.run(
      [sys.executable, "-c", _KERAS_3,
       json.dumps(_readme_keras_3_blocks()), case_dir],
      cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  return {"cases": cases, "keras_2_weights": keras_2, "report": report,
          "keras_2": np.load(os.path.join(case_dir, "keras2.npz")),
          "keras_3": np.load(os.path.join(case_dir, "keras3.npz"))}


def test_readme_keras_3_example_trains_saves_and_reloads(keras_2_and_3):
  report = keras_2_and_3["report"]
  assert report["tf_keras"].startswith("keras."), report["tf_keras"]
  assert report["layer_base"].startswith("keras."), report["layer_base"]
  losses = report["losses"]
  assert losses[-1] < losses[0], losses
  assert report["reload_max_diff"] == 0.0


def test_readme_keras_rs_example_feeds_the_layers(keras_2_and_3):
  assert keras_2_and_3["report"]["keras_rs"] == [64, 2, 16]


def test_keras_3_has_the_keras_2_weight_names_and_shapes(keras_2_and_3):
  keras_3 = keras_2_and_3["report"]["weights"]
  for case, k2, k3 in zip(keras_2_and_3["cases"],
                          keras_2_and_3["keras_2_weights"], keras_3):
    if case["class"] in _UNSCOPED_IN_KERAS_2:
      k2 = [(name.split("/")[-1], shape) for name, shape in k2]
      k3 = [(path.split("/")[-1], shape) for path, shape in k3]
    assert [(_unnumbered(n), s) for n, s in k3] == \
        [(_unnumbered(n), s) for n, s in k2], case["class"]


def test_same_config_and_weights_give_the_same_outputs(keras_2_and_3):
  keras_2, keras_3 = keras_2_and_3["keras_2"], keras_2_and_3["keras_3"]
  outputs = [k for k in keras_2.files if k.startswith("out")]
  assert sorted(outputs) == sorted(keras_3.files)
  for key in outputs:
    case = keras_2_and_3["cases"][int(key[3:].split("_")[0])]["class"]
    np.testing.assert_allclose(keras_3[key], keras_2[key], rtol=1e-5,
                               atol=1e-5, err_msg=f"{case} {key}")
