"""`kitti-tools synth`: writes a synthetic dataset in KITTI's layout (see
:mod:`pointdistiller.kitti_tools.synth`)."""
import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers the ``synth`` subcommand; the parser's ``func(args) -> int`` runs it."""
    parser = subparsers.add_parser(
        "synth", help="generate synthetic LiDAR scenes with KITTI labels",
        description=__doc__.splitlines()[0].replace("`", ""))
    parser.add_argument("--out", required=True, help="output folder (KITTI layout)")
    parser.add_argument("--frames", type=int, required=True, help="number of frames")
    parser.add_argument("--seed", type=int, default=0,
                        help="dataset seed; frame i depends only on (seed, i) (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.5,
                        help="share of frames in ImageSets/val.txt (default 0.5)")
    parser.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs ``generate_dataset``; 0 on success (frames already present are skipped)."""
    from pointdistiller.kitti_tools.synth import generate_dataset

    stats = generate_dataset(args.out, args.frames, seed=args.seed, val_fraction=args.val_fraction,
                             workers=args.workers, progress=args.progress)
    written = len(stats["written"])
    mean_pts = stats["points"] / written if written else 0.0
    print(f"synth: wrote {written} frames ({stats['skipped']} already present) to {args.out}; "
          f"{mean_pts:.0f} points and {stats['objects'] / max(written, 1):.1f} labelled objects "
          f"per written frame", file=sys.stderr)
    return 0
