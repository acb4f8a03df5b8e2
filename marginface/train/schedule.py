"""Learning-rate schedules: linear warm-up, then polynomial, cosine or constant."""

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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` following ``cfg``."""
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    else:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg))
