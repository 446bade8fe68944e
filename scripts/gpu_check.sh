#!/usr/bin/env bash
# GPU check: builds the CUDA ops, runs the CUDA tests and the GPU benchmarks, prints one summary.
# Runs on a GPU machine with a CUDA torch (the project's .venv if present, else python3 there);
# needs no network: the package is installed editable without dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && PY=.venv/bin/python
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")}
out=${OUT:-build/gpu-check}
mkdir -p "$out"
summary=()
step() {  # step NAME CMD...
  local name=$1; shift
  local t0=$(date +%s)
  if "$@" >"$out/$name.log" 2>&1; then r=ok; else r=FAIL; fi
  summary+=("$(printf '%-14s %-4s %4ss  %s' "$name" "$r" "$(( $(date +%s) - t0 ))" "$out/$name.log")")
  tail -n 30 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
step build env MAX_JOBS=16 $PY -m pip install --no-deps --no-build-isolation -q -e .
step cuda-tests $PY -m pytest -q -m cuda tests
for bm in bm_voxelize bm_knn bm_iou3d bm_distill; do
  [ -f benchmarks/$bm.py ] && step "$bm" $PY benchmarks/$bm.py --cuda
done
echo; echo "== gpu-check summary ($(cat "$out/gpu.txt" | head -1))"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAIL
