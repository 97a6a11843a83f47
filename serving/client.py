r"""Clients of a TF Serving model: gRPC and REST, plus a command line.

    python -m serving.client --server=localhost:8500 --model_name=rankup \
        --examples=/tmp/data/eval-00000-of-00008.tfrecord --count=4
    python -m serving.client --rest=http://localhost:8501 --model_name=rankup \
        --examples=... --signature=predict_raw

gRPC (`GrpcClient`): tensorflow_serving.apis PredictionServiceStub, a
PredictRequest holding serialized tf.Examples (`serving_default`) or raw
tensors (`predict_raw`), a deadline per call, retries with backoff on
UNAVAILABLE only (every other status is the request's fault or the
server's answer and is raised at once). TLS with `--tls` (the system's
root certificates, or `--tls_root_certificates=ca.pem`):

    python -m serving.client --server=serving.example.com:443 --tls \
        --model_name=rankup --examples=...

REST (`RestClient`): POST /v1/models/<name>[/versions/<v>]:predict with the
row form {"instances": [...]} or the column form {"inputs": {...}}; bytes
(serialized tf.Example) travel as {"b64": ...}.
"""

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Dict, List, Mapping, Optional, Sequence

import grpc
import numpy as np
from absl import flags

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from rankup_tf import cli
from rankup_tf import features
from rankup_tf import input_pipeline
from rankup_tf import schema as schema_lib
from rankup_tf.serving import export as export_lib

Outputs = Dict[str, np.ndarray]


