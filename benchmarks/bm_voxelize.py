"""Benchmark of hard voxelization (pointdistiller.ops.voxelization) against spconv's PointToVoxel.

One real KITTI frame (velodyne/000000.bin, ~115k points) in the PointPillars setting (range
[0, -39.68, -3, 69.12, 39.68, 1], voxel [0.16, 0.16, 4], 32 points per voxel) and the SECOND
setting (range [0, -40, -3, 70.4, 40, 1], voxel [0.05, 0.05, 0.1], 5 points per voxel), 16000
voxels. Named baseline: spconv ``PointToVoxel.generate_voxel_with_id`` built once (its dense
grid table allocated outside the timing, as in a data loader). CPU with torch.set_num_threads(1);
after a warm-up, medians over --repeat runs taken in blocks of 10 consecutive calls, the two ops
taking turns so that load from other processes hits both alike. ``--cuda`` adds our CUDA op vs
spconv's CUDA PointToVoxel (torch.cuda.synchronize after each call).

``--cold`` measures the way a data loader calls the op: a different frame on every call (cycling
through the four sample frames, velodyne/000000-000002 and velodyne_reduced/000008), ours and
spconv interleaved call by call, so that neither runs twice on the same input in a row. It also
times a memory floor interleaved with them (read every point once, write outputs of our size into
fresh tensors): the part of a cold call no voxelizer avoids; and each op alone on the cold cycle
(only the floor between its calls), since interleaving the two ops lets each evict the other's
working set (spconv's dense grid table alone is 0.86 MB in the PointPillars setting).

Usage: python benchmarks/bm_voxelize.py [--repeat 50] [--frame PATH] [--cuda] [--cold] [--json]
"""
import argparse
import json
import os
import statistics
import time
import warnings
from typing import Callable, Dict, List

import numpy as np
import torch

from pointdistiller.ops.voxelization import voxelize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FRAME = os.path.join(os.environ.get("PD_KITTI_SAMPLE") or os.path.join(
                                 os.path.dirname(REPO), "shared", "kitti_sample"), "training",
                             "velodyne", "000000.bin")
MAX_VOXELS = 16000
SETTINGS = {
    "pointpillars": dict(point_range=[0, -39.68, -3, 69.12, 39.68, 1],
                         voxel_size=[0.16, 0.16, 4], max_points=32),
    "second": dict(point_range=[0, -40, -3, 70.4, 40, 1], voxel_size=[0.05, 0.05, 0.1],
                   max_points=5),
}


def time_blocks(fns: List[Callable[[], object]], repeat: int, block: int = 10, warmup: int = 5,
                sync: Callable[[], None] = lambda: None) -> List[float]:
    """Median wall time (ms) of each function over ``repeat`` runs, run in blocks of ``block``
    consecutive calls per function, the functions taking turns, so that both see the same load."""
    times: List[List[float]] = [[] for _ in fns]
    for k, fn in enumerate(fns):
        for _ in range(warmup):
            fn()
        sync()
    while len(times[0]) < repeat:
        for k, fn in enumerate(fns):
            fn()  # first call after the other function: not timed (its caches are cold)
            sync()
            for _ in range(min(block, repeat - len(times[k]))):
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def time_interleaved(fns: List[Callable[[object], object]], inputs: List[object], repeat: int,
                     sync: Callable[[], None] = lambda: None) -> List[float]:
    """Median wall time (ms) of each function over ``repeat`` calls, the functions called in turn,
    call by call, each call on the next input of the cycle (never the one it saw last)."""
    times: List[List[float]] = [[] for _ in fns]
    for fn in fns:                      # warm-up: allocators and code, not the inputs' caches
        fn(inputs[0])
    sync()
    for i in range(repeat + 1):
        for k, fn in enumerate(fns):
            x = inputs[(i + k) % len(inputs)]
            t0 = time.perf_counter()
            fn(x)
            sync()
            if i:                         # the first round is a second warm-up
                times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def bench_cold(frames: List[torch.Tensor], repeat: int) -> Dict[str, Dict[str, float]]:
    results = {}
    for name, setting in SETTINGS.items():
        def ours_fn(points):
            return voxelize(points, setting["voxel_size"], setting["point_range"],
                            setting["max_points"], MAX_VOXELS)

        gen = spconv_generator(setting, frames[0].shape[1], frames[0].device)
        same = all(all(torch.equal(a, b) for a, b in zip(gen.generate_voxel_with_id(f), ours_fn(f)))
                   for f in frames)
        # The memory floor of any voxelizer of this frame: read every point once and write outputs
        # of the size ours returns (voxels, coordinates, counts, the point -> voxel map) into
        # fresh tensors, as the op does; no hashing, no scatter.
        shapes = {f.data_ptr(): [t.shape for t in ours_fn(f)] for f in frames}

        def floor_fn(points):
            points.sum()
            v, c, n, p = shapes[points.data_ptr()]
            torch.zeros(v), torch.zeros(c, dtype=torch.int32), torch.zeros(n, dtype=torch.int32)
            torch.zeros(p, dtype=torch.int64)

        t_spconv, t_ours, t_floor = time_interleaved(
            [gen.generate_voxel_with_id, ours_fn, floor_fn], frames, repeat)
        # the same cold inputs without spconv's calls (and its dense grid table) in between
        t_alone, _ = time_interleaved([ours_fn, floor_fn], frames, repeat)
        t_spconv_alone, _ = time_interleaved([gen.generate_voxel_with_id, floor_fn], frames, repeat)
        results[name] = {"spconv_ms": t_spconv, "ours_ms": t_ours,
                         "spconv/ours": t_spconv / t_ours, "voxels": None,
                         "identical_to_spconv": same, "memory_floor_ms": t_floor,
                         "ours_without_spconv_between_ms": t_alone,
                         "spconv_without_ours_between_ms": t_spconv_alone,
                         "spconv/ours_each_alone": t_spconv_alone / t_alone,
                         "spconv_minus_floor/ours_minus_floor":
                             (t_spconv - t_floor) / max(t_ours - t_floor, 1e-9)}
    return results


