"""The one trainer: teachers, plain students and distilled students go through the same loop.

A run lives in a work dir::

    WORK_DIR/config.yaml           the resolved config (a later run in the same dir must match it)
    WORK_DIR/checkpoints/latest.pt training state, rewritten atomically (resume point)
    WORK_DIR/model_final.pt        the trained detector's weights + model config (a teacher for KD)
    WORK_DIR/results/<split>/      KITTI result files of the last evaluation
    WORK_DIR/eval.json             the last evaluation's APs (kitti-tools eval JSON)
    WORK_DIR/log.jsonl             one JSON line per logged step / evaluation
    WORK_DIR/tb/                   TensorBoard event files

Determinism: weights are initialised from ``train.seed``; the shuffling of epoch e and the
augmentation of sample i in epoch e depend only on (seed, e, i). Checkpoints record the step and all
RNG states, and resuming skips exactly the samples already seen, so on CPU an interrupted run that is
resumed ends with the same weights as an uninterrupted one.
"""
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Sampler

from pointdistiller.config import Config, ConfigError, config_to_dict, load_config
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.data.collate import VoxelCollator
from pointdistiller.data.kitti_dataset import KittiDataset, _worker_init
from pointdistiller.detectors.build import build_detector, voxelization_settings
from pointdistiller.kitti_tools.fileio import (append_line, atomic_open, atomic_torch_save,
                                        atomic_write_json, check_writable_dir,
                                        remove_stale_temporaries)

from . import dist
from .checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint, load_model_weights,
                         save_training_state, set_rng_state, sha256_file)
from .schedule import OneCycle
from .sections import DataConfig, TrainConfig


