#!/usr/bin/env bash
# Record preset (#1855) training throughput on a lent CUDA GPU: ms/step and tokens/s at
# 786,432 tokens per step (one GPU does the 8 ranks' work by gradient accumulation),
# before depth recurrence switches on (the first 35% of training) and after. The record
# logged ~121.7 ms/step on 8xH100 (FACTS.md). Called by gpu_check.sh; alone:
#   bash benchmarks/record_check.sh            # from the repository root, venv active
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
echo "== record-preset training throughput, depth recurrence off (steps before enable_looping_at)"
timeout 240 $PY benchmarks/train_throughput.py --preset record --steps "${STEPS:-6}" --warmup "${WARMUP:-3}"
echo "== record-preset training throughput, depth recurrence on"
timeout 240 $PY benchmarks/train_throughput.py --preset record --steps "${STEPS:-6}" --warmup "${WARMUP:-3}" \
  --set enable_looping_at=0
