"""PointDistiller's local distillation: our implementation against the authors' dense formulation,
and its share of a training step.

    python benchmarks/bm_distill.py [--part a|b|all] [--detector pointpillars|point_rcnn]
        [--repeats 3] [--teacher-weights CKPT] [--cuda] [--json OUT]

(a) One loss evaluation, forward + backward, at the paper's PointPillars size (N = 6000 selected
    pillars, K = 128, C_T = 64, C_S = 32, batch 6 x 16000 pillars, seeded random features and
    continuous importance). Baseline: ``dense_reference.dense_local_distillation`` (the authors'
    pooled top-N, ``N x n`` distance matrix + topk, explicit ``[N, 2C, K]`` edges). Ours:
    ``LocalDistillation`` (factorized) with ``selection="pooled"`` (the same loss; values compared,
    1e-5 relative) and ``"per_sample"`` (the default; a different graph, so a different value).
(b) Training steps (forward, backward, AdamW step) of the demo PointPillars 4x student on a batch of
    2 real KITTI frames (``../shared/kitti_sample``) voxelized with the demo settings: the student
    alone; with the frozen demo teacher's forward (no_grad; the shipped trained weights unless
    ``--teacher-weights`` names others); with the teacher and PointDistiller on
    the pillar features (N = 6000, K = 128). PointDistiller's own cost is (third - second) as a %
    of the second. ``--detector point_rcnn``: the same three steps for the PointRCNN 8x student
    and teacher (``configs/point_rcnn``) on the 2 frames resampled to 16384 points each, with
    PointDistiller on the last feature propagation (N = 6000 points per sample, K = 128, C = 128,
    max over K); the frozen teacher runs up to that tap only and shares the batch's sampling and
    grouping with the student.

Every case runs in a fresh subprocess with ``torch.set_num_threads(1)``; times are medians of
``--repeats`` runs after one warm-up run (the dense baseline of (a) too, unless ``--dense-repeats``
lowers its count), wall-clock and CPU time of the process (on a shared machine the CPU time is the
steadier of the two). Libraries and compiled kernels are loaded by a tiny run first. Memory: on CPU the peak resident set (``ru_maxrss``) of the subprocess minus its
value once the inputs (and, for (b), the models) exist, so it covers everything a run allocates,
including what the allocator keeps; with ``--cuda``, ``torch.cuda.max_memory_allocated`` over the
same span.
"""
import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KITTI = os.environ.get("PD_KITTI_SAMPLE", os.path.join(os.path.dirname(REPO), "shared",
                                                        "kitti_sample"))
PAPER = {"num_nodes": 6000, "k": 128, "teacher_channels": 64, "student_channels": 32,
         "nodes_per_sample": 16000, "batch": 6}


# ---------------------------------------------------------------------------------------------
# measurement helpers (run inside the worker subprocess)
# ---------------------------------------------------------------------------------------------
class _Meter:
    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def now(self) -> float:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return (self.torch.cuda.max_memory_allocated() - self.base) / 2 ** 20
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base) / 2 ** 20


def _time_runs(meter: _Meter, fn, repeats: int, warmup: int = 1) -> Dict[str, List[float]]:
    """Wall-clock and CPU seconds (this process) of each timed run."""
    wall, cpu = [], []
    for i in range(warmup + repeats):
        start, start_cpu = meter.now(), time.process_time()
        fn()
        elapsed, elapsed_cpu = meter.now() - start, time.process_time() - start_cpu
        if i >= warmup:
            wall.append(elapsed)
            cpu.append(elapsed_cpu)
    return {"seconds": wall, "median_s": statistics.median(wall), "cpu_seconds": cpu,
            "median_cpu_s": statistics.median(cpu)}


