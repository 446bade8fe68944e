"""Builds a private ops library from a few op folders, for developing one op at a time.

Usage: ``python ops/dev_build.py voxelize knn`` compiles ``ops/csrc/common`` plus the named folders'
``*.cpp`` (and ``*.cu`` when torch has CUDA) into ``build/dev/<name>/`` and prints the library path.
Point ``POINTDISTILLER_OPS_LIB`` at it to test without rebuilding the whole extension.
"""
import glob
import os
import sys

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ops", "csrc")


def main(argv):
    if not argv:
        sys.exit("usage: python ops/dev_build.py OP [OP ...]   (folders of ops/csrc)")
    folders = ["common"] + argv
    sources = []
    for folder in folders:
        path = os.path.join(CSRC, folder)
        if not os.path.isdir(path):
            sys.exit(f"dev_build: no op folder {path}")
        sources += sorted(glob.glob(os.path.join(path, "*.cpp")))
        if torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None:
            sources += sorted(glob.glob(os.path.join(path, "*.cu")))
    sources = [s for s in sources if not s.endswith("module.cpp")]
    name = "pd_dev_" + "_".join(argv)
    build_dir = os.path.join(ROOT, "build", "dev", name)
    os.makedirs(build_dir, exist_ok=True)
    cpp_extension.load(
        name=name, sources=sources, build_directory=build_dir, is_python_module=False,
        extra_include_paths=[CSRC], extra_cflags=["-O3", "-std=c++17"], verbose=False)
    print(os.path.join(build_dir, name + ".so"))


if __name__ == "__main__":
    main(sys.argv[1:])
