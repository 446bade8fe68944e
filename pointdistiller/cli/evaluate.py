"""pd-eval: KITTI evaluation of a trained detector.

    pd-eval CONFIG CHECKPOINT [--data ROOT] [--split val] [--set a.b=c ...] [--out DIR] [--json OUT]

Runs the detector of CONFIG with the weights of CHECKPOINT (``model_final.pt`` or a training
``latest.pt``) over a prepared split, writes KITTI result files to ``--out`` and prints the KITTI
summary; ``--json`` writes the APs in the format of ``kitti-tools eval --json``.
"""
import argparse
import os
import sys
from typing import List, Optional, Sequence

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
    parser.add_argument("--report", metavar="DIR",
                        help="also write an HTML report into DIR (with the training curves when "
                             "CHECKPOINT lies in a pd-train work dir)")
    return parser


def evaluate_checkpoint(config: str, checkpoint: str, overrides: Sequence[str] = (),
                        data_root: Optional[str] = None, split: Optional[str] = None,
                        out: Optional[str] = None, device: Optional[str] = None, log=print):
    """Evaluates the detector of ``config`` with the weights of ``checkpoint`` on a split of its
    dataset (the built-in synthetic scenes when it has no root); writes KITTI result files to ``out``.

    Returns ``(kitti-tools eval JSON dict, summary text, result folder)``.
    """
    from pointdistiller.detectors.build import build_detector
    from pointdistiller.engine.checkpoint import load_checkpoint, load_model_weights
    from pointdistiller.engine.data import build_loader, resolve_dataset_root
    from pointdistiller.engine.errors import RunError
    from pointdistiller.engine.evaluation import evaluate_detector
    from pointdistiller.engine.sections import DataConfig, TrainConfig
    from pointdistiller.engine.trainer import resolve_device
    from pointdistiller.kitti_tools.fileio import check_writable_dir

    cfg = load_config(config, overrides)
    if cfg.model is None:
        raise RunError(f"{config}: no model section")
    data = cfg.data or DataConfig()
    if data_root:
        data.root = data_root
    train = cfg.train or TrainConfig()
    split = split or data.val_split
    dev = resolve_device(device)
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"eval_{split}")
    check_writable_dir(out, "--out")
    model = build_detector(cfg.model)
    load_model_weights(model, load_checkpoint(checkpoint), checkpoint)
    model.to(dev)
    root = resolve_dataset_root(data, log)
    loader, dataset = build_loader(root, data, cfg.model, train, split, training=False)
    metrics, summary = evaluate_detector(model, loader, dataset, out, dev)
    return metrics, summary, out


def run_log(checkpoint: str) -> Optional[str]:
    """The log.jsonl of the pd-train work dir holding ``checkpoint`` (model_final.pt at its top,
    latest.pt in checkpoints/), if any."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    for candidate in (folder, os.path.dirname(folder)):
        if os.path.isfile(os.path.join(candidate, "log.jsonl")) and \
                os.path.isfile(os.path.join(candidate, "config.yaml")):
            return os.path.join(candidate, "log.jsonl")
    return None


def report_for_results(results: str, config: str, overrides: Sequence[str] = (),
                       data_root: Optional[str] = None, split: Optional[str] = None,
                       out: str = "report", train_log: Optional[str] = None,
                       title: Optional[str] = None) -> str:
    """The HTML report of the result files ``results`` of ``config``'s dataset split."""
    from pointdistiller.engine.sections import DataConfig
    from pointdistiller.engine.data import resolve_dataset_root
    from pointdistiller.kitti_tools.io import read_ids
    from pointdistiller.kitti_tools.visual.report import write_report

    cfg = load_config(config, overrides)
    data = cfg.data or DataConfig()
    if data_root:
        data.root = data_root
    root = resolve_dataset_root(data, log=lambda *_: None)
    split = split or data.val_split
    ids = read_ids(os.path.join(root, "ImageSets", f"{split}.txt"))
    return write_report(out, os.path.join(root, "training", "label_2"), results, ids=ids,
                        kitti_root=root, title=title or f"{os.path.basename(config)}: {split} split",
                        train_log=train_log)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pointdistiller.engine.checkpoint import CheckpointError
    from pointdistiller.engine.errors import RunError
    from pointdistiller.kitti_tools.errors import KittiFormatError
    from pointdistiller.kitti_tools.fileio import (OutputError, atomic_write_json, check_writable_dir,
                                            check_writable_file)

    try:
        if args.json:
            check_writable_file(args.json, "--json")
        if args.report:
            check_writable_dir(args.report, "--report")
        metrics, summary, out = evaluate_checkpoint(args.config, args.checkpoint, args.set, args.data,
                                                    args.split, args.out, args.device)
        print(summary)
        print(f"result files: {out}")
        if args.json:
            atomic_write_json(args.json, metrics)
        if args.report:
            page = report_for_results(out, args.config, args.set, args.data, args.split,
                                      args.report, run_log(args.checkpoint))
            print(f"report: {page}")
        return 0
    except (ConfigError, RunError, CheckpointError, KittiFormatError, OutputError) as exc:
        print(f"pd-eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
