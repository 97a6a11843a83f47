"""Serving: export layout, validation, gRPC/REST clients over real
protocols, bad requests, versions, the op check, config."""

import dataclasses
import os
import re
import socket
import subprocess
import sys
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import rankup_tf
from rankup_tf import features as features_lib
from rankup_tf import input_pipeline
from rankup_tf import models
from rankup_tf import run_dir
from rankup_tf.serving import client as client_lib
from rankup_tf.serving import config as serving_config
from rankup_tf.serving import export as export_lib
from rankup_tf.serving import op_check
from rankup_tf.trainer import config as train_config
from tests import serving_double
from tests import tfexamples
from tests.conftest import REPO

MODEL_CONFIG = models.RankUpConfig(num_tokens=8, token_dim=16,
                                   embedding_dim=4, tower_units=(8,))
# Deadlines for a busy machine: a request to a loaded model takes
# milliseconds, the slack is for CPU contention and changes nothing that is
# asserted.
DEADLINE = 120.0
SUBPROCESS_TIMEOUT = 600
TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A model_dir as the trainer leaves it, and real examples."""
  root = tmp_path_factory.mktemp("serving")
  schema = tfexamples.all_kinds_schema()
  data = tfexamples.write_records(str(root / "data.tfrecord"), [
      tfexamples.example(tfexamples.all_kinds_row(i)) for i in range(64)])
  model = models.RankUpModel(schema, MODEL_CONFIG)
  model.build_from_schema()
  model.compile(optimizer=tf.keras.optimizers.legacy.Adam(0.01))
  model.fit(rankup_tf.make_dataset(data, schema, 16, repeat=True),
            steps_per_epoch=5, verbose=0)
  model_dir = str(root / "run")
  train_config.TrainConfig(train_files=data, schema="unused",
                           model_dir=model_dir,
                           model_config=MODEL_CONFIG).save()
  schema.save(os.path.join(model_dir, run_dir.SCHEMA_FILE))
  tf.train.Checkpoint(model=model).save(
      os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt"))
  examples = input_pipeline.read_examples(data, 64)
  return {"model": model, "schema": schema, "data": data,
          "model_dir": model_dir, "examples": examples, "root": root}


def test_a_checkpoint_missing_a_weight_of_the_config_is_refused(trained,
                                                                 tmp_path):
  # The config says final_norm=False but the checkpoint has its weights:
  # fine (unused weights). The reverse would serve a LayerNorm at its
  # initial value, so it is refused, naming the checkpoint.
  from rankup_tf.serving import restore
  no_norm = dataclasses.replace(MODEL_CONFIG, final_norm=False)
  model = models.RankUpModel(trained["schema"], no_norm)
  model.build_from_schema()
  model_dir = str(tmp_path / "run")
  train_config.TrainConfig(train_files=trained["data"], schema="unused",
                           model_dir=model_dir, model_config=no_norm).save()
  trained["schema"].save(os.path.join(model_dir, run_dir.SCHEMA_FILE))
  checkpoint = tf.train.Checkpoint(model=model).save(
      os.path.join(model_dir, run_dir.CHECKPOINT_DIR, "ckpt"))
  restored, _ = restore.model_from_model_dir(model_dir)
  assert restored.final_norm is None
  train_config.TrainConfig(train_files=trained["data"], schema="unused",
                           model_dir=model_dir,
                           model_config=MODEL_CONFIG).save()
  with pytest.raises(ValueError, match=re.escape(checkpoint)
                     + ".*does not hold every weight"):
    restore.model_from_model_dir(model_dir)
  # Weights of other shapes (one more dense token than it trained) are
  # refused too, naming the checkpoint and the weight.
  more_dense = model.token_counts["dense"] + 1
  train_config.TrainConfig(
      train_files=trained["data"], schema="unused", model_dir=model_dir,
      model_config=dataclasses.replace(no_norm,
                                       num_dense_tokens=more_dense)).save()
  with pytest.raises(ValueError, match=re.escape(checkpoint)
                     + ".*does not fit the model.*dense_token"):
    restore.model_from_model_dir(model_dir)


@pytest.fixture(scope="module")
def export_base(trained):
  base = str(trained["root"] / "export")
  export_lib.export_saved_model(trained["model"], trained["schema"], base,
                                "rankup", trained["examples"][:4])
  return base


@pytest.fixture(scope="module")
def grpc_server(export_base):
  server, address, _ = serving_double.start_grpc(export_base)
  yield address
  server.stop(None)


def _expected(trained, examples):
  features, _ = features_lib.FeatureTransform(trained["schema"]).parse(
      tf.constant(examples), with_labels=False)
  logits = trained["model"](features, training=False)
  return {t: tf.sigmoid(v).numpy() for t, v in logits.items()}


def test_export_layout_and_warmup(export_base):
  version = os.path.join(export_base, "rankup", "1")
  assert sorted(os.listdir(os.path.join(export_base, "rankup"))) == ["1"]
  assert os.path.exists(os.path.join(version, "saved_model.pb"))
  warmup = os.path.join(version, "assets.extra", export_lib.WARMUP_FILE)
  logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(warmup)]
  assert sorted(l.predict_log.request.model_spec.signature_name
                for l in logs) == ["predict_raw", "serving_default"]
  examples = tf.make_ndarray(
      logs[0].predict_log.request.inputs[export_lib.EXAMPLES_INPUT])
  assert len(examples) == 4  # real examples
  loaded = tf.saved_model.load(version)
  outputs = loaded.signatures["serving_default"](
      examples=tf.constant(examples))
  assert sorted(outputs) == ["buy", "click"]
  assert outputs["click"].shape == [4] and outputs["click"].dtype == tf.float32


def test_validate_in_a_fresh_process(export_base, trained):
  result = subprocess.run(
      [sys.executable, "-m", "serving.validate",
       f"--export_dir={export_base}/rankup/1", f"--examples={trained['data']}",
       f"--model_dir={trained['model_dir']}"],
      cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "export validation passed" in result.stdout
  assert "'predict_raw', 'serving_default'" in result.stdout
  diff = float(result.stdout.split("in_memory_max_abs_diff=")[1].split(",")[0])
  assert diff <= 1e-5


def test_grpc_client_over_the_wire_matches_the_model(grpc_server, trained):
  client = client_lib.GrpcClient(grpc_server, "rankup", timeout=DEADLINE)
  examples = trained["examples"][:7]
  expected = _expected(trained, examples)
  by_examples = client.predict_examples(examples)
  raw = {k: v.numpy() for k, v in features_lib.padded_raw_features(
      trained["schema"], tf.constant(examples)).items()}
  by_raw = client.predict_raw(raw)
  for task in ("click", "buy"):
    np.testing.assert_allclose(by_examples[task], expected[task], atol=1e-5)
    np.testing.assert_allclose(by_raw[task], expected[task], atol=1e-5)
  client.close()


def _grpc_error(client, request):
  with pytest.raises(grpc.RpcError) as error:
    client.predict(request)
  return error.value


@pytest.mark.parametrize("case, message", [
    ("missing_feature", "u_vec"),
    ("wrong_dtype", "Expects arg 's_hash' to be string but float"),
    ("unknown_signature", "Serving signature key \"predict_all\" not found"),
    ("empty_batch", "empty batch"),
    ("garbage", "Could not parse example input, value: 'not a tf.Example"),
    ("binary_garbage", "Could not parse example input"),
    ("missing_input", "missing inputs ['i_hash']"),
    ("nan_example", "Feature d_std must be finite; record #1 of the batch "
     "has nan"),
    ("inf_raw", "Feature u_vec must be finite; record #0 of the batch has "
     "[inf 1.000000 2.000000 3.000000]"),
])
def test_bad_requests_get_invalid_argument(grpc_server, trained, case,
                                           message):
  client = client_lib.GrpcClient(grpc_server, "rankup", retries=0,
                                 timeout=DEADLINE)
  schema = trained["schema"]
  raw = {k: v.numpy() for k, v in features_lib.padded_raw_features(
      schema, tf.constant(trained["examples"][:2])).items()}
  if case == "missing_feature":
    row = tfexamples.all_kinds_row(3)
    del row["u_vec"]
    request = client.request({"examples": np.array(
        [tfexamples.example(row)], dtype=object)}, "serving_default")
  elif case == "wrong_dtype":
    raw["s_hash"] = np.array([1.5, 2.5], np.float32)
    request = client.request(raw, "predict_raw")
  elif case == "unknown_signature":
    request = client.request({"examples": np.array(
        trained["examples"][:1], dtype=object)}, "predict_all")
  elif case == "empty_batch":
    request = client.request({"examples": np.array([], dtype=object)},
                             "serving_default")
  elif case == "garbage":
    request = client.request({"examples": np.array(
        [b"not a tf.Example at all"], dtype=object)}, "serving_default")
  elif case == "nan_example":
    row = tfexamples.all_kinds_row(3)
    row["d_std"] = float("nan")
    request = client.request({"examples": np.array(
        [trained["examples"][0], tfexamples.example(row)], dtype=object)},
                             "serving_default")
  elif case == "inf_raw":
    raw["u_vec"][0, 0] = np.inf
    request = client.request(raw, "predict_raw")
  elif case == "binary_garbage":
    request = client.request({"examples": np.array(
        [b"\x08\x96\x01\xff\xfe"], dtype=object)}, "serving_default")
  else:
    del raw["i_hash"]
    request = client.request(raw, "predict_raw")
  error = _grpc_error(client, request)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert message in error.details(), error.details()
  # The export did not take the serving process down.
  assert client.predict_examples(trained["examples"][:1])["click"].shape == (1,)


def test_reexport_adds_a_version_while_the_old_one_answers(trained,
                                                           tmp_path):
  base = str(tmp_path / "export")
  model, schema = trained["model"], trained["schema"]
  first = export_lib.export_saved_model(model, schema, base, "rankup",
                                        trained["examples"][:2])
  server, address, store = serving_double.start_grpc(base)
  client = client_lib.GrpcClient(address, "rankup", timeout=DEADLINE)
  try:
    before = client.predict_examples(trained["examples"][:5])
    kernel = model.towers._towers["click"].layers[-1].kernel
    original = kernel.numpy()
    kernel.assign(original + 1.0)
    second = export_lib.export_saved_model(model, schema, base, "rankup",
                                           trained["examples"][:2])
    kernel.assign(original)
    assert (first.endswith("/1"), second.endswith("/2")) == (True, True)
    store.poll()  # TF Serving's file-system poll finds and loads version 2
    latest = client.predict_examples(trained["examples"][:5])
    old = client.predict_examples(trained["examples"][:5], version=1)
    np.testing.assert_allclose(old["click"], before["click"], atol=1e-6)
    assert not np.allclose(latest["click"], before["click"])
  finally:
    server.stop(None)


def test_failed_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
  def refuse(path):
    raise op_check.NonCoreOpError("simulated")
  monkeypatch.setattr(op_check, "check_export", refuse)
  with pytest.raises(op_check.NonCoreOpError):
    export_lib.export_saved_model(trained["model"], trained["schema"],
                                  str(tmp_path), "rankup",
                                  trained["examples"][:1])
  assert os.listdir(tmp_path / "rankup") == []


def test_an_export_is_validated_before_it_gets_its_version(trained,
                                                           tmp_path):
  """A refused validation leaves no version; a killed export's leftover
  temporary folder is removed by the next export."""
  seen = []

  def refuse(path):
    seen.append(os.path.basename(path))
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert not os.path.exists(tmp_path / "rankup" / "1")  # not visible yet
    raise RuntimeError("validation failed")

  with pytest.raises(RuntimeError, match="validation failed"):
    export_lib.export_saved_model(trained["model"], trained["schema"],
                                  str(tmp_path), "rankup",
                                  trained["examples"][:1], validate=refuse)
  assert seen and seen[0].startswith(".tmp-1-")
  assert os.listdir(tmp_path / "rankup") == []
  (tmp_path / "rankup" / ".tmp-1-killed").mkdir()  # a killed export's
  path = export_lib.export_saved_model(
      trained["model"], trained["schema"], str(tmp_path), "rankup",
      trained["examples"][:1], validate=lambda path: None)
  assert path.endswith("rankup/1")
  assert os.listdir(tmp_path / "rankup") == ["1"]


def test_op_check_rejects_a_non_core_op(export_base, tmp_path):
  saved = op_check.read_saved_model(f"{export_base}/rankup/1")
  ops = op_check.graph_ops(saved)
  assert {"ParseExampleV2", "StringToHashBucketFast"} <= ops
  assert op_check.unservable_ops(ops) == {}
  node = saved.meta_graphs[0].graph_def.library.function[0].node_def.add()
  node.name, node.op = "custom", "RankUpFancyLookup"
  bad_dir = tmp_path / "bad"
  bad_dir.mkdir()
  (bad_dir / "saved_model.pb").write_bytes(saved.SerializeToString())
  with pytest.raises(op_check.NonCoreOpError,
                     match="RankUpFancyLookup: not a core TensorFlow op"):
    op_check.check_export(str(bad_dir))
  result = subprocess.run([sys.executable, "-m", "serving.op_check",
                           f"--export_dir={bad_dir}"], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
  assert result.returncode == 1 and "RankUpFancyLookup" in result.stderr


class _Flaky(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Fails the first `failures` calls with `code`, then answers."""

  def __init__(self, failures, code):
    self.failures, self.code, self.calls = failures, code, 0

  def Predict(self, request, context):  # noqa: N802
    self.calls += 1
    if self.calls <= self.failures:
      context.abort(self.code, "try later")
    response = predict_pb2.PredictResponse()
    response.outputs["click"].CopyFrom(tf.make_tensor_proto(
        np.array([0.5], np.float32)))
    return response


