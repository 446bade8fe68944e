"""`kitti-tools`: prepare KITTI infos and GT database, evaluate results, generate synthetic scenes.

    kitti-tools prepare --root DIR ...
    kitti-tools eval --gt LABEL_DIR --det RESULT_DIR [--ids FILE] [--json OUT]
    kitti-tools synth --out DIR --frames N [--seed S]

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser's
``func(args) -> int`` runs it. Errors about bad input files are printed as one line and exit 2.
"""
import argparse
import sys
from typing import List, Optional

from pointdistiller.kitti_tools.errors import KittiFormatError


def build_parser() -> argparse.ArgumentParser:
    from pointdistiller.kitti_tools import eval_cli, prepare_cli, synth_cli

    parser = argparse.ArgumentParser(prog="kitti-tools", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    prepare_cli.add_parser(subparsers)
    eval_cli.add_parser(subparsers)
    synth_cli.add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KittiFormatError, FileNotFoundError, ValueError) as exc:
        print(f"kitti-tools {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
