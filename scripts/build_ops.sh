#!/usr/bin/env bash
# Builds pointdistiller with its native ops: the C++ CPU kernels always, the CUDA kernels when torch
# has CUDA and nvcc is found (PD_FORCE_CPU=1 skips them). One script for the Docker image's builder
# stage and for `make gpu-check`, so that the two cannot build differently.
#
#   scripts/build_ops.sh wheel DIR     a wheel into DIR (the Docker builder stage)
#   scripts/build_ops.sh editable      pip install -e . (gpu-check, development)
#
# Environment: PYTHON (default python3), MAX_JOBS (default: the CPU count), TORCH_CUDA_ARCH_LIST
# (default: the GPUs visible to this build; the Docker image sets an explicit list, since
# `docker build` sees no GPU), CUDA_HOME (default: the toolkit of the nvcc on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  export CUDA_HOME
fi
case "${1:-}" in
  wheel)
    [ -n "${2:-}" ] || { echo "usage: $0 wheel DIR" >&2; exit 2; }
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$2" . ;;
  editable)
    "$PY" -m pip install --no-deps --no-build-isolation -e . ;;
  *)
    echo "usage: $0 wheel DIR | editable" >&2; exit 2 ;;
esac
"$PY" - <<'PY'
import torch
print(f"build_ops: torch {torch.__version__}, CUDA kernels "
      f"{'on' if torch.version.cuda else 'off'} (arch list: "
      f"{__import__('os').environ.get('TORCH_CUDA_ARCH_LIST', 'the visible GPUs')})")
PY