@pytest.mark.parametrize("code, retried", [
    (grpc.StatusCode.UNAVAILABLE, True),
    (grpc.StatusCode.INVALID_ARGUMENT, False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, False),
])
def test_client_retries_unavailable_only(code, retried):
  servicer = _Flaky(2, code)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      servicer, server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    client = client_lib.GrpcClient(f"127.0.0.1:{port}", "m", retries=3,
                                   backoff=0.01, timeout=DEADLINE)
    if retried:
      assert client.predict_examples([b"x"])["click"].tolist() == [0.5]
      assert servicer.calls == 3
    else:
      with pytest.raises(grpc.RpcError) as error:
        client.predict_examples([b"x"])
      assert error.value.code() == code and servicer.calls == 1
  finally:
    server.stop(None)


def test_rest_client_row_and_column_forms(export_base, trained):
  server, url = serving_double.start_rest(export_base)
  try:
    client = client_lib.RestClient(url, "rankup", timeout=DEADLINE)
    examples = trained["examples"][:3]
    expected = _expected(trained, examples)
    rows = client.predict_instances([{"examples": e} for e in examples])
    np.testing.assert_allclose([r["click"] for r in rows], expected["click"],
                               atol=1e-5)
    raw = {k: v.numpy() for k, v in features_lib.padded_raw_features(
        trained["schema"], tf.constant(examples)).items()}
    columns = client.predict_inputs(raw, signature="predict_raw")
    np.testing.assert_allclose(columns["buy"], expected["buy"], atol=1e-5)
    with pytest.raises(RuntimeError, match="REST 400: .*empty batch"):
      client.predict_inputs({"examples": []})
  finally:
    server.shutdown()
  closed = socket.socket()
  closed.bind(("127.0.0.1", 0))
  port = closed.getsockname()[1]
  closed.close()
  with pytest.raises(RuntimeError, match=re.escape(
      f"http://127.0.0.1:{port}/v1/models/rankup:predict: ") + ".*refused"):
    client_lib.RestClient(f"http://127.0.0.1:{port}", "rankup",
                          timeout=DEADLINE).predict_instances([{"x": 1}])


