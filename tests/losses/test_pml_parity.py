"""Agreement with pytorch-metric-learning where the definitions coincide (shared weights)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances, losses, miners

from marginface.losses import ArcFace, CosFace, NormFace, SphereFace, TripletLoss

B, D, C = 32, 16, 10


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (B,), generator=g)
    return x, labels


def _compare(ours, theirs, x, labels):
    with torch.no_grad():
        theirs.W.copy_(ours.weight.t())
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    la = ours(xa, labels)
    lb = theirs(xb, labels)
    assert la.item() == pytest.approx(lb.item(), rel=1e-5, abs=1e-5)
    ga, gwa = torch.autograd.grad(la, [xa, ours.weight])
    gb, gwb = torch.autograd.grad(lb, [xb, theirs.W])
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-5)
    assert torch.allclose(gwa, gwb.t(), atol=1e-5, rtol=1e-5)


def test_arcface_matches_pml():
    # Angles here stay below π - m, where PML's rule and ours coincide.
    x, labels = _batch()
    ours = ArcFace(C, D, scale=64.0, margin=0.5).double().eval()
    theirs = losses.ArcFaceLoss(C, D, margin=math.degrees(0.5), scale=64.0).double()
    _compare(ours, theirs, x, labels)


def test_cosface_matches_pml():
    x, labels = _batch(1)
    ours = CosFace(C, D, scale=64.0, margin=0.35).double().eval()
    theirs = losses.CosFaceLoss(C, D, margin=0.35, scale=64.0).double()
    _compare(ours, theirs, x, labels)


def test_normface_matches_pml():
    x, labels = _batch(2)
    ours = NormFace(C, D, scale=20.0).double().eval()
    theirs = losses.NormalizedSoftmaxLoss(C, D, temperature=1 / 20.0).double()
    _compare(ours, theirs, x, labels)


def test_sphereface_without_lambda_matches_pml():
    x, labels = _batch(3)
    ours = SphereFace(C, D, margin=4, lambda_schedule=None).double().eval()
    theirs = losses.SphereFaceLoss(C, D, margin=4, scale=1).double()
    _compare(ours, theirs, x, labels)


@pytest.mark.parametrize(
    "mining,miner",
    [
        (
            "all",
            lambda m, d: miners.TripletMarginMiner(margin=m, type_of_triplets="all", distance=d),
        ),
        (
            "semihard",
            lambda m, d: miners.TripletMarginMiner(
                margin=m, type_of_triplets="semihard", distance=d
            ),
        ),
        ("hard", lambda m, d: miners.BatchHardMiner(distance=d)),
    ],
)
@pytest.mark.parametrize("distance", ["squared_l2", "cosine"])
def test_triplet_matches_pml(mining, miner, distance):
    torch.manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    x = torch.randn(32, D, dtype=torch.float64)
    margin = 0.2
    d = distances.LpDistance(power=2) if distance == "squared_l2" else distances.CosineSimilarity()
    theirs = losses.TripletMarginLoss(margin=margin, distance=d)
    ours = TripletLoss(margin, mining=mining, distance=distance, semihard_fallback=False)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    la = ours(xa, labels)
    lb = theirs(xb, labels, miner(margin, d)(xb, labels))
    assert ours.last_triplet_count > 0
    assert la.item() == pytest.approx(lb.item(), rel=1e-5, abs=1e-6)
    (ga,) = torch.autograd.grad(la, xa)
    (gb,) = torch.autograd.grad(lb, xb)
    assert torch.allclose(ga, gb, atol=1e-5)
