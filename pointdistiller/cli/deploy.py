"""pd-deploy: run an exported bundle on LiDAR scans without PyTorch (numpy, numba, onnxruntime).

    pd-deploy BUNDLE --velodyne DIR --out DIR [--calib DIR] [--images DIR | --image-shape H W]
              [--ids FILE] [--threads N]

Writes one KITTI result file per scan. With ``--calib`` the boxes are in the camera frame (the
official format: bottom-centre location, 2D box from the projection, alpha), and the scan is first
cut to camera 2's field of view when the training config did so. Without calibration the lines
hold LiDAR-frame boxes: location = box centre (x, y, z), dimensions (h, w, l), rotation = LiDAR yaw,
with alpha -10 and a 2D box of -1.
"""
import argparse
import os
import sys
import time
from typing import List, Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pd-deploy", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="folder written by pd-export")
    parser.add_argument("--velodyne", required=True, metavar="DIR", help="<id>.bin scans")
    parser.add_argument("--out", required=True, metavar="DIR", help="result folder (<id>.txt)")
    parser.add_argument("--calib", metavar="DIR", help="<id>.txt KITTI calibration files")
    parser.add_argument("--images", metavar="DIR",
                        help="image_2 folder: the image size of each frame (for the field of view "
                             "and the 2D boxes)")
    parser.add_argument("--image-shape", type=int, nargs=2, default=(375, 1242), metavar=("H", "W"),
                        help="image size when --images is not given (default 375 1242)")
    parser.add_argument("--ids", metavar="FILE", help="only the frame ids listed in FILE")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    return parser


def lidar_objects(det, class_names):
    """KITTI-style lines of LiDAR-frame boxes (no calibration)."""
    from pointdistiller.kitti_tools.io import KittiObjects

    n = len(det)
    boxes = det.boxes.astype(np.float64)
    return KittiObjects(name=np.asarray([class_names[i] for i in det.labels], dtype=object),
                        truncated=np.full(n, -1.0), occluded=np.full(n, -1, np.int64),
                        alpha=np.full(n, -10.0), bbox=np.full((n, 4), -1.0),
                        hwl=boxes[:, [5, 4, 3]], location=boxes[:, :3], rotation_y=boxes[:, 6],
                        score=det.scores.astype(np.float64))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pointdistiller.deploy.bundle import BundleError
    from pointdistiller.deploy.runtime import Detector
    from pointdistiller.kitti_tools import io as kio
    from pointdistiller.kitti_tools.errors import KittiFormatError
    from pointdistiller.kitti_tools.results import detections_to_kitti, write_results
    from pointdistiller.kitti_tools.fileio import OutputError, check_writable_dir

    try:
        check_writable_dir(args.out, "--out")
        if not os.path.isdir(args.velodyne):
            raise FileNotFoundError(f"--velodyne {args.velodyne}: not a folder")
        ids = (kio.read_ids(args.ids) if args.ids else
               sorted(f[:-4] for f in os.listdir(args.velodyne) if f.endswith(".bin")))
        detector = Detector(args.bundle, threads=args.threads)
        seconds, count = [], 0
        for frame in ids:
            points = kio.read_velodyne(os.path.join(args.velodyne, f"{frame}.bin"),
                                       detector.num_features)
            calib = kio.read_calib(os.path.join(args.calib, f"{frame}.txt")) if args.calib else None
            shape = (kio.read_image_size(os.path.join(args.images, f"{frame}.png"))
                     if args.images else tuple(args.image_shape))
            start = time.perf_counter()
            det = detector(points, calib, shape)
            seconds.append(time.perf_counter() - start)
            count += len(det)
            objects = (detections_to_kitti(det.boxes, det.scores, det.labels, detector.class_names,
                                           calib, shape) if calib is not None
                       else lidar_objects(det, detector.class_names))
            write_results(args.out, frame, objects)
    except (BundleError, KittiFormatError, OutputError, FileNotFoundError, ValueError) as exc:
        print(f"pd-deploy: error: {exc}", file=sys.stderr)
        return 2
    # the first frame also compiles the numba kernels (unless numba's cache holds them): its time is
    # reported apart from the median of the others, which is what a vehicle sees per frame
    print(f"pd-deploy: {len(ids)} frames, {count} detections; {_latency(seconds)} (points to boxes); "
          f"results in {args.out}")
    return 0


def _latency(seconds) -> str:
    """The frames' latency in words: the first frame apart, then the median of the rest."""
    ms = [1e3 * s for s in seconds]
    if not ms:
        return "no frames"
    if len(ms) == 1:
        return f"{ms[0]:.1f} ms (one frame, numba compilation included)"
    return (f"median {float(np.median(ms[1:])):.1f} ms per frame after the first, first frame {ms[0]:.1f} ms "
            f"(numba compilation included)")


if __name__ == "__main__":
    sys.exit(main())
