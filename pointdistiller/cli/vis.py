"""pd-vis: pictures of frames and of what PointDistiller selects, rendered headless.

    pd-vis frame ROOT FRAME_ID [--results DIR] [--out PNG] [--views 3d bev camera]
                 [--colour height|intensity] [--split training] [--show]
    pd-vis distill CONFIG FRAME_ID [--root ROOT] [--teacher CKPT] [--term 0] [--edges 8] [--out PNG]

``frame``: one frame of a KITTI-layout folder (real or the synthetic scenes) with its ground truth
and, with ``--results``, a folder of KITTI result files, in a 3D perspective (open3d offscreen), a
bird's-eye view and camera 2's image with the projected boxes. ``--show`` then opens the 3D
view in an interactive window (where a display exists; otherwise one clear error).

``distill``: for a distillation config and its teacher (``teacher.checkpoint`` or ``--teacher``),
one frame's bird's-eye view with the nodes that PointDistiller's local term selects (top N by the
teacher's importance), coloured by their reweighting weight ``n_b softmax(s / tau)``, and the kNN
edges (teacher feature space) of the ``--edges`` most important nodes: the picture for tuning N, K
and tau. The selection depends on the teacher alone; no student is needed.
"""
import argparse
import sys
from typing import List, Optional

import numpy as np

from pointdistiller.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pd-vis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    frame = sub.add_parser("frame", help="one frame with ground truth and detections")
    frame.add_argument("root", help="KITTI-layout folder (holding training/...)")
    frame.add_argument("frame_id")
    frame.add_argument("--results", metavar="DIR", help="KITTI result files (<id>.txt)")
    frame.add_argument("--split", default="training")
    frame.add_argument("--views", nargs="+", default=["3d", "bev", "camera"],
                       choices=("3d", "bev", "camera"))
    frame.add_argument("--colour", choices=("height", "intensity"), default="height")
    frame.add_argument("--out", help="PNG (default <frame_id>.png)")
    frame.add_argument("--show", action="store_true",
                       help="also open the 3D view in an interactive window (needs a display)")
    distill = sub.add_parser("distill", help="the nodes and edges PointDistiller distils")
    distill.add_argument("config", help="a distillation config (with teacher and distill sections)")
    distill.add_argument("frame_id")
    distill.add_argument("--root", help="KITTI-layout folder (default: the config's data root or "
                                        "the built-in synthetic scenes)")
    distill.add_argument("--split", default="training")
    distill.add_argument("--teacher", metavar="CKPT", help="overrides teacher.checkpoint")
    distill.add_argument("--term", type=int, default=0, help="which distill.local term (default 0)")
    distill.add_argument("--edges", type=int, default=8,
                         help="draw the kNN edges of this many most important nodes (default 8)")
    distill.add_argument("--out", help="PNG (default distill_<frame_id>.png)")
    return parser


def run_frame(args) -> str:
    from pointdistiller.kitti_tools.visual.frame import load_frame, render_frame
    from pointdistiller.kitti_tools.visual.render import save_png

    if args.show:
        from pointdistiller.kitti_tools.visual.render import check_display

        check_display()     # before any work: one clear error and nothing written
    frame = load_frame(args.root, args.frame_id, args.results, args.split)
    out = args.out or f"{args.frame_id}.png"
    save_png(out, render_frame(frame, args.views, args.colour))
    if args.show:
        from pointdistiller.kitti_tools.visual.render import show_3d

        print(f"pd-vis: wrote {out}; showing frame {args.frame_id} (close the window to end)")
        show_3d(frame.points, frame.gt, frame.dets, args.colour, title=f"pd-vis {args.frame_id}")
    return out


