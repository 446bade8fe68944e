"""pd-export: a trained PointPillars (teacher or student) to a deployment bundle.

    pd-export CONFIG CHECKPOINT --out DIR [--precision fp32|fp16] [--opset N] [--set a.b=c ...]

Writes DIR/model.onnx (pillars -> head maps, dynamic pillar count), DIR/anchors.npy and
DIR/deploy.json (voxelization, input columns, class names, box coder, post-processing, output
shapes, the sha256 of both files, and the config and checkpoint they came from). ``pd-deploy``
runs the bundle without PyTorch.
"""
import argparse
import contextlib
import logging
import os
import sys
import warnings
from typing import List, Optional

from pointdistiller.config import ConfigError, add_set_argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pd-export", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the model's training config")
    parser.add_argument("checkpoint", help="its weights (model_final.pt, latest.pt or fp16 weights)")
    parser.add_argument("--out", required=True, metavar="DIR", help="bundle folder (replaced whole)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: backbone, neck and head in float16 (default fp32)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    add_set_argument(parser)
    return parser


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx's exporter prints progress lines and third-party warnings: keep its output to
    errors."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pointdistiller.deploy.export import DEFAULT_OPSET, ExportError, export_bundle
    from pointdistiller.engine.checkpoint import CheckpointError
    from pointdistiller.kitti_tools.fileio import OutputError

    try:
        with _quiet_exporter():
            deploy = export_bundle(args.config, args.checkpoint, args.out, args.precision,
                                   args.opset or DEFAULT_OPSET, args.set, log=lambda *_: None)
    except (ConfigError, CheckpointError, ExportError, OutputError) as exc:
        print(f"pd-export: error: {exc}", file=sys.stderr)
        return 2
    net = deploy["network"]
    print(f"pd-export: {args.out}: {net['file']} ({net['precision']}, opset {net['opset']}, "
          f"sha256 {net['sha256'][:12]}...), {deploy['anchors']['count']} anchors, "
          f"classes {', '.join(deploy['class_names'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
