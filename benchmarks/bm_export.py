"""Latency of an exported detector, onnxruntime against PyTorch eager, and the AP of pd-deploy
against pd-eval.

    python benchmarks/bm_export.py [--models teacher 4x 16x] [--student4x CKPT] [--student16x CKPT]
        [--frames N] [--repeat R] [--ap CKPT] [--cuda] [--json OUT]

Latency (CPU, one thread; ``torch.set_num_threads(1)`` and one onnxruntime thread): each model of
the demo configs (the teacher with the weights the repository ships, the students with the given
checkpoints or, without one, their initial weights: the timing depends on the widths, not on the
values) is exported to a temporary bundle, then every frame runs through both pipelines, frames in
turn so that no input is warm: read the .bin, select points, voxelize, network, decode + NMS. The
frames are the real KITTI sample scans and ``--frames`` synthetic val scenes. Medians per stage,
and the ratio eager / onnxruntime for the network alone (target >= 1.5) and for the whole frame.

``--ap CKPT``: the KITTI AP of ``pd-deploy`` (fp32 and fp16 bundles) against ``pd-eval`` on the
whole synthetic val split, both scored from their result files, for the 4x student checkpoint CKPT.

``--cuda``: also onnxruntime's CUDA provider where installed (and PyTorch on CUDA).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "demo")
CONFIGS = {"teacher": "pointpillars_teacher.yaml", "4x": "pointpillars_student_4x.yaml",
           "16x": "pointpillars_student_16x.yaml"}
SHIPPED = os.path.join(DEMO, "weights", "pointpillars_teacher.fp16.pt")
KITTI = os.environ.get("PD_KITTI_SAMPLE") or os.path.join(os.path.dirname(REPO), "shared", "kitti_sample")


def _frames(synthetic: int):
    """(points, calib, image shape) of the real sample scans and ``synthetic`` val scenes."""
    from pointdistiller.engine.sections import DataConfig
    from pointdistiller.engine.data import resolve_dataset_root
    from pointdistiller.kitti_tools import io as kio

    out = []
    for folder in ("velodyne", "velodyne_reduced"):
        base = os.path.join(KITTI, "training", folder)
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            frame = name[:-4]
            out.append((kio.read_velodyne(os.path.join(base, name)),
                        kio.read_calib(os.path.join(KITTI, "training", "calib", f"{frame}.txt")),
                        kio.read_image_size(os.path.join(KITTI, "training", "image_2", f"{frame}.png"))))
    if synthetic:
        from pointdistiller.config import load_config

        data = load_config(os.path.join(DEMO, CONFIGS["4x"])).data or DataConfig()
        root = resolve_dataset_root(data, log=lambda *_: None)
        training = os.path.join(root, "training")
        for frame in kio.read_ids(os.path.join(root, "ImageSets", "val.txt"))[:synthetic]:
            out.append((kio.read_velodyne(os.path.join(training, "velodyne", f"{frame}.bin")),
                        kio.read_calib(os.path.join(training, "calib", f"{frame}.txt")),
                        kio.read_image_size(os.path.join(training, "image_2", f"{frame}.png"))))
    return out


def _weights(name: str, args, tmp: str) -> str:
    from pointdistiller.config import config_to_dict, load_config
    from pointdistiller.detectors.build import build_detector
    from pointdistiller.kitti_tools.fileio import atomic_torch_save

    given = {"teacher": SHIPPED, "4x": args.student4x, "16x": args.student16x}[name]
    if given:
        return given
    cfg = load_config(os.path.join(DEMO, CONFIGS[name]))
    torch.manual_seed(0)
    path = os.path.join(tmp, f"{name}.pt")
    atomic_torch_save({"format": 2, "model": build_detector(cfg.model).state_dict(),
                       "model_config": config_to_dict(cfg.model)}, path)
    return path


def _export(config: str, weights: str, out: str, precision: str = "fp32") -> None:
    from pointdistiller.cli.export import _quiet_exporter
    from pointdistiller.deploy.export import export_bundle

    with _quiet_exporter():
        export_bundle(config, weights, out, precision, log=lambda *_: None)


def bench_model(name: str, frames, args, tmp: str, providers=None, device="cpu") -> dict:
    from pointdistiller.config import load_config
    from pointdistiller.data.collate import Sample, VoxelCollator
    from pointdistiller.deploy.runtime import Detector, decode
    from pointdistiller.detectors.build import build_detector
    from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights

    config = os.path.join(DEMO, CONFIGS[name])
    weights = _weights(name, args, tmp)
    bundle = os.path.join(tmp, f"bundle_{name}")
    if not os.path.isdir(bundle):
        _export(config, weights, bundle)
    detector = Detector(bundle, threads=1, providers=providers)
    model = build_detector(load_config(config).model)
    load_model_weights(model, load_checkpoint(weights), weights)
    model.eval().to(device)
    v = model.voxelization
    collate = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[1])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    stages = {k: [] for k in ("select", "ort_voxelize", "ort_network", "ort_decode", "ort_total",
                              "torch_voxelize", "torch_network", "torch_decode", "torch_total")}
    for rep in range(args.repeat + 1):                   # the first pass warms up and is not kept
        for points, calib, shape in frames:
            t0 = time.perf_counter()
            sel = detector.select_points(points, calib, shape)
            t1 = time.perf_counter()
            voxels, coords, num_points = detector.voxelizer(sel)
            t2 = time.perf_counter()
            cls, box, dirs = detector.session.run(None, {"pillars": voxels, "num_points": num_points,
                                                          "coords": coords})
            t3 = time.perf_counter()
            decode(cls, box, dirs, detector.anchors, detector.deploy["post_processing"])
            t4 = time.perf_counter()
            with torch.no_grad():
                batch = collate([Sample(sel, np.zeros((0, 7), np.float32), np.zeros(0, np.int64),
                                        "x")]).to(device)
                sync()
                t5 = time.perf_counter()
                out = model(batch)
                sync()
                t6 = time.perf_counter()
                model.predict(batch, out)
                sync()
                t7 = time.perf_counter()
            if rep == 0:
                continue
            for key, value in (("select", t1 - t0), ("ort_voxelize", t2 - t1), ("ort_network", t3 - t2),
                               ("ort_decode", t4 - t3), ("ort_total", t4 - t0),
                               ("torch_voxelize", t5 - t4), ("torch_network", t6 - t5),
                               ("torch_decode", t7 - t6), ("torch_total", (t1 - t0) + (t7 - t4))):
                stages[key].append(1e3 * value)
    med = {k: statistics.median(v) for k, v in stages.items()}
    med["network_ratio"] = med["torch_network"] / med["ort_network"]
    med["total_ratio"] = med["torch_total"] / med["ort_total"]
    return med


def ap_parity(ckpt: str, tmp: str) -> dict:
    """KITTI AP (moderate, R40, strict) of pd-deploy (fp32, fp16) and pd-eval on the synthetic val
    split for the 4x student checkpoint ``ckpt``."""
    from pointdistiller.cli import deploy as pd_deploy
    from pointdistiller.cli.evaluate import evaluate_checkpoint
    from pointdistiller.config import load_config
    from pointdistiller.engine.sections import DataConfig
    from pointdistiller.engine.data import resolve_dataset_root
    from pointdistiller.kitti_tools import io as kio
    from pointdistiller.kitti_tools.evaluation import evaluate_dirs

    config = os.path.join(DEMO, CONFIGS["4x"])
    root = resolve_dataset_root(load_config(config).data or DataConfig(), log=lambda *_: None)
    training = os.path.join(root, "training")
    ids_file = os.path.join(root, "ImageSets", "val.txt")
    ids = kio.read_ids(ids_file)
    _, _, eval_dir = evaluate_checkpoint(config, ckpt, out=os.path.join(tmp, "pd_eval"), device="cpu",
                                         log=lambda *_: None)
    scores = {"pd-eval": evaluate_dirs(os.path.join(training, "label_2"), eval_dir, ids=ids)}
    for precision in ("fp32", "fp16"):
        bundle = os.path.join(tmp, f"ap_bundle_{precision}")
        _export(config, ckpt, bundle, precision)
        out = os.path.join(tmp, f"deploy_{precision}")
        rc = pd_deploy.main([bundle, "--velodyne", os.path.join(training, "velodyne"), "--calib",
                             os.path.join(training, "calib"), "--images",
                             os.path.join(training, "image_2"), "--ids", ids_file, "--out", out])
        if rc != 0:
            raise RuntimeError(f"pd-deploy failed for the {precision} bundle")
        scores[f"pd-deploy {precision}"] = evaluate_dirs(os.path.join(training, "label_2"), out, ids=ids)
    table = {}
    for name, result in scores.items():
        j = result.to_json_dict()["strict"]
        table[name] = {c: {m: j[c][m]["R40"][1] for m in ("3d", "bev")}
                       for c in ("Car", "Pedestrian", "Cyclist")}
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["teacher", "4x", "16x"])
    parser.add_argument("--student4x", help="4x student checkpoint (default: its initial weights)")
    parser.add_argument("--student16x", help="16x student checkpoint (default: its initial weights)")
    parser.add_argument("--frames", type=int, default=12, help="synthetic val scenes besides the "
                                                                 "real KITTI sample scans")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over the frames")
    parser.add_argument("--ap", metavar="CKPT", help="AP parity of pd-deploy for this 4x student")
    parser.add_argument("--cuda", action="store_true", help="also onnxruntime CUDA / PyTorch CUDA")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import onnxruntime as ort

    results = {"machine": f"{os.cpu_count()} CPUs", "torch": torch.__version__,
               "onnxruntime": ort.__version__}
    frames = _frames(args.frames)
    print(f"{len(frames)} frames, {args.repeat} timed passes; medians in ms per frame (1 thread)")
    with tempfile.TemporaryDirectory(prefix="bm_export_") as tmp:
        for name in args.models:
            r = bench_model(name, frames, args, tmp)
            results[name] = r
            print(f"{name:8s} network: onnxruntime {r['ort_network']:7.1f}  eager {r['torch_network']:7.1f}"
                  f"  eager/ort {r['network_ratio']:4.2f} (target >= 1.5) | whole frame: onnxruntime "
                  f"{r['ort_total']:7.1f} (select {r['select']:.1f}, voxelize {r['ort_voxelize']:.1f}, "
                  f"decode+NMS {r['ort_decode']:.1f})  eager {r['torch_total']:7.1f} (voxelize "
                  f"{r['torch_voxelize']:.1f}, decode+NMS {r['torch_decode']:.1f})  eager/ort "
                  f"{r['total_ratio']:4.2f}", flush=True)
            if args.cuda and torch.cuda.is_available():
                providers = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
                if providers:
                    g = bench_model(name, frames, args, tmp, providers=providers + ["CPUExecutionProvider"],
                                    device="cuda")
                    results[f"{name}_cuda"] = g
                    print(f"{name:8s} CUDA network: onnxruntime {g['ort_network']:.2f}  torch "
                          f"{g['torch_network']:.2f}; whole frame {g['ort_total']:.2f} / {g['torch_total']:.2f}")
                else:
                    print(f"{name:8s} CUDA: onnxruntime has no CUDA provider here "
                          f"({', '.join(ort.get_available_providers())})")
        if args.ap:
            table = ap_parity(args.ap, tmp)
            results["ap"] = table
            print("\nAP_R40 moderate (strict), synthetic val split, 4x student " + args.ap)
            for name, per in table.items():
                print(f"  {name:16s} " + "  ".join(f"{c[:3]} 3D {v['3d']:6.2f} BEV {v['bev']:6.2f}"
                                                   for c, v in per.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