def distill_picture(config: str, frame_id: str, root: Optional[str] = None, split: str = "training",
                    teacher_ckpt: Optional[str] = None, term_index: int = 0, edges: int = 8):
    """``(picture [H, W, 3] uint8, stats)`` of what local term ``term_index`` of ``config``
    selects on one frame (see the module doc)."""
    import torch

    from pointdistiller.config import load_config
    from pointdistiller.data.collate import Sample, VoxelCollator
    from pointdistiller.distill.terms import _nodes
    from pointdistiller.distill.local import LocalDistillation, effective_count
    from pointdistiller.engine.sections import DataConfig
    from pointdistiller.engine.data import resolve_dataset_root
    from pointdistiller.engine.errors import RunError
    from pointdistiller.engine.teacher import load_teacher
    from pointdistiller.kitti_tools.geometry import fov_mask
    from pointdistiller.kitti_tools.visual.frame import load_frame
    from pointdistiller.kitti_tools.visual.render import BevView, FrameBoxes, render_bev

    cfg = load_config(config)
    if cfg.distill is None or not cfg.distill.local:
        raise RunError(f"{config}: no distill.local term to picture")
    if not 0 <= term_index < len(cfg.distill.local):
        raise RunError(f"--term {term_index}: {config} has {len(cfg.distill.local)} local term(s)")
    term_cfg = cfg.distill.local[term_index]
    teacher, t_model = load_teacher(cfg, config, teacher_ckpt, torch.device("cpu"))
    teacher.eval()
    data = cfg.data or DataConfig()
    root = root or resolve_dataset_root(data, log=lambda *_: None)
    frame = load_frame(root, frame_id, split=split)
    points = frame.points
    if data.fov_reduce:
        points = points[fov_mask(points, frame.calib, frame.image_shape)]
    v = teacher.voxelization
    lo, hi = np.asarray(v.point_range[:3]), np.asarray(v.point_range[3:])
    points = points[((points[:, :3] >= lo) & (points[:, :3] < hi)).all(axis=1)]
    collate = VoxelCollator(v.voxel_size, v.point_range, v.max_points, v.max_voxels[1])
    batch = collate([Sample(np.ascontiguousarray(points), np.zeros((0, 7), np.float32),
                            np.zeros(0, np.int64), frame_id)])
    taps = {t.name: t for t in teacher.feature_info}
    if term_cfg.feature not in taps:
        raise RunError(f"{config}: distill.local[{term_index}].feature {term_cfg.feature!r} is not a "
                       f"tap of the teacher (taps: {', '.join(sorted(taps))})")
    with torch.no_grad():
        feature = teacher(batch).features[term_cfg.feature]
    nodes, offsets, coords, npts = _nodes(feature, batch, term_cfg.feature, taps[term_cfg.feature].kind)
    importance = npts.float() if term_cfg.importance == "num_points" else nodes.max(dim=1).values
    term = LocalDistillation(nodes.shape[1], nodes.shape[1], num_nodes=term_cfg.num_nodes,
                             k=term_cfg.k, tau=term_cfg.tau, reweight=term_cfg.reweight,
                             knn_space=term_cfg.knn_space, selection=term_cfg.selection)
    space = coords.float() if term_cfg.knn_space == "coords" else nodes.float()
    # one frame stands for a batch: the budget per sample of a training batch
    batch_size = (cfg.train.batch_size if cfg.train else 1) if term_cfg.selection == "per_sample" else 1
    term.num_nodes = max(1, term_cfg.num_nodes // batch_size)
    sel = term.select(importance, offsets, space)
    xy = _node_xy(feature, coords, v, sel.idx)                   # metres
    weights = sel.weights.numpy()
    colours = _weight_colours(weights)
    top = np.argsort(-importance[sel.idx].numpy(), kind="stable")[:edges]
    nbr_xy = _node_xy(feature, coords, v, sel.nbr[top].reshape(-1)).reshape(len(top), -1, 2)
    segments = np.stack([np.repeat(xy[top][:, None], nbr_xy.shape[1], axis=1), nbr_xy],
                        axis=2).reshape(-1, 2, 2)
    view = BevView(x_range=(v.point_range[0], v.point_range[3]),
                   y_range=(v.point_range[1], v.point_range[4]), scale=12.0)
    image = render_bev(points, frame.gt, FrameBoxes.empty(True), view, "height",
                       extra_points=(xy, colours), segments=segments)
    stats = {"selected": int(sel.idx.numel()), "k": int(sel.nbr.shape[1]),
             "effective_weighted": effective_count(sel.weights), "max_weight": float(weights.max()),
             "tau": term_cfg.tau, "feature": term_cfg.feature}
    return image, stats


def _node_xy(feature, coords, v, rows) -> np.ndarray:
    """LiDAR (x, y) metres of node rows: pillar centres for a pillar tap ([V, C]), cell centres of
    the map's stride for a BEV tap ([B, C, H, W])."""
    c = coords[rows].double().numpy()          # pillar tap: (z, y, x); BEV tap: (y, x)
    yx = c[:, 1:] if c.shape[1] == 3 else c
    if feature.dim() == 4:
        _, _, h, w = feature.shape
        sx = (v.point_range[3] - v.point_range[0]) / w
        sy = (v.point_range[4] - v.point_range[1]) / h
    else:
        sx, sy = v.voxel_size[0], v.voxel_size[1]
    return np.stack([(yx[:, 1] + 0.5) * sx + v.point_range[0],
                     (yx[:, 0] + 0.5) * sy + v.point_range[1]], axis=1)


def _weight_colours(weights: np.ndarray) -> np.ndarray:
    """Reweighting weights (mean 1) on a log scale from grey-blue (0.01 and below) to red (100)."""
    t = np.clip((np.log10(np.maximum(weights, 1e-12)) + 2.0) / 4.0, 0.0, 1.0)[:, None]
    low, high = np.array([70, 90, 140]), np.array([255, 40, 40])
    return (low * (1 - t) + high * t).astype(np.uint8)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pointdistiller.engine.checkpoint import CheckpointError
    from pointdistiller.engine.errors import RunError
    from pointdistiller.kitti_tools.errors import KittiFormatError
    from pointdistiller.kitti_tools.fileio import OutputError
    from pointdistiller.kitti_tools.visual.render import DisplayError

    try:
        if args.command == "frame":
            out = run_frame(args)
        else:
            from pointdistiller.kitti_tools.visual.render import save_png

            image, stats = distill_picture(args.config, args.frame_id, args.root, args.split,
                                           args.teacher, args.term, args.edges)
            out = args.out or f"distill_{args.frame_id}.png"
            save_png(out, image)
            print(f"pd-vis distill: {stats['selected']} nodes of {stats['feature']!r}, K = "
                  f"{stats['k']}, tau = {stats['tau']:g}: effective weighted nodes "
                  f"{stats['effective_weighted']:.1f}, largest weight {stats['max_weight']:.3g}")
    except (ConfigError, RunError, CheckpointError, KittiFormatError, OutputError,
            FileNotFoundError, DisplayError) as exc:
        print(f"pd-vis: error: {exc}", file=sys.stderr)
        return 2
    print(f"pd-vis: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
