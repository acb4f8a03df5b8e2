"""CosFace's bounds, the centre and inter-class losses, and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from marginface.losses import (
    CenterLoss,
    InterClassLoss,
    NormFace,
    cosface_margin_range,
    cosface_min_scale,
    create,
    is_head,
    list_losses,
)


def test_cosface_min_scale_formula():
    # (C-1)/C * log((C-1) P / (1-P)) for C = 10575 (CASIA), P = 0.9
    c, p = 10575, 0.9
    assert cosface_min_scale(c, p) == pytest.approx((c - 1) / c * math.log((c - 1) * 9.0))
    assert cosface_min_scale(c, p) == pytest.approx(11.4, abs=0.1)
    assert cosface_min_scale(2, 0.5) == pytest.approx(0.0)
    assert cosface_min_scale(100, 0.99) > cosface_min_scale(100, 0.9)


def test_min_scale_really_reaches_the_posterior():
    """With C classes on a regular simplex and s at the bound, the target gets P_W exactly."""
    c, p = 5, 0.95
    s = cosface_min_scale(c, p)
    # Simplex: cos to own class 1, to others -1/(C-1).
    logits = torch.tensor([s * 1.0] + [s * -1.0 / (c - 1)] * (c - 1), dtype=torch.float64)
    assert torch.softmax(logits, 0)[0].item() == pytest.approx(p, rel=1e-9)


def test_cosface_margin_range():
    assert cosface_margin_range(2) == (0.0, 2.0)
    assert cosface_margin_range(11)[1] == pytest.approx(1.1)
    with pytest.raises(ValueError):
        cosface_margin_range(1)
    with pytest.raises(ValueError):
        cosface_min_scale(10, 1.0)


def test_center_loss_value_and_pull():
    loss = CenterLoss(3, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    labels = torch.tensor([0, 1])
    assert loss(x, labels).item() == pytest.approx(0.5 * (1.0 + 4.0) / 2)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    before = loss(x, labels).item()
    for _ in range(20):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    assert loss(x, labels).item() < 0.01 * before


def test_interclass_loss_spreads_class_weights():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 3) * 0.1 + torch.tensor([1.0, 0.0, 0.0]))
    inter = InterClassLoss("max")
    start = inter(w).item()
    opt = torch.optim.SGD([w], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        inter(w).backward()
        opt.step()
    assert start > 0.9
    assert inter(w).item() < 0.6  # six directions in 3-D: best max-cos is 0 (octahedron)


def test_interclass_loss_on_classes_of_a_batch():
    w = torch.eye(4)
    w[1] = torch.tensor([1.0, 0.1, 0.0, 0.0])
    inter = InterClassLoss("max")
    only_23 = inter(w, torch.tensor([2, 3, 3]))
    assert only_23.item() == pytest.approx(0.0, abs=1e-6)
    assert inter(w, torch.tensor([0])).item() == pytest.approx(1 / math.sqrt(1.01), rel=1e-5)


def test_registry():
    assert set(list_losses()) >= {
        "softmax",
        "normface",
        "sphereface",
        "cosface",
        "arcface",
        "combined",
        "subcenter_arcface",
        "triplet",
        "center",
        "interclass",
    }
    assert is_head("ArcFace") and is_head("nsl") and not is_head("triplet")
    head = create("lmcl", num_classes=4, embedding_dim=8, margin=0.2, scale=30)
    assert head.m == 0.2 and head.scale == 30.0
    sph = create(
        "sphereface",
        num_classes=4,
        embedding_dim=8,
        lambda_schedule={"base": 10.0, "lambda_min": 0.0},
    )
    assert sph.lam == pytest.approx(10.0)
    assert isinstance(create("normface", num_classes=3, embedding_dim=2), NormFace)
    assert create("triplet", margin=0.3, mining="hard").margin == 0.3
