"""A static HTML evaluation report: AP tables, precision-recall curves, the frames with the most
missed and the most false detections, links to the result files, and (for a training run) the loss
terms and val mAP against step. Opens from disk; no server, no scripts.

    write_report(out_dir, gt_dir, det_dir, ids=None, kitti_root=None, train_log=None, ...)

Frames are ranked with a matching of their own (the evaluator's curves do not keep frames apart):
per class, detections greedy by score match an unmatched ground-truth box of that class with BEV IoU
at the strict overlap (Car 0.7, Pedestrian and Cyclist 0.5); only detections at or above the
class's best-F1 score threshold count, so a detector that outputs many low scores is judged at its
working point. "Missed" are the unmatched ground-truth boxes, "false" the unmatched detections.
"""
import html
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from pointdistiller.kitti_tools import io as kio
from pointdistiller.kitti_tools.evaluation import params
from pointdistiller.kitti_tools.evaluation.core import EvalResult, ap_r11, ap_r40, evaluate
from pointdistiller.kitti_tools.evaluation.overlaps import bev_iou, camera_boxes

STYLE = """body{font-family:sans-serif;margin:24px;background:#fafafa;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #bbb;padding:3px 8px;
text-align:right}th{background:#e8e8f0}td.l,th.l{text-align:left}img{max-width:100%;
border:1px solid #ccc;margin:6px 0}h2{margin-top:32px}.small{color:#666;font-size:90%}"""


def _ap_tables(result: EvalResult) -> str:
    rows = []
    for points, fn in (("R40", ap_r40), ("R11", ap_r11)):
        for s, overlap_set in enumerate(params.OVERLAP_SETS):
            short = {"easy": "easy", "moderate": "mod", "hard": "hard"}
            head = "".join(f"<th>{m} {short[d]}</th>" for m in params.METRICS for d in params.DIFFICULTIES)
            rows.append(f"<h3>AP_{points}, {overlap_set} overlaps</h3><table><tr><th class=l>class"
                        f"</th>{head}</tr>")
            for c, cls in enumerate(result.classes):
                overlaps = "/".join(f"{params.min_overlap(overlap_set, m, cls):.2f}" for m in params.METRICS)
                cells = "".join(f"<td>{v:.2f}</td>" for m in range(len(params.METRICS))
                                for v in fn(result.precision[s, m, c]))
                rows.append(f"<tr><td class=l>{cls} <span class=small>({overlaps})</span></td>{cells}</tr>")
            rows.append("</table>")
    return "\n".join(rows)


