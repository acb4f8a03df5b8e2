"""Partial FC: r = 1 equals the full head, r < 1 keeps every positive, the optimiser state of
rows that were not sampled is left alone."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from marginface.losses import create
from marginface.train.partial_fc import PartialFC, shard_range

HEADS = [
    ("arcface", {}),
    ("cosface", {}),
    ("softmax", {}),
    ("sphereface", {}),
    ("subcenter_arcface", {}),
    ("combined", {"m1": 1.0, "m2": 0.3, "m3": 0.2}),
]


@pytest.mark.parametrize(("name", "kwargs"), HEADS)
def test_rate_one_equals_full_head(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    C, D, B = 37, 16, 24
    head = create(name, num_classes=C, embedding_dim=D, **kwargs)
    pfc = PartialFC(copy.deepcopy(head), C, sample_rate=1.0, seed=None)
    x = torch.randn(B, D, requires_grad=True)
    y = torch.randint(0, C, (B,))
    x2 = x.detach().clone().requires_grad_(True)

    full = head(x, y)
    full.backward()
    part = pfc(x2, y)
    part.backward()
    assert torch.equal(full.detach(), part.detach())
    assert torch.equal(x.grad, x2.grad)
    sub = pfc.sampled_weight()
    assert torch.equal(head.weight.grad, sub.grad)


def test_rate_one_training_equals_plain_sgd() -> None:
    torch.manual_seed(1)
    C, D, B = 30, 8, 16
    head = create("arcface", num_classes=C, embedding_dim=D, scale=16.0)
    pfc = PartialFC(copy.deepcopy(head), C, sample_rate=1.0, seed=None)
    opt_full = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_pfc = torch.optim.SGD([{"params": []}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(4):
        x = torch.randn(B, D)
        y = torch.randint(0, C, (B,))
        head(x, y).backward()
        opt_full.step()
        opt_full.zero_grad()
        pfc(x, y).backward()
        pfc.attach(opt_pfc, 0)
        opt_pfc.step()
        pfc.detach(opt_pfc, 0)
    assert torch.equal(head.weight, pfc.head.weight)


def test_sampled_set_keeps_every_positive_and_has_fixed_size() -> None:
    torch.manual_seed(2)
    C, D, B = 1000, 8, 64
    pfc = PartialFC.create("arcface", C, D, sample_rate=0.1)
    for _ in range(5):
        y = torch.randint(0, C, (B,))
        x = torch.randn(B, D)
        pfc(x, y)
        index = pfc.last_index
        assert index.numel() == 100 == pfc.num_sampled(B)
        assert set(y.tolist()) <= set(index.tolist())
        assert torch.all(index[1:] > index[:-1])  # sorted, no duplicates
        # The remapped labels point at the right rows.
        assert torch.equal(index[pfc.last_labels], y)


def test_more_positives_than_rate_grows_the_sample() -> None:
    pfc = PartialFC.create("cosface", 50, 4, sample_rate=0.1)
    y = torch.arange(20)
    pfc(torch.randn(20, 4), y)
    assert pfc.last_index.numel() == 20
    assert set(pfc.last_index.tolist()) == set(range(20))


def test_sampled_loss_equals_head_on_the_sampled_rows() -> None:
    torch.manual_seed(3)
    C, D, B = 200, 8, 16
    pfc = PartialFC.create("arcface", C, D, sample_rate=0.2)
    x = torch.randn(B, D)
    y = torch.randint(0, C, (B,))
    loss = pfc(x, y)
    index = pfc.last_index
    ref = create("arcface", num_classes=index.numel(), embedding_dim=D)
    with torch.no_grad():
        ref.weight.copy_(pfc.head.weight[index])
    remapped = torch.searchsorted(index, y)
    assert torch.allclose(loss, ref(x, remapped), atol=1e-6)


def test_unsampled_rows_and_momentum_are_untouched() -> None:
    torch.manual_seed(4)
    C, D, B = 400, 8, 8
    pfc = PartialFC.create("arcface", C, D, sample_rate=0.05)
    opt = torch.optim.SGD([{"params": []}], lr=0.5, momentum=0.9, weight_decay=1e-2)
    seen: set[int] = set()
    before = pfc.head.weight.detach().clone()
    for _ in range(3):
        y = torch.randint(0, C, (B,))
        pfc(torch.randn(B, D), y).backward()
        seen |= set(pfc.last_index.tolist())
        pfc.attach(opt, 0)
        opt.step()
        pfc.detach(opt, 0)
    unseen = sorted(set(range(C)) - seen)
    assert unseen
    assert torch.equal(pfc.head.weight[unseen], before[unseen])
    momentum = pfc._opt_state["weight"]["momentum_buffer"]
    assert torch.count_nonzero(momentum[unseen]) == 0
    assert torch.count_nonzero(momentum[sorted(seen)].abs().sum(1)) == len(seen)
    assert not opt.state  # no stale per-step tensors left in the optimiser


def test_shards_cover_all_classes_and_seeded_init_is_layout_independent() -> None:
    C = 103
    ranges = [shard_range(C, r, 4) for r in range(4)]
    assert ranges[0][0] == 0 and ranges[-1][1] == C
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    whole = PartialFC.create("arcface", C, 6, seed=7).head.weight
    parts = [
        PartialFC.create("arcface", C, 6, rank=r, world_size=4, seed=7).head.weight
        for r in range(4)
    ]
    assert torch.equal(torch.cat(parts), whole)


def test_shard_state_round_trip() -> None:
    pfc = PartialFC.create("softmax", 40, 4, sample_rate=0.5)
    opt = torch.optim.AdamW([{"params": []}], lr=0.01)
    pfc(torch.randn(8, 4), torch.randint(0, 40, (8,))).backward()
    pfc.attach(opt, 0)
    opt.step()
    pfc.detach(opt, 0)
    state = pfc.shard_state()
    other = PartialFC.create("softmax", 40, 4, sample_rate=0.5, seed=99)
    other.load_shard_state(state)
    assert torch.equal(other.head.weight, pfc.head.weight)
    assert torch.equal(other.head.bias, pfc.head.bias)
    assert set(other._opt_state["weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    wrong = PartialFC.create("softmax", 40, 4, rank=1, world_size=2)
    with pytest.raises(ValueError, match="owns"):
        wrong.load_shard_state(state)