def test_client_cli_prints_predictions(grpc_server, trained):
  result = subprocess.run(
      [sys.executable, "-m", "serving.client", f"--server={grpc_server}",
       "--model_name=rankup", f"--examples={trained['data']}", "--count=3",
       f"--timeout={DEADLINE}"],
      cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith("example")]
  assert len(lines) == 3 and "click=" in lines[0]


def test_serving_config_files(tmp_path):
  result = serving_config.write_config("/exports", "rankup",
                                       str(tmp_path), "gpu")
  text = open(result["models.config"]).read()
  assert 'base_path: "/models/rankup"' in text and "num_versions: 2" in text
  batching = open(result["batching_parameters.txt"]).read()
  assert "max_batch_size { value: 2048 }" in batching
  assert "allowed_batch_sizes: 2048" in batching
  assert "tensorflow/serving:latest-gpu" in result["docker"]
  assert "--batching_parameters_file=/config/batching_parameters.txt" in \
      result["docker"]
  assert "kind: Deployment" in result["kubernetes"]


def test_grpc_client_over_tls(export_base, trained):
  with open(os.path.join(TLS_DIR, "tls_localhost.key"), "rb") as f:
    key = f.read()
  with open(os.path.join(TLS_DIR, "tls_localhost.crt"), "rb") as f:
    certificate = f.read()
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      serving_double.PredictionServiceDouble(
          serving_double.ModelStore(export_base)), server)
  port = server.add_secure_port(
      "127.0.0.1:0", grpc.ssl_server_credentials([(key, certificate)]))
  server.start()
  try:
    client = client_lib.GrpcClient(
        f"localhost:{port}", "rankup", timeout=DEADLINE,
        credentials=client_lib.tls_credentials(
            os.path.join(TLS_DIR, "tls_localhost.crt")))
    outputs = client.predict_examples(trained["examples"][:3])
    np.testing.assert_allclose(
        outputs["click"], _expected(trained, trained["examples"][:3])["click"],
        atol=1e-5)
    # Plain text to a TLS port never gets an answer.
    plain = client_lib.GrpcClient(f"localhost:{port}", "rankup", retries=0,
                                  timeout=DEADLINE)
    assert _grpc_error(plain, plain.request(
        {"examples": np.array(trained["examples"][:1], dtype=object)},
        "serving_default")).code() == grpc.StatusCode.UNAVAILABLE
  finally:
    server.stop(None)


