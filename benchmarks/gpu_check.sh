#!/usr/bin/env bash
# GPU check for a lent CUDA machine (< 8 minutes): the CUDA-marked tests, then the seed
# preset's training throughput (786,432 tokens/step through accumulation), table last.
#   bash benchmarks/gpu_check.sh            # from the repository root, venv active
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible')"
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== pytest -m cuda"
timeout 240 $PY -m pytest -q -m cuda tests || { rc=$?; [ "$rc" -eq 5 ] && echo "(no cuda-marked tests collected)" || exit "$rc"; }
echo "== seed-preset training throughput"
timeout 300 $PY benchmarks/train_throughput.py --preset seed --steps "${STEPS:-6}" --warmup "${WARMUP:-3}"
bash benchmarks/record_check.sh