# ---------------------------------------------------------------------------------------------
# (a) one loss evaluation: ours vs the dense formulation
# ---------------------------------------------------------------------------------------------
def _worker_a(variant: str, repeats: int, warmup: int, device_name: str) -> dict:
    import torch

    from pointdistiller.distill.dense_reference import dense_local_distillation
    from pointdistiller.distill.local import LocalDistillation

    device = torch.device(device_name)
    p = PAPER
    stats = {}

    def setup(nodes_per_sample, num_nodes):
        n = nodes_per_sample * p["batch"]
        gen = torch.Generator().manual_seed(0)
        teacher = torch.randn(n, p["teacher_channels"], generator=gen).to(device)
        student = torch.randn(n, p["student_channels"], generator=gen).to(device).requires_grad_()
        # points per pillar (1..32) plus a jitter: continuous, so top-N has no ties
        importance = (torch.randint(1, 33, (n,), generator=gen).float()
                      + torch.rand(n, generator=gen)).to(device)
        offsets = (torch.arange(p["batch"] + 1) * nodes_per_sample).to(device)
        torch.manual_seed(0)
        module = LocalDistillation(p["teacher_channels"], p["student_channels"], num_nodes, p["k"],
                                   selection="per_sample" if variant == "per_sample" else "pooled")
        module.to(device)

        def run():
            student.grad = None
            module.zero_grad(set_to_none=True)
            if variant == "dense":
                loss = dense_local_distillation(module, teacher, student, importance)
            else:
                loss, st = module(teacher, student, importance, offsets)
                stats.update(st)
            loss.backward()
            stats["loss"] = loss.item()
        return run

    setup(200, 300)()   # loads libraries and kernels (numba) outside the measured span
    run = setup(p["nodes_per_sample"], p["num_nodes"])
    meter = _Meter(device)
    times = _time_runs(meter, run, repeats, warmup)
    return {"variant": variant, **times, "peak_mb": meter.peak_mb(), **stats}


# ---------------------------------------------------------------------------------------------
# (b) training steps with the demo PointPillars pair on real KITTI frames
# ---------------------------------------------------------------------------------------------
def kitti_batch(model_cfg: dict, frames: int = 2):
    """The first ``frames`` real KITTI frames with their labels, as the training loader feeds the
    detector of ``model_cfg`` (voxelized, or resampled points; also used by bm_knn)."""
    from pointdistiller.kitti_tools.classes import CLASS_NAMES
    from pointdistiller.data.collate import Sample, build_collator
    from pointdistiller.kitti_tools import io as kio
    from pointdistiller.kitti_tools.geometry import camera_to_lidar_boxes

    root = os.path.join(KITTI, "training")
    paths = sorted(glob.glob(os.path.join(root, "velodyne", "*.bin")))[:frames]
    if len(paths) < frames:
        raise SystemExit(f"bm_distill: need {frames} KITTI frames under {root}/velodyne")
    lo, hi = model_cfg["point_range"][:3], model_cfg["point_range"][3:]
    samples = []
    for path in paths:
        frame = os.path.splitext(os.path.basename(path))[0]
        objects = kio.read_label(os.path.join(root, "label_2", frame + ".txt"))
        calib = kio.read_calib(os.path.join(root, "calib", frame + ".txt"))
        known = np.isin(objects.name, CLASS_NAMES)
        boxes = camera_to_lidar_boxes(objects.location[known], objects.hwl[known],
                                      objects.rotation_y[known], calib).astype(np.float32)
        labels = np.array([CLASS_NAMES.index(n) for n in objects.name[known]], np.int64)
        inside = ((boxes[:, 0] >= lo[0]) & (boxes[:, 0] < hi[0]) & (boxes[:, 1] >= lo[1])
                  & (boxes[:, 1] < hi[1]))
        samples.append(Sample(kio.read_velodyne(path), boxes[inside], labels[inside], frame))
    return build_collator(model_cfg, training=True)(samples)


# (b): teacher config, student config, the PointDistiller term of each detector
# The teacher weights part (b) loads by default: a user distils from a trained teacher, whose
# features are far more structured than a random initialisation's (the kNN in its feature space
# prunes better: 0.30 s against 0.65 s of CPU for the PointRCNN case measured 2026-12-07). PointRCNN
# has no shipped teacher; ``--teacher-weights`` gives one (e.g. a run of
# configs/demo/point_rcnn_teacher.yaml), otherwise its teacher stays randomly initialised and the
# output says so.
TEACHER_WEIGHTS = {"pointpillars": "configs/demo/weights/pointpillars_teacher.fp16.pt",
                   "point_rcnn": None}
STEP_CASES = {
    "pointpillars": ("configs/demo/pointpillars_teacher.yaml",
                     "configs/demo/pointpillars_student_4x.yaml",
                     dict(feature="pfn", num_nodes=PAPER["num_nodes"], k=PAPER["k"])),
    "point_rcnn": ("configs/point_rcnn/teacher.yaml", "configs/point_rcnn/student_8x.yaml",
                   dict(feature="fp", importance="channel_max", num_nodes=12000, k=128, tau=1.0,
                        pool="max")),
}


