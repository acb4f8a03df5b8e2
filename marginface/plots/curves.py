"""Target-logit curves and two-class decision regions, computed from the loss heads themselves.

Everything here asks the heads in :mod:`marginface.losses` for their numbers (``target_logit``,
``margin``, ``cosine``, ``logits``, ``scale_for``), so the figures are a check of the library as
much as an illustration of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from marginface.losses import MarginHead, create_head

__all__ = [
    "BOUNDARY_HEADS",
    "CURVE_SPECS",
    "CurveSpec",
    "decision_regions_angles",
    "decision_regions_plane",
    "logit_curves",
    "make_boundary_head",
]


@dataclass(frozen=True)
class CurveSpec:
    """One target-logit curve: a head by registry name, its options, and how to call it."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    call: dict[str, Any] = field(default_factory=dict)  # extra target_logit arguments (λ)


# The ArcFace paper's target-logit figure (Deng et al. 2019, Fig. 4b) at unit scale, so that the
# curves share one axis: the plotted value is the head's target logit divided by s.
CURVE_SPECS: tuple[CurveSpec, ...] = (
    CurveSpec("Softmax: cos θ", "softmax"),
    CurveSpec("NormFace: cos θ (× s)", "normface", {"scale": 1.0}),
    CurveSpec(
        "SphereFace m=4, λ=0: ψ(θ)",
        "sphereface",
        {"margin": 4, "lambda_schedule": None},
        {"lam": 0.0},
    ),
    CurveSpec(
        "SphereFace m=4, λ=5: (5cos θ + ψ)/6",
        "sphereface",
        {"margin": 4, "lambda_schedule": None},
        {"lam": 5.0},
    ),
    CurveSpec("CosFace m=0.35: cos θ − 0.35", "cosface", {"scale": 1.0, "margin": 0.35}),
    CurveSpec("ArcFace m=0.5: cos(θ + 0.5)", "arcface", {"scale": 1.0, "margin": 0.5}),
    CurveSpec(
        "Combined (1, 0.3, 0.2)", "combined", {"scale": 1.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}
    ),
    CurveSpec(
        "Combined (0.9, 0.4, 0.15)", "combined", {"scale": 1.0, "m1": 0.9, "m2": 0.4, "m3": 0.15}
    ),
)


def logit_curves(
    specs: tuple[CurveSpec, ...] = CURVE_SPECS, num: int = 721
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """θ in degrees over [0°, 180°] and each spec's ``head.target_logit(θ)`` (float64)."""
    theta_deg = np.linspace(0.0, 180.0, num)
    theta = torch.from_numpy(np.radians(theta_deg))
    curves: dict[str, np.ndarray] = {}
    for spec in specs:
        head = create_head(spec.name, num_classes=2, embedding_dim=2, **spec.kwargs)
        with torch.no_grad():
            values = head.target_logit(theta, **spec.call)
        curves[spec.label] = values.detach().double().numpy()
    return theta_deg, curves


# Two-class heads for the decision-boundary figure. Softmax keeps unnormalised weights of
# unequal norms, which is what tilts its boundary towards the class with the smaller norm.
BOUNDARY_HEADS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Softmax (‖W₁‖=1.5, ‖W₂‖=1)", "softmax", {"bias": False}),
    ("NormFace", "normface", {"scale": 1.0}),
    ("A-Softmax (m=4, λ=0)", "sphereface", {"margin": 4, "lambda_schedule": None}),
    ("CosFace (m=0.35)", "cosface", {"scale": 1.0, "margin": 0.35}),
    ("ArcFace (m=0.5)", "arcface", {"scale": 1.0, "margin": 0.5}),
)
SOFTMAX_NORMS = (1.5, 1.0)


def make_boundary_head(
    name: str, kwargs: dict[str, Any], separation_deg: float = 90.0
) -> MarginHead:
    """A 2-class, 2-d head whose class weights sit ±``separation/2`` around the y axis."""
    head = create_head(name, num_classes=2, embedding_dim=2, **kwargs)
    half = math.radians(separation_deg) / 2.0
    w = torch.tensor(
        [[math.sin(-half), math.cos(half)], [math.sin(half), math.cos(half)]], dtype=torch.float32
    )
    if not head.normalize_weight:
        w = w * torch.tensor(SOFTMAX_NORMS, dtype=torch.float32).unsqueeze(1)
    with torch.no_grad():
        head.weight.copy_(w)
    return head


def decision_regions_plane(
    head: MarginHead, extent: float = 2.0, num: int = 401
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label every point of the 2-d feature plane: 1 / 2 where class 1 / 2 wins *with* its
    margin (the target logit beats the other class's margin-free logit), 0 in the margin region.

    Returns ``(xs, ys, regions)`` with ``regions`` of shape ``(num, num)`` (rows: y).
    """
    xs = np.linspace(-extent, extent, num)
    gx, gy = np.meshgrid(xs, xs)
    points = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1)).float()
    points[points.norm(dim=1) < 1e-6] = 1e-6  # the origin has no direction
    validate = head.validate
    head.validate = False
    try:
        with torch.no_grad():
            cos = head.cosine(points)
            logits = head.logits(points)
            scale = head.scale_for(points)
            if isinstance(scale, torch.Tensor):
                scale = scale.unsqueeze(1)
            target = scale * head.margin(cos)  # Softmax: identity margin, bias inside cos
    finally:
        head.validate = validate
    win1 = target[:, 0] > logits[:, 1]
    win2 = target[:, 1] > logits[:, 0]
    regions = np.where(win1.numpy(), 1, np.where(win2.numpy(), 2, 0)).reshape(gx.shape)
    return xs, xs, regions


def decision_regions_angles(
    head: MarginHead, num: int = 361, feature_norm: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Label the ``(θ₁, θ₂)`` square ([0°, 180°]²), θ_j being the angle to class j's weight.

    For normalised heads class 1 wins with its margin where ``f(cos θ₁) > cos θ₂``; the Softmax
    head compares ``‖W_j‖·‖x‖·cos θ_j`` (``feature_norm`` = ‖x‖). Returns ``(θ degrees,
    regions)`` with rows indexed by θ₂ and columns by θ₁; 0 marks the margin region.
    """
    theta_deg = np.linspace(0.0, 180.0, num)
    t = torch.from_numpy(np.radians(theta_deg))
    t1, t2 = torch.meshgrid(t, t, indexing="xy")  # columns θ₁, rows θ₂
    c1, c2 = torch.cos(t1), torch.cos(t2)
    with torch.no_grad():
        if head.normalize_weight:
            f1, f2 = head.margin(c1), head.margin(c2)
            o1, o2 = c1, c2
        else:
            norms = head.weight.detach().double().norm(dim=1)
            o1 = norms[0] * feature_norm * c1
            o2 = norms[1] * feature_norm * c2
            if head.bias is not None:
                o1, o2 = o1 + float(head.bias[0]), o2 + float(head.bias[1])
            f1, f2 = o1, o2
    win1 = (f1 > o2).numpy()
    win2 = (f2 > o1).numpy()
    return theta_deg, np.where(win1, 1, np.where(win2, 2, 0))
