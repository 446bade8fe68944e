"""Checkpoints: atomic writes, exact resume, and verified loading of teacher weights.

A training checkpoint holds everything needed to continue bit-for-bit on CPU: the student's
weights, the distillation modules' weights, optimizer state, the iteration counter and every RNG
state. It never holds the teacher. ``latest.pt`` is rewritten atomically, so a run killed at any
moment leaves either the previous or the new checkpoint, never a torn file.
"""
import hashlib
import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from pointdistiller.utils.fileio import atomic_torch_save

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_training_state(path: str, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        iteration: int, epoch: int, model_config: Dict[str, Any],
                        kd_modules: Optional[nn.Module] = None,
                        scaler: Optional[torch.amp.GradScaler] = None,
                        extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes a training checkpoint atomically (the teacher is never included)."""
    state = {
        "format": FORMAT_VERSION,
        "model": model.state_dict(),
        "model_config": model_config,
        "kd": kd_modules.state_dict() if kd_modules is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "iteration": iteration,
        "epoch": epoch,
        "rng": rng_state(),
        "extra": extra or {},
    }
    atomic_torch_save(state, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Reads a checkpoint written by :func:`save_training_state`; clear errors for missing, corrupt or
    foreign files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model" not in state:
        raise CheckpointError(f"{path}: not a pointdistiller checkpoint (format {FORMAT_VERSION})")
    return state


def load_model_weights(model: nn.Module, state: Dict[str, Any], path: str, what: str = "model") -> None:
    """Loads ``state["model"]`` into ``model`` strictly; a mismatch names the differing tensors."""
    weights = state["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shape = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append("shape mismatch: " + "; ".join(shape[:5]) + (" ..." if len(shape) > 5 else ""))
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path}: {what} checkpoint does not match its config: " + "; ".join(parts))
    model.load_state_dict(weights)
