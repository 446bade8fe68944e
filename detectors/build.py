"""Detector name -> class, and building a detector from the ``model`` section of a config."""
from typing import Any, Dict, Mapping

from torch import nn

from .outputs import DetectorOutput
from .pointpillars import PointPillars
from .second import SECOND

# The detectors a config's ``model.type`` may name (exact, case-sensitive).
DETECTORS: Dict[str, type] = {"pointpillars": PointPillars, "second": SECOND}

__all__ = ["DETECTORS", "DetectorOutput", "build_detector"]


def build_detector(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Builds the detector that ``model_cfg`` describes.

    Args:
        model_cfg: the ``model`` section of a config: ``type`` (a key of ``DETECTORS``) plus the
            detector's constructor arguments (``head`` holds ``AnchorHead``'s keyword arguments).
            ``pointdistiller.config.load_config`` has validated names and types already.
    """
    if not isinstance(model_cfg, Mapping) or "type" not in model_cfg:
        raise ValueError("model_cfg: a mapping with a 'type' key expected "
                         f"(one of {sorted(DETECTORS)})")
    kwargs = dict(model_cfg)
    name = kwargs.pop("type")
    if name not in DETECTORS:
        raise ValueError(f"model.type: unknown detector {name!r}; expected one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kwargs)
