r"""TF Serving configuration for an export, plus how to run it.

    python -m serving.config --export_base=/tmp/export --model_name=rankup \
        --output_dir=/tmp/serving_config [--device=cpu|gpu]

Writes `models.config` (the model, its base path inside the container and
a version policy keeping the two latest versions, so a new export is
loaded while the previous one keeps answering) and
`batching_parameters.txt` (server-side batching defaults for the device),
then prints the `docker run tensorflow/serving` command and a Kubernetes
Deployment + Service for them. The model name must pass
`serving.export.check_model_name`, so it is pasted into both as it is.
"""

import os
import shlex

from absl import flags

from rankup_tf import cli
from rankup_tf.serving import export as export_lib

CONTAINER_MODELS = "/models"
CONTAINER_CONFIG = "/config"

# Server-side batching. CPU: small batches, short waits (latency bound,
# one core per request thread). GPU: larger batches and a longer wait to
# fill them (throughput bound). Tune max_batch_size to the traffic's p99
# batch and batch_timeout_micros to the latency budget.
BATCHING = {
    "cpu": {"max_batch_size": 256, "batch_timeout_micros": 2000,
            "max_enqueued_batches": 64, "num_batch_threads": 4,
            "allowed_batch_sizes": [32, 64, 128, 256]},
    "gpu": {"max_batch_size": 2048, "batch_timeout_micros": 5000,
            "max_enqueued_batches": 128, "num_batch_threads": 8,
            "allowed_batch_sizes": [128, 256, 512, 1024, 2048]},
}


def models_config(model_name: str, versions_kept: int = 2) -> str:
  return f"""model_config_list {{
  config {{
    name: "{model_name}"
    base_path: "{CONTAINER_MODELS}/{model_name}"
    model_platform: "tensorflow"
    model_version_policy {{
      latest {{
        num_versions: {versions_kept}
      }}
    }}
  }}
}}
"""


def batching_parameters(device: str) -> str:
  lines = []
  for key, value in BATCHING[device].items():
    if isinstance(value, list):
      lines += [f"{key}: {v}" for v in value]
    else:
      lines.append(f"{key} {{ value: {value} }}")
  return "\n".join(lines) + "\n"


def _volume(host_path: str, container_path: str) -> str:
  """A `docker run -v` argument, quoted for the shell."""
  return shlex.quote(f"{os.path.abspath(host_path)}:{container_path}")


def docker_command(export_base: str, config_dir: str, device: str) -> str:
  image = "tensorflow/serving:latest-gpu" if device == "gpu" \
      else "tensorflow/serving:latest"
  gpus = "--gpus all " if device == "gpu" else ""
  return (
      f"docker run --rm {gpus}-p 8500:8500 -p 8501:8501 \\\n"
      f"  -v {_volume(export_base, CONTAINER_MODELS)} \\\n"
      f"  -v {_volume(config_dir, CONTAINER_CONFIG)} \\\n"
      f"  {image} \\\n"
      f"  --model_config_file={CONTAINER_CONFIG}/models.config \\\n"
      f"  --model_config_file_poll_wait_seconds=60 \\\n"
      f"  --file_system_poll_wait_seconds=30 \\\n"
      f"  --enable_batching=true \\\n"
      f"  --batching_parameters_file={CONTAINER_CONFIG}/"
      "batching_parameters.txt")


def kubernetes_manifest(model_name: str, device: str) -> str:
  image = "tensorflow/serving:latest-gpu" if device == "gpu" \
      else "tensorflow/serving:latest"
  gpu_limit = "\n              nvidia.com/gpu: 1" if device == "gpu" else ""
  return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {model_name}-serving
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {model_name}-serving}}
  template:
    metadata:
      labels: {{app: {model_name}-serving}}
    spec:
      containers:
        - name: tf-serving
          image: {image}
          args:
            - --model_config_file={CONTAINER_CONFIG}/models.config
            - --enable_batching=true
            - --batching_parameters_file={CONTAINER_CONFIG}/batching_parameters.txt
            - --file_system_poll_wait_seconds=30
          ports:
            - {{containerPort: 8500, name: grpc}}
            - {{containerPort: 8501, name: rest}}
          readinessProbe:
            httpGet: {{path: /v1/models/{model_name}, port: 8501}}
            initialDelaySeconds: 10
          resources:
            limits:
              cpu: "4"
              memory: 8Gi{gpu_limit}
          volumeMounts:
            - {{name: models, mountPath: {CONTAINER_MODELS}, readOnly: true}}
            - {{name: config, mountPath: {CONTAINER_CONFIG}, readOnly: true}}
      volumes:
        - name: models
          persistentVolumeClaim: {{claimName: {model_name}-exports}}
        - name: config
          configMap: {{name: {model_name}-serving-config}}
---
apiVersion: v1
kind: Service
metadata:
  name: {model_name}-serving
spec:
  selector: {{app: {model_name}-serving}}
  ports:
    - {{name: grpc, port: 8500, targetPort: 8500}}
    - {{name: rest, port: 8501, targetPort: 8501}}
"""


def write_config(export_base: str, model_name: str, output_dir: str,
                 device: str = "cpu") -> dict:
  """Writes models.config and batching_parameters.txt; returns the paths
  and the printed instructions.

  Raises:
    ValueError: an unsafe model name, or an unknown device.
  """
  export_lib.check_model_name(model_name)
  if device not in BATCHING:
    raise ValueError(f"device {device!r} is unknown; expected one of "
                     f"{sorted(BATCHING)}.")
  os.makedirs(output_dir, exist_ok=True)
  paths = {"models.config": os.path.join(output_dir, "models.config"),
           "batching_parameters.txt": os.path.join(
               output_dir, "batching_parameters.txt")}
  with open(paths["models.config"], "w") as f:
    f.write(models_config(model_name))
  with open(paths["batching_parameters.txt"], "w") as f:
    f.write(batching_parameters(device))
  return dict(paths, docker=docker_command(export_base, output_dir, device),
              kubernetes=kubernetes_manifest(model_name, device))


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  with cli.one_line_errors():
    result = write_config(FLAGS.export_base, FLAGS.model_name,
                          FLAGS.output_dir, FLAGS.device)
  print(f"wrote {result['models.config']} and "
        f"{result['batching_parameters.txt']}\n")
  print("# Run TF Serving (gRPC on 8500, REST on 8501):")
  print(result["docker"] + "\n")
  print("# Kubernetes (config files in a ConfigMap "
        f"'{FLAGS.model_name}-serving-config', exports on a volume):")
  print(result["kubernetes"])


def define_flags() -> None:
  """The command's flags."""
  flags.DEFINE_string("export_base", None, "The export base folder (holds "
                      "<model_name>/<version>/).")
  flags.DEFINE_string("model_name", "rankup", "Served model name.")
  flags.DEFINE_string("output_dir", None, "Where the config files go.")
  flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Batching defaults and "
                    "image for this device.")
  flags.mark_flags_as_required(["export_base", "output_dir"])


def cli_main() -> None:
  """`python -m serving.config`, the `rankup-serving-config` script."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  cli_main()