def _worker_b(mode: str, repeats: int, warmup: int, device_name: str,
              detector: str = "pointpillars", teacher_weights: Optional[str] = None) -> dict:
    import torch

    from pointdistiller.config import load_config
    from pointdistiller.detectors.build import build_detector
    from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights
    from pointdistiller.distill.config import DistillConfig, LocalTermConfig
    from pointdistiller.distill.distiller import Distiller

    device = torch.device(device_name)
    t_path, s_path, term = STEP_CASES[detector]
    teacher_cfg = load_config(os.path.join(REPO, t_path)).model
    student_cfg = load_config(os.path.join(REPO, s_path)).model
    cpu_batch = kitti_batch(student_cfg)
    torch.manual_seed(0)
    student = build_detector(student_cfg).to(device).train()
    stats = {"pillars": cpu_batch.voxel_offsets.diff().tolist(),
             "points": cpu_batch.point_offsets.diff().tolist()}
    batch = cpu_batch.to(device)
    if mode == "student":
        model, params = student, list(student.parameters())

        def step():
            batch.cache.clear()    # a new batch every step: its sampling is computed again
            out = student(batch)
            return student.loss(batch, out)["total"]
    else:
        teacher = build_detector(teacher_cfg)
        if teacher_weights:
            load_model_weights(teacher, load_checkpoint(teacher_weights), teacher_weights, "teacher")
        teacher = teacher.to(device)
        local = [LocalTermConfig(**term)] if mode == "pointdistiller" else []
        model = Distiller(student, teacher, DistillConfig(local=local),
                          {t.name: t for t in teacher.feature_info},
                          {t.name: t for t in student.feature_info}).to(device).train()
        params = list(student.parameters()) + list(model.kd_modules().parameters())

        def step():
            batch.cache.clear()
            losses, st = model(batch)
            stats.update(st)
            return losses["total"]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    # the same libraries and kernels (numba) are loaded in every mode, outside the measured span
    from pointdistiller.distill.local import LocalDistillation

    small = torch.randn(300, 8, device=device)
    LocalDistillation(8, 8, num_nodes=50, k=8).to(device)(small, small, small[:, 0],
                                               torch.tensor([0, 300], device=device))

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = step()
        loss.backward()
        optimizer.step()
        stats["loss"] = loss.item()

    meter = _Meter(device)
    times = _time_runs(meter, run, repeats, warmup)
    return {"mode": mode, **times, "peak_mb": meter.peak_mb(), **stats}


def _worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(1)
    if spec["part"] == "a":
        result = _worker_a(spec["case"], spec["repeats"], spec["warmup"], spec["device"])
    else:
        result = _worker_b(spec["case"], spec["repeats"], spec["warmup"], spec["device"],
                           spec["detector"], spec.get("teacher_weights"))
    print("RESULT " + json.dumps(result))


