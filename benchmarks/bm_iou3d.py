"""Benchmark of the rotated IoU and NMS ops (pointdistiller.ops.iou3d).

(1) BEV IoU of anchors vs 20 ground-truth boxes, at SECOND's 70400 car anchors (176 x 200 x 2)
and PointPillars' 321408 anchors (216 x 248 x 3 classes x 2 rotations), and 3D IoU at 70400;
(2) rotated NMS of 1000 clustered detections at IoU thresholds 0.01 and 0.1.

Named baselines: the float64 NumPy reference (``ops/reference/iou3d.py``; circle pre-filter
vectorised, exact pair geometry in Python), the axis-aligned "nearest BEV" IoU in vectorised
PyTorch (the approximation OpenPCDet's anchor assigner uses; not exact for rotated boxes), and
for NMS a dense baseline (the full [N, N] IoU matrix from our op, then a NumPy greedy pass).
Medians over repeats, CPU with torch.set_num_threads(1); ``--cuda`` adds the CUDA kernels.

Usage: python benchmarks/bm_iou3d.py [--repeat 9] [--ref-repeat 1] [--cuda] [--json]
"""
import argparse
import json
import math
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from pointdistiller.ops import iou3d
from pointdistiller.ops.reference import iou3d as ref

# (l, w, h) of the KITTI anchors, in pointdistiller.detectors.batch.CLASS_NAMES order.
ANCHOR_SIZES = ((3.9, 1.6, 1.56), (0.8, 0.6, 1.73), (1.76, 0.6, 1.73))
ANCHOR_Z = (-1.78, -0.6, -0.6)


def make_anchors(nx: int, ny: int, classes: int) -> torch.Tensor:
    """[nx * ny * classes * 2, 7] anchors on the KITTI range x [0, 69.12], y [-39.68, 39.68]."""
    xs = (torch.arange(nx, dtype=torch.float32) + 0.5) * (69.12 / nx)
    ys = (torch.arange(ny, dtype=torch.float32) + 0.5) * (79.36 / ny) - 39.68
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    out = []
    for c in range(classes):
        for yaw in (0.0, math.pi / 2):
            a = torch.empty(nx * ny, 7)
            a[:, 0], a[:, 1], a[:, 2] = gx.reshape(-1), gy.reshape(-1), ANCHOR_Z[c]
            a[:, 3:6] = torch.tensor(ANCHOR_SIZES[c])
            a[:, 6] = yaw
            out.append(a)
    return torch.cat(out)


def make_gt(n: int, seed: int = 0) -> torch.Tensor:
    """[n, 7] ground-truth-like boxes: random class sizes, positions and headings."""
    gen = torch.Generator().manual_seed(seed)
    cls = torch.randint(3, (n,), generator=gen)
    boxes = torch.empty(n, 7)
    boxes[:, 0] = torch.rand(n, generator=gen) * 65 + 2
    boxes[:, 1] = torch.rand(n, generator=gen) * 70 - 35
    boxes[:, 2] = torch.tensor(ANCHOR_Z)[cls]
    scale = 1 + 0.1 * torch.randn(n, 3, generator=gen)
    boxes[:, 3:6] = torch.tensor(ANCHOR_SIZES)[cls] * scale
    boxes[:, 6] = (torch.rand(n, generator=gen) * 2 - 1) * math.pi
    return boxes


def make_detections(n_objects: int = 40, per_object: int = 25, seed: int = 0):
    """1000 detections clustered around 40 objects, with scores; as a detector head emits them."""
    gen = torch.Generator().manual_seed(seed)
    centres = make_gt(n_objects, seed + 1)
    boxes = centres.repeat_interleave(per_object, dim=0)
    noise = torch.randn(boxes.shape, generator=gen)
    boxes[:, :3] += noise[:, :3] * 0.8
    boxes[:, 3:6] *= (1 + 0.1 * noise[:, 3:6]).clamp(min=0.3)
    boxes[:, 6] += noise[:, 6] * 0.3
    scores = torch.rand(boxes.shape[0], generator=gen)
    return boxes.contiguous(), scores


