"""Test doubles of TF Serving (tests only): gRPC PredictionService and REST.

They serve `<export_base>/<model_name>/<version>/` SavedModels the way TF
Serving does for what the project relies on: versions loaded (and their
warmup requests replayed) before they answer, so no request waits for a
load; model and version resolution (latest by default, any loaded version
on request); signature lookup; input names and dtypes checked against the
signature; and every error answered as a status (INVALID_ARGUMENT for bad
requests, NOT_FOUND for unknown models or versions) without taking the
server down.
"""

import base64
import json
import os
import threading
from concurrent import futures
from http import server as http_server
from typing import Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from rankup_tf.serving import validate


class RequestError(Exception):
  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


class ModelStore:
  """The loaded versions under export_base, as TF Serving holds them.

  Every version found is loaded, and its warmup requests replayed, when
  the store is created, before any server answers; versions exported later
  are loaded by `poll()` (TF Serving polls its file system). Requests only
  ever reach loaded versions.
  """

  def __init__(self, export_base: str):
    self.export_base = export_base
    self._loaded: Dict[Tuple[str, int], object] = {}
    self._lock = threading.Lock()
    self.poll()

  def poll(self) -> None:
    """Loads the versions that appeared since the last poll."""
    for name in sorted(os.listdir(self.export_base)):
      base = os.path.join(self.export_base, name)
      if not os.path.isdir(base):
        continue
      for version in sorted(int(v) for v in os.listdir(base) if v.isdigit()):
        if (name, version) not in self._loaded:
          path = os.path.join(base, str(version))
          loaded = tf.saved_model.load(path)
          validate.replay_warmup(loaded, path)
          with self._lock:
            self._loaded[(name, version)] = loaded

  def get(self, name: str, version: Optional[int]):
    with self._lock:
      versions = sorted(v for n, v in self._loaded if n == name)
    if not versions:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: Latest({name})")
    if version is None:
      version = versions[-1]
    if version not in versions:
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: "
                         f"Specific({name}, {version})")
    return self._loaded[(name, version)], version

  def run(self, name: str, version: Optional[int], signature_name: str,
          inputs: Dict[str, object], json_values: bool = False):
    """Runs a signature; JSON values (REST) take the signature's dtypes,
    tensor protos (gRPC) must already have them."""
    loaded, version = self.get(name, version)
    signature_name = signature_name or "serving_default"
    if signature_name not in loaded.signatures:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"Serving signature key \"{signature_name}\" not "
                         "found.")
    signature = loaded.signatures[signature_name]
    _, specs = signature.structured_input_signature
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
      raise RequestError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"input size does not match signature: missing inputs {missing}, "
          f"unknown inputs {unknown} (signature {signature_name} expects "
          f"{sorted(specs)})")
    tensors = {}
    for key, value in inputs.items():
      spec = specs[key]
      try:
        tensor = tf.constant(value, dtype=spec.dtype if json_values
                             else None)
      except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{key}': {e}") from None
      if tensor.dtype != spec.dtype:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expects arg '{key}' to be {spec.dtype.name} but "
            f"{tensor.dtype.name} is provided")
      if not spec.shape.is_compatible_with(tensor.shape):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{key}' has shape {tensor.shape}, the signature wants "
            f"{spec.shape}")
      tensors[key] = tensor
    try:
      outputs = signature(**tensors)
    except tf.errors.InvalidArgumentError as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         e.message) from None
    except UnicodeDecodeError:
      # TF's Python binding cannot decode an error message that quotes
      # non-UTF-8 input; TF Serving (C++) would pass it through.
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         "Could not parse example input (not UTF-8 "
                         "printable)") from None
    return {k: v.numpy() for k, v in outputs.items()}, version


class PredictionServiceDouble(
    prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: ModelStore):
    self.store = store

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    try:
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      version = (request.model_spec.version.value
                 if request.model_spec.HasField("version") else None)
      outputs, version = self.store.run(
          request.model_spec.name, version,
          request.model_spec.signature_name, inputs)
    except RequestError as e:
      context.abort(e.code, str(e))
    except Exception as e:  # pylint: disable=broad-except
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {e}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = (request.model_spec.signature_name
                                          or "serving_default")
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def start_grpc(export_base: str):
  """(server, "127.0.0.1:port", store) serving export_base on a free port;
  every version there is loaded before the server starts."""
  store = ModelStore(export_base)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionServiceDouble(store), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  return server, f"127.0.0.1:{port}", store


def _decode(value):
  if isinstance(value, dict) and set(value) == {"b64"}:
    return base64.b64decode(value["b64"])
  if isinstance(value, list):
    return [_decode(v) for v in value]
  return value


def start_rest(export_base: str):
  """(server, "http://127.0.0.1:port") with TF Serving's predict route;
  every version is loaded before the server starts."""
  store = ModelStore(export_base)

  class Handler(http_server.BaseHTTPRequestHandler):

    def log_message(self, *args):  # quiet
      pass

    def _reply(self, status, body):
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_POST(self):  # noqa: N802
      path = self.path
      if not (path.startswith("/v1/models/") and path.endswith(":predict")):
        return self._reply(404, {"error": f"no route {path}"})
      parts = path[len("/v1/models/"):-len(":predict")].split("/")
      name, version = parts[0], (int(parts[2]) if len(parts) == 3 else None)
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      try:
        if "instances" in body:
          rows = [{k: _decode(v) for k, v in r.items()}
                  for r in body["instances"]]
          inputs = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
        else:
          inputs = {k: _decode(v) for k, v in body["inputs"].items()}
        outputs, _ = store.run(name, version,
                               body.get("signature_name", ""), inputs,
                               json_values=True)
      except RequestError as e:
        return self._reply(400 if e.code == grpc.StatusCode.INVALID_ARGUMENT
                           else 404, {"error": str(e)})
      if "instances" in body:
        n = len(next(iter(outputs.values())))
        return self._reply(200, {"predictions": [
            {k: v[i].tolist() for k, v in outputs.items()} for i in
            range(n)]})
      return self._reply(200, {"outputs": {k: v.tolist()
                                           for k, v in outputs.items()}})

  server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, f"http://127.0.0.1:{server.server_address[1]}"
