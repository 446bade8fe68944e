"""spconv helpers: the CPU stream workaround and per-device choice of the sparse conv algorithm.

spconv 2.x picks an implicit-GEMM algorithm by default, which asserts CUDA tensors; its ``Native``
algorithm (gather - GEMM - scatter) runs on both devices. The weight layout is the same for every
algorithm (``spconv.constants.ALL_WEIGHT_IS_KRSC``), so a module can switch algorithm between
forward passes without touching its parameters or checkpoints: :func:`set_conv_algo` does that.
"""
import torch
import spconv.pytorch as spconv
from spconv.pytorch import cppcore as _spconv_cppcore
from spconv.pytorch import ops as _spconv_ops
from spconv.pytorch.conv import SparseConvolution

# Names accepted for a sparse conv algorithm ("auto": chosen from the input's device each forward).
ALGOS = {
    "native": spconv.ConvAlgo.Native,
    "mask_implicit_gemm": spconv.ConvAlgo.MaskImplicitGemm,
    "mask_split_implicit_gemm": spconv.ConvAlgo.MaskSplitImplicitGemm,
}


def _cpu_safe(get_current_stream):
    def get_current_stream_or_zero():
        # Workaround: spconv's Python paths (e.g. the sparse conv backward when its C++ GEMM path is
        # off, or builds without it) call `torch.cuda.current_stream()` even for CPU tensors, which
        # raises "Torch not compiled with CUDA enabled" on a CPU-only torch. spconv's CPU kernels
        # ignore the stream argument, and its own C++ paths pass 0 for CPU tensors, so 0 is what a
        # CPU-only process gets here. Where CUDA exists the original function runs unchanged.
        if not torch.cuda.is_available():
            return 0
        return get_current_stream()

    get_current_stream_or_zero.pointdistiller_wraps = get_current_stream
    return get_current_stream_or_zero


def patch_spconv_cpu_stream() -> None:
    """Makes spconv's ``get_current_stream`` return stream 0 when torch has no CUDA (idempotent).

    ``spconv.pytorch.ops`` binds the function by name at import (``from cppcore import
    get_current_stream``), so the name is replaced in ``ops`` (where the conv forward/backward look it
    up) and in ``cppcore`` (for modules imported later). Called when the SECOND sparse encoder module
    is imported.
    """
    for module in (_spconv_ops, _spconv_cppcore):
        current = module.get_current_stream
        if not hasattr(current, "pointdistiller_wraps"):
            module.get_current_stream = _cpu_safe(current)


def algo_for_device(device: torch.device) -> "spconv.ConvAlgo":
    """``Native`` on CPU (the only algorithm spconv runs there), ``MaskImplicitGemm`` on CUDA."""
    if torch.device(device).type == "cuda":
        return spconv.ConvAlgo.MaskImplicitGemm
    return spconv.ConvAlgo.Native


def set_conv_algo(module: torch.nn.Module, algo: "spconv.ConvAlgo") -> None:
    """Sets the algorithm of every spconv convolution inside ``module``.

    Safe between forward passes: indice pairs are cached per input tensor, and the weights do not
    depend on the algorithm. Layers sharing an ``indice_key`` must use one algorithm; this sets all.
    """
    for m in module.modules():
        if isinstance(m, SparseConvolution):
            m.algo = algo
