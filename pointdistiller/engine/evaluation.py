"""Evaluation of a detector on a split (KITTI result files and the official-compatible APs), and the
side-by-side table and the "gap closed" of the demo and the benchmarks."""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pointdistiller.data.kitti_dataset import KittiDataset
from pointdistiller.kitti_tools.classes import CLASS_NAMES

from pointdistiller.engine.data import ResumableSampler


def evaluate_detector(model: nn.Module, loader: DataLoader, dataset: KittiDataset, out_dir: str,
                      device) -> Tuple[Dict, str]:
    """Runs ``model`` over ``loader``, writes one KITTI result file per frame into ``out_dir`` and
    evaluates against the frames' label files. Returns (kitti-tools eval JSON dict, summary text)."""
    from pointdistiller.kitti_tools.evaluation.core import evaluate
    from pointdistiller.kitti_tools.io import read_label
    from pointdistiller.kitti_tools.results import detections_to_kitti, write_results

    label_paths = {f["frame_id"]: os.path.join(dataset.root, f["label_path"])
                   for f in dataset.frames if "label_path" in f}
    was = model.training
    model.eval()
    gt_annos, dt_annos = [], []
    sampler = loader.sampler
    if isinstance(sampler, ResumableSampler):
        sampler.set_epoch(0, 0)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            dets = model.predict(batch, model(batch))
            for b, det in enumerate(dets):
                meta = batch.meta[b]
                objs = detections_to_kitti(det.boxes.cpu(), det.scores.cpu(), det.labels.cpu(),
                                           CLASS_NAMES, meta["calib"], meta["image_shape"])
                write_results(out_dir, batch.frame_ids[b], objs)
                dt_annos.append(objs)
                gt_annos.append(read_label(label_paths[batch.frame_ids[b]]))
    model.train(was)
    result = evaluate(gt_annos, dt_annos, CLASS_NAMES)
    return result.to_json_dict(), result.summary()


def moderate_map(metrics: Dict, metric: str = "bev") -> float:
    """Mean over the classes of the moderate AP_R40 (strict overlaps); ``metric`` is "3d" or "bev"."""
    return float(np.mean([metrics["strict"][c][metric]["R40"][1] for c in CLASS_NAMES]))


def gap_closed(teacher: Dict, plain: Dict, distilled: Dict, metric: str = "bev") -> Optional[float]:
    """The paper's "gap closed", ``(distilled - plain) / (teacher - plain)`` in moderate mAP; None
    when the plain student is not behind the teacher."""
    gap = moderate_map(teacher, metric) - moderate_map(plain, metric)
    if gap <= 0:
        return None
    return (moderate_map(distilled, metric) - moderate_map(plain, metric)) / gap


def moderate_table(rows: List[Tuple[str, Dict]]) -> str:
    """A side-by-side table of 3D and BEV AP_R40 (moderate, strict) per class and their mean."""
    width = max([28] + [len(name) + 2 for name, _ in rows])
    head = f"{'model':<{width}}" + "".join(f"{c[:3] + ' ' + m:>10}" for m in ("3D", "BEV") for c in CLASS_NAMES) \
        + f"{'mAP 3D':>9}{'mAP BEV':>9}"
    lines = [head, "-" * len(head)]
    for name, metrics in rows:
        vals = {m: [metrics["strict"][c][key]["R40"][1] for c in CLASS_NAMES]
                for m, key in (("3D", "3d"), ("BEV", "bev"))}
        lines.append(f"{name:<{width}}" + "".join(f"{v:>10.2f}" for m in ("3D", "BEV") for v in vals[m])
                     + f"{np.mean(vals['3D']):>9.2f}{np.mean(vals['BEV']):>9.2f}")
    return "\n".join(lines)
