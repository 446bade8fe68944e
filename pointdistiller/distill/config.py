"""The ``distill`` config section (plain dataclasses, importable without torch)."""
from dataclasses import dataclass, field
from typing import List, Literal, Optional


@dataclass
class LocalTermConfig:
    """One PointDistiller term (``distill.local`` is a list of these; defaults: PointPillars)."""

    feature: str = "pfn"
    importance: Literal["num_points", "channel_max"] = "num_points"   # num_points: voxel taps
    num_nodes: int = 6000
    k: int = 128
    tau: float = 0.01
    loss_weight: float = 2.0
    pool: Literal["none", "max"] = "none"
    reweight: bool = True
    knn_space: Literal["teacher", "coords"] = "teacher"
    selection: Literal["per_sample", "pooled"] = "per_sample"
    edge_mode: Literal["factorized", "gather"] = "factorized"
    graph_init: Literal["torch", "authors"] = "torch"   # authors: bias-free conv, Kaiming fan-out
    teacher_graph: Literal["trained", "frozen"] = "trained"   # frozen: the teacher's graph layer keeps its init


@dataclass
class FeatureTermConfig:
    """A FitNet or attention-transfer term on one feature tap."""

    feature: str = "pfn"
    loss_weight: float = 1.0


@dataclass
class ResponseTermConfig:
    """Response KD on the head outputs."""

    cls_weight: float = 1.0
    box_weight: float = 1.0
    temperature: float = 1.0


@dataclass
class DistillConfig:
    """The ``distill`` config section. Empty lists / None disable a term."""

    teacher_mode: Literal["eval", "train"] = "eval"    # train: the authors' BN batch statistics
    # the distillation losses ramp linearly from 0 to their full weight over the first warmup_iters
    # training steps (0: full weight from the first step)
    warmup_iters: int = 0
    local: List[LocalTermConfig] = field(default_factory=list)
    fitnet: List[FeatureTermConfig] = field(default_factory=list)
    attention: List[FeatureTermConfig] = field(default_factory=list)
    response: Optional[ResponseTermConfig] = None
