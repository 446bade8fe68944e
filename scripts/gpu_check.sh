#!/usr/bin/env bash
# GPU check: builds the CUDA ops, runs the CUDA tests and the GPU benchmarks, prints one summary.
# Runs on a GPU machine with a CUDA torch (the project's .venv if present, else python3 there);
# needs no network: the package is installed editable without dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && PY=.venv/bin/python
out=${OUT:-build/gpu-check}
mkdir -p "$out"
summary=()
step() {  # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  if timeout "$limit" "$@" >"$out/$name.log" 2>&1; then r=ok; else r="FAIL rc=$?"; fi
  summary+=("$(printf '%-14s %-4s %4ss  %s' "$name" "$r" "$(( $(date +%s) - t0 ))" "$out/$name.log")")
  tail -n 30 "$out/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
step build 400 env PYTHON="$PY" MAX_JOBS=16 bash scripts/build_ops.sh editable
# pytest-xdist, where installed, runs the tests in worker processes: a crash fails one test, not all
xdist=(); $PY -c "import xdist" 2>/dev/null && xdist=(-n 8)
step cuda-tests 300 $PY -m pytest -q -m cuda --tb=short -rfE "${xdist[@]}" tests
# the main job end to end on CUDA (AMP training, evaluation), few scenes and steps
demo_dir=$(mktemp -d)
step demo-cuda 180 env PD_CACHE="$demo_dir/cache" $PY -m pointdistiller.cli.train --demo --quick \
  --device cuda --no-progress --work-dir "$demo_dir/demo"
rm -rf "$demo_dir"
# name and time limit (s) of each GPU benchmark; the limits keep the whole check within a few minutes
for bm in bm_voxelize:60 bm_knn:120 bm_iou3d:60 bm_distill:150; do
  [ -f "benchmarks/${bm%%:*}.py" ] && step "${bm%%:*}" "${bm##*:}" $PY "benchmarks/${bm%%:*}.py" --cuda
done
echo; echo "== gpu-check summary ($(cat "$out/gpu.txt" | head -1))"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAIL
