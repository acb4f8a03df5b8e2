"""Learning-rate schedules: linear warm-up, then polynomial, cosine or constant; or one-cycle."""

from __future__ import annotations

import math

import torch

from marginface.train.config import ScheduleConfig

__all__ = ["build_scheduler", "lr_factor"]


def lr_factor(step: int, total: int, warmup: int, cfg: ScheduleConfig) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, max(0.0, (step - warmup) / span))
    lo = cfg.min_lr_ratio
    if cfg.kind == "poly":
        return lo + (1.0 - lo) * (1.0 - t) ** cfg.power
    if cfg.kind == "cosine":
        return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler following ``cfg``: a :class:`~torch.optim.lr_scheduler.LambdaLR`
    of :func:`lr_factor`, or :class:`~torch.optim.lr_scheduler.OneCycleLR` for ``onecycle``
    (its rise is the warm-up; each parameter group peaks at its own learning rate)."""
    if cfg.kind == "onecycle":
        return _one_cycle(optimizer, cfg, total_steps, steps_per_epoch)
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    else:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg)
    )


def _one_cycle(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    rise = (
        cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_epochs * steps_per_epoch
    )  # not rounded: a fraction of the run
    pct = min(max(float(rise) / total_steps, 0.0), 1.0)
    if math.isclose(pct * total_steps, 1.0):
        # A rise of exactly one step makes PyTorch divide by zero; start at the peak instead.
        pct *= 1.0 - 1e-6
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct,
        # Cycling momentum (or Adam's beta1) is part of the schedule, but SGD configured with
        # momentum 0 asked for plain SGD: leave it so.
        cycle_momentum=bool(optimizer.defaults.get("momentum", 1.0)),
    )
