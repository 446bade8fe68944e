"""Loads the compiled ops library that registers ``torch.ops.pointdistiller.*``.

The normal library is the extension ``pointdistiller.ops._C`` built by ``make build`` (or
``pip install -e . --no-build-isolation``). For op development, ``POINTDISTILLER_OPS_LIB`` may name
one or more shared libraries (``:``-separated) built by ``python ops/dev_build.py OP ...``; they are
loaded instead. There is no fallback to the pure-PyTorch references: a missing library is an error.

Python-side kernels (fake/meta kernels for tracing, autograd formulas) need the C++ schema to exist,
so each wrapper module registers them through :func:`after_load`; :func:`load_library` imports every
wrapper module in ``WRAPPER_MODULES`` so they are in place whichever entry point loaded the library.
"""
import importlib
import os
from typing import Callable, List, Tuple

import torch

# Wrapper modules of pointdistiller.ops whose Python-side kernels are registered on load.
WRAPPER_MODULES = ("voxelization", "scatter", "knn_search", "graph_edges", "iou3d", "pointnet2")

BUILD_HINT = (
    "the compiled ops of pointdistiller are missing. Build them with `make build` "
    "(or `pip install -e . --no-build-isolation` inside the project's virtual environment)."
)

_loaded = False
_hooks: List[Tuple[str, Callable[[], None]]] = []
_done_hooks = set()


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.pointdistiller, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _run_hooks() -> None:
    for i, (op_name, fn) in enumerate(_hooks):
        if i not in _done_hooks and _has_op(op_name):
            fn()
            _done_hooks.add(i)


def after_load(op_name: str):
    """Decorator: run ``fn()`` once the library holding ``pointdistiller::<op_name>`` is loaded
    (right away if it already is). Used for ``torch.library.register_fake``/``register_autograd``."""

    def deco(fn):
        _hooks.append((op_name, fn))
        if _loaded:
            _run_hooks()
        return fn

    return deco


def load_library() -> None:
    """Loads the ops library once; raises ``RuntimeError`` naming the fix if it is missing."""
    global _loaded
    if _loaded:
        return
    dev_libs = os.environ.get("POINTDISTILLER_OPS_LIB")
    if dev_libs:
        for path in dev_libs.split(":"):
            if path:
                torch.ops.load_library(path)
    else:
        try:
            importlib.import_module("pointdistiller.ops._C")
        except ImportError as exc:
            raise RuntimeError(f"{BUILD_HINT} ({exc})") from exc
    _loaded = True
    for module in WRAPPER_MODULES:
        try:
            importlib.import_module(f"pointdistiller.ops.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pointdistiller.ops.{module}":
                raise
    _run_hooks()


def op(name: str):
    """Returns ``torch.ops.pointdistiller.<name>`` after loading the library."""
    load_library()
    if not _has_op(name):
        raise RuntimeError(
            f"op pointdistiller::{name} is not in the loaded ops library; rebuild with `make build`")
    return getattr(torch.ops.pointdistiller, name)