class RunError(ValueError):
    """A run cannot start: bad work dir, teacher, dataset or config combination."""


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
class ResumableSampler(Sampler):
    """Shuffled (or sequential) indices of one epoch from ``(seed, epoch)``, split between ranks like
    ``DistributedSampler`` (padded to a multiple of the world size), skipping the first ``start``
    indices of this rank (the samples a resumed run has already seen)."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world) if self.size else 0
        order += order[:per_rank * self.world - len(order)]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, (math.ceil(self.size / self.world) if self.size else 0) - self.start)


class _Repeated(torch.utils.data.Dataset):
    """``dataset`` repeated ``times`` (index i -> i % len); keeps ``set_epoch``."""

    def __init__(self, dataset, times: int):
        self.dataset, self.times = dataset, times

    def __len__(self):
        return len(self.dataset) * self.times

    def __getitem__(self, i):
        return self.dataset[i % len(self.dataset)]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def cache_root() -> str:
    return os.environ.get("PD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pointdistiller")


def resolve_dataset_root(data: DataConfig, log=print) -> str:
    """The prepared KITTI root of ``data``: the configured one, or the built-in synthetic scenes
    (generated and prepared on first use, then reused)."""
    if data.root is not None:
        root = os.path.abspath(os.path.expanduser(data.root))
        info = os.path.join(root, f"kitti_infos_{data.train_split}.json")
        if not os.path.isfile(info):
            raise RunError(f"data.root: {info} not found; run `kitti-tools prepare --root {root}` first")
        return root
    from pointdistiller.kitti_tools.prepare import prepare_kitti
    from pointdistiller.kitti_tools.synth.dataset import generate_dataset

    root = data.synthetic_dir or os.path.join(
        cache_root(), f"synthetic-{data.synthetic_frames}-{data.synthetic_seed}")
    done = os.path.join(root, ".prepared")
    if not os.path.isfile(done):
        if dist.is_main():
            log(f"generating {data.synthetic_frames} synthetic KITTI-layout scenes in {root} "
                f"(once; reused afterwards)")
            generate_dataset(root, data.synthetic_frames, seed=data.synthetic_seed, progress=True)
            prepare_kitti(root, splits=("train", "val", "trainval"), progress=True, log=log)
            with atomic_open(done, "w") as f:
                f.write("ok\n")
        dist.barrier()
    return root


def build_loader(root: str, data: DataConfig, model_cfg: Dict, train: TrainConfig, split: str,
                 training: bool) -> Tuple[DataLoader, KittiDataset]:
    """A DataLoader of ``split`` voxelized with the model's settings (train or test voxel budget)."""
    info = os.path.join(root, f"kitti_infos_{split}.json")
    if not os.path.isfile(info):
        raise RunError(f"{info} not found (split {split!r}); run `kitti-tools prepare --root {root}`")
    dataset = KittiDataset(info, root, class_names=CLASS_NAMES, point_range=model_cfg["point_range"],
                           training=training, augment=data.augment if training else None,
                           fov_reduce=data.fov_reduce, seed=train.seed,
                           num_features=model_cfg.get("num_point_features", 4))
    if len(dataset) == 0:
        raise RunError(f"{info}: the {split} split holds no frames")
    collate = VoxelCollator(model_cfg["voxel_size"], model_cfg["point_range"],
                            model_cfg["max_points_per_voxel"],
                            model_cfg["max_voxels"][0 if training else 1])
    ds = _Repeated(dataset, train.repeat) if training and train.repeat > 1 else dataset
    sampler = ResumableSampler(len(ds), shuffle=training, seed=train.seed, rank=dist.rank(),
                               world=dist.world_size())
    loader = DataLoader(ds, batch_size=train.batch_size,
                        sampler=sampler, num_workers=train.workers, collate_fn=collate,
                        drop_last=False, worker_init_fn=_worker_init if train.workers > 0 else None,
                        persistent_workers=False)
    return loader, dataset


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
class DetectionObjective(nn.Module):
    """A detector trained on its own detection loss (same interface as ``Distiller``)."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, batch):
        return self.student.loss(batch, self.student(batch)), {}


def teacher_checkpoint(cfg: Config, config_path: str, checkpoint: Optional[str] = None) -> str:
    """The teacher's weights file: ``checkpoint`` (``--teacher``) or ``teacher.checkpoint`` (relative
    to the config's folder), checked to exist and, when ``teacher.sha256`` is set, to hash to it."""
    ckpt = checkpoint or (cfg.teacher.checkpoint if cfg.teacher else None)
    if not ckpt:
        raise RunError("no teacher checkpoint: set teacher.checkpoint or pass --teacher CKPT")
    if not os.path.isabs(ckpt) and checkpoint is None:
        ckpt = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), ckpt))
    if not os.path.isfile(ckpt):
        raise RunError(f"teacher checkpoint {ckpt} not found")
    if cfg.teacher and cfg.teacher.sha256:
        digest = sha256_file(ckpt)
        if digest != cfg.teacher.sha256.lower():
            raise RunError(f"teacher checkpoint {ckpt}: sha256 {digest} does not match "
                           f"teacher.sha256 {cfg.teacher.sha256}")
    return ckpt


def load_teacher(cfg: Config, config_path: str, checkpoint: Optional[str], device) -> Tuple[nn.Module, Dict]:
    """Builds the teacher from ``teacher.config`` and loads its verified checkpoint."""
    if cfg.teacher is None or not cfg.teacher.config:
        raise RunError(f"{config_path}: distillation needs a 'teacher' section with 'config'")
    t_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), cfg.teacher.config))
    try:
        t_cfg = load_config(t_path)
    except ConfigError as exc:
        raise RunError(f"teacher.config: {exc}") from None
    if t_cfg.model is None:
        raise RunError(f"teacher.config: {t_path} has no model section")
    ckpt = teacher_checkpoint(cfg, config_path, checkpoint)
    teacher = build_detector(t_cfg.model)
    try:
        state = load_checkpoint(ckpt)
        load_model_weights(teacher, state, ckpt, what="teacher")
    except CheckpointError as exc:
        raise RunError(str(exc)) from None
    return teacher.to(device), t_cfg.model


def check_alignment(student_cfg: Dict, teacher_cfg: Dict) -> None:
    """Teacher and student must voxelize identically, or node indices would not align."""
    s, t = voxelization_settings(student_cfg), voxelization_settings(teacher_cfg)
    if s != t:
        diff = [f"{k}: teacher {getattr(t, k)} vs student {getattr(s, k)}"
                for k in ("voxel_size", "point_range", "max_points", "max_voxels")
                if getattr(t, k) != getattr(s, k)]
        raise RunError("teacher and student voxelize differently, so their features cannot be "
                       "matched: " + "; ".join(diff))


