"""Triplet mining on a hand-built batch whose selections are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from marginface.losses import TripletLoss, pairwise_distances

# Unit vectors on a circle. A, P have label 0; Nc, Ns, Nf label 1. Cosine distance 1 - cos(Δ).
A, P, NC, NS, NF = range(5)
ANGLES = [0.0, 20.0, 8.0, 35.0, 120.0]
LABELS = torch.tensor([0, 0, 1, 1, 1])
MARGIN = 0.2


def _points():
    t = torch.tensor([math.radians(a) for a in ANGLES], dtype=torch.float64)
    return torch.stack([torch.cos(t), torch.sin(t)], dim=1)


def _mined(mining: str) -> set[tuple[int, int, int]]:
    loss = TripletLoss(MARGIN, mining=mining, distance="cosine")
    a, p, n = loss.mine(pairwise_distances(_points(), "cosine"), LABELS)
    return set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))


def test_semihard_selection_with_fallback():
    # d(A,P)=0.060: band (0.060, 0.260) holds Ns (0.181).        -> (A, P, Ns)
    # d(P,A)=0.060: Nc 0.022, Ns 0.034, Nf 1.17: none in band    -> hardest: (P, A, Nc)
    # d(Nc,Ns)=0.109: A 0.010, P 0.022 not in band               -> hardest: (Nc, Ns, A)
    # d(Nc,Nf)=1.375: none in band                               -> hardest: (Nc, Nf, A)
    # d(Ns,Nc)=0.109: band (0.109, 0.309) holds A (0.181)        -> (Ns, Nc, A)
    # d(Ns,Nf)=0.913: none                                       -> hardest: (Ns, Nf, P)
    # d(Nf,Nc)=1.375: band (1.375, 1.575) holds A (1.5)          -> (Nf, Nc, A)
    # d(Nf,Ns)=0.913: A 1.5 and P 1.174 outside (0.913, 1.113)   -> hardest: (Nf, Ns, P)
    assert _mined("semihard") == {
        (A, P, NS),
        (P, A, NC),
        (NC, NS, A),
        (NC, NF, A),
        (NS, NC, A),
        (NS, NF, P),
        (NF, NC, A),
        (NF, NS, P),
    }


def test_semihard_without_fallback_keeps_only_the_band():
    loss = TripletLoss(MARGIN, mining="semihard", distance="cosine", semihard_fallback=False)
    a, p, n = loss.mine(pairwise_distances(_points(), "cosine"), LABELS)
    assert set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == {
        (A, P, NS),
        (NS, NC, A),
        (NF, NC, A),
    }


def test_batch_hard_selection():
    # farthest positive, nearest negative per anchor
    assert _mined("hard") == {(A, P, NC), (P, A, NC), (NC, NF, A), (NS, NF, P), (NF, NC, P)}


def test_all_selection_is_every_valid_triplet():
    mined = _mined("all")
    assert len(mined) == 2 * 1 * 3 + 3 * 2 * 2
    for a, p, n in mined:
        assert LABELS[a] == LABELS[p] and a != p and LABELS[a] != LABELS[n]


def test_loss_value_is_mean_over_positive_triplets():
    x = _points()
    d = pairwise_distances(x, "cosine")
    loss = TripletLoss(MARGIN, mining="hard", distance="cosine")(x, LABELS)
    terms = [max(0.0, d[a, p].item() - d[a, n].item() + MARGIN) for a, p, n in _mined("hard")]
    positive = [t for t in terms if t > 0]
    assert loss.item() == pytest.approx(sum(positive) / len(positive))


def test_squared_l2_is_two_minus_two_cos():
    x = _points()
    assert torch.allclose(
        pairwise_distances(x, "squared_l2"), 2 * pairwise_distances(x, "cosine"), atol=1e-12
    )


def test_no_valid_triplet_gives_zero_with_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(x, torch.tensor([0, 1, 2, 3]))  # no positives
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.all(x.grad == 0)
