"""Benchmark of pointdistiller.ops.knn_search against scipy's cKDTree and torch.cdist + topk.

Cases (one thread, ``torch.set_num_threads(1)``):
  1. 3-D: 4096 queries among 40000 points sampled from a real KITTI frame (x, y, z), k = 16:
     ours vs ``cKDTree(ref).query(q, k, workers=1)`` (build + query) vs ``cdist + topk``.
  2. features: PointDistiller's PointPillars size, 6000 queries among 16000 refs, C = 64, k = 128:
     ours vs ``cdist + topk``. Independent ReLU'd Gaussian channels: nothing to prune.
  3. pillars: what PointDistiller really searches. The 64-channel pillar features of KITTI frame
     000000 (demo PointPillars teacher, seeded initialisation, demo voxelization), queries = the
     3000 pillars with the most points (the per-sample top-N of a batch of 2), refs = every pillar
     of the frame, k = 128: ours vs ``cdist + topk``. These features are close to low rank, which
     the CPU kernel's pruning exploits.
Times are medians over ``--repeats`` runs after one warm-up, in ms, wall clock (and, on CPU, the
process's CPU time, which other processes on a shared machine disturb less); ratios are baseline /
ours on wall time (above 1 = ours faster).

Extra peak memory: every (case, method) runs once more in a fresh subprocess, after its inputs exist
and a tiny warm-up call has loaded the libraries; heap memory freed while making the inputs goes
back to the OS (``malloc_trim``, so the call cannot hide in it), the peak resident set (``VmHWM``) is
reset to the current one (``/proc/self/clear_refs``), and extra = ``VmHWM`` after the call - ``VmHWM``
right after the reset. It counts everything the call allocates, outputs included (same size for
every method).
(``ru_maxrss`` is not used: Linux carries it over from the parent process across ``exec``.) With ``--cuda``: ``torch.cuda.max_memory_allocated`` over the call minus
the memory allocated before it.

Usage: ``python benchmarks/bm_knn.py [--json] [--cuda] [--repeats N] [--no-memory]``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI_FRAME = os.path.join(os.environ.get("PD_KITTI_SAMPLE") or os.path.join(
    os.path.dirname(REPO), "shared", "kitti_sample"), "training", "velodyne", "000000.bin")

CASES = {
    "points3d": {"methods": ("ours", "ckdtree", "cdist_topk"), "k": 16},
    "features": {"methods": ("ours", "cdist_topk"), "k": 128},
    "pillars": {"methods": ("ours", "cdist_topk"), "k": 128},
}


def _pillar_features():
    """(top-3000 pillars, all pillars) of frame 000000: demo teacher pillar features, 64 channels."""
    from bm_distill import kitti_batch
    from pointdistiller.config import load_config
    from pointdistiller.detectors.build import build_detector

    cfg = load_config(os.path.join(REPO, "configs", "demo", "pointpillars_teacher.yaml")).model
    batch = kitti_batch(cfg, frames=1)
    torch.manual_seed(0)
    teacher = build_detector(cfg).eval()
    with torch.no_grad():
        feats = teacher(batch).features["pfn"].float().contiguous()
    order = torch.sort(batch.voxel_num_points.float(), descending=True, stable=True).indices[:3000]
    return feats[order].contiguous(), feats


def make_inputs(case: str, device: str = "cpu"):
    """(query, ref, k) of a benchmark case."""
    rng = np.random.default_rng(0)
    if case == "points3d":
        pts = np.fromfile(KITTI_FRAME, dtype=np.float32).reshape(-1, 4)[:, :3]
        ref = np.ascontiguousarray(pts[rng.choice(len(pts), 40000, replace=False)])
        query = np.ascontiguousarray(ref[rng.choice(len(ref), 4096, replace=False)])
        query, ref = torch.from_numpy(query), torch.from_numpy(ref)
    elif case == "features":
        # post-ReLU-like pillar features
        gen = torch.Generator().manual_seed(0)
        ref = torch.relu(torch.randn(16000, 64, generator=gen) + 0.3)
        query = ref[torch.randperm(16000, generator=gen)[:6000]].clone()
    elif case == "pillars":
        query, ref = _pillar_features()
    else:
        raise ValueError(f"unknown case {case!r}")
    return query.to(device), ref.to(device), CASES[case]["k"]


def run_method(method: str, query, ref, k: int):
    """One call; returns squared distances [Q, k] as a CPU float64 array (for the cross-check)."""
    if method == "ours":
        from pointdistiller.ops.knn_search import knn

        return knn(query, ref, k)[1]
    if method == "cdist_topk":
        return torch.cdist(query, ref).topk(k, dim=1, largest=False).values
    if method == "ckdtree":
        from scipy.spatial import cKDTree

        r = ref.numpy()
        return cKDTree(r).query(query.numpy(), k=k, workers=1)[0]
    raise ValueError(f"unknown method {method!r}")


def as_dist2(method: str, out) -> np.ndarray:
    out = out.detach().cpu().double().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return out if method == "ours" else out ** 2


def time_method(method, query, ref, k, repeats, cuda):
    """(median wall ms, median CPU ms) of ``repeats`` calls after a warm-up."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run_method(method, query, ref, k)
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run_method(method, query, ref, k)
        sync()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_memory_child(case: str, method: str, cuda: bool) -> float:
    """Extra peak memory (MiB) of one call, measured in this (fresh) process."""
    torch.set_num_threads(1)
    device = "cuda" if cuda else "cpu"
    query, ref, k = make_inputs(case, device)
    run_method(method, query[:8], ref[:max(k, 64)], k)          # load libraries, warm up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_method(method, query, ref, k)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:   # hand memory freed while making the inputs back to the OS, so the call cannot reuse it
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                              # VmHWM := VmRSS
    base = _status_kib("VmHWM")   # the resident set at the reset (VmRSS itself may lag behind)
    run_method(method, query, ref, k)
    return max(_status_kib("VmHWM") - base, 0) / 1024


