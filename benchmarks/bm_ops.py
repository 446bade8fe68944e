"""All op benchmarks of the ops issue in one run: voxelize vs spconv PointToVoxel, kNN vs scipy
cKDTree and torch.cdist+topk, rotated IoU/NMS vs the NumPy reference.

    python benchmarks/bm_ops.py [--cuda]

Each part prints its own medians and ratios against its named baseline (one torch thread).
"""
import argparse
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("bm_voxelize", "bm_knn", "bm_iou3d")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also time the CUDA kernels")
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    status = 0
    for name in PARTS:
        print(f"\n===== {name} =====", flush=True)
        status |= int(importlib.import_module(name).main(["--cuda"] if args.cuda else []) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