def feature_channels(model: nn.Module, batch) -> Dict[str, Tuple[int, ...]]:
    """Shapes of every feature tap of ``model`` on ``batch`` (channels first after the node dim)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(batch)
    model.train(was)
    return {k: tuple(v.shape) for k, v in out.features.items()}


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    work_dir: str
    final_checkpoint: str
    metrics: Optional[Dict]
    iterations: int
    seconds: float


def resolve_device(name: Optional[str]) -> torch.device:
    """``name`` (``cpu``, ``cuda``, ``cuda:N``) checked against this machine; default CUDA when
    available (``LOCAL_RANK``'s GPU under torchrun), else CPU."""
    if not name:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"--device {name}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise RunError(f"--device {name}: {why} (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise RunError(f"--device {name}: only cpu and cuda are supported")
    return device


def _check_work_dir(work_dir: str, resolved: Dict, resume: bool) -> None:
    """Refuses a work dir that holds another run (or, with ``resume``, a different config)."""
    cfg_path = os.path.join(work_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            previous = yaml.safe_load(f)
        if not resume:
            raise RunError(f"work dir {work_dir} holds another run ({cfg_path}); pass --resume to "
                           f"continue it or choose another --work-dir (nothing was overwritten)")
        if previous != resolved:
            raise RunError(f"--resume: the config differs from the one of the run in {work_dir} "
                           f"({cfg_path}); resuming needs the same config")
    elif resume:
        if os.path.isdir(work_dir) and os.listdir(work_dir):
            raise RunError(f"--resume: {work_dir} holds no run of pd-train (no config.yaml)")
    elif os.path.isdir(work_dir) and os.listdir(work_dir):
        raise RunError(f"work dir {work_dir} is not empty and holds no pd-train run; "
                       f"choose another --work-dir (nothing was overwritten)")


def _create_work_dir(work_dir: str, resolved: Dict) -> None:
    """Creates the work dir and writes the resolved config (rank 0), once every check has passed;
    removes the temporary files of atomic writes that a killed run left behind."""
    cfg_path = os.path.join(work_dir, "config.yaml")
    if dist.is_main():
        os.makedirs(os.path.join(work_dir, "checkpoints"), exist_ok=True)
        for folder in (work_dir, os.path.join(work_dir, "checkpoints")):
            remove_stale_temporaries(folder)
        if not os.path.isfile(cfg_path):
            with atomic_open(cfg_path, "w", encoding="utf-8") as f:
                yaml.safe_dump(resolved, f, sort_keys=False)


class Trainer:
    """Trains ``cfg.model`` (optionally distilled from ``cfg.teacher``) as ``cfg.train`` says.

    Args:
        cfg: a validated config with ``model``; ``data``/``train`` default when absent.
        config_path: the config file (relative teacher paths start from its folder).
        work_dir: the run's folder (see module doc).
        resume: continue the run in ``work_dir`` from its last checkpoint.
        teacher_checkpoint: overrides ``teacher.checkpoint``.
        device: e.g. ``"cpu"``/``"cuda"``; default CUDA when available.
        log: function receiving human-readable lines.
    """

    def __init__(self, cfg: Config, config_path: str, work_dir: str, resume: bool = False,
                 teacher_checkpoint: Optional[str] = None, device: Optional[str] = None,
                 log=print, progress: bool = True):
        if cfg.model is None:
            raise RunError(f"{config_path}: the config has no model section")
        self.cfg, self.config_path = cfg, config_path
        self.data = cfg.data or DataConfig()
        self.train_cfg = cfg.train or TrainConfig()
        self.work_dir = os.path.abspath(work_dir)
        self.resume, self.log, self.progress = resume, log, progress
        self.device = resolve_device(device)
        self.distributed = dist.init_from_env(self.device.type)
        self.resolved = config_to_dict(cfg)
        self.teacher_checkpoint = teacher_checkpoint

    # ----------------------------------------------------------------------------------------------
    def _build(self):
        t = self.train_cfg
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % (2 ** 32))
        _check_work_dir(self.work_dir, self.resolved, self.resume)
        check_writable_dir(self.work_dir, "work dir")
        self.root = resolve_dataset_root(self.data, self.log)
        self.train_loader, self.train_set = build_loader(self.root, self.data, self.cfg.model, t,
                                                         self.data.train_split, training=True)
        self.student = build_detector(self.cfg.model).to(self.device)
        self.distiller = None
        if self.cfg.distill is not None:
            from pointdistiller.distill.distiller import Distiller

            teacher, t_model_cfg = load_teacher(self.cfg, self.config_path, self.teacher_checkpoint,
                                                self.device)
            check_alignment(self.cfg.model, t_model_cfg)
            probe = next(iter(self._probe_loader())).to(self.device)
            t_shapes, s_shapes = feature_channels(teacher, probe), feature_channels(self.student, probe)
            for name in set(t_shapes) & set(s_shapes):
                ts, ss = t_shapes[name], s_shapes[name]
                spatial_t = (ts[0],) + ts[2:]
                spatial_s = (ss[0],) + ss[2:]
                if spatial_t != spatial_s:
                    raise RunError(f"feature tap {name!r}: teacher {ts} and student {ss} have different "
                                   f"node/grid sizes, so they cannot be matched")
            try:
                self.distiller = Distiller(self.student, teacher, self.cfg.distill,
                                           {k: v[1] for k, v in t_shapes.items()},
                                           {k: v[1] for k, v in s_shapes.items()},
                                           num_classes=len(CLASS_NAMES)).to(self.device)
            except ValueError as exc:
                raise RunError(str(exc)) from None
            objective = self.distiller
        else:
            objective = DetectionObjective(self.student)
        self.objective = objective
        _create_work_dir(self.work_dir, self.resolved)
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.iters_per_epoch = math.ceil(len(self.train_loader.sampler) / t.batch_size)
        self.total_iters = self.iters_per_epoch * t.epochs
        if t.max_iters is not None:
            self.total_iters = min(self.total_iters, t.max_iters)
        if self.total_iters < 1:
            raise RunError("the run has no training steps (train.epochs or train.max_iters is 0)")
        self.schedule = OneCycle(self.optimizer, self.total_iters, t.lr, t.peak_ratio, t.final_ratio,
                                 t.up_ratio, tuple(t.momentum_range))
        self.use_amp = bool(t.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.model_for_step = objective
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model_for_step = DistributedDataParallel(
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.iteration = 0
        if self.resume:
            self._load_latest()

    def _probe_loader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=min(2, len(self.train_set)),
                          collate_fn=self.train_loader.collate_fn, num_workers=0)

    def _kd_modules(self) -> Optional[nn.Module]:
        return self.distiller.kd_modules() if self.distiller is not None else None

    def _latest_path(self) -> str:
        return os.path.join(self.work_dir, "checkpoints", "latest.pt")

    def _load_latest(self) -> None:
        path = self._latest_path()
        if not os.path.isfile(path):
            self.log(f"--resume: no checkpoint in {self.work_dir} yet; starting from the beginning")
            return
        try:
            state = load_checkpoint(path)
            load_model_weights(self.student, state, path)
        except CheckpointError as exc:
            raise RunError(str(exc)) from None
        kd = self._kd_modules()
        if kd is not None and state.get("kd") is not None:
            kd.load_state_dict(state["kd"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.log(f"resumed from {path} at step {self.iteration}/{self.total_iters}")

    def _save_latest(self, epoch: int) -> None:
        if not dist.is_main():
            return
        save_training_state(self._latest_path(), model=self.student, optimizer=self.optimizer,
                            iteration=self.iteration, epoch=epoch, model_config=self.cfg.model,
                            kd_modules=self._kd_modules(), scaler=self.scaler)

    def _save_final(self) -> str:
        path = os.path.join(self.work_dir, "model_final.pt")
        if dist.is_main():
            atomic_torch_save({"format": FORMAT_VERSION, "model": self.student.state_dict(),
                               "model_config": self.cfg.model}, path)
        return path

    # ----------------------------------------------------------------------------------------------
    def run(self, stop_at: Optional[int] = None) -> RunResult:
        """Trains to the end (or ``max_iters``), evaluates, writes ``model_final.pt``.

        ``stop_at`` ends the run right after that step's checkpoint, as an interruption would (no
        final weights, no evaluation); ``--resume`` continues it.
        """
        start_time = time.time()
        self._build()
        t = self.train_cfg
        writer = None
        if dist.is_main():
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(os.path.join(self.work_dir, "tb"), purge_step=self.iteration or None)
        log_path = os.path.join(self.work_dir, "log.jsonl")
        bar = None
        if dist.is_main() and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_iters, initial=self.iteration, desc="pd-train", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        metrics = None
        self.objective.train()
        while self.iteration < self.total_iters:
            epoch, done_in_epoch = divmod(self.iteration, self.iters_per_epoch)
            self.train_loader.sampler.set_epoch(epoch, done_in_epoch * t.batch_size)
            self.train_loader.dataset.set_epoch(epoch)
            for batch in self.train_loader:
                losses, stats = self._step(batch)
                self.iteration += 1
                if self.iteration % max(1, t.log_interval) == 0 or self.iteration == self.total_iters:
                    record = {"step": self.iteration, "epoch": epoch,
                              "seconds": round(time.time() - start_time, 2),
                              "lr": self.optimizer.param_groups[0]["lr"],
                              **{k: float(v) for k, v in losses.items()}, **stats}
                    if dist.is_main():
                        append_line(log_path, json.dumps(record))
                        for k, v in record.items():
                            if k not in ("step", "epoch", "seconds"):
                                writer.add_scalar(f"train/{k}", v, self.iteration)
                if bar is not None:
                    shown = {k: f"{float(v):.3f}" for k, v in losses.items()
                             if k in ("total", "det", "kd", "cls", "box")}
                    shown["lr"] = f"{self.optimizer.param_groups[0]['lr']:.2e}"
                    bar.set_postfix(shown, refresh=False)
                    bar.update(1)
                end_of_epoch = self.iteration % self.iters_per_epoch == 0
                if (t.checkpoint_interval and self.iteration % t.checkpoint_interval == 0) or end_of_epoch \
                        or self.iteration == self.total_iters:
                    self._save_latest(epoch)
                if end_of_epoch and t.eval_interval and (epoch + 1) % t.eval_interval == 0 \
                        and self.iteration < self.total_iters:
                    metrics = self.evaluate(writer)
                    self.objective.train()
                if self.iteration >= self.total_iters or self.iteration == stop_at:
                    break
            if self.iteration == stop_at:
                break
        if bar is not None:
            bar.close()
        if stop_at is not None and self.iteration < self.total_iters:
            self._save_latest(self.iteration // self.iters_per_epoch)
            if writer is not None:
                writer.close()
            return RunResult(self.work_dir, "", None, self.iteration, time.time() - start_time)
        final = self._save_final()
        metrics = self.evaluate(writer)
        if writer is not None:
            writer.close()
        dist.barrier()
        return RunResult(self.work_dir, final, metrics, self.iteration, time.time() - start_time)

    def _step(self, batch) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
        t = self.train_cfg
        batch = batch.to(self.device)
        self.schedule.apply(self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            losses, stats = self.model_for_step(batch)
        total = losses["total"]
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at step {self.iteration}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
                + f" (frames {batch.frame_ids}); the last good checkpoint is {self._latest_path()}")
        params = self.params
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}, stats

    # ----------------------------------------------------------------------------------------------
    def evaluate(self, writer=None) -> Optional[Dict]:
        """Detects on the val split, writes KITTI result files and prints the KITTI summary (rank 0)."""
        if not dist.is_main():
            return None
        t = self.train_cfg
        loader, dataset = build_loader(self.root, self.data, self.cfg.model, t, self.data.val_split,
                                       training=False)
        out_dir = os.path.join(self.work_dir, "results", self.data.val_split)
        metrics, summary = evaluate_detector(self.student, loader, dataset, out_dir, self.device)
        atomic_write_json(os.path.join(self.work_dir, "eval.json"), metrics)
        self.log(summary)
        append_line(os.path.join(self.work_dir, "log.jsonl"),
                    json.dumps({"step": self.iteration, "eval": metrics}))
        if writer is not None:
            for cls in CLASS_NAMES:
                for metric in ("3d", "bev"):
                    writer.add_scalar(f"val/{cls}_{metric}_moderate_R40",
                                      metrics["strict"][cls][metric]["R40"][1], self.iteration)
        return metrics


def evaluate_detector(model: nn.Module, loader: DataLoader, dataset: KittiDataset, out_dir: str,
                      device) -> Tuple[Dict, str]:
    """Runs ``model`` over ``loader``, writes one KITTI result file per frame into ``out_dir`` and
    evaluates against the frames' label files. Returns (kitti-tools eval JSON dict, summary text)."""
    from pointdistiller.kitti_tools.evaluation.core import evaluate
    from pointdistiller.kitti_tools.io import read_label
    from pointdistiller.kitti_tools.results import detections_to_kitti, write_results

    label_paths = {f["frame_id"]: os.path.join(dataset.root, f["label_path"])
                   for f in dataset.frames if "label_path" in f}
    was = model.training
    model.eval()
    gt_annos, dt_annos = [], []
    sampler = loader.sampler
    if isinstance(sampler, ResumableSampler):
        sampler.set_epoch(0, 0)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            dets = model.predict(batch, model(batch))
            for b, det in enumerate(dets):
                meta = batch.meta[b]
                objs = detections_to_kitti(det.boxes.cpu(), det.scores.cpu(), det.labels.cpu(),
                                           CLASS_NAMES, meta["calib"], meta["image_shape"])
                write_results(out_dir, batch.frame_ids[b], objs)
                dt_annos.append(objs)
                gt_annos.append(read_label(label_paths[batch.frame_ids[b]]))
    model.train(was)
    result = evaluate(gt_annos, dt_annos, CLASS_NAMES)
    return result.to_json_dict(), result.summary()


def moderate_map(metrics: Dict, metric: str = "bev") -> float:
    """Mean over the classes of the moderate AP_R40 (strict overlaps); ``metric`` is "3d" or "bev"."""
    return float(np.mean([metrics["strict"][c][metric]["R40"][1] for c in CLASS_NAMES]))


def gap_closed(teacher: Dict, plain: Dict, distilled: Dict, metric: str = "bev") -> Optional[float]:
    """The paper's "gap closed", ``(distilled - plain) / (teacher - plain)`` in moderate mAP; None
    when the plain student is not behind the teacher."""
    gap = moderate_map(teacher, metric) - moderate_map(plain, metric)
    if gap <= 0:
        return None
    return (moderate_map(distilled, metric) - moderate_map(plain, metric)) / gap


def moderate_table(rows: List[Tuple[str, Dict]]) -> str:
    """A side-by-side table of 3D and BEV AP_R40 (moderate, strict) per class and their mean."""
    width = max([28] + [len(name) + 2 for name, _ in rows])
    head = f"{'model':<{width}}" + "".join(f"{c[:3] + ' ' + m:>10}" for m in ("3D", "BEV") for c in CLASS_NAMES) \
        + f"{'mAP 3D':>9}{'mAP BEV':>9}"
    lines = [head, "-" * len(head)]
    for name, metrics in rows:
        vals = {m: [metrics["strict"][c][key]["R40"][1] for c in CLASS_NAMES]
                for m, key in (("3D", "3d"), ("BEV", "bev"))}
        lines.append(f"{name:<{width}}" + "".join(f"{v:>10.2f}" for m in ("3D", "BEV") for v in vals[m])
                     + f"{np.mean(vals['3D']):>9.2f}{np.mean(vals['BEV']):>9.2f}")
    return "\n".join(lines)