def measure_memory(case: str, method: str, cuda: bool) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", case, method]
    if cuda:
        cmd.append("--cuda")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON dict")
    parser.add_argument("--cuda", action="store_true", help="GPU: ours vs cdist + topk")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "METHOD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        print(measure_memory_child(*args.memory_child, args.cuda))
        return 0

    torch.set_num_threads(1)
    device = "cuda" if args.cuda else "cpu"
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda needs a CUDA GPU")
    results = {"device": torch.cuda.get_device_name() if args.cuda else "cpu, 1 thread",
               "cases": {}}
    for case, spec in CASES.items():
        methods = [m for m in spec["methods"] if not (args.cuda and m == "ckdtree")]
        query, ref, k = make_inputs(case, device)
        entry = {"queries": query.shape[0], "refs": ref.shape[0], "channels": query.shape[1],
                 "k": k, "median_ms": {}, "median_cpu_ms": {}, "extra_peak_mib": {}}
        ours = as_dist2("ours", run_method("ours", query, ref, k))
        for m in methods:
            wall, cpu = time_method(m, query, ref, k, args.repeats, args.cuda)
            entry["median_ms"][m] = wall
            entry["median_cpu_ms"][m] = cpu
            if m != "ours":   # same neighbour distances as the baseline (up to its rounding)
                base = as_dist2(m, run_method(m, query, ref, k))
                entry.setdefault("max_abs_dist2_diff", {})[m] = float(np.abs(ours - base).max())
            if not args.no_memory:
                entry["extra_peak_mib"][m] = measure_memory(case, m, args.cuda)
        t_ours = entry["median_ms"]["ours"]
        entry["speedup_vs"] = {m: entry["median_ms"][m] / t_ours for m in methods if m != "ours"}
        if not args.no_memory:
            mem = entry["extra_peak_mib"]
            entry["memory_ratio_vs"] = {m: mem["ours"] / mem[m] if mem[m] > 0 else None
                                        for m in methods if m != "ours"}
        results["cases"][case] = entry

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"kNN benchmark ({results['device']}); medians of {args.repeats} runs")
    for case, e in results["cases"].items():
        print(f"\n{case}: {e['queries']} queries x {e['refs']} refs, C={e['channels']}, k={e['k']}")
        for m, t in e["median_ms"].items():
            mem = e["extra_peak_mib"].get(m)
            mem_s = f"   extra peak {mem:8.1f} MiB" if mem is not None else ""
            print(f"  {m:11s} {t:9.2f} ms (cpu {e['median_cpu_ms'][m]:9.2f} ms){mem_s}")
        for m, s in e["speedup_vs"].items():
            line = f"  ours vs {m}: {s:.2f}x faster (time ratio ours/{m} = {1 / s:.2f})"
            if "memory_ratio_vs" in e and e["memory_ratio_vs"][m] is not None:
                line += f", memory ours/{m} = {100 * e['memory_ratio_vs'][m]:.1f} %"
            print(line)
        for m, d in e.get("max_abs_dist2_diff", {}).items():
            print(f"  max |dist2 ours - {m}| = {d:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
