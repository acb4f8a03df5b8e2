"""Target-margin functions: how each head turns the target cosine ``cos θ_y`` into its logit.

Each function maps a tensor of target cosines to the modified cosine ``f(cos θ)`` (before the
scale ``s``). They are written so autograd gives the exact derivative, and they are monotone
non-increasing in θ over [0, π] (except ArcFace's ``easy_margin``, which is by definition not).

The monotonicity rule for additive angular margins: ``cos(m1·θ + m2)`` turns upward once
``m1·θ + m2`` passes π. Beyond ``θ_max = (π - m2) / m1`` the target logit continues as
``cos θ - δ``, with ``δ`` chosen so the curve is continuous at ``θ_max``. It then stays strictly
decreasing down to θ = π. (insightface instead jumps to ``cos θ - m·sin m``, which is monotone but
discontinuous.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "additive_angular",
    "chebyshev_cos_multiple",
    "combined_margin",
    "cosine_margin",
    "sphereface_psi",
]

# Cosines are clamped this far inside [-1, 1] before acos, whose derivative is infinite at ±1.
_ACOS_EPS = 1e-7


def _safe_acos(cos: Tensor) -> Tensor:
    return torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))


def cosine_margin(cos: Tensor, m: float) -> Tensor:
    """CosFace (LMCL): ``cos θ - m``."""
    return cos - m


def combined_margin(cos: Tensor, m1: float, m2: float, m3: float) -> Tensor:
    """``cos(m1·θ + m2) - m3``, continued as ``cos θ - δ`` past ``θ_max = (π - m2) / m1``."""
    theta = _safe_acos(cos)
    inner = torch.cos(m1 * theta + m2) - m3
    theta_max = (math.pi - m2) / m1
    if theta_max >= math.pi:
        return inner
    delta = math.cos(theta_max) + 1.0 + m3
    return torch.where(theta <= theta_max, inner, cos - delta)


def additive_angular(cos: Tensor, m: float, easy_margin: bool = False) -> Tensor:
    """ArcFace: ``cos(θ + m)``. With ``easy_margin``, the margin applies only where cos θ > 0."""
    if easy_margin:
        theta = _safe_acos(cos)
        return torch.where(cos > 0, torch.cos(theta + m), cos)
    return combined_margin(cos, 1.0, m, 0.0)


def chebyshev_cos_multiple(cos: Tensor, m: int) -> Tensor:
    """``cos(m·θ)`` as the Chebyshev polynomial ``T_m(cos θ)``: exact, smooth at cos θ = ±1."""
    t_prev, t_cur = torch.ones_like(cos), cos
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t_cur = t_cur, 2.0 * cos * t_cur - t_prev
    return t_cur


def sphereface_psi(cos: Tensor, m: int, lam: float = 0.0) -> Tensor:
    """A-Softmax: ``ψ(θ) = (-1)^k·cos(mθ) - 2k`` for θ ∈ [kπ/m, (k+1)π/m], mixed with λ.

    With ``lam`` = λ > 0 the result is ``(λ·cos θ + ψ(θ)) / (1 + λ)``, the annealed logit that
    SphereFace's reference implementation trains with.
    """
    with torch.no_grad():
        theta = torch.acos(cos.clamp(-1.0, 1.0))
        k = torch.floor(m * theta / math.pi).clamp(0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
    psi = sign * chebyshev_cos_multiple(cos, m) - 2.0 * k
    if lam:
        psi = (lam * cos + psi) / (1.0 + lam)
    return psi
