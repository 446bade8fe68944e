"""Native ops of pointdistiller (C++ CPU kernels, CUDA kernels, meta kernels for tracing).

Every op is ``torch.ops.pointdistiller.<name>`` underneath; the Python wrappers here check their
arguments and document shapes and dtypes. Pure-PyTorch references live in
``pointdistiller.ops.reference`` and are used by the tests only.
"""
from ._loader import load_library  # noqa: F401
