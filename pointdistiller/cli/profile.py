"""pd-profile: parameters, GFLOPs and CPU latency of the detector a config describes, on a real frame.

    pd-profile CONFIG [--set k=v ...] [--frame BIN] [--json] [--repeats N] [--threads N]

GFLOPs = 2 x multiply-accumulates / 1e9 of one forward pass (eval mode, test-time voxel cap or
point count) on the
frame (default: ``../shared/kitti_sample/training/velodyne/000000.bin`` next to the repository):

- dense layers (Conv1d/2d/3d, ConvTranspose2d, Linear) counted exactly by forward hooks:
  conv ``out.numel() * Cin/groups * kernel volume``, transposed conv ``in.numel() * Cout/groups *
  kernel volume``, linear ``rows * in * out``;
- sparse convs (spconv) by their rulebook: the number of (input, output) pairs that the conv
  actually multiplies (from the indice pairs; if unavailable, active output sites x kernel volume)
  x Cin x Cout;
- PointNet++ shared MLPs (PointRCNN): the first layer as a dense layer over the grouped rows (its
  ``first_layer_macs``, the way mmcv counts a 1x1 conv over the groups; the implementation projects
  the features before grouping and does fewer), the others by their Linear calls;
- BatchNorm, ReLU, max/mean pooling, scatter and the head's post-processing are not counted.

The paper's figures (PointPillars 34.3 / 9.0 / 2.5, SECOND 69.8 / 17.8 / 4.6) match the dense
multiply-accumulates of these architectures (mmcv's counter, sparse convs not counted), i.e. half
of the dense part of ``gflops`` here; the text report prints both.

``--json`` prints exactly ``{"params": int, "gflops": float, "latency_ms": float}``; latency is the
median of ``--repeats`` timed forward passes (after one warm-up) under ``torch.no_grad``.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from pointdistiller.config import ConfigError, add_set_argument, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KITTI_SAMPLE = os.environ.get(
    "PD_KITTI_SAMPLE", os.path.join(os.path.dirname(REPO), "shared", "kitti_sample"))
DEFAULT_FRAME = os.path.join(KITTI_SAMPLE, "training", "velodyne", "000000.bin")


@dataclass
class FlopCount:
    """Multiply-accumulates of one forward pass, split into dense and sparse layers."""

    dense_macs: int = 0
    sparse_macs: int = 0
    by_module: Dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        """``2 * (dense + sparse) MACs / 1e9``."""
        return 2.0 * (self.dense_macs + self.sparse_macs) / 1e9


def _sparse_pairs(module, out) -> int:
    """(input, output) pairs a spconv conv multiplied, from its rulebook in ``out.indice_dict``."""
    from spconv.pytorch.core import ImplicitGemmIndiceData, IndiceData

    data = out.indice_dict.get(module.indice_key) if module.indice_key is not None else None
    if isinstance(data, IndiceData) and data.indice_pair_num is not None:
        counts = data.indice_pair_num.tolist()
        if not data.is_subm:
            return int(sum(counts))
        # Submanifold rulebooks of the Native algorithm hold the kernel offsets before the centre
        # only: the centre is a dense matmul over every active site, and offset i > centre reuses
        # the mirrored offset kv - 1 - i (spconv.pytorch.ops.indice_conv).
        kv, centre = len(counts), len(counts) // 2
        return int(out.features.shape[0]) + sum(
            counts[i] if i < centre else counts[kv - 1 - i] for i in range(kv) if i != centre)
    if isinstance(data, ImplicitGemmIndiceData) and data.pair_fwd is not None:
        return int((data.pair_fwd >= 0).sum())
    kernel_volume = int(np.prod(module.kernel_size))
    return int(out.features.shape[0]) * kernel_volume


def count_flops(model: nn.Module, *inputs) -> FlopCount:
    """Runs ``model(*inputs)`` once (no grad) with counting hooks; see the module docstring."""
    with warnings.catch_warnings():   # spconv's torch.cuda.amp deprecation warnings at import
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
        from spconv.pytorch.conv import SparseConvolution

    count = FlopCount()
    names = {m: n for n, m in model.named_modules()}

    def add(module, macs: int, sparse: bool):
        if sparse:
            count.sparse_macs += macs
        else:
            count.dense_macs += macs
        count.by_module[names[module]] = count.by_module.get(names[module], 0) + macs

    def conv_hook(m, args, out):
        add(m, out.numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size)), False)

    def deconv_hook(m, args, out):
        add(m, args[0].numel() * (m.out_channels // m.groups) * int(np.prod(m.kernel_size)), False)

    def linear_hook(m, args, out):
        add(m, (args[0].numel() // m.in_features) * m.in_features * m.out_features, False)

    def sparse_hook(m, args, out):
        add(m, _sparse_pairs(m, out) * m.in_channels * m.out_channels, True)

    def first_layer_hook(m, args, out):
        add(m, m.first_layer_macs(*args), False)

    handles = []
    for m in model.modules():
        if isinstance(m, SparseConvolution):
            handles.append(m.register_forward_hook(sparse_hook))
        elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            handles.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        if hasattr(m, "first_layer_macs"):
            handles.append(m.register_forward_hook(first_layer_hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return count


def frame_batch(points: np.ndarray, model_cfg, training: bool = False):
    """One-sample ``Batch`` of ``points [N, C]`` as the loader feeds the detector of ``model_cfg``:
    voxelized, or cropped and resampled to its point count (test-time settings unless
    ``training``)."""
    from pointdistiller.data.collate import Sample, build_collator

    collate = build_collator(model_cfg, training)
    return collate([Sample(points, np.zeros((0, 7), np.float32), np.zeros(0, np.int64), "profile")])


def latency_ms(model: nn.Module, batch, repeats: int = 5, warmup: int = 1) -> List[float]:
    """Wall-clock milliseconds of ``repeats`` forward passes (after ``warmup``), no grad."""
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(batch)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return times


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pd-profile", description="Parameters, GFLOPs and CPU latency of a detector config.")
    parser.add_argument("config", help="YAML config with a model section")
    add_set_argument(parser)
    parser.add_argument("--frame", default=None,
                        help=f"velodyne .bin frame to run on (default {DEFAULT_FRAME})")
    parser.add_argument("--json", action="store_true",
                        help='print only {"params": int, "gflops": float, "latency_ms": float}')
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        print("pd-profile: --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"pd-profile: {exc}", file=sys.stderr)
        return 2
    if cfg.model is None:
        print(f"pd-profile: {args.config} has no model section", file=sys.stderr)
        return 2
    frame = args.frame or DEFAULT_FRAME
    if not os.path.isfile(frame):
        hint = "" if args.frame else " (the default frame of ../shared/kitti_sample; pass --frame BIN)"
        print(f"pd-profile: frame {frame} not found{hint}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from pointdistiller.detectors.build import build_detector
    from pointdistiller.kitti_tools.errors import KittiFormatError
    from pointdistiller.kitti_tools.io import read_velodyne

    try:
        points = read_velodyne(frame)
    except KittiFormatError as exc:
        print(f"pd-profile: {exc}", file=sys.stderr)
        return 2
    model = build_detector(cfg.model).eval()
    batch = frame_batch(points, cfg.model)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, batch)
    times = latency_ms(model, batch, args.repeats)
    result = {"params": int(params), "gflops": round(flops.gflops, 3),
              "latency_ms": round(statistics.median(times), 2)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"config      {args.config}" + "".join(f" --set {s}" for s in args.set))
    inputs = (f"{batch.voxels.shape[0]} voxels" if batch.voxels.shape[0] else
              f"{batch.points.shape[0]} points sampled")
    print(f"frame       {frame}: {len(points)} points, {inputs}")
    print(f"params      {params:,} ({params / 1e6:.3f} M)")
    print(f"GFLOPs      {result['gflops']:.3f} (2 x MACs: dense {flops.dense_macs / 1e9:.3f} G MACs, "
          f"sparse {flops.sparse_macs / 1e9:.3f} G MACs)")
    print(f"latency     median {result['latency_ms']:.2f} ms of {args.repeats} "
          f"(threads {torch.get_num_threads()}, min {min(times):.2f}, max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
