"""Typed config sections of a training run: ``data``, ``train`` and ``teacher`` (``model`` is the
detector's constructor, ``distill`` is :class:`pointdistiller.distill.distiller.DistillConfig`)."""
from dataclasses import dataclass, field
from typing import Optional, Tuple

from pointdistiller.data.augment import AugmentConfig


@dataclass
class DataConfig:
    """Where the scenes come from and how they are augmented.

    Attributes:
        root: a KITTI folder prepared with ``kitti-tools prepare``; None selects the built-in
            synthetic scenes, generated on first use into ``synthetic_dir``.
        train_split, val_split: ``kitti_infos_<split>.json`` names.
        fov_reduce: keep only points seen by camera 2.
        augment: training augmentation.
        synthetic_frames: frames of the built-in synthetic dataset (half train, half val).
        synthetic_seed: its seed.
        synthetic_dir: its cache folder (None: ``$PD_CACHE`` or ``~/.cache/pointdistiller``, then
            ``synthetic-<frames>-<seed>``).
    """

    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    fov_reduce: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic_frames: int = 400
    synthetic_seed: int = 0
    synthetic_dir: Optional[str] = None


@dataclass
class TrainConfig:
    """Optimisation (mmdetection3d's KITTI defaults: AdamW + one-cycle) and bookkeeping.

    Attributes:
        epochs: passes over the (repeated) training set.
        repeat: the training set is repeated this many times per epoch.
        batch_size: samples per step per process.
        workers: data-loader worker processes (voxelization runs there).
        lr: base learning rate; the one-cycle peak is ``lr * peak_ratio``.
        weight_decay, betas: AdamW.
        peak_ratio, final_ratio, up_ratio, momentum_range: see ``OneCycle``.
        grad_clip: max gradient norm (35 PointPillars, 10 SECOND); 0 disables.
        seed: seeds weights, shuffling and augmentation.
        max_iters: stop after this many steps in total (quick runs); None: all epochs.
        checkpoint_interval: also checkpoint every this many steps (0: at epoch ends only).
        eval_interval: evaluate on the val split every this many epochs (0: only at the end).
        log_interval: steps between log lines / TensorBoard points.
        amp: mixed precision on CUDA (ignored on CPU).
        precise_bn: before every evaluation and before ``model_final.pt`` is written, recompute the
            BatchNorm statistics with the current weights over this many training batches (train
            mode, no gradients; :mod:`pointdistiller.engine.precise_bn`); 0 keeps the moving
            averages of training.
    """

    epochs: int = 160
    repeat: int = 2
    batch_size: int = 6
    workers: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.95, 0.99)
    peak_ratio: float = 10.0
    final_ratio: float = 1e-4
    up_ratio: float = 0.4
    momentum_range: Tuple[float, float] = (0.85, 0.95)
    grad_clip: float = 35.0
    seed: int = 0
    max_iters: Optional[int] = None
    checkpoint_interval: int = 0
    eval_interval: int = 0
    log_interval: int = 10
    amp: bool = True
    precise_bn: int = 100


@dataclass
class TeacherConfig:
    """The frozen teacher of a distillation run.

    Attributes:
        config: the teacher's config file (relative to the student's config file).
        checkpoint: its trained weights (``model_final.pt`` of its run); ``--teacher`` overrides.
        sha256: expected sha256 of the checkpoint file; checked before loading when given.
    """

    config: str = ""
    checkpoint: Optional[str] = None
    sha256: Optional[str] = None
