"""Every head against a naive float64 reference: loss and gradients."""

from __future__ import annotations

import pytest
import torch
from reference import naive_head_loss

from marginface.losses import (
    ArcFace,
    CombinedMargin,
    CosFace,
    LambdaSchedule,
    NormFace,
    Softmax,
    SphereFace,
    SubCenterArcFace,
)

B, D, C = 6, 8, 11

CASES = [
    ("softmax", lambda: Softmax(C, D), {}),
    ("normface", lambda: NormFace(C, D, scale=16.0), {"s": 16.0}),
    ("cosface", lambda: CosFace(C, D, scale=16.0, margin=0.35), {"s": 16.0, "m": 0.35}),
    ("arcface", lambda: ArcFace(C, D, scale=16.0, margin=0.5), {"s": 16.0, "m": 0.5}),
    (
        "combined",
        lambda: CombinedMargin(C, D, m1=0.9, m2=0.4, m3=0.15, scale=16.0),
        {"s": 16.0, "m1": 0.9, "m2": 0.4, "m3": 0.15},
    ),
    ("sphereface", lambda: SphereFace(C, D, margin=4, lambda_schedule=None), {"m": 4, "lam": 0.0}),
    (
        "sphereface",
        lambda: SphereFace(
            C, D, margin=3, lambda_schedule=LambdaSchedule(base=7.0, gamma=0.0, lambda_min=0.0)
        ),
        {"m": 3, "lam": 7.0},
    ),
    (
        "subcenter",
        lambda: SubCenterArcFace(C, D, subcenters=3, scale=16.0, margin=0.5),
        {"s": 16.0, "m": 0.5},
    ),
]


def _inputs(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * 2.0
    labels = torch.randint(0, C, (B,), generator=g)
    return x.to(dtype), labels


@pytest.mark.parametrize(
    "kind,make,params", CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk", [4, 4096])
def test_head_matches_naive_reference(kind, make, params, dtype, chunk):
    torch.manual_seed(1)
    head = make()
    head.chunk_size = chunk
    with torch.no_grad():
        head.weight.normal_()
        if head.bias is not None:
            head.bias.normal_()
    head = head.to(dtype).eval()  # eval: SphereFace's λ does not advance
    x, labels = _inputs(dtype)
    x.requires_grad_(True)
    loss = head(x, labels)
    gx, gw = torch.autograd.grad(loss, [x, head.weight])

    x64 = x.detach().double().requires_grad_(True)
    w64 = head.weight.detach().double().requires_grad_(True)
    b64 = head.bias.detach().double().requires_grad_(True) if head.bias is not None else None
    ref = naive_head_loss(kind, x64, w64, labels, b64, **params)
    rx, rw = torch.autograd.grad(ref, [x64, w64])

    tol = 1e-6 if dtype == torch.float64 else 2e-5
    assert loss.dtype == dtype or dtype == torch.float32
    assert abs(loss.item() - ref.item()) <= tol * max(1.0, abs(ref.item()))
    assert torch.allclose(gx.double(), rx, atol=tol, rtol=tol)
    assert torch.allclose(gw.double(), rw, atol=tol, rtol=tol)
    if head.bias is not None:
        (gb,) = torch.autograd.grad(head(x, labels), [head.bias])
        (rb,) = torch.autograd.grad(naive_head_loss(kind, x64, w64, labels, b64, **params), [b64])
        assert torch.allclose(gb.double(), rb, atol=tol, rtol=tol)


def test_margin_free_logits_and_accuracy():
    head = CosFace(C, D, scale=10.0, margin=0.3)
    x, _ = _inputs(torch.float32)
    logits = head.logits(x)
    assert logits.shape == (B, C)
    expected = (
        10.0
        * torch.nn.functional.normalize(x, dim=1)
        @ torch.nn.functional.normalize(head.weight, dim=1).t()
    )
    assert torch.allclose(logits, expected, atol=1e-5)


def test_loss_with_weight_uses_given_rows():
    """Partial FC passes a subset of rows with remapped labels: same as a head of those rows."""
    torch.manual_seed(0)
    head = ArcFace(C, D, scale=16.0)
    x, labels = _inputs(torch.float32)
    rows = torch.unique(torch.cat([labels, torch.tensor([0, 3, 9])]))
    remap = {int(r): i for i, r in enumerate(rows)}
    sub_labels = torch.tensor([remap[int(v)] for v in labels])
    small = ArcFace(len(rows), D, scale=16.0)
    with torch.no_grad():
        small.weight.copy_(head.weight[rows])
    a = head.loss_with_weight(x, sub_labels, head.weight[rows])
    b = small(x, sub_labels)
    assert torch.allclose(a, b, atol=1e-6)


def test_sphereface_lambda_anneals_with_iterations():
    head = SphereFace(C, D)  # default schedule: base 1000, gamma 0.12, power 1, min 5
    assert head.lam == pytest.approx(1000.0)
    x, labels = _inputs(torch.float32)
    head.train()
    for _ in range(3):
        head(x, labels).backward()
    assert int(head.iteration) == 3
    assert head.lam == pytest.approx(1000.0 / (1 + 0.12 * 3))
    head.iteration.fill_(10**6)
    assert head.lam == pytest.approx(5.0)
    head.eval()
    head(x, labels)
    assert int(head.iteration) == 10**6  # evaluation does not advance the schedule
    assert "iteration" in head.state_dict()