def _spawn(part: str, case: str, repeats: int, device: str, warmup: int = 1,
           detector: str = "pointpillars", teacher_weights: Optional[str] = None) -> dict:
    spec = json.dumps({"part": part, "case": case, "repeats": repeats, "warmup": warmup,
                       "device": device, "detector": detector, "teacher_weights": teacher_weights})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                          capture_output=True, text=True, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"bm_distill: case {part}/{case} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (medians)")
    parser.add_argument("--dense-repeats", type=int, default=None,
                        help="timed runs of the dense baseline (default: --repeats)")
    parser.add_argument("--detector", choices=sorted(STEP_CASES), default="pointpillars",
                        help="the student/teacher pair of part (b)")
    parser.add_argument("--teacher-weights", default=None, metavar="CKPT",
                        help="teacher checkpoint of part (b) (default: the shipped demo teacher "
                             "for pointpillars; none, i.e. a random teacher, for point_rcnn)")
    parser.add_argument("--cuda", action="store_true", help="run every case on the GPU")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    device = "cuda" if args.cuda else "cpu"
    results = {"device": device, "threads": 1, "cpus": os.cpu_count(), "repeats": args.repeats}

    if args.part in ("a", "all"):
        dense_repeats = args.dense_repeats if args.dense_repeats is not None else args.repeats
        a = {"size": PAPER,
             "dense": _spawn("a", "dense", dense_repeats, device),
             "pooled": _spawn("a", "pooled", args.repeats, device),
             "per_sample": _spawn("a", "per_sample", args.repeats, device)}
        dense = a["dense"]
        a["loss_rel_diff_pooled_vs_dense"] = abs(a["pooled"]["loss"] - dense["loss"]) / abs(dense["loss"])
        for ours in ("pooled", "per_sample"):
            a[f"speedup_{ours}"] = dense["median_s"] / a[ours]["median_s"]
            a[f"speedup_cpu_{ours}"] = dense["median_cpu_s"] / a[ours]["median_cpu_s"]
            a[f"memory_ratio_{ours}"] = a[ours]["peak_mb"] / max(dense["peak_mb"], 1e-9)
        results["a"] = a
        print(f"(a) local distillation, forward + backward, N={PAPER['num_nodes']} K={PAPER['k']} "
              f"C_T={PAPER['teacher_channels']} C_S={PAPER['student_channels']}, "
              f"{PAPER['batch']} x {PAPER['nodes_per_sample']} nodes, {device}, 1 thread")
        for name, label in (("dense", "dense (authors', baseline)"), ("pooled", "ours, pooled"),
                            ("per_sample", "ours, per sample")):
            r = a[name]
            line = (f"  {label:27s} {r['median_s']:7.3f} s wall, {r['median_cpu_s']:7.3f} s CPU "
                    f"(medians of {len(r['seconds'])}), peak {r['peak_mb']:7.1f} MiB, "
                    f"loss {r['loss']:.7g}")
            if name != "dense":
                line += (f"; x{a['speedup_' + name]:.1f} faster (CPU x{a['speedup_cpu_' + name]:.1f}),"
                         f" {100 * a['memory_ratio_' + name]:.1f} % of the memory")
            print(line)
        print(f"  loss, ours pooled vs dense: relative difference "
              f"{a['loss_rel_diff_pooled_vs_dense']:.1e} (target <= 1e-5); targets: >= 2x faster, "
              f"<= 10 % of the memory")

    if args.part in ("b", "all"):
        weights = args.teacher_weights or TEACHER_WEIGHTS[args.detector]
        if weights:
            weights = os.path.abspath(weights if os.path.isabs(weights) or os.path.exists(weights)
                                      else os.path.join(REPO, weights))
            if not os.path.isfile(weights):
                parser.error(f"--teacher-weights: {weights} not found")
        b = {mode: _spawn("b", mode, args.repeats, device, detector=args.detector,
                          teacher_weights=weights)
             for mode in ("student", "teacher", "pointdistiller")}
        b["teacher_weights"] = weights
        for kind, key in (("wall", "median_s"), ("cpu", "median_cpu_s")):
            base = b["teacher"][key]
            b[f"pointdistiller_cost_pct_{kind}"] = 100 * (b["pointdistiller"][key] - base) / base
        results["b"] = b
        b["detector"] = args.detector
        what = (f"demo PointPillars 4x student, 2 KITTI frames ({b['student']['pillars']} pillars)"
                if args.detector == "pointpillars" else
                f"PointRCNN 8x student, 2 KITTI frames ({b['student']['points']} points)")
        print(f"(b) training step, {what}, {device}, 1 thread, teacher "
              f"{os.path.relpath(weights, REPO) if weights else 'randomly initialised (no --teacher-weights)'}")
        for mode, label in (("student", "student alone"), ("teacher", "+ frozen teacher forward"),
                            ("pointdistiller", "+ teacher + PointDistiller")):
            r = b[mode]
            print(f"  {label:27s} {r['median_s']:7.3f} s wall, {r['median_cpu_s']:7.3f} s CPU "
                  f"(medians of {len(r['seconds'])}), peak {r['peak_mb']:7.1f} MiB")
        print(f"  PointDistiller's own cost: {b['pointdistiller_cost_pct_cpu']:.1f} % (CPU time), "
              f"{b['pointdistiller_cost_pct_wall']:.1f} % (wall) of the student + teacher step "
              f"(target <= 15 %); effective weighted elements "
              f"{b['pointdistiller'].get('local0_effective_weighted', 0):.1f}")

    if args.json:
        from pointdistiller.kitti_tools.fileio import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
