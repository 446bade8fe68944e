"""Build script: maps the top-level folders into the `pointdistiller` namespace (the configs and the
demo teacher's weights as package data) and builds the ops.

One extension, ``pointdistiller.ops._C``, from ``ops/csrc``: every ``*.cpp`` always, and every
``*.cu`` when torch was built with CUDA and a CUDA toolkit is found (``CUDA_HOME`` or ``nvcc`` on
PATH). ``PD_FORCE_CPU=1`` skips the CUDA sources.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
# folder on disk -> package name
PACKAGE_DIRS = {
    "pointdistiller": "pointdistiller",
    "ops": "pointdistiller.ops",
    "detectors": "pointdistiller.detectors",
    "kitti_tools": "pointdistiller.kitti_tools",
    "configs": "pointdistiller.configs",
}
# Non-Python files that ship inside the wheel: the configs and the demo teacher (`pd-train --demo`);
# the SECOND demo teacher (12 MB, for benchmarks/bm_kd_synthetic.py) stays in the repository only.
PACKAGE_DATA = {"pointdistiller.configs": ["*/*.yaml", "demo/weights/pointpillars_teacher.fp16.pt"]}


def _packages():
    package_dir, packages = {}, []
    for folder, name in PACKAGE_DIRS.items():
        package_dir[name] = folder
        packages.append(name)
        for sub in find_packages(where=os.path.join(ROOT, folder)):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = os.path.join(folder, *sub.split("."))
    return package_dir, packages


def _with_cuda():
    import torch

    if os.environ.get("PD_FORCE_CPU") == "1" or torch.version.cuda is None:
        return False
    return cpp_extension.CUDA_HOME is not None


def _extension():
    csrc = os.path.join("ops", "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True))
    extra = {"cxx": ["-O3", "-std=c++17"]}
    if _with_cuda():
        sources += sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))
        extra["nvcc"] = ["-O3", "-std=c++17", "--expt-relaxed-constexpr"]
        return cpp_extension.CUDAExtension(
            "pointdistiller.ops._C", sources, include_dirs=[os.path.join(ROOT, csrc)],
            extra_compile_args=extra, define_macros=[("PD_WITH_CUDA", "1")])
    return cpp_extension.CppExtension(
        "pointdistiller.ops._C", sources, include_dirs=[os.path.join(ROOT, csrc)],
        extra_compile_args=extra)


package_dir, packages = _packages()
setup(
    package_dir=package_dir,
    packages=packages,
    package_data=PACKAGE_DATA,
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
