"""How much of a distillation loss can its own modules remove without the student learning anything?

    python scripts/kd_probe.py KD_CONFIG [--student CKPT] [--batches 8] [--steps 300] [--lr 0.003]
        [--set KEY=VALUE ...]

A distillation term with trainable modules (PointDistiller's two graph layers, FitNet's adapter) is
only a signal to the student while the student has to change to lower it. This probe freezes the
student (random initialisation, or ``--student`` weights), caches the teacher's and the student's
outputs on ``--batches`` training batches (augmented, as the trainer sees them), then trains only the
terms' modules (AdamW at ``--lr``, the config's betas and weight decay) for ``--steps`` steps over
those batches, and prints each term's loss at the start, along the way and at the end. A loss the
modules alone drive to the level a distillation run ends at is one the student need not learn
anything for. One CPU thread unless ``--threads``.
"""
import argparse
import sys
import time
from typing import Optional

import torch

from pointdistiller.config import ConfigError, add_set_argument, load_config
from pointdistiller.detectors.build import build_detector
from pointdistiller.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from pointdistiller.engine.data import build_loader, resolve_dataset_root
from pointdistiller.engine.errors import RunError
from pointdistiller.engine.sections import DataConfig, TrainConfig
from pointdistiller.engine.teacher import load_teacher


def _cache(distiller, loader, batches: int):
    """(batch, teacher output, student output) of the first ``batches`` training batches."""
    cached = []
    with torch.no_grad():
        for batch in loader:
            t_out = distiller.teacher_model(batch, head=distiller.teacher_head)
            cached.append((batch, t_out, distiller.student(batch)))
            if len(cached) >= batches:
                break
    return cached


def _losses(distiller, cached):
    """{term name: loss tensor} summed over the cached batches (mean)."""
    total = {}
    for batch, t_out, s_out in cached:
        for kind, terms in distiller.terms.items():
            for i, term in enumerate(terms):
                loss, _ = term(t_out, s_out, batch)
                total[f"{kind}{i}"] = total.get(f"{kind}{i}", 0.0) + loss / len(cached)
    return total


def probe(config: str, overrides=(), student_weights: Optional[str] = None,
          teacher: Optional[str] = None, batches: int = 8, steps: int = 300,
          lr: Optional[float] = None, report_every: int = 50, log=print):
    """Trains only the distillation modules of ``config`` against a frozen student; returns
    ``(distiller, rows)``, ``rows`` = ``[(step, {term: loss over the cached batches})]`` from step 0.
    Raises ConfigError / CheckpointError / RunError / ValueError / OSError on bad input."""
    cfg = load_config(config, overrides)
    if cfg.distill is None:
        raise RunError(f"{config}: no distill section")
    data, train = cfg.data or DataConfig(), cfg.train or TrainConfig()
    torch.manual_seed(train.seed)
    teacher_model, _ = load_teacher(cfg, config, teacher, torch.device("cpu"))
    student = build_detector(cfg.model)
    if student_weights:
        load_model_weights(student, load_checkpoint(student_weights), student_weights)
    from pointdistiller.distill.distiller import Distiller

    distiller = Distiller(student, teacher_model, cfg.distill,
                          {t.name: t for t in teacher_model.feature_info},
                          {t.name: t for t in student.feature_info})
    loader, _ = build_loader(resolve_dataset_root(data, lambda *_: None), data, cfg.model, train,
                             data.train_split, training=True)
    # the student as the trainer runs it in a step (train mode), but frozen; the terms' modules train
    distiller.train()
    for p in student.parameters():
        p.requires_grad_(False)
    params = [p for p in distiller.terms.parameters() if p.requires_grad]
    lr = lr if lr is not None else train.lr * train.peak_ratio
    t0 = time.time()
    cached = _cache(distiller, loader, batches)
    log(f"{config}: student {student_weights or 'random init'}, {len(cached)} cached batches, "
        f"{sum(p.numel() for p in params)} trainable KD parameters, lr {lr:g} "
        f"({time.time() - t0:.0f} s to cache)")
    with torch.no_grad():
        rows = [(0, {k: float(v) for k, v in _losses(distiller, cached).items()})]
    if not params:
        return distiller, rows
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(train.betas),
                                  weight_decay=train.weight_decay)
    for step in range(1, steps + 1):
        batch, t_out, s_out = cached[(step - 1) % len(cached)]
        loss = sum(term(t_out, s_out, batch)[0] for terms in distiller.terms.values()
                   for term in terms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % report_every == 0 or step == steps:
            with torch.no_grad():
                rows.append((step, {k: float(v) for k, v in _losses(distiller, cached).items()}))
    return distiller, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a distillation config (with teacher and distill sections)")
    parser.add_argument("--student", default=None, help="student weights (default: random init)")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: the config's)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=None,
                        help="default: the config's one-cycle peak (train.lr x train.peak_ratio)")
    parser.add_argument("--report-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    add_set_argument(parser)
    args = parser.parse_args(argv)
    if args.batches < 1 or args.steps < 1 or args.report_every < 1:
        parser.error("--batches, --steps and --report-every must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        _, rows = probe(args.config, args.set, args.student, args.teacher, args.batches,
                        args.steps, args.lr, args.report_every)
    except (ConfigError, CheckpointError, RunError, ValueError, OSError) as exc:
        print(f"kd_probe: {exc}", file=sys.stderr)
        return 2
    start = rows[0][1]
    print(f"{'step':>6s} " + " ".join(f"{k:>12s}" for k in start))
    for step, losses in rows:
        print(f"{step:6d} " + " ".join(f"{v:12.5f}" for v in losses.values()))
    if len(rows) == 1:
        print("no trainable KD modules: nothing to probe")
        return 0
    end = rows[-1][1]
    print("end / start: " + ", ".join(f"{k} {end[k] / start[k]:.4f}" if start[k] else f"{k} -"
                                      for k in start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
