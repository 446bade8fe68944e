"""Benchmark of the PointNet++ ops on a real KITTI frame (000000, the first 16384 points in front of
the sensor), one thread, medians.

    python benchmarks/bm_pointnet2.py [--repeat 15] [--json OUT]

- Furthest point sampling 16384 -> 4096 (PointRCNN's first level): ours (exact D-FPS from point 0)
  against the ``fpsample`` package's exact ``fps_sampling`` (named baseline; target: >= 3x faster),
  checking both return the same indices; its bucket methods are timed too, with how many of their
  picks differ from exact FPS started at point 0.
- Ball query of PointRCNN's first level (the 4096 FPS centres, radius 0.5, 32 samples): ours
  against a full scan of all points in index order (numba, stopping at 32 found per centre; named
  baseline; target: >= 5x faster), checking equal results.
- Grouping and three-NN interpolation of the same level, for scale.
- The whole PointRCNN teacher backbone + FP neck forward (no grad) on the frame, then the 8x
  student's: each planning its own sampling and grouping (named baseline) against the student
  reusing the teacher's (``PointGeometry`` in ``batch.cache``, as in distillation); same outputs
  checked.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numba
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI = os.environ.get("PD_KITTI_SAMPLE") or os.path.join(os.path.dirname(REPO), "shared", "kitti_sample")


def frame_points(n: int = 16384) -> np.ndarray:
    pts = np.fromfile(os.path.join(KITTI, "training", "velodyne", "000000.bin"), np.float32)
    pts = pts.reshape(-1, 4)[:, :3]
    return np.ascontiguousarray(pts[pts[:, 0] > 0][:n])


def median_ms(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@numba.njit(cache=True)
def full_scan_ball_query(points, centers, r2, nsample):
    """For each centre, the first nsample points in index order with d2 < r2 (the contract's float32
    distance), scanning every point until nsample are found."""
    out = np.empty((centers.shape[0], nsample), np.int64)
    for c in range(centers.shape[0]):
        found = 0
        for i in range(points.shape[0]):
            dx = np.float32(points[i, 0] - centers[c, 0])
            dy = np.float32(points[i, 1] - centers[c, 1])
            dz = np.float32(points[i, 2] - centers[c, 2])
            d2 = np.float32(np.float32(np.float32(dx * dx) + np.float32(dy * dy)) + np.float32(dz * dz))
            if d2 < r2:
                out[c, found] = i
                found += 1
                if found == nsample:
                    break
        fill = out[c, 0] if found else 0
        for s in range(found, nsample):
            out[c, s] = fill
    return out


def backbone_sharing(points: torch.Tensor, repeat: int) -> dict:
    """Teacher then student backbone + neck forward, unshared against shared geometry."""
    from pointdistiller.config import load_config
    from pointdistiller.detectors.build import build_detector

    models = [build_detector(load_config(os.path.join(REPO, "configs", "point_rcnn", f"{n}.yaml")).model).eval()
              for n in ("teacher", "student_8x")]
    features = torch.rand(len(points), 1, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([0, len(points)])
    from pointdistiller.detectors.backbones_3d import plan_geometry

    def run(shared: bool):
        outs, geometry = [], None
        for model in models:
            if geometry is None or not shared:
                geometry = plan_geometry(points, offsets, model.levels)
            with torch.no_grad():
                outs.append(model.neck(model.backbone(features, geometry), geometry))
        return outs

    same = all(torch.equal(a, b) for a, b in zip(run(False), run(True)))
    t_own = median_ms(lambda: run(False), max(3, repeat // 3), warmup=1)
    t_shared = median_ms(lambda: run(True), max(3, repeat // 3), warmup=1)
    print(f"PointRCNN teacher + 8x student backbone and FP neck forward, {len(points)} points")
    print(f"  each planning its own sampling       {t_own:8.1f} ms")
    print(f"  the student reusing the teacher's    {t_shared:8.1f} ms  own/shared "
          f"{t_own / t_shared:5.2f}; same outputs: {same}")
    return {"backbone_own_ms": t_own, "backbone_shared_ms": t_shared,
            "backbone_sharing_ratio": t_own / t_shared, "backbone_same": bool(same)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    from pointdistiller.ops import ball_query, furthest_point_sample, group_points, three_interpolate, three_nn

    pts = frame_points()
    points = torch.from_numpy(pts)
    offsets = torch.tensor([0, len(pts)])
    counts = torch.tensor([4096])
    results = {"points": len(pts)}

    ours = furthest_point_sample(points, offsets, counts)
    t_ours = median_ms(lambda: furthest_point_sample(points, offsets, counts), args.repeat)
    results["fps_ours_ms"] = t_ours
    print(f"FPS {len(pts)} -> 4096, 1 thread, medians of {args.repeat}")
    print(f"  ours (exact D-FPS from point 0)     {t_ours:8.2f} ms")
    try:
        import fpsample
    except ImportError:
        print("  fpsample is not installed (pip install fpsample): no baseline")
        fpsample = None
    if fpsample is not None:
        exact = np.asarray(fpsample.fps_sampling(pts, 4096, start_idx=0))
        t_exact = median_ms(lambda: fpsample.fps_sampling(pts, 4096, start_idx=0), args.repeat)
        same = np.array_equal(exact, ours.numpy())
        results.update(fps_fpsample_ms=t_exact, fps_ratio=t_exact / t_ours, fps_same_indices=bool(same))
        print(f"  fpsample.fps_sampling (exact)       {t_exact:8.2f} ms  fpsample/ours "
              f"{t_exact / t_ours:5.2f} (target >= 3); same indices as ours: {same}")
        for name in ("bucket_fps_kdline_sampling", "bucket_fps_kdtree_sampling"):
            fn = getattr(fpsample, name, None)
            if fn is None:
                continue
            call = (lambda f=fn: f(pts, 4096, 7, start_idx=0)) if "kdline" in name else \
                (lambda f=fn: f(pts, 4096, start_idx=0))
            picked = np.asarray(call())
            t = median_ms(call, args.repeat)
            differ = len(set(picked.tolist()) ^ set(ours.tolist())) // 2
            results[f"fps_{name}_ms"] = t
            results[f"fps_{name}_differing_picks"] = differ
            print(f"  fpsample.{name:27s} {t:8.2f} ms  ({differ} of 4096 picks differ from exact FPS)")

    centers = points[ours].contiguous()
    c_off = torch.tensor([0, len(centers)])
    idx, count = ball_query(points, offsets, centers, c_off, 0.5, 32)
    r2 = np.float32(0.5) * np.float32(0.5)
    scan = full_scan_ball_query(pts, centers.numpy(), r2, 32)
    same = np.array_equal(scan, idx.numpy())
    t_ball = median_ms(lambda: ball_query(points, offsets, centers, c_off, 0.5, 32), args.repeat)
    t_scan = median_ms(lambda: full_scan_ball_query(pts, centers.numpy(), r2, 32), args.repeat)
    results.update(ball_ours_ms=t_ball, ball_full_scan_ms=t_scan, ball_ratio=t_scan / t_ball,
                   ball_same=bool(same), ball_mean_found=float(count.float().mean()))
    print(f"ball query 4096 centres, r 0.5, 32 samples ({float(count.float().mean()):.1f} found on average)")
    print(f"  ours (grid)                         {t_ball:8.2f} ms")
    print(f"  full scan in index order (numba)    {t_scan:8.2f} ms  scan/ours {t_scan / t_ball:5.2f} "
          f"(target >= 5); same result: {same}")

    features = torch.randn(len(pts), 32)
    t_group = median_ms(lambda: group_points(features, idx), args.repeat)
    dist, nn = three_nn(points, offsets, centers, c_off)
    weight = 1.0 / (dist + 1e-8)
    weight = weight / weight.sum(dim=1, keepdim=True)
    known = torch.randn(len(centers), 128)
    t_nn = median_ms(lambda: three_nn(points, offsets, centers, c_off), args.repeat)
    t_interp = median_ms(lambda: three_interpolate(known, nn, weight), args.repeat)
    results.update(group_ms=t_group, three_nn_ms=t_nn, three_interpolate_ms=t_interp)
    print(f"group_points 4096 x 32 x 32 ch {t_group:.2f} ms; three_nn {len(pts)} -> 4096 {t_nn:.2f} ms; "
          f"three_interpolate 128 ch {t_interp:.2f} ms")
    results.update(backbone_sharing(points, args.repeat))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
