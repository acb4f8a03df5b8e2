"""Bad input gets a ValueError naming the problem, never an index error from inside torch."""

from __future__ import annotations

import pytest
import torch

from marginface.losses import ArcFace, CenterLoss, SphereFace, TripletLoss, create

C, D = 10, 8


@pytest.fixture(
    params=[
        "softmax",
        "normface",
        "sphereface",
        "cosface",
        "arcface",
        "combined",
        "subcenter_arcface",
    ]
)
def head(request):
    return create(request.param, num_classes=C, embedding_dim=D)


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.tensor([0, 10]), "out of range"),
        (torch.tensor([0, -1]), "non-negative"),
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([True, False]), "integer"),
        (torch.tensor([[0, 1]]), "1-D"),
        (torch.tensor([0, 1, 2]), "3 entries"),
        ([0, 1], "torch.Tensor"),
    ],
)
def test_bad_labels(head, labels, match):
    with pytest.raises(ValueError, match=match):
        head(torch.randn(2, D), labels)


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(2, D + 1), "dimension mismatch"),
        (torch.randn(2, D, 1), "2-D"),
        (torch.empty(0, D), "empty batch"),
        (torch.tensor([[float("nan")] * D, [0.0] * D]), "NaN or inf"),
        (torch.tensor([[float("inf")] * D, [0.0] * D]), "NaN or inf"),
        (torch.ones(2, D, dtype=torch.long), "floating point"),
    ],
)
def test_bad_embeddings(head, x, match):
    with pytest.raises(ValueError, match=match):
        head(
            x,
            torch.tensor([0, 1])[: max(1, x.shape[0])]
            if x.shape[0]
            else torch.empty(0, dtype=torch.long),
        )


def test_int32_labels_are_accepted():
    head = ArcFace(C, D)
    loss = head(torch.randn(3, D), torch.tensor([1, 2, 3], dtype=torch.int32))
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ArcFace(1, D), "at least 2"),
        (lambda: ArcFace(C, D, margin=-0.1), "non-negative"),
        (lambda: ArcFace(C, D, scale=0), "positive"),
        (lambda: SphereFace(C, D, margin=2.5), "integer"),
        (lambda: create("combined", num_classes=C, embedding_dim=D, m1=0.0), "m1"),
        (lambda: create("subcenter_arcface", num_classes=C, embedding_dim=D, subcenters=0), "subc"),
        (lambda: create("arcfase", num_classes=C, embedding_dim=D), "unknown loss 'arcfase'"),
        (lambda: create("arcface"), "needs num_classes"),
        (lambda: TripletLoss(mining="hardest"), "unknown mining"),
        (lambda: TripletLoss(distance="l1"), "unknown distance"),
        (lambda: TripletLoss(margin=-1), "non-negative"),
    ],
)
def test_bad_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_triplet_and_center_validate():
    with pytest.raises(ValueError, match="labels has 3 entries"):
        TripletLoss()(torch.randn(4, D), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        CenterLoss(C, D)(torch.randn(2, D), torch.tensor([0, C]))
