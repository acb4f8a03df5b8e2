"""Naive float64 references for the heads: loops over samples and direct formulas."""

from __future__ import annotations

import math

import torch


def arc_target(c: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    theta = torch.acos(c)
    theta_max = (math.pi - m2) / m1
    if theta.item() <= theta_max:
        return torch.cos(m1 * theta + m2) - m3
    return c - (math.cos(theta_max) + 1.0 + m3)


def sphere_target(c: torch.Tensor, m: int, lam: float) -> torch.Tensor:
    theta = torch.acos(c)
    k = min(math.floor(m * theta.item() / math.pi), m - 1)
    psi = (-1) ** k * torch.cos(m * theta) - 2 * k
    return (lam * c + psi) / (1 + lam)


def naive_head_loss(
    kind: str,
    x: torch.Tensor,
    w: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    **p,
) -> torch.Tensor:
    """Mean cross-entropy written sample by sample, class by class."""
    total = x.new_zeros(())
    B = x.shape[0]
    C = w.shape[0]
    for i in range(B):
        xi = x[i]
        y = int(labels[i])
        logits = []
        for j in range(C):
            if kind == "softmax":
                z = xi @ w[j] + (bias[j] if bias is not None else 0.0)
                logits.append(z)
                continue
            if kind == "subcenter":
                c = max((xi @ w[j, k]) / (xi.norm() * w[j, k].norm()) for k in range(w.shape[1]))
            else:
                c = (xi @ w[j]) / (xi.norm() * w[j].norm())
            if kind == "sphereface":
                s = xi.norm()
            else:
                s = p["s"]
            if j == y:
                if kind == "normface":
                    c = c
                elif kind == "cosface":
                    c = c - p["m"]
                elif kind in ("arcface", "subcenter"):
                    c = arc_target(c, 1.0, p["m"], 0.0)
                elif kind == "combined":
                    c = arc_target(c, p["m1"], p["m2"], p["m3"])
                elif kind == "sphereface":
                    c = sphere_target(c, p["m"], p["lam"])
            logits.append(s * c)
        z = torch.stack(logits)
        total = total + (torch.logsumexp(z, 0) - z[y])
    return total / B