def sample_frames() -> List[str]:
    root = os.path.join(os.environ.get("PD_KITTI_SAMPLE") or os.path.join(
        os.path.dirname(REPO), "shared", "kitti_sample"), "training")
    return [os.path.join(root, "velodyne", f"{i:06d}.bin") for i in range(3)] + \
        [os.path.join(root, "velodyne_reduced", "000008.bin")]


def spconv_generator(setting: Dict, channels: int, device: torch.device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from spconv.pytorch.utils import PointToVoxel
    return PointToVoxel(setting["voxel_size"], setting["point_range"], channels, MAX_VOXELS,
                        setting["max_points"], device=device)


def bench_device(points: torch.Tensor, repeat: int) -> Dict[str, Dict[str, float]]:
    device = points.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {}
    for name, setting in SETTINGS.items():
        def ours_fn():
            return voxelize(points, setting["voxel_size"], setting["point_range"],
                            setting["max_points"], MAX_VOXELS)

        ours = ours_fn()
        try:
            gen = spconv_generator(setting, points.shape[1], device)
        except ImportError:  # a GPU machine's own Python may lack spconv: time ours alone
            (t_ours,) = time_blocks([ours_fn], repeat, sync=sync)
            results[name] = {"spconv_ms": float("nan"), "ours_ms": t_ours,
                             "spconv/ours": float("nan"),
                             "voxels": int(ours.voxels.shape[0]), "identical_to_spconv": None}
            continue
        ref = gen.generate_voxel_with_id(points)
        same = all(torch.equal(a, b) for a, b in zip(ref, ours))
        t_spconv, t_ours = time_blocks([lambda: gen.generate_voxel_with_id(points), ours_fn],
                                       repeat, sync=sync)
        results[name] = {"spconv_ms": t_spconv, "ours_ms": t_ours,
                         "spconv/ours": t_spconv / t_ours, "voxels": int(ours.voxels.shape[0]),
                         "identical_to_spconv": same}
    return results


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per op (>= 20)")
    parser.add_argument("--frame", default=DEFAULT_FRAME, help="KITTI velodyne .bin file")
    parser.add_argument("--cuda", action="store_true", help="also time the CUDA ops")
    parser.add_argument("--cold", action="store_true",
                        help="a different frame on every call, the ops interleaved call by call")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON dict")
    args = parser.parse_args(argv)
    if args.repeat < 20:
        parser.error("--repeat must be >= 20")
    torch.set_num_threads(1)
    if args.cold:
        frames = [torch.from_numpy(np.fromfile(f, dtype=np.float32).reshape(-1, 4))
                  for f in sample_frames()]
        results = {"frame": "cycle of " + ", ".join(os.path.relpath(f, os.path.dirname(f) + "/..")
                                                    for f in sample_frames()),
                   "points": int(sum(len(f) for f in frames) / len(frames)),
                   "max_voxels": MAX_VOXELS, "cpu": bench_cold(frames, args.repeat)}
        if args.cuda:
            if not torch.cuda.is_available():
                parser.error("--cuda needs a CUDA device")
            results["cuda"] = bench_cold([f.cuda() for f in frames], args.repeat)
    else:
        points = torch.from_numpy(np.fromfile(args.frame, dtype=np.float32).reshape(-1, 4))
        results = {"frame": args.frame, "points": int(points.shape[0]), "max_voxels": MAX_VOXELS,
                   "cpu": bench_device(points, args.repeat)}
    if args.cuda and not args.cold:
        if not torch.cuda.is_available():
            parser.error("--cuda needs a CUDA device")
        results["cuda"] = bench_device(points.cuda(), args.repeat)
    if args.cuda:
        results["cuda_device"] = torch.cuda.get_device_name()
    if args.json:
        print(json.dumps(results))
    else:
        print(f"voxelize{' cold (' + results['frame'] + ')' if args.cold else ''}, "
              f"{results['points']} points{' on average' if args.cold else ''}, max_voxels "
              f"{MAX_VOXELS}, medians of {args.repeat} runs (torch threads: 1)")
        for device in ("cpu", "cuda"):
            for name, r in results.get(device, {}).items():
                print(f"  {device:4s} {name:12s} spconv {r['spconv_ms']:7.3f} ms  ours "
                      f"{r['ours_ms']:7.3f} ms  spconv/ours {r['spconv/ours']:5.2f}  "
                      f"({'' if r['voxels'] is None else str(r['voxels']) + ' voxels, '}identical: "
                      f"{r['identical_to_spconv']})")
                if "memory_floor_ms" in r:
                    print(f"       memory floor (read the points, write outputs of ours' size) "
                          f"{r['memory_floor_ms']:.3f} ms; above it spconv/ours "
                          f"{r['spconv_minus_floor/ours_minus_floor']:.2f}")
                    print(f"       each alone on the cold cycle (only the floor between calls): "
                          f"spconv {r['spconv_without_ours_between_ms']:.3f} ms, ours "
                          f"{r['ours_without_spconv_between_ms']:.3f} ms, spconv/ours "
                          f"{r['spconv/ours_each_alone']:.2f}")
    return results


if __name__ == "__main__":
    main()