def nearest_bev_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Axis-aligned baseline: each box turned to the nearest of 0 / 90 degrees, then AABB IoU."""

    def to_aabb(boxes):
        yaw = torch.remainder(boxes[:, 6] + math.pi / 4, math.pi)  # in [0, pi)
        swap = (yaw > math.pi / 2).unsqueeze(1)
        lw = torch.where(swap, boxes[:, [4, 3]], boxes[:, [3, 4]])
        return torch.cat([boxes[:, :2] - lw / 2, boxes[:, :2] + lw / 2], dim=1)

    a, b = to_aabb(boxes_a), to_aabb(boxes_b)
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def dense_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> np.ndarray:
    """Dense baseline: full IoU matrix of the sorted boxes, then a NumPy greedy pass."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = iou3d.boxes_iou_bev(boxes[order], boxes[order]).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return order.numpy()[keep]


def median_ms(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None):
    fn()  # warm-up (library load, caches)
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def run(repeat: int, ref_repeat: int, cuda: bool) -> List[Dict]:
    results: List[Dict] = []

    def record(case, impl, ms, baseline_ms=None, baseline=None):
        row = {"case": case, "impl": impl, "median_ms": round(ms, 3)}
        if baseline_ms is not None:
            row["vs"] = baseline
            row["speedup"] = round(baseline_ms / ms, 2)
        results.append(row)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gt = make_gt(20)
    workloads = [("iou_bev 70400x20", make_anchors(176, 200, 1), iou3d.boxes_iou_bev,
                  ref.boxes_iou_bev),
                 ("iou_bev 321408x20", make_anchors(216, 248, 3), iou3d.boxes_iou_bev,
                  ref.boxes_iou_bev),
                 ("iou_3d 70400x20", make_anchors(176, 200, 1), iou3d.boxes_iou_3d,
                  ref.boxes_iou_3d)]
    for case, anchors, ours_fn, ref_fn in workloads:
        ours = median_ms(lambda: ours_fn(anchors, gt), repeat)
        ref_ms = median_ms(lambda: ref_fn(anchors, gt), ref_repeat)
        record(case, "numpy reference", ref_ms)
        if ours_fn is iou3d.boxes_iou_bev:
            aabb = median_ms(lambda: nearest_bev_iou(anchors, gt), repeat)
            record(case, "torch nearest-bev AABB", aabb)
            record(case, "ours cpu", ours, aabb, "torch nearest-bev AABB")
        record(case, "ours cpu", ours, ref_ms, "numpy reference")
        if cuda:
            a_gpu, gt_gpu = anchors.cuda(), gt.cuda()
            gpu = median_ms(lambda: ours_fn(a_gpu, gt_gpu), repeat, sync)
            record(case, "ours cuda", gpu, ours, "ours cpu")

    boxes, scores = make_detections()
    for threshold in (0.01, 0.1):
        case = f"nms_bev 1000 thr={threshold}"
        keep = iou3d.nms_bev(boxes, scores, threshold)
        if not np.array_equal(keep.numpy(), dense_nms(boxes, scores, threshold)):
            raise RuntimeError(f"{case}: ours and the dense baseline disagree")
        ours = median_ms(lambda: iou3d.nms_bev(boxes, scores, threshold), repeat)
        ref_ms = median_ms(lambda: ref.nms_bev(boxes, scores, threshold), ref_repeat)
        dense = median_ms(lambda: dense_nms(boxes, scores, threshold), repeat)
        record(case, "numpy reference", ref_ms)
        record(case, "dense matrix + numpy greedy", dense)
        record(case, "ours cpu", ours, ref_ms, "numpy reference")
        record(case, "ours cpu", ours, dense, "dense matrix + numpy greedy")
        results[-1]["kept"] = int(keep.numel())
        if cuda:
            b_gpu, s_gpu = boxes.cuda(), scores.cuda()
            gpu = median_ms(lambda: iou3d.nms_bev(b_gpu, s_gpu, threshold), repeat, sync)
            record(case, "ours cuda", gpu, ours, "ours cpu")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9,
                        help="timed runs of ours and the fast baselines")
    parser.add_argument("--ref-repeat", type=int, default=1, help="timed runs of the reference")
    parser.add_argument("--cuda", action="store_true", help="also time the CUDA kernels")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda given but no CUDA device is available")
    torch.set_num_threads(1)
    results = run(args.repeat, args.ref_repeat, args.cuda)
    if args.json:
        print(json.dumps({"threads": 1, "results": results}, indent=1))
        return 0
    print(f"{'case':<24} {'impl':<30} {'median ms':>11}  ratio")
    for row in results:
        ratio = f"{row['speedup']:>8.2f}x faster than {row['vs']}" if "vs" in row else ""
        print(f"{row['case']:<24} {row['impl']:<30} {row['median_ms']:>11.3f}  {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
