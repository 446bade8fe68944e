"""`kitti-tools prepare`: builds ``kitti_infos_<split>.json`` and the GT database of a KITTI folder
(see :mod:`pointdistiller.kitti_tools.prepare`)."""
import argparse

from pointdistiller.kitti_tools.prepare import DEFAULT_SPLITS, prepare_kitti


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers the ``prepare`` subcommand; the parser's ``func(args) -> int`` runs it."""
    parser = subparsers.add_parser(
        "prepare", help="build info files and the GT database of a KITTI folder",
        description=__doc__.splitlines()[0].replace("`", ""))
    parser.add_argument("--root", required=True,
                        help="KITTI folder holding ImageSets/, training/ and optionally testing/")
    parser.add_argument("--out", default=None, help="output folder (default: --root)")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS),
                        help="splits to prepare; ImageSets/<split>.txt lists their frame ids "
                             "(default: %(default)s)")
    parser.add_argument("--velodyne", choices=("velodyne", "velodyne_reduced"), default="velodyne",
                        help="point cloud folder (velodyne falls back to velodyne_reduced per "
                             "frame when a full scan is absent)")
    parser.add_argument("--workers", type=int, default=2, help="reader processes (default 2)")
    parser.add_argument("--no-database", dest="database", action="store_false",
                        help="do not build the GT database")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs ``prepare_kitti`` with the parsed arguments; 0 on success, 1 if nothing was prepared."""
    written = prepare_kitti(args.root, out=args.out, splits=args.splits, velodyne=args.velodyne,
                            workers=args.workers, database=args.database, progress=args.progress)
    return 0 if written else 1
