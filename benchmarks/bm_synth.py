"""Throughput of the synthetic KITTI generator (`kitti-tools synth`): frames per second for a
20-frame dataset written with 1 and 2 worker processes (files included), and points per frame.

    python benchmarks/bm_synth.py [--frames 20] [--repeats 3] [--json OUT]

The baseline is the 1-worker run; the ratio is 2-worker frames/s over it. Wall-clock rates depend
on how busy the machine is, so the CPU seconds per frame (this process and its workers, user +
system) are reported too.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Optional

from pointdistiller.kitti_tools.synth import generate_dataset, generate_frame


def _cpu_seconds() -> float:
    t = os.times()  # children are counted once the pool has shut down
    return t.user + t.system + t.children_user + t.children_system


def _run(frames: int, workers: int, seed: int) -> dict:
    root = tempfile.mkdtemp(prefix="bm_synth-")
    try:
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        stats = generate_dataset(root, frames, seed=seed, workers=workers)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    written = len(stats["written"])
    return {"seconds": elapsed, "fps": written / elapsed, "cpu_per_frame": cpu / written, "points": stats["points"] / written,
            "objects": stats["objects"] / written}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; medians reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    generate_frame(args.seed, 0)  # compile / load the numba kernels outside the timings
    results = {}
    for workers in (1, 2):
        runs = [_run(args.frames, workers, args.seed) for _ in range(args.repeats)]
        results[f"workers_{workers}"] = {
            "fps_median": statistics.median(r["fps"] for r in runs),
            "fps_runs": [r["fps"] for r in runs],
            "cpu_s_per_frame_median": statistics.median(r["cpu_per_frame"] for r in runs),
            "points_per_frame": runs[0]["points"],
            "objects_per_frame": runs[0]["objects"],
        }
    base = results["workers_1"]["fps_median"]
    results["ratio_2_vs_1_workers"] = results["workers_2"]["fps_median"] / base
    results["frames"] = args.frames
    results["cpus"] = os.cpu_count()

    for workers in (1, 2):
        r = results[f"workers_{workers}"]
        print(f"synth {args.frames} frames, {workers} worker(s): {r['fps_median']:.2f} frames/s "
              f"(median of {args.repeats}), {r['cpu_s_per_frame_median'] * 1e3:.0f} ms CPU/frame, "
              f"{r['points_per_frame']:.0f} points/frame, "
              f"{r['objects_per_frame']:.1f} labelled objects/frame")
    print(f"2 workers vs 1 worker (baseline): x{results['ratio_2_vs_1_workers']:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
