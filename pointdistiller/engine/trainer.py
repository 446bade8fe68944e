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
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import yaml
from torch import nn

from pointdistiller.config import Config, config_to_dict, same_run_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.kitti_tools.classes import CLASS_NAMES
from pointdistiller.kitti_tools.fileio import (append_line, atomic_open, atomic_torch_save,
                                               atomic_write_json, check_writable_dir,
                                               remove_stale_temporaries)

from pointdistiller.engine import dist
from pointdistiller.engine.checkpoint import (FORMAT_VERSION, CheckpointError, load_checkpoint,
                                              load_model_weights, save_training_state,
                                              set_rng_state)
from pointdistiller.engine.data import build_loader, resolve_dataset_root
from pointdistiller.engine.errors import RunError
from pointdistiller.engine.evaluation import evaluate_detector
from pointdistiller.engine.health import UnitActivity
from pointdistiller.engine.precise_bn import bn_buffers, recompute_bn_stats, restore_bn_buffers
from pointdistiller.engine.schedule import OneCycle
from pointdistiller.engine.sections import DataConfig, TrainConfig
from pointdistiller.engine.teacher import DetectionObjective, load_teacher


# the epoch index of the fixed shuffle that precise BN draws its training batches from
PRECISE_BN_EPOCH = 1_000_003


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
        if not same_run_config(previous, resolved):
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
        self._precise_bn_loader = None   # built on first use (see _precise_bn)
        self._grad_norm: Optional[torch.Tensor] = None   # of the last step, before clipping

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

            teacher, _ = load_teacher(self.cfg, self.config_path, self.teacher_checkpoint,
                                      self.device)
            t_taps = {t.name: t for t in teacher.feature_info}
            s_taps = {t.name: t for t in self.student.feature_info}
            for name in set(t_taps) & set(s_taps):
                tt, st = t_taps[name], s_taps[name]
                if (tt.kind, tt.stride) != (st.kind, st.stride):
                    raise RunError(f"feature tap {name!r}: the teacher's is a {tt.kind} tap of stride "
                                   f"{tt.stride}, the student's a {st.kind} tap of stride {st.stride}; "
                                   f"their nodes cannot be matched")
            try:
                self.distiller = Distiller(self.student, teacher, self.cfg.distill, t_taps, s_taps,
                                           num_classes=len(CLASS_NAMES)).to(self.device)
            except ValueError as exc:
                raise RunError(str(exc)) from None
            objective = self.distiller
        else:
            objective = DetectionObjective(self.student)
        self.objective = objective
        # every rank has checked the work dir (in __init__) before rank 0 creates it: otherwise a
        # slow rank finds rank 0's fresh folder and refuses it as "another run"
        dist.barrier()
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
                            iteration=self.iteration, epoch=epoch,
                            model_config=config_to_dict(self.cfg.model),
                            kd_modules=self._kd_modules(), scaler=self.scaler)

    def _save_final(self) -> str:
        path = os.path.join(self.work_dir, "model_final.pt")
        if dist.is_main():
            atomic_torch_save({"format": FORMAT_VERSION, "model": self.student.state_dict(),
                               "model_config": config_to_dict(self.cfg.model)}, path)
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
        writer, bar = self._open_outputs()
        self.objective.train()
        while self.iteration < self.total_iters and self.iteration != stop_at:
            epoch, done_in_epoch = divmod(self.iteration, self.iters_per_epoch)
            self.train_loader.sampler.set_epoch(epoch, done_in_epoch * t.batch_size)
            self.train_loader.dataset.set_epoch(epoch)
            for batch in self.train_loader:
                losses, stats = self._step(batch)
                self.iteration += 1
                self._log_step(epoch, losses, stats, start_time, writer, bar)
                self._checkpoint_and_evaluate(epoch, writer)
                if self.iteration >= self.total_iters or self.iteration == stop_at:
                    break
        if bar is not None:
            bar.close()
        if stop_at is not None and self.iteration < self.total_iters:
            self._save_latest(self.iteration // self.iters_per_epoch)
            if writer is not None:
                writer.close()
            return RunResult(self.work_dir, "", None, self.iteration, time.time() - start_time)
        self._precise_bn()
        final = self._save_final()
        metrics = self.evaluate(writer)
        if writer is not None:
            writer.close()
        dist.barrier()
        return RunResult(self.work_dir, final, metrics, self.iteration, time.time() - start_time)

    def _open_outputs(self):
        """(TensorBoard writer, progress bar) of the main process; None elsewhere / when off."""
        writer = bar = None
        if dist.is_main():
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(os.path.join(self.work_dir, "tb"), purge_step=self.iteration or None)
            if self.progress:
                from tqdm import tqdm

                bar = tqdm(total=self.total_iters, initial=self.iteration, desc="pd-train",
                           unit="step", dynamic_ncols=True, file=sys.stderr)
        return writer, bar

    def _log_step(self, epoch: int, losses, stats, start_time: float, writer, bar) -> None:
        """Every ``log_interval`` steps (and the last): a line of ``log.jsonl`` and the scalars in
        TensorBoard; the progress bar every step."""
        t = self.train_cfg
        lr = self.optimizer.param_groups[0]["lr"]
        if self.iteration % max(1, t.log_interval) == 0 or self.iteration == self.total_iters:
            record = {"step": self.iteration, "epoch": epoch,
                      "seconds": round(time.time() - start_time, 2), "lr": lr,
                      **{k: float(v) for k, v in losses.items()}, **stats}
            if self._grad_norm is not None:
                # the whole gradient's norm before clipping: above train.grad_clip, clipping scales
                # every term's gradient down together (a large distillation gradient then starves
                # the detection loss's)
                record["grad_norm"] = float(self._grad_norm)
            if dist.is_main():
                append_line(os.path.join(self.work_dir, "log.jsonl"), json.dumps(record))
                for k, v in record.items():
                    if k not in ("step", "epoch", "seconds"):
                        writer.add_scalar(f"train/{k}", v, self.iteration)
        if bar is not None:
            shown = {k: f"{float(v):.3f}" for k, v in losses.items()
                     if k in ("total", "det", "kd", "cls", "box")}
            shown["lr"] = f"{lr:.2e}"
            bar.set_postfix(shown, refresh=False)
            bar.update(1)

    def _checkpoint_and_evaluate(self, epoch: int, writer) -> None:
        """``latest.pt`` every ``checkpoint_interval`` steps, at each epoch's end and at the last
        step; a val evaluation every ``eval_interval`` epochs before the last."""
        t = self.train_cfg
        end_of_epoch = self.iteration % self.iters_per_epoch == 0
        if (t.checkpoint_interval and self.iteration % t.checkpoint_interval == 0) or end_of_epoch \
                or self.iteration == self.total_iters:
            self._save_latest(epoch)
        if end_of_epoch and t.eval_interval and (epoch + 1) % t.eval_interval == 0 \
                and self.iteration < self.total_iters:
            # the recomputed statistics serve this evaluation only: training goes on (and a
            # resumed run starts) from the moving averages that latest.pt holds
            saved = bn_buffers(self.student)
            self._precise_bn()
            self.evaluate(writer)
            restore_bn_buffers(self.student, saved)
            self.objective.train()

    def _step(self, batch) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
        t = self.train_cfg
        batch = batch.to(self.device)
        self.schedule.apply(self.iteration)
        if self.distiller is not None:
            self.distiller.set_step(self.iteration)
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
                self._grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if t.grad_clip > 0:
                self._grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}, stats

    def _precise_bn(self) -> None:
        """Recomputes the student's BatchNorm statistics (``train.precise_bn`` batches of a
        separate training loader with a fixed shuffle and augmentation), on every process."""
        t = self.train_cfg
        if t.precise_bn <= 0:
            return
        if self._precise_bn_loader is None:
            loader, _ = build_loader(self.root, self.data, self.cfg.model, t,
                                     self.data.train_split, training=True)
            # an epoch index no training epoch uses: the same batches on every call of this run
            loader.sampler.set_epoch(PRECISE_BN_EPOCH, 0)
            loader.dataset.set_epoch(PRECISE_BN_EPOCH)
            self._precise_bn_loader = loader
        start = time.time()
        used = recompute_bn_stats(self.student, self._precise_bn_loader, t.precise_bn,
                                  lambda batch: self.student(batch.to(self.device)))
        if used:
            self.log(f"precise BN: BatchNorm statistics recomputed over {used} training batches "
                     f"({time.time() - start:.1f} s)")

    # ----------------------------------------------------------------------------------------------
    def evaluate(self, writer=None) -> Optional[Dict]:
        """Detects on the val split, writes KITTI result files and prints the KITTI summary (rank 0)."""
        if not dist.is_main():
            return None
        t = self.train_cfg
        loader, dataset = build_loader(self.root, self.data, self.cfg.model, t, self.data.val_split,
                                       training=False)
        out_dir = os.path.join(self.work_dir, "results", self.data.val_split)
        # dead ReLU units over the whole val split come for one amax per ReLU output
        with UnitActivity(self.student) as units:
            metrics, summary = evaluate_detector(self.student, loader, dataset, out_dir, self.device)
        atomic_write_json(os.path.join(self.work_dir, "eval.json"), metrics)
        self.log(summary)
        health = units.summary()
        if health["total"]:
            worst = sorted(health["layers"].items(), key=lambda kv: -kv[1])[:3]
            self.log(f"dead ReLU units on {self.data.val_split} (never > 0): {health['dead']} of "
                     f"{health['total']}" + (" (most in " + ", ".join(f"{n} {d}" for n, d in worst)
                                            + ")" if worst else ""))
        append_line(os.path.join(self.work_dir, "log.jsonl"),
                    json.dumps({"step": self.iteration, "eval": metrics, "units": health}))
        if writer is not None:
            for cls in CLASS_NAMES:
                for metric in ("3d", "bev"):
                    writer.add_scalar(f"val/{cls}_{metric}_moderate_R40",
                                      metrics["strict"][cls][metric]["R40"][1], self.iteration)
            if health["total"]:
                writer.add_scalar("val/dead_relu_units", health["dead"], self.iteration)
        return metrics