def _pr_figure(result: EvalResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result.classes), figsize=(5 * len(result.classes), 4), squeeze=False)
    for c, (ax, cls) in enumerate(zip(axes[0], result.classes)):
        for m, style in ((2, "-"), (1, "--")):          # 3d solid, bev dashed
            for d, colour in zip(range(3), ("tab:green", "tab:blue", "tab:red")):
                rec, prec = result.recall[0, m, c, d], result.precision[0, m, c, d]
                keep = rec > 0
                ax.plot(rec[keep], prec[keep], style, color=colour,
                        label=f"{params.METRICS[m]} {params.DIFFICULTIES[d]}")
        ax.set_title(f"{cls} (strict)")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def frame_errors(gt_annos: Sequence[kio.KittiObjects], dt_annos: Sequence[kio.KittiObjects],
                 classes: Sequence[str] = params.CLASSES) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Per frame ``(missed [F], false [F])`` at each class's best-F1 score threshold (see the module
    doc) and those thresholds."""
    n = len(gt_annos)
    matches = {cls: [] for cls in classes}        # per class: per frame (scores, tp flags, n_gt)
    for gt, dt in zip(gt_annos, dt_annos):
        for cls in classes:
            g = gt.select(gt.name == cls)
            d = dt.select(dt.name == cls)
            order = np.argsort(-d.score, kind="stable")
            d = d.select(order)
            iou = bev_iou(camera_boxes(d), camera_boxes(g)) if len(d) and len(g) else np.zeros((len(d), len(g)))
            thr = params.min_overlap("strict", "bev", cls)
            used = np.zeros(len(g), bool)
            tp = np.zeros(len(d), bool)
            for i in range(len(d)):
                cand = np.where(~used & (iou[i] >= thr))[0]
                if len(cand):
                    j = cand[np.argmax(iou[i, cand])]
                    used[j] = tp[i] = True
            matches[cls].append((d.score, tp, len(g), iou))
    thresholds = {}
    missed, false = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for cls in classes:
        scores = np.concatenate([m[0] for m in matches[cls]]) if matches[cls] else np.zeros(0)
        tps = np.concatenate([m[1] for m in matches[cls]]) if matches[cls] else np.zeros(0, bool)
        total_gt = sum(m[2] for m in matches[cls])
        if len(scores) == 0:
            thresholds[cls] = float("inf")
        else:
            order = np.argsort(-scores, kind="stable")
            cum_tp = np.cumsum(tps[order])
            f1 = 2 * cum_tp / (np.arange(1, len(order) + 1) + max(total_gt, 1))
            thresholds[cls] = float(scores[order][int(np.argmax(f1))])
        for f, (s, tp, ng, iou) in enumerate(matches[cls]):
            keep = s >= thresholds[cls]
            # re-match at the threshold: a kept detection may have taken a box from a dropped one
            used = np.zeros(ng, bool)
            hits = 0
            for i in np.nonzero(keep)[0]:
                cand = np.where(~used & (iou[i] >= params.min_overlap("strict", "bev", cls)))[0] if ng else []
                if len(cand):
                    used[cand[np.argmax(iou[i, cand])]] = True
                    hits += 1
            missed[f] += ng - int(used.sum())
            false[f] += int(keep.sum()) - hits
    return missed, false, thresholds


def _train_figure(log_path: str, path: str) -> bool:
    """Loss terms and val mAP (moderate, R40, strict) against step from a pd-train log.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, evals = [], {}, []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "eval" in row:
                strict = row["eval"]["strict"]
                evals.append((row["step"], *[np.mean([strict[c][m]["R40"][1] for c in params.CLASSES])
                                             for m in ("3d", "bev")]))
                continue
            steps.append(row["step"])
            for k, v in row.items():
                if k in ("total", "det", "kd", "cls", "box", "dir") or k.startswith("kd_"):
                    losses.setdefault(k, []).append(v)
    if not steps:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for k, v in losses.items():
        if len(v) == len(steps):
            axes[0].plot(steps, v, label=k, lw=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if evals:
        e = np.asarray(evals)
        axes[1].plot(e[:, 0], e[:, 1], "o-", label="3D mAP")
        axes[1].plot(e[:, 0], e[:, 2], "s-", label="BEV mAP")
        axes[1].legend()
    axes[1].set_xlabel("step")
    axes[1].set_title("val mAP (moderate, AP_R40, strict)")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(out_dir: str, gt_dir: str, det_dir: str, ids: Optional[Sequence[str]] = None,
                 kitti_root: Optional[str] = None, split: str = "training", title: str = "KITTI evaluation",
                 train_log: Optional[str] = None, frames: int = 3,
                 extra_images: Sequence[Tuple[str, str]] = (), allow_missing: bool = False) -> str:
    """Writes ``out_dir/index.html`` and its pictures; returns the page's path.

    Args:
        gt_dir, det_dir: label_2 and result folders (every evaluated id needs a result file).
        ids: frame ids (default: every label file).
        kitti_root: the KITTI-layout folder of the frames, for the renders of the worst frames
            (default: two levels above ``gt_dir`` when that holds ``split/velodyne``).
        train_log: a pd-train ``log.jsonl`` for the training curves.
        frames: renders of this many frames with the most missed and the most false detections.
        extra_images: ``(caption, PNG path)`` pictures to include (copied into the report).
        allow_missing: a missing result file is a frame without detections (and gets no link).
    """
    import shutil

    from pointdistiller.kitti_tools.fileio import atomic_write_text, check_writable_dir

    from pointdistiller.kitti_tools.visual.frame import VIEWS, load_frame, render_frame
    from pointdistiller.kitti_tools.visual.render import save_png

    check_writable_dir(out_dir, "--report")
    ids = [str(i) for i in ids] if ids is not None else sorted(
        f[:-4] for f in os.listdir(gt_dir) if f.endswith(".txt"))
    gt = [kio.read_label(os.path.join(gt_dir, f"{i}.txt")) for i in ids]
    present = {i for i in ids if os.path.isfile(os.path.join(det_dir, f"{i}.txt"))} \
        if allow_missing else set(ids)
    dt = [kio.read_label(os.path.join(det_dir, f"{i}.txt"), kind="result") if i in present
          else kio.KittiObjects.empty(with_score=True) for i in ids]
    result = evaluate(gt, dt)
    os.makedirs(out_dir, exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{len(ids)} frames, {sum(len(d) for d in dt)} detections, "
             f"{sum(len(g.select(g.name != 'DontCare')) for g in gt)} labelled objects; ground truth "
             f"{html.escape(os.path.abspath(gt_dir))}, results {html.escape(os.path.abspath(det_dir))}.</p>",
             "<h2>Average precision</h2>", _ap_tables(result)]
    _pr_figure(result, os.path.join(out_dir, "pr_curves.png"))
    parts.append("<h2>Precision-recall curves</h2><p class=small>strict overlaps; 3D solid, BEV "
                 "dashed; easy green, moderate blue, hard red</p><img src=pr_curves.png alt='precision-recall curves'>")
    if train_log and os.path.isfile(train_log) and _train_figure(train_log, os.path.join(out_dir, "training.png")):
        parts.append("<h2>Training</h2><img src=training.png alt='training curves'>")
    for caption, path in extra_images:
        name = os.path.basename(path)
        shutil.copyfile(path, os.path.join(out_dir, name))
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='{html.escape(name)}' alt=''>")
    missed, false, thresholds = frame_errors(gt, dt)
    root = kitti_root or os.path.dirname(os.path.dirname(os.path.abspath(gt_dir)))
    can_render = os.path.isdir(os.path.join(root, split, "calib"))
    parts.append("<h2>Frames with the most errors</h2><p class=small>score thresholds (best F1 per "
                 "class): " + ", ".join(f"{c} {t:.3g}" for c, t in thresholds.items()) + "</p>")
    shown = []
    for kind, counts in (("missed", missed), ("false", false)):
        for f in np.argsort(-counts, kind="stable")[:frames]:
            if counts[f] == 0:
                continue
            frame_id = ids[f]
            caption = (f"{frame_id}: {missed[f]} missed, {false[f]} false "
                       f"(most {kind} detections)")
            if can_render and frame_id not in shown:
                picture = f"frame_{frame_id}.png"
                save_png(os.path.join(out_dir, picture),
                         render_frame(load_frame(root, frame_id, det_dir, split), VIEWS[1:]))
                parts.append(f"<h3>{html.escape(caption)}</h3><img src={picture} alt='frame {frame_id}'>")
                shown.append(frame_id)
            elif frame_id not in shown:
                parts.append(f"<h3>{html.escape(caption)}</h3>")
    links = " ".join(f"<a href='{html.escape(os.path.relpath(os.path.join(det_dir, f'{i}.txt'), out_dir))}'>{i}</a>"
                     for i in ids if i in present)
    parts.append(f"<h2>Result files</h2><p class=small>{links}</p></body></html>")
    page = os.path.join(out_dir, "index.html")
    atomic_write_text(page, "\n".join(parts))
    return page