class GrpcClient:
  """PredictionService over gRPC.

  Example:

  ```python
  client = GrpcClient("localhost:8500", "rankup")
  probabilities = client.predict_examples([example.SerializeToString()])
  probabilities["click"]  # float32 [1]
  # Over TLS:
  client = GrpcClient("serving.example.com:443", "rankup",
                      credentials=grpc.ssl_channel_credentials())
  ```
  """

  def __init__(self, server: str, model_name: str, timeout: float = 5.0,
               retries: int = 3, backoff: float = 0.2,
               credentials: Optional[grpc.ChannelCredentials] = None,
               channel: Optional[grpc.Channel] = None):
    self.model_name = export_lib.check_model_name(model_name)
    self.timeout = timeout
    self.retries = retries
    self.backoff = backoff
    self._channel = channel or (
        grpc.secure_channel(server, credentials) if credentials is not None
        else grpc.insecure_channel(server))
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
        self._channel)

  def request(self, inputs: Mapping[str, np.ndarray], signature: str,
              version: Optional[int] = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = signature
    if version is not None:
      request.model_spec.version.value = version
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request

  def predict(self, request: predict_pb2.PredictRequest) -> Outputs:
    """Sends a request; retries UNAVAILABLE, raises any other grpc.RpcError."""
    for attempt in range(self.retries + 1):
      try:
        response = self._stub.Predict(request, timeout=self.timeout)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
      except grpc.RpcError as e:
        if (e.code() != grpc.StatusCode.UNAVAILABLE
            or attempt == self.retries):
          raise
        time.sleep(self.backoff * 2 ** attempt)
    raise AssertionError("unreachable")

  def predict_examples(self, serialized: Sequence[bytes],
                       version: Optional[int] = None) -> Outputs:
    """`serving_default` on serialized tf.Examples."""
    return self.predict(self.request(
        {export_lib.EXAMPLES_INPUT: np.array(list(serialized), dtype=object)},
        "serving_default", version))

  def predict_raw(self, inputs: Mapping[str, np.ndarray],
                  version: Optional[int] = None) -> Outputs:
    """`predict_raw` on named raw feature arrays."""
    return self.predict(self.request(inputs, "predict_raw", version))

  def close(self):
    self._channel.close()


def _jsonable(value):
  if isinstance(value, bytes):
    return {"b64": base64.b64encode(value).decode("ascii")}
  if isinstance(value, np.ndarray):
    return [_jsonable(v) for v in value] if value.dtype == object \
        else value.tolist()
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


class RestClient:
  """TF Serving's REST predict API (no dependencies beyond urllib).

  Example:

  ```python
  client = RestClient("http://localhost:8501", "rankup")
  client.predict_instances([{"examples": serialized}])   # row form
  client.predict_inputs({"user_id": [12, 13], ...}, signature="predict_raw")
  ```
  """

  def __init__(self, base_url: str, model_name: str, timeout: float = 5.0):
    self.base_url = base_url.rstrip("/")
    self.model_name = export_lib.check_model_name(model_name)
    self.timeout = timeout

  def url(self, version: Optional[int] = None) -> str:
    path = f"/v1/models/{self.model_name}"
    if version is not None:
      path += f"/versions/{version}"
    return f"{self.base_url}{path}:predict"

  def _post(self, body: Dict, version: Optional[int]) -> Dict:
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(self.url(version), data=data, headers={
        "Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      detail = e.read().decode("utf-8", "replace")
      raise RuntimeError(f"TF Serving REST {e.code}: {detail}") from None
    except urllib.error.URLError as e:
      raise RuntimeError(f"{self.url(version)}: {e.reason}") from None

  def predict_instances(self, instances: List[Dict],
                        signature: str = "serving_default",
                        version: Optional[int] = None) -> List[Dict]:
    """Row form: one dict of named inputs per example."""
    body = {"signature_name": signature,
            "instances": [{k: _jsonable(v) for k, v in row.items()}
                          for row in instances]}
    return self._post(body, version)["predictions"]

  def predict_inputs(self, inputs: Mapping[str, object],
                     signature: str = "serving_default",
                     version: Optional[int] = None) -> Dict[str, List]:
    """Column form: each named input holds the whole batch."""
    body = {"signature_name": signature,
            "inputs": {k: _jsonable(v) for k, v in inputs.items()}}
    return self._post(body, version)["outputs"]


def tls_credentials(root_certificates: str = "") -> grpc.ChannelCredentials:
  """TLS channel credentials; the system's roots unless a PEM file is given."""
  pem = None
  if root_certificates:
    with open(root_certificates, "rb") as f:
      pem = f.read()
  return grpc.ssl_channel_credentials(root_certificates=pem)


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors(RuntimeError):
    if FLAGS.timeout <= 0:
      raise ValueError(f"--timeout must be positive, got {FLAGS.timeout}.")
    examples = input_pipeline.read_examples(FLAGS.examples, FLAGS.count)
    if FLAGS.signature == "predict_raw":
      if not FLAGS.schema:
        raise ValueError("--signature=predict_raw needs --schema (the "
                         "export's assets.extra/schema.json).")
      schema = schema_lib.Schema.load(FLAGS.schema)
      raw = {k: v.numpy() for k, v in features.padded_raw_features(
          schema, tf.constant(examples)).items()}
    if FLAGS.rest:
      client = RestClient(FLAGS.rest, FLAGS.model_name, FLAGS.timeout)
      if FLAGS.signature == "predict_raw":
        outputs = client.predict_inputs(raw, "predict_raw")
      else:
        outputs = client.predict_inputs({"examples": examples})
    else:
      client = GrpcClient(
          FLAGS.server, FLAGS.model_name, FLAGS.timeout,
          credentials=(tls_credentials(FLAGS.tls_root_certificates)
                       if FLAGS.tls or FLAGS.tls_root_certificates else None))
      try:
        outputs = (client.predict_raw(raw)
                   if FLAGS.signature == "predict_raw"
                   else client.predict_examples(examples))
      except grpc.RpcError as e:
        raise RuntimeError(f"{e.code().name}: {e.details()}") from None
  for i in range(len(examples)):
    print(f"example {i}: " + "  ".join(
        f"{task}={float(np.asarray(values)[i]):.4f}"
        for task, values in sorted(outputs.items())))


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("server", "localhost:8500", "gRPC host:port.")
  flags.DEFINE_boolean("tls", False, "gRPC over TLS, checking the server's "
                       "certificate against the system's root certificates.")
  flags.DEFINE_string("tls_root_certificates", "", "PEM file of the root "
                      "certificates to check the server against (implies "
                      "--tls).")
  flags.DEFINE_string("rest", "", "REST base URL (e.g. http://host:8501); "
                      "set to use REST instead of gRPC.")
  flags.DEFINE_string("model_name", "rankup", "Served model name.")
  flags.DEFINE_string("examples", None, "TFRecord file(s) of tf.Example.")
  flags.DEFINE_integer("count", 4, "Examples to send (at least 1).")
  flags.DEFINE_enum("signature", "serving_default",
                    ["serving_default", "predict_raw"], "Signature.")
  flags.DEFINE_string("schema", "", "Schema JSON (for predict_raw; it is in "
                      "the export's assets.extra/schema.json).")
  flags.DEFINE_float("timeout", 5.0, "Deadline per call, seconds.")
  flags.mark_flag_as_required("examples")


def cli_main() -> None:
  """`python -m serving.client`, the `rankup-client` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
