"""The ablation runner end to end on a tiny dataset (outputs well-formed)."""

import csv
import json
import os
import subprocess
import sys

import rankup_tf
from data import synthetic
from tests.conftest import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ablation_runner_writes_every_output(tmp_path):
  data = str(tmp_path / "data")
  synthetic.generate(data, rows=3000, seed=4, num_users=200, num_items=100,
                     num_shards=2)
  spec = rankup_tf.Schema.load(os.path.join(data, "schema.json")).to_dict()
  for f in spec["sparse_features"]:
    if "hash_buckets" in f:
      f["hash_buckets"] = min(f["hash_buckets"], 300)
  rankup_tf.Schema.from_dict(spec).save(os.path.join(data, "schema.json"))
  out = tmp_path / "out"
  rows = ["dnn", "rankmixer", "full_rankup"]
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.ablation", f"--data_dir={data}",
       f"--output_dir={out}", "--seeds=0,1", f"--models={','.join(rows)}",
       "--train_steps=2", "--global_batch_size=128", "--num_tokens=8",
       "--token_dim=32", "--embedding_dim=8"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]

  with open(out / "results.csv") as f:
    records = list(csv.DictReader(f))
  assert len(records) == len(rows) * 2 * 2  # rows x seeds x tasks
  assert {r["row"] for r in records} == set(rows)
  for record in records:
    assert 0.0 <= float(record["auc"]) <= 1.0
    assert float(record["flops_per_example"]) > 0
    assert float(record["train_examples_per_sec"]) > 0
    assert 0.0 < float(record["mfu"]) < 1.0
  table = (out / "results.md").read_text()
  for label in ("DNN", "RankMixer", "full RankUp"):
    assert f"| {label}" in table
  assert "### Task `click`" in table and "### Cost" in table
  assert "± " in table

  erank = json.loads((out / "erank.json").read_text())
  assert set(erank) == {"RankMixer", "full RankUp (+ pre-LN SwiGLU)"}
  for trajectory in erank.values():
    assert trajectory["points"] == ["input", "block1_mixer", "block1_ffn",
                                    "block2_mixer", "block2_ffn"]
    assert len(trajectory["per_token_erank"][0]) == 8
  for png in ("auc.png", "erank.png", "erank_normalized.png",
              "per_token_erank.png"):
    data_bytes = (out / png).read_bytes()
    assert data_bytes.startswith(PNG_MAGIC) and len(data_bytes) > 5000, png
