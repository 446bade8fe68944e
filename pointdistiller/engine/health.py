"""Dead ReLU units: output channels of a model's ``nn.ReLU`` modules that never fire.

A unit (channel) is dead on a set of inputs when its ReLU output is 0 for every element of every
input. A dead unit gets no gradient through that ReLU, so training cannot revive it; many dead units
are the usual mark of an optimiser running too hot (the demo students held 0-80 of 1472 after
480 steps at the one-cycle peak 0.01, the PointRCNN teacher's box branch 252 of 256 in its last
layer). The trainer counts them over the val split at every evaluation (``log.jsonl``'s ``units``)
and ``scripts/unit_health.py`` prints them per layer for a checkpoint.

The channel of a ReLU output is its dimension 1: ``[N, C]`` point/voxel/RoI features (also the
feature matrix of a sparse tensor), ``[B, C, L]`` and ``[B, C, H, W]`` maps. Outputs with fewer
than two dimensions are skipped. A ReLU module applied at several widths is reported once per width
(``name[C]``); one applied twice at the same width counts as one layer (our detectors apply each
module once per forward).
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["UnitActivity"]


class UnitActivity:
    """Records, while active (a context manager), which channels of every ``nn.ReLU`` module of
    ``model`` produce a positive value on at least one input.

    ``with UnitActivity(model) as units: <forward passes>`` then ``units.dead()`` (per layer) and
    ``units.summary()``. The hooks are removed on exit; the counts stay.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._fired: Dict[Tuple[str, int], Tensor] = {}     # (module name, width) -> fired
        self._handles: List = []

    def __enter__(self) -> "UnitActivity":
        for name, module in self.model.named_modules():
            if isinstance(module, nn.ReLU):
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def record(module, inputs, output):
            if not isinstance(output, Tensor) or output.dim() < 2 or output.numel() == 0:
                return
            with torch.no_grad():
                fired = output.detach().transpose(0, 1).reshape(output.shape[1], -1).amax(dim=1) > 0
            key = (name, fired.numel())
            if key in self._fired:
                self._fired[key] |= fired.cpu()
            else:
                self._fired[key] = fired.cpu()
        return record

    def dead(self) -> Dict[str, Tuple[int, int]]:
        """``{layer: (dead units, units)}`` for every ReLU that saw an input, in the order of
        their first call."""
        widths: Dict[str, int] = {}
        for name, _ in self._fired:
            widths[name] = widths.get(name, 0) + 1
        return {(name if widths[name] == 1 else f"{name}[{c}]"): (int((~fired).sum()), c)
                for (name, c), fired in self._fired.items()}

    def summary(self) -> Dict:
        """``{"dead": n, "total": m, "layers": {layer: dead}}`` (layers with a dead unit only)."""
        per = self.dead()
        return {"dead": sum(d for d, _ in per.values()), "total": sum(t for _, t in per.values()),
                "layers": {name: d for name, (d, _) in per.items() if d}}
