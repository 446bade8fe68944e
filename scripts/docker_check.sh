#!/usr/bin/env bash
# make docker-check: proves here, without a Docker engine or Docker Hub, that docker/Dockerfile builds
# and runs. buildah (chroot isolation, vfs storage) builds the CPU variant of the same Dockerfile
# (same stages and steps; only the base image and the torch build differ) on a Debian 12 base made
# by debootstrap, with every Python package from a wheelhouse downloaded here first (docker/wheels,
# the way an air-gapped server builds). Then, inside the images: pd-train --demo --quick,
# kitti-tools eval on the real sample frames, the ops tests, pd-export, and pd-deploy in the
# torch-free deploy image. Removes its containers and images at the end. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${PD_DOCKER_CACHE:-/var/tmp/pointdistiller-docker}
KITTI=${PD_KITTI_SAMPLE:-$(cd .. && pwd)/shared/kitti_sample}
BUILDAH=(buildah --storage-driver vfs --root "$CACHE/storage" --runroot "$CACHE/run")
[ "$(id -u)" = 0 ] || { echo "docker-check: needs root (buildah with chroot isolation)" >&2; exit 2; }
[ -d "$KITTI/training" ] || { echo "docker-check: no KITTI sample at $KITTI (set PD_KITTI_SAMPLE)" >&2; exit 2; }
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
t0=$(date +%s)
phase() { echo "== docker-check: $1 ($(( $(date +%s) - t0 )) s)"; }
work=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
  "${BUILDAH[@]}" rmi -f localhost/pointdistiller:cpu localhost/pointdistiller:deploy-cpu \
    localhost/pd-debian:bookworm >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  rm -rf "$work" "$CACHE/storage" "$CACHE/run"
}
trap cleanup EXIT

phase "Debian 12 base image (debootstrap, cached in $CACHE)"
mkdir -p "$CACHE"
if [ ! -f "$CACHE/debian-bookworm.tar.gz" ]; then
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" >"$work/debootstrap.log" 2>&1
  tar -C "$rootfs" -czf "$CACHE/debian-bookworm.tar.gz.part" . && mv "$CACHE/debian-bookworm.tar.gz.part" "$CACHE/debian-bookworm.tar.gz"
  rm -rf "$rootfs"
fi
mkdir -p "$work/base"
cp "$CACHE/debian-bookworm.tar.gz" "$work/base/rootfs.tar.gz"
printf 'FROM scratch\nADD rootfs.tar.gz /\nCMD ["bash"]\n' >"$work/base/Containerfile"
"${BUILDAH[@]}" bud --isolation chroot -q -t localhost/pd-debian:bookworm -f "$work/base/Containerfile" "$work/base" >/dev/null

phase "wheelhouse docker/wheels (pip download for Python $("$PY" -c 'import sys; print(*sys.version_info[:2], sep=".")'), Debian 12's)"
"$PY" -m pip download -q -d docker/wheels "torch==2.13.0" "spconv-cu120==2.3.6" "setuptools==84.2.1" \
  "wheel==0.48.0" "ninja==1.13.2" -r docker/requirements.txt -r docker/requirements-deploy.txt \
  pytest hypothesis scipy

build_args=(--isolation chroot --build-arg BUILDER_IMAGE=localhost/pd-debian:bookworm
  --build-arg BASE_IMAGE=localhost/pd-debian:bookworm --build-arg DEPLOY_IMAGE=localhost/pd-debian:bookworm
  --build-arg VARIANT=cpu --build-arg TORCH_INDEX_URL= --build-arg "SPCONV_SPEC=spconv-cu120==2.3.6"
  --build-arg "PIP_OPTIONS=--no-index --find-links /wheels" --build-arg MAX_JOBS=2 -f docker/Dockerfile)
phase "build the runtime image (CPU variant)"
"${BUILDAH[@]}" bud "${build_args[@]}" --target runtime -t localhost/pointdistiller:cpu . >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; exit 1; }
phase "build the deploy image"
"${BUILDAH[@]}" bud "${build_args[@]}" --target deploy -t localhost/pointdistiller:deploy-cpu . >"$work/build-deploy.log" 2>&1 \
  || { tail -40 "$work/build-deploy.log"; exit 1; }

shared="$work/shared"
mkdir -p "$shared" && chmod 777 "$shared"
run() {  # run IMAGE CMD...: in a fresh container of IMAGE, the KITTI sample, tests and wheels mounted
  local image=$1; shift
  local c
  c=$("${BUILDAH[@]}" from -q "$image")
  containers+=("$c")
  "${BUILDAH[@]}" run --isolation chroot -v "$KITTI:/data/kitti:ro" -v "$PWD/tests:/src/tests:ro" \
    -v "$PWD/docker/wheels:/wheels:ro" -v "$shared:/shared" -e PD_KITTI_SAMPLE=/data/kitti "$c" -- "$@"
}
phase "pd-train --demo --quick in the runtime image"
run localhost/pointdistiller:cpu pd-train --demo --quick --no-progress --work-dir /shared/demo | tail -8
phase "kitti-tools eval on the real sample frames"
echo 000008 >"$shared/ids.txt"
run localhost/pointdistiller:cpu kitti-tools eval --gt /data/kitti/training/label_2 \
  --det /data/kitti/example_detections --ids /shared/ids.txt | head -4
phase "ops tests in the runtime image"
# the whole pytest output goes to $CACHE/ops_tests.log (kept after the clean-up); a failed test
# fails the check
if ! run localhost/pointdistiller:cpu bash -c "pip install -q --no-index --find-links /wheels --target /tmp/t pytest hypothesis scipy \
  && cd /tmp && PYTHONPATH=/tmp/t python -m pytest -q -rfE -p no:cacheprovider --rootdir /src/tests --confcutdir /src/tests /src/tests/ops >/shared/ops_tests.log 2>&1"; then
  cp "$shared/ops_tests.log" "$CACHE/ops_tests.log" 2>/dev/null || true
  grep -E "^(FAILED|ERROR)|Error" "$shared/ops_tests.log" | head -40 || true
  tail -3 "$shared/ops_tests.log" || true
  echo "docker-check: the ops tests failed in the runtime image (whole log: $CACHE/ops_tests.log)" >&2
  exit 1
fi
cp "$shared/ops_tests.log" "$CACHE/ops_tests.log"
tail -1 "$shared/ops_tests.log"
phase "pd-export in the runtime image, pd-deploy in the deploy image"
run localhost/pointdistiller:cpu bash -c 'd=$(python -c "from pointdistiller.configs import CONFIG_DIR as c; print(c)")/demo \
  && pd-export $d/pointpillars_teacher.yaml $d/weights/pointpillars_teacher.fp16.pt --out /shared/bundle'
run localhost/pointdistiller:deploy-cpu pd-deploy /shared/bundle --velodyne /data/kitti/training/velodyne \
  --calib /data/kitti/training/calib --out /shared/deploy
run localhost/pointdistiller:deploy-cpu python -c "import sys, pointdistiller.deploy.runtime; sys.exit('torch' in sys.modules)"
[ "$(ls "$shared/deploy" | wc -l)" -ge 3 ] || { echo "docker-check: pd-deploy wrote no results" >&2; exit 1; }
phase "done: both images built and ran"
