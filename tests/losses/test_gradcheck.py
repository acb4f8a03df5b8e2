"""torch.autograd.gradcheck in float64 for every head and metric loss."""

from __future__ import annotations

import pytest
import torch

from marginface.losses import (
    ArcFace,
    CenterLoss,
    CombinedMargin,
    CosFace,
    InterClassLoss,
    NormFace,
    Softmax,
    SphereFace,
    SubCenterArcFace,
    TripletLoss,
)

B, D, C = 5, 6, 7

HEADS = {
    "softmax": lambda: Softmax(C, D),
    "normface": lambda: NormFace(C, D, scale=8.0),
    "cosface": lambda: CosFace(C, D, scale=8.0),
    "arcface": lambda: ArcFace(C, D, scale=8.0),
    "arcface_easy": lambda: ArcFace(C, D, scale=8.0, easy_margin=True),
    "combined": lambda: CombinedMargin(C, D, scale=8.0),
    "sphereface": lambda: SphereFace(C, D),
    "sphereface_fixed_scale": lambda: SphereFace(C, D, scale=8.0, lambda_schedule=None),
    "subcenter": lambda: SubCenterArcFace(C, D, scale=8.0, subcenters=2),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradcheck_head(name):
    torch.manual_seed(0)
    head = HEADS[name]().double().eval()
    head.chunk_size = 3  # exercise the chunked path
    x = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn_like(head.weight, requires_grad=True)
    labels = torch.randint(0, C, (B,))

    def fn(x, w):
        return head.loss_with_weight(x, labels, w, head.bias)

    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5)


def test_gradcheck_softmax_bias():
    torch.manual_seed(0)
    head = Softmax(C, D).double()
    x = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    assert torch.autograd.gradcheck(
        lambda x, b: head.loss_with_weight(x, labels, head.weight, b), (x, b)
    )


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
@pytest.mark.parametrize("distance", ["squared_l2", "cosine"])
def test_gradcheck_triplet(mining, distance):
    torch.manual_seed(0)
    x = torch.randn(12, D, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(3)
    loss = TripletLoss(0.5, mining=mining, distance=distance)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (x,))


def test_gradcheck_center_and_interclass():
    torch.manual_seed(0)
    center = CenterLoss(C, D).double()
    x = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    assert torch.autograd.gradcheck(lambda x: center(x, labels), (x,))
    w = torch.randn(C, D, dtype=torch.float64, requires_grad=True)
    for reduction in ("max", "mean"):
        inter = InterClassLoss(reduction, chunk_size=3)
        assert torch.autograd.gradcheck(lambda w, inter=inter: inter(w), (w,))
