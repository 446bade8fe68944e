"""Dead ReLU units of a trained model, per layer: channels that never fire on the first frames of a
split (eval mode, as the model detects).

    python scripts/unit_health.py CONFIG CHECKPOINT [--frames 16] [--split val] [--all]

The trainer logs the totals at every evaluation (``log.jsonl``: ``units``); this prints where they
are. ``--all`` lists every ReLU layer, also those without a dead unit. One CPU thread.
"""
import argparse
import sys

import torch

from pointdistiller.config import load_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from pointdistiller.engine.data import build_loader, resolve_dataset_root
from pointdistiller.engine.errors import RunError
from pointdistiller.engine.health import UnitActivity
from pointdistiller.engine.sections import DataConfig, TrainConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--frames", type=int, default=16, help="frames of the split (default 16)")
    parser.add_argument("--split", default=None, help="default: the config's val split")
    parser.add_argument("--all", action="store_true", help="also list layers without dead units")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    torch.set_num_threads(1)
    try:
        cfg = load_config(args.config)
        model = build_detector(cfg.model)
        load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint)
        data, train = cfg.data or DataConfig(), cfg.train or TrainConfig()
        split = args.split or data.val_split
        loader, _ = build_loader(resolve_dataset_root(data, lambda *_: None), data, cfg.model,
                                 train, split, training=False)
    except (CheckpointError, RunError, ValueError, OSError) as exc:
        print(f"unit_health: {exc}", file=sys.stderr)
        return 2
    model.eval()
    seen = 0
    with UnitActivity(model) as units, torch.no_grad():
        for batch in loader:
            model(batch)
            seen += len(batch.frame_ids)
            if seen >= args.frames:
                break
    per, summary = units.dead(), units.summary()
    total_dead, total = summary["dead"], summary["total"]
    print(f"{args.checkpoint}: {seen} {split} frames, eval mode")
    print(f"{'layer':60s} {'dead':>6s} {'units':>6s}")
    for name, (dead, n) in per.items():
        if dead or args.all:
            print(f"{name:60s} {dead:6d} {n:6d}")
    print(f"{'total':60s} {total_dead:6d} {total:6d}  ({100 * total_dead / max(total, 1):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
