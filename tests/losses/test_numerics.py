"""Numerical safety: extreme angles, low precision, large scales, monotone target logits."""

from __future__ import annotations

import math

import pytest
import torch

from marginface.losses import (
    ArcFace,
    CombinedMargin,
    CosFace,
    NormFace,
    SphereFace,
    SubCenterArcFace,
    create,
)

D, C = 16, 5
HEADS = {
    "normface": lambda: NormFace(C, D),
    "cosface": lambda: CosFace(C, D),
    "arcface": lambda: ArcFace(C, D),
    "combined": lambda: CombinedMargin(C, D),
    "sphereface": lambda: SphereFace(C, D),
    "subcenter": lambda: SubCenterArcFace(C, D, subcenters=2),
}


def _extreme_batch(head):
    """Row 0 exactly parallel to its class weight, row 1 exactly opposite."""
    w = head.weight.detach().reshape(-1, D)
    x = torch.stack([w[0] * 3.0, -w[0] * 3.0]).clone()
    labels = torch.tensor([0, 0])
    return x, labels


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("mode", ["float32", "bfloat16", "float16"])
def test_parallel_and_opposite_are_finite(name, mode):
    torch.manual_seed(0)
    head = HEADS[name]()
    x, labels = _extreme_batch(head)
    x.requires_grad_(True)
    if mode == "float32":
        loss = head(x, labels)
    else:
        dtype = getattr(torch, mode)
        with torch.autocast("cpu", dtype=dtype):
            loss = head(x.to(dtype), labels)
    gx, gw = torch.autograd.grad(loss, [x, head.weight])
    assert torch.isfinite(loss)
    assert torch.isfinite(gx).all()
    assert torch.isfinite(gw).all()


@pytest.mark.parametrize("name", ["normface", "cosface", "arcface", "combined"])
def test_fp16_autocast_does_not_overflow_at_scale_64(name):
    """At s = 64 a float16 softmax would overflow (e^64 > 65504); ours stays finite and exact."""
    torch.manual_seed(0)
    head = HEADS[name]()
    assert head.scale == 64.0
    w = torch.nn.functional.normalize(head.weight.detach(), dim=1)
    x = (w[[0, 1, 2, 3]] + 0.01 * torch.randn(4, D)).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3])
    ref = head(x, labels)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = head(x.half(), labels)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2, abs=2e-2)
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(g).all()


THETA = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)


@pytest.mark.parametrize(
    "head",
    [
        ArcFace(C, D, margin=0.5),
        ArcFace(C, D, margin=1.2),
        CombinedMargin(C, D, m1=1.0, m2=0.3, m3=0.2),
        CombinedMargin(C, D, m1=0.9, m2=0.4, m3=0.15),
        CombinedMargin(C, D, m1=1.35, m2=0.5, m3=0.0),
        CosFace(C, D),
        SphereFace(C, D, lambda_schedule=None),
        SphereFace(C, D),
    ],
    ids=lambda h: repr(h).split("(")[0] + h.extra_repr(),
)
def test_target_logit_is_monotone_non_increasing(head):
    curve = head.target_logit(THETA)
    diffs = curve[1:] - curve[:-1]
    assert (diffs <= 1e-12).all(), float(diffs.max())


def test_arcface_rule_past_pi_minus_m_is_continuous():
    m = 0.5
    head = ArcFace(C, D, margin=m, scale=1.0)
    t0 = torch.tensor([math.pi - m - 1e-9, math.pi - m + 1e-9], dtype=torch.float64)
    left, right = head.target_logit(t0)
    assert left.item() == pytest.approx(-1.0, abs=1e-6)
    assert right.item() == pytest.approx(-1.0, abs=1e-6)
    at_pi = head.target_logit(torch.tensor([math.pi], dtype=torch.float64))
    assert at_pi.item() == pytest.approx(-1.0 - (1.0 - math.cos(m)), abs=1e-6)


def test_easy_margin_only_where_cos_positive():
    head = ArcFace(C, D, margin=0.5, easy_margin=True, scale=1.0)
    theta = torch.tensor([0.3, 2.0], dtype=torch.float64)
    out = head.target_logit(theta)
    assert out[0].item() == pytest.approx(math.cos(0.8))
    assert out[1].item() == pytest.approx(math.cos(2.0))


def test_registry_builds_every_head_with_target_logit():
    for name in [
        "softmax",
        "normface",
        "sphereface",
        "cosface",
        "arcface",
        "combined",
        "subcenter_arcface",
    ]:
        head = create(name, num_classes=C, embedding_dim=D)
        curve = head.target_logit(THETA[::1000])
        assert curve.shape == (21,)
        assert torch.isfinite(curve).all()
