"""Checkpoints: atomic writes, exact resume, and verified loading of teacher weights.

A training checkpoint holds everything needed to continue bit-for-bit on CPU: the student's
weights, the distillation modules' weights, optimizer state, the iteration counter and every RNG
state. It never holds the teacher. ``latest.pt`` is rewritten atomically, so a run killed at any
moment leaves either the previous or the new checkpoint, never a torn file.

Loading never runs code from the file: every checkpoint is read with ``torch.load(weights_only=True)``,
which accepts tensors and plain Python values only. Format 2 stores the RNG states as such values;
format 1 (earlier versions) stored numpy's RNG state as a numpy array, which is read through an
allow-list of numpy's array constructors alone.
"""
import hashlib
import os
import pickle
import random
import zipfile
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from pointdistiller.kitti_tools.fileio import atomic_torch_save

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# What a format-1 checkpoint needs beyond tensors and plain values: numpy's RNG key array.
_LEGACY_NUMPY_GLOBALS = (np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                         np.dtypes.UInt32DType)


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
    """Every RNG state as tensors and plain values (loadable with ``weights_only=True``)."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                       numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
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
    """Reads a checkpoint (training state, final weights or fp16 weights) without running code from
    it; clear errors for missing, corrupt, unsafe or foreign files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save zip archive)")
    try:
        with torch.serialization.safe_globals(list(_LEGACY_NUMPY_GLOBALS)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(
            f"{path}: refused: loading it would run code or build objects that a pointdistiller "
            f"checkpoint never holds (tensors and plain values only){': ' + detail if detail else ''}. "
            f"Nothing was executed. Load it with torch.load(weights_only=False) only if you trust "
            f"its source, and save its state_dict again.") from None
    except Exception as exc:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS or "model" not in state:
        raise CheckpointError(f"{path}: not a pointdistiller checkpoint (formats "
                              f"{', '.join(map(str, READABLE_FORMATS))})")
    return state


def save_half_weights(src: str, dst: str) -> None:
    """Writes the model weights of checkpoint ``src`` with floating tensors in float16 to ``dst``
    (atomically): a teacher to ship, half the size; loading casts them back to the model's dtype."""
    state = load_checkpoint(src)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    atomic_torch_save({"format": FORMAT_VERSION, "model": weights,
                       "model_config": state.get("model_config"), "precision": "float16"}, dst)


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
