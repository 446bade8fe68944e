"""Benchmark of the KITTI evaluator on a val-sized synthetic set.

Generates 3769 seeded frames (~10 GT objects with KITTI-like types, sizes, truncation, occlusion
and DontCare regions, ~30 detections: noisy copies of the GT plus false positives), then times
``evaluate`` warm (median of ``--repeats`` runs after one warm-up; both overlap sets, all metrics,
R11 and R40). The baseline is a quoted figure: the python port ``kitti_object_eval_python`` takes
about 19 s for 3769 frames on this kind of 2-core machine (it needs numba.cuda, so it is not run
here).

    python benchmarks/bm_eval.py [--frames 3769] [--repeats 3] [--seed 0] [--json OUT]
"""
import argparse
import statistics
import time
from typing import List, Optional, Tuple

import numpy as np

from pointdistiller.kitti_tools.evaluation import evaluate
from pointdistiller.kitti_tools.io import KittiObjects

PORT_SECONDS_3769 = 19.0  # quoted reference figure of the python port, 3769 frames

# type, frequency, mean (h, w, l) in metres
_TYPES = [("Car", 0.52, (1.53, 1.63, 3.88)), ("Van", 0.05, (2.21, 1.90, 5.08)),
          ("Truck", 0.02, (3.25, 2.59, 10.1)), ("Pedestrian", 0.10, (1.76, 0.66, 0.84)),
          ("Person_sitting", 0.01, (1.27, 0.54, 0.80)), ("Cyclist", 0.05, (1.74, 0.60, 1.76)),
          ("Tram", 0.01, (3.53, 2.54, 16.1)), ("Misc", 0.03, (1.91, 1.51, 3.58)),
          ("DontCare", 0.21, (-1.0, -1.0, -1.0))]
_FOCAL, _CU, _CV, _IMG_W, _IMG_H = 721.5, 609.6, 172.9, 1242.0, 375.0


