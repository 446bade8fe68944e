"""`kitti-tools eval`: evaluates a folder of KITTI result files against label_2 with the official
metric (see :mod:`pointdistiller.kitti_tools.evaluation`) and prints the python port's text block.

Frames are matched by id. Every evaluated id needs a label file and a result file; a frame without
detections is an empty result file. ``--allow-missing`` instead treats a missing result file as a
frame without detections. Without ``--ids`` the ids are those of every ``.txt`` file in either
folder. Missing files are reported in one error that lists the ids on each side.
"""
import argparse

from pointdistiller.kitti_tools.fileio import atomic_write_json, check_writable_dir, check_writable_file

from pointdistiller.kitti_tools.evaluation import evaluate_dirs
from pointdistiller.kitti_tools.io import read_ids


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers the ``eval`` subcommand; the parser's ``func(args) -> int`` runs it."""
    parser = subparsers.add_parser(
        "eval", help="evaluate KITTI result files against label_2 (R11/R40 AP)",
        description=__doc__.splitlines()[0].replace("`", ""))
    parser.add_argument("--gt", required=True, metavar="LABEL_DIR",
                        help="label_2 folder (<id>.txt, 15 fields per line)")
    parser.add_argument("--det", required=True, metavar="RESULT_DIR",
                        help="result folder (<id>.txt, 16 fields per line: label fields + score)")
    parser.add_argument("--ids", metavar="FILE",
                        help="ImageSets file of the frame ids to evaluate (default: every id with "
                             "a file in LABEL_DIR or RESULT_DIR)")
    parser.add_argument("--json", metavar="OUT",
                        help="also write {overlap set: {class: {metric: {R40, R11}}}} AP here")
    parser.add_argument("--allow-missing", action="store_true",
                        help="treat a missing result file as a frame without detections")
    parser.add_argument("--report", metavar="DIR",
                        help="also write an HTML report (AP tables, precision-recall curves, "
                             "renders of the worst frames, links to the result files) into DIR")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the summary and writes the JSON atomically when asked; returns 0."""
    if args.json:
        check_writable_file(args.json, "--json")
    if args.report:
        check_writable_dir(args.report, "--report")
    ids = read_ids(args.ids) if args.ids else None
    result = evaluate_dirs(args.gt, args.det, ids=ids, allow_missing=args.allow_missing)
    print(result.summary(), end="")
    if args.json:
        atomic_write_json(args.json, result.to_json_dict())
    if args.report:
        from pointdistiller.kitti_tools.visual.report import write_report

        page = write_report(args.report, args.gt, args.det, ids=ids,
                            allow_missing=args.allow_missing)
        print(f"report: {page}")
    return 0
