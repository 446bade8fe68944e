"""Detector name -> class, and building a detector from the ``model`` section of a config."""
import inspect
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from torch import nn

from pointdistiller.detectors.outputs import DetectorOutput
from pointdistiller.detectors.point_rcnn import PointRCNN
from pointdistiller.detectors.pointpillars import PointPillars
from pointdistiller.detectors.second import SECOND
from pointdistiller.detectors.voxel_encoders import VoxelizationSettings

# The detectors a config's ``model.type`` may name (exact, case-sensitive).
DETECTORS: Dict[str, type] = {"pointpillars": PointPillars, "second": SECOND,
                              "point_rcnn": PointRCNN}

__all__ = ["DETECTORS", "DetectorOutput", "PointSamplingSettings", "VoxelizationSettings",
           "build_detector", "input_kind", "num_point_features", "point_range",
           "point_sampling_settings",
           "voxelization_settings"]


@dataclass(frozen=True)
class PointSamplingSettings:
    """What a point-based detector (``input_kind = "points"``) takes from the loader: the points
    inside ``point_range``, resampled to exactly ``num_points = (train, test)`` per frame."""

    point_range: Tuple[float, ...]
    num_points: Tuple[int, int]


def build_detector(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Builds the detector that ``model_cfg`` describes.

    Args:
        model_cfg: the ``model`` section of a config: ``type`` (a key of ``DETECTORS``) plus the
            detector's constructor arguments (its head blocks are typed config dataclasses).
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


def _detector_class(model_cfg: Mapping[str, Any]) -> type:
    if not isinstance(model_cfg, Mapping) or model_cfg.get("type") not in DETECTORS:
        raise ValueError(f"model_cfg: a mapping whose 'type' is one of {sorted(DETECTORS)} expected")
    return DETECTORS[model_cfg["type"]]


def _param(model_cfg: Mapping[str, Any], name: str):
    """A constructor argument of the detector ``model_cfg`` describes (its default when absent)."""
    params = inspect.signature(_detector_class(model_cfg).__init__).parameters
    return model_cfg.get(name, params[name].default)


def input_kind(model_cfg: Mapping[str, Any]) -> str:
    """What the detector of ``model_cfg`` takes from the loader (its class's ``input_kind``,
    e.g. ``"voxels"``), from the config alone."""
    return _detector_class(model_cfg).input_kind


def point_range(model_cfg: Mapping[str, Any]) -> Tuple[float, ...]:
    """``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres of the detector of ``model_cfg``: the
    field its loader crops to (every detector has one)."""
    return tuple(float(v) for v in _param(model_cfg, "point_range"))


def num_point_features(model_cfg: Mapping[str, Any]) -> int:
    """Values per input point (x, y, z, intensity = 4) of the detector of ``model_cfg``."""
    return int(_param(model_cfg, "num_point_features"))


def voxelization_settings(model_cfg: Mapping[str, Any]) -> VoxelizationSettings:
    """The voxelizer settings of the detector ``model_cfg`` describes, without building it (keys
    ``voxel_size``, ``point_range``, ``max_points_per_voxel``, ``max_voxels`` = ``(train, test)``;
    absent keys take the detector's defaults)."""
    value = {k: _param(model_cfg, k) for k in
             ("voxel_size", "point_range", "max_points_per_voxel", "max_voxels")}
    return VoxelizationSettings(tuple(float(v) for v in value["voxel_size"]),
                                tuple(float(v) for v in value["point_range"]),
                                int(value["max_points_per_voxel"]),
                                tuple(int(v) for v in value["max_voxels"]))


def point_sampling_settings(model_cfg: Mapping[str, Any]) -> PointSamplingSettings:
    """The point sampling of the point-based detector ``model_cfg`` describes, without building it
    (keys ``point_range`` and ``num_points`` = ``(train, test)``; absent keys take its defaults)."""
    num = _param(model_cfg, "num_points")
    return PointSamplingSettings(tuple(float(v) for v in _param(model_cfg, "point_range")),
                                 tuple(int(v) for v in num))
