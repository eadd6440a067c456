#!/usr/bin/env bash
# GPU check for a lent CUDA machine, one call, under 8 minutes on one H100/H200:
# the CUDA-marked tests (FA3 parity, compiled bf16 run), then benchmarks/gpu_check.py
# on the seed preset (786,432 tokens/step, QAT off and on, graph breaks, peak memory,
# fp32-vs-bf16 logit parity), which prints and writes gpu_check.json.
#   bash benchmarks/gpu_check.sh            # from the repository root, venv active
#   OUT=path.json bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible')" || exit 2
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== pytest -m cuda (at most 120 s)"
timeout 120 $PY -m pytest -q -m cuda tests
rc=$?
[ "$rc" -eq 5 ] && echo "(no cuda-marked tests collected)"
echo "== seed preset: graph breaks, throughput QAT off/on, peak memory, logit parity (at most 240 s)"
timeout 240 $PY benchmarks/gpu_check.py --out "${OUT:-gpu_check.json}" --steps "${STEPS:-6}" --warmup "${WARMUP:-3}"
check=$?
echo "== record preset"
timeout 120 bash benchmarks/record_check.sh
record=$?
echo "pytest rc=$rc gpu_check rc=$check record_check rc=$record"
[ "$check" -eq 0 ] && { [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ]; }
