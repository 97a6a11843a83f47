#!/usr/bin/env bash
# The real runs behind docs/results.md's issue-12 sections (not part of CI),
# on Criteo 8k and a 150k-row synthetic log under both teachers (affinity:
# the pretrained vectors carry the user-item affinity; ids: they carry
# nothing the ids do not): the ablation (cumulative ladder, each component
# alone, iso-compute RankUp) and the tuned comparison with the candidate
# defaults. Every step resumes where a killed run stopped. Rough times on 2
# quiet CPU cores: Criteo ablation 15 min and tuning 35 min; per synthetic
# teacher, ablation about 1.5 h and tuning about 2.5 h.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
PY=.venv/bin/python
if [ ! -f runs/criteo_8k/stats.json ]; then
  $PY -m data.criteo_to_tfrecord --input=../shared/data/criteo_8k/train.tsv --output_dir=runs/criteo_8k --num_shards=4 --eval_fraction=0.2 --hash_buckets=10000
fi
for teacher in affinity ids; do
  if [ ! -f runs/synthetic_$teacher/stats.json ]; then
    $PY -m data.synthetic --output_dir=runs/synthetic_$teacher --teacher=$teacher --rows=150000 --num_shards=4 --eval_fraction=0.1
  fi
done
$PY -m benchmarks.ablation --data_dir=runs/criteo_8k --output_dir=runs/ablation_criteo --seeds=0,1,2 --epochs=5 --global_batch_size=256
$PY -m benchmarks.tuning --data_dir=runs/criteo_8k --output_dir=runs/tuning_criteo --trials=10 --seeds=0,1,2 --epochs=5 --global_batch_size=256 --candidate=dropout=0.1
for teacher in affinity ids; do
  $PY -m benchmarks.ablation --data_dir=runs/synthetic_$teacher --output_dir=runs/ablation_synthetic_$teacher --seeds=0,1,2 --epochs=1 --global_batch_size=256
  $PY -m benchmarks.tuning --data_dir=runs/synthetic_$teacher --output_dir=runs/tuning_synthetic_$teacher --trials=10 --seeds=0,1,2 --epochs=1 --global_batch_size=256 --candidate=dropout=0.1
done
