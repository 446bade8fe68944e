"""Compile-only check of every CUDA source with the machine's nvcc (CI runs it without a GPU).

Each ``ops/csrc/**/*.cu`` is compiled to an object file for sm_80 and sm_90 against the installed
torch's headers, two files at a time. Exit status 1 and nvcc's messages if any file fails.

The CPU torch wheel ships c10/cuda headers but not the CMake-generated
``c10/cuda/impl/cuda_cmake_macros.h``; when it is missing, a stub with its one definition is put on
the include path (compile check only). Kernel sources include ``c10/cuda`` headers rather than
``ATen/cuda/CUDAContext.h``, which needs cuBLAS/cuSPARSE headers that a bare toolkit may lack.
"""
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "ops", "csrc")


def _nvcc():
    home = os.environ.get("CUDA_HOME") or cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _stub_dir(out_dir):
    """An include dir providing ``c10/cuda/impl/cuda_cmake_macros.h`` if torch lacks it."""
    for inc in cpp_extension.include_paths():
        if os.path.exists(os.path.join(inc, "c10", "cuda", "impl", "cuda_cmake_macros.h")):
            return []
    stub = os.path.join(out_dir, "stubs", "c10", "cuda", "impl")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    return [os.path.join(out_dir, "stubs")]


def compile_one(nvcc, src, out_dir):
    includes = (cpp_extension.include_paths() + [sysconfig.get_paths()["include"], CSRC]
                + _stub_dir(out_dir))
    obj = os.path.join(out_dir, os.path.relpath(src, CSRC).replace(os.sep, "_") + ".o")
    cmd = [nvcc, "-c", src, "-o", obj, "-std=c++17", "-O3", "--expt-relaxed-constexpr",
           "-DPD_WITH_CUDA=1", "-Xcompiler", "-fPIC",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]
    for inc in includes:
        cmd += ["-I", inc]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return src, proc.returncode, proc.stdout + proc.stderr


def main():
    nvcc = _nvcc()
    if nvcc is None:
        print("check_cuda_compile: no nvcc found (set CUDA_HOME); cannot check CUDA sources")
        return 1
    sources = sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))
    if len(sys.argv) > 1:
        sources = [os.path.abspath(s) for s in sys.argv[1:]]
    failed = 0
    with tempfile.TemporaryDirectory() as out_dir, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for src, rc, log in pool.map(lambda s: compile_one(nvcc, s, out_dir), sources):
            rel = os.path.relpath(src, ROOT)
            print(f"{'ok  ' if rc == 0 else 'FAIL'} {rel}")
            if rc != 0:
                failed += 1
                print(log)
    print(f"check_cuda_compile: {len(sources) - failed}/{len(sources)} CUDA sources compile "
          f"(sm_80, sm_90) with {nvcc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