@pytest.mark.parametrize("name", ["../../x", "a/b", "RankUp", "rank_up",
                                  "-rankup", 'a"b', "", "x" * 51])
def test_unsafe_model_names_are_rejected_everywhere(trained, tmp_path, name):
  message = re.escape(f"model name {name!r} is not allowed")
  with pytest.raises(ValueError, match=message):
    export_lib.export_saved_model(trained["model"], trained["schema"],
                                  str(tmp_path / "export"), name,
                                  trained["examples"][:1])
  with pytest.raises(ValueError, match=message):
    serving_config.write_config("/exports", name, str(tmp_path / "config"))
  with pytest.raises(ValueError, match=message):
    client_lib.GrpcClient("localhost:1", name)
  with pytest.raises(ValueError, match=message):
    client_lib.RestClient("http://localhost:1", name)
  assert os.listdir(tmp_path) == []  # nothing written, inside or outside


def _predict_cli(*args):
  result = subprocess.run([sys.executable, "-m", "serving.predict", *args],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
  return result.returncode, result.stdout, result.stderr


def test_predict_cli_answers_or_says_what_is_wrong_in_one_line(
    export_base, trained, tmp_path):
  row = tfexamples.all_kinds_row(2)
  row["u_vec"] = [0.0, float("nan"), 0.0, 0.0]
  nan_file = tfexamples.write_records(str(tmp_path / "nan.tfrecord"),
                                      [tfexamples.example(row)])
  cases = [
      ([f"--examples={nan_file}"],
       "error: Feature u_vec must be finite; record #0 of the batch has "
       "[0.000000 nan 0.000000 0.000000] (leave a missing value out: it "
       "gets the default)."),
      ([f"--examples={trained['data']}", "--count=0"],
       "error: the example count must be at least 1, got 0."),
  ]
  for args, expected in cases:
    code, out, err = _predict_cli(f"--export_base={export_base}", *args)
    assert (code, err.strip().splitlines()[-1]) == (1, expected), err[-2000:]
    assert "Traceback" not in err and "click=" not in out
  code, out, err = _predict_cli(f"--export_base={tmp_path}/none",
                                f"--examples={trained['data']}")
  assert (code, err.strip().splitlines()[-1]) == (
      1, f"error: {tmp_path}/none/rankup: no such folder (exports are "
      "<export_base>/<model_name>/<version>/).")
  code, out, err = _predict_cli(f"--export_base={export_base}",
                                f"--examples={trained['data']}", "--count=2")
  assert code == 0, err[-2000:]
  assert out.count("click=") == 2
