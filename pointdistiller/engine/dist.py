"""torch.distributed helpers for runs launched with ``torchrun`` (DDP); single-process otherwise."""
import os

import torch
import torch.distributed as dist


def init_from_env(device_type: str) -> bool:
    """Initialises the default process group when torchrun's environment is present.

    Uses NCCL for CUDA and gloo for CPU. Returns True when running distributed.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is unchanged)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
