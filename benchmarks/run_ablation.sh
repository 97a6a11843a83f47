#!/usr/bin/env bash
# The real ablation runs behind docs/results.md (not part of CI): Criteo 8k
# and the 1.12M-row synthetic log. About 2 hours on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
PY=.venv/bin/python
if [ ! -f runs/synthetic_1m/stats.json ]; then
  $PY -m data.synthetic --output_dir=runs/synthetic_1m --rows=1120000 --num_shards=8 --eval_fraction=0.1
fi
if [ ! -f runs/criteo_8k/stats.json ]; then
  $PY -m data.criteo_to_tfrecord --input=../shared/data/criteo_8k/train.tsv --output_dir=runs/criteo_8k --num_shards=4 --eval_fraction=0.2 --hash_buckets=10000
fi
$PY -m benchmarks.ablation --data_dir=runs/criteo_8k --output_dir=runs/ablation_criteo --seeds=0,1,2 --epochs=5 --global_batch_size=256
$PY -m benchmarks.ablation --data_dir=runs/synthetic_1m --output_dir=runs/ablation_synthetic --seeds=0,1,2 --epochs=1 --global_batch_size=1024