def _image_boxes(loc: np.ndarray, hwl: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Approximate 2D boxes ``[n, 4]``: the projected extent of the 3D box corners, clipped."""
    h, w, l = hwl[:, 0], hwl[:, 1], hwl[:, 2]
    dx = np.stack([l, l, -l, -l] * 2, 1) / 2
    dz = np.stack([w, -w, -w, w] * 2, 1) / 2
    dy = np.concatenate([np.zeros((len(h), 4)), -np.repeat(h[:, None], 4, 1)], 1)
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    x = loc[:, :1] + c * dx + s * dz
    z = np.maximum(loc[:, 2:3] - s * dx + c * dz, 0.5)
    y = loc[:, 1:2] + dy
    u, v = _FOCAL * x / z + _CU, _FOCAL * y / z + _CV
    box = np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], 1)
    return np.clip(box, 0, [_IMG_W, _IMG_H, _IMG_W, _IMG_H])


def _objects(rng: np.random.Generator, names: np.ndarray, loc: np.ndarray, hwl: np.ndarray,
             ry: np.ndarray, score: Optional[np.ndarray]) -> KittiObjects:
    n = len(names)
    bbox = _image_boxes(loc, hwl, ry)
    truncated = np.where(rng.random(n) < 0.8, 0.0, rng.uniform(0, 0.9, n)).round(2)
    occluded = rng.choice(4, n, p=[0.5, 0.25, 0.2, 0.05])
    alpha = ry - np.arctan2(loc[:, 0], loc[:, 2])
    dc = names == "DontCare"
    if dc.any():
        loc, hwl, ry = loc.copy(), hwl.copy(), ry.copy()
        loc[dc], hwl[dc], ry[dc], alpha[dc] = -1000.0, -1.0, -10.0, -10.0
        truncated[dc], occluded[dc] = -1.0, -1
        x1 = rng.uniform(0, _IMG_W - 60, dc.sum())
        y1 = rng.uniform(140, 220, dc.sum())
        bbox[dc] = np.stack([x1, y1, x1 + rng.uniform(10, 60, dc.sum()),
                             y1 + rng.uniform(10, 40, dc.sum())], 1)
    if score is not None:
        truncated, occluded = np.full(n, -1.0), np.full(n, -1)
    return KittiObjects(name=names.astype(object), truncated=truncated, occluded=occluded,
                        alpha=alpha, bbox=bbox, hwl=hwl, location=loc, rotation_y=ry, score=score)


def make_frames(num_frames: int = 3769, seed: int = 0, gt_per_frame: float = 10.0,
                dets_per_frame: float = 30.0) -> Tuple[List[KittiObjects], List[KittiObjects]]:
    """Seeded synthetic ``(gt_annos, dt_annos)``: detections are noisy copies of 90 % of the
    non-DontCare GT (5 % with a wrong class) plus false positives up to ``dets_per_frame``."""
    rng = np.random.default_rng(seed)
    names_all = np.array([t[0] for t in _TYPES])
    probs = np.array([t[1] for t in _TYPES])
    sizes = np.array([t[2] for t in _TYPES])
    det_classes = np.array(["Car", "Pedestrian", "Cyclist"])
    gt_annos, dt_annos = [], []
    for _ in range(num_frames):
        n = max(1, rng.poisson(gt_per_frame))
        kind = rng.choice(len(_TYPES), n, p=probs / probs.sum())
        names = names_all[kind]
        hwl = sizes[kind] * rng.uniform(0.85, 1.15, (n, 3))
        depth = rng.uniform(5, 70, n)
        loc = np.stack([depth * rng.uniform(-0.75, 0.75, n), rng.normal(1.65, 0.15, n), depth], 1)
        ry = rng.uniform(-np.pi, np.pi, n)
        gt = _objects(rng, names, loc, hwl, ry, None)

        real = np.flatnonzero((names != "DontCare") & (rng.random(n) < 0.9))
        k = len(real)
        det_names = names[real].copy()
        det_names[~np.isin(det_names, det_classes)] = "Car"
        wrong = rng.random(k) < 0.05
        det_names[wrong] = rng.choice(det_classes, wrong.sum())
        det_loc = loc[real] + rng.normal(0, [0.1, 0.04, 0.15], (k, 3))
        det_hwl = hwl[real] * rng.normal(1.0, 0.03, (k, 3))
        det_ry = ry[real] + rng.normal(0, 0.05, k)
        det_score = rng.uniform(0.4, 1.0, k)

        n_fp = max(0, int(rng.poisson(dets_per_frame)) - k)
        fp_kind = rng.choice(3, n_fp, p=[0.6, 0.25, 0.15])
        fp_names = det_classes[fp_kind]
        fp_size = sizes[[0, 3, 5]][fp_kind] * rng.uniform(0.85, 1.15, (n_fp, 3))
        fp_depth = rng.uniform(5, 70, n_fp)
        fp_loc = np.stack([fp_depth * rng.uniform(-0.75, 0.75, n_fp),
                           rng.normal(1.65, 0.15, n_fp), fp_depth], 1)
        near = rng.random(n_fp) < 0.3  # some false positives sit near a GT object
        if k and near.any():
            fp_loc[near] = det_loc[rng.integers(0, k, near.sum())] + rng.normal(0, 1.0, (near.sum(), 3))
        dt = _objects(
            rng, np.concatenate([det_names, fp_names]), np.concatenate([det_loc, fp_loc]),
            np.concatenate([det_hwl, fp_size]),
            np.concatenate([det_ry, rng.uniform(-np.pi, np.pi, n_fp)]),
            np.concatenate([det_score, rng.beta(1.5, 4.0, n_fp)]))
        order = np.argsort(-dt.score, kind="stable")
        gt_annos.append(gt)
        dt_annos.append(dt.select(order))
    return gt_annos, dt_annos


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3769)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    t0 = time.perf_counter()
    gt_annos, dt_annos = make_frames(args.frames, args.seed)
    gen_s = time.perf_counter() - t0
    n_gt = sum(len(a) for a in gt_annos)
    n_dt = sum(len(a) for a in dt_annos)

    t0 = time.perf_counter()
    result = evaluate(gt_annos, dt_annos)  # warm-up (loads or compiles the numba kernels)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate(gt_annos, dt_annos)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    port = PORT_SECONDS_3769 * args.frames / 3769
    car = result.to_json_dict()["strict"]["Car"]
    print(f"frames {args.frames}: {n_gt} GT, {n_dt} detections (generated in {gen_s:.1f} s)")
    print(f"evaluate (both overlap sets, bbox/bev/3d/aos, R11+R40): median {median:.3f} s "
          f"over {args.repeats} warm runs (warm-up {warmup_s:.2f} s)")
    print(f"python port (quoted reference, not run here): {port:.1f} s -> speed-up "
          f"{port / median:.1f}x")
    print(f"sanity: Car 3d R40 strict (e/m/h) = "
          f"{', '.join(f'{v:.2f}' for v in car['3d']['R40'])}")
    if args.json:
        from pointdistiller.kitti_tools.fileio import atomic_write_json

        atomic_write_json(args.json, {
            "frames": args.frames, "num_gt": n_gt, "num_det": n_dt, "repeats": args.repeats,
            "median_s": median, "times_s": times, "warmup_s": warmup_s,
            "port_reference_s": port, "speedup_vs_port": port / median,
            "car_3d_r40_strict": car["3d"]["R40"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
