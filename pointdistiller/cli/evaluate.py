"""pd-eval: KITTI evaluation of a trained detector.

    pd-eval CONFIG CHECKPOINT [--data ROOT] [--split val] [--set a.b=c ...] [--out DIR] [--json OUT]

Runs the detector of CONFIG with the weights of CHECKPOINT (``model_final.pt`` or a training
``latest.pt``) over a prepared split, writes KITTI result files to ``--out`` and prints the KITTI
summary; ``--json`` writes the APs in the format of ``kitti-tools eval --json``.
"""
import argparse
import os
import sys
from typing import List, Optional

from pointdistiller.config import ConfigError, add_set_argument, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pd-eval", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--data", metavar="ROOT", help="prepared KITTI root (default: the config's data.root, "
                                                       "or the built-in synthetic scenes)")
    parser.add_argument("--split", default=None, help="split to evaluate (default data.val_split)")
    add_set_argument(parser)
    parser.add_argument("--out", help="folder for the result files (default <checkpoint dir>/eval_<split>)")
    parser.add_argument("--json", metavar="OUT", help="write the APs as JSON")
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from pointdistiller.detectors.build import build_detector
    from pointdistiller.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights
    from pointdistiller.engine.sections import DataConfig, TrainConfig
    from pointdistiller.engine.trainer import RunError, build_loader, evaluate_detector, resolve_dataset_root
    from pointdistiller.kitti_tools.errors import KittiFormatError
    from pointdistiller.utils.fileio import atomic_write_json

    try:
        cfg = load_config(args.config, args.set)
        if cfg.model is None:
            raise RunError(f"{args.config}: no model section")
        data = cfg.data or DataConfig()
        if args.data:
            data.root = args.data
        train = cfg.train or TrainConfig()
        split = args.split or data.val_split
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = build_detector(cfg.model)
        load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint)
        model.to(device)
        root = resolve_dataset_root(data)
        loader, dataset = build_loader(root, data, cfg.model, train, split, training=False)
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{split}")
        metrics, summary = evaluate_detector(model, loader, dataset, out, device)
        print(summary)
        print(f"result files: {out}")
        if args.json:
            atomic_write_json(args.json, metrics)
        return 0
    except (ConfigError, RunError, CheckpointError, KittiFormatError) as exc:
        print(f"pd-eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
