"""P×K batch sampler and the resumable distributed sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from marginface.data import (
    ImageFolderDataset,
    PKSampler,
    ResumableSampler,
    SeededBatches,
    build_transform,
    collate_faces,
)


def _labels() -> np.ndarray:
    # 23 identities with 1..12 images each, shuffled so identities are not contiguous.
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(1 + (c * 5) % 12, c) for c in range(23)])
    return labels[rng.permutation(len(labels))]


def test_every_batch_has_p_identities_times_k() -> None:
    labels = _labels()
    sampler = PKSampler(labels, p=5, k=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 23 // 5
    seen = set()
    for batch in batches:
        assert len(batch) == 20
        per_id = Counter(labels[batch].tolist())
        assert len(per_id) == 5 and set(per_id.values()) == {4}
        seen |= set(per_id)
        for c in per_id:  # distinct images when the identity has enough, all of them otherwise
            chosen = [i for i in batch if labels[i] == c]
            available = int((labels == c).sum())
            assert len(set(chosen)) == min(4, available)
    assert len(seen) == 20  # each identity at most once per epoch


def test_pk_is_deterministic_and_changes_with_epoch() -> None:
    labels = _labels()
    a = PKSampler(labels, p=4, k=2, seed=7)
    b = PKSampler(labels, p=4, k=2, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKSampler(labels, p=4, k=2, seed=8)) != first


def test_pk_min_images_and_fixed_epoch_length() -> None:
    labels = _labels()
    counts = np.bincount(labels)
    sampler = PKSampler(labels, p=3, k=2, min_images=4, batches_per_epoch=50)
    assert len(sampler) == 50
    for batch in sampler:
        ids = labels[batch]
        assert all(counts[c] >= 4 for c in ids)
        assert len(set(ids.tolist())) == 3
    with pytest.raises(ValueError, match="a P×K batch needs p=30"):
        PKSampler(labels, p=30, k=2)


def test_pk_ddp_ranks_partition_the_global_batches() -> None:
    labels = _labels()
    single = PKSampler(labels, p=2, k=3, seed=5, rank=0, world_size=1)
    ranks = [PKSampler(labels, p=2, k=3, seed=5, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == len(single) // 3 for s in ranks)
    global_batches = list(single)
    for r, s in enumerate(ranks):
        assert list(s) == global_batches[r::3][: len(s)]


def test_pk_resumes_mid_epoch() -> None:
    labels = _labels()
    sampler = PKSampler(labels, p=2, k=2, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = [next(it) for _ in range(4)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["position"] == 4
    fresh = PKSampler(labels, p=2, k=2, seed=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # the training loop calls this again: position is kept
    assert len(fresh) == len(full) - 4
    assert head + list(fresh) == full
    assert len(list(fresh)) == len(full)  # the next pass is a whole epoch again
    with pytest.raises(ValueError, match="saved with k=2"):
        PKSampler(labels, p=2, k=3, seed=1).load_state_dict(state)


def test_resumable_sampler_matches_distributed_semantics() -> None:
    n = 103
    ranks = [ResumableSampler(n, seed=4, rank=r, world_size=4) for r in range(4)]
    orders = [list(s) for s in ranks]
    assert all(len(o) == 26 for o in orders)
    assert set().union(*map(set, orders)) == set(range(n))  # padded by repetition
    dropped = [
        list(ResumableSampler(n, seed=4, rank=r, world_size=4, drop_last=True)) for r in range(4)
    ]
    flat = [i for order in dropped for i in order]
    assert len(flat) == len(set(flat)) == 100
    seq = list(ResumableSampler(10, shuffle=False))
    assert seq == list(range(10))


def test_resumable_sampler_exact_resume_with_dataloader_prefetch() -> None:
    n = 50
    sampler = ResumableSampler(n, seed=9)
    sampler.set_epoch(3)
    loader = DataLoader(list(range(n)), batch_size=4, sampler=sampler, num_workers=0)
    it = iter(loader)
    consumed = [next(it) for _ in range(5)]
    state = sampler.state_dict(consumed=5 * 4)  # what the loop used, not what was prefetched
    resumed = ResumableSampler(n, seed=9)
    resumed.load_state_dict(state)
    rest = list(DataLoader(list(range(n)), batch_size=4, sampler=resumed))
    got = torch.cat(consumed + rest).tolist()
    reference = ResumableSampler(n, seed=9)
    reference.set_epoch(3)
    assert got == list(reference)


def test_pk_sampler_feeds_a_dataloader_on_real_faces(celeba_subset: Path) -> None:
    ds = ImageFolderDataset(celeba_subset, transform=build_transform("flip"))
    sampler = PKSampler(ds.labels, p=4, k=3, seed=0, min_images=2)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_faces, num_workers=0)
    batch = next(iter(loader))
    assert batch.images.shape == (12, 3, 112, 112)
    assert sorted(Counter(batch.labels.tolist()).values()) == [3, 3, 3, 3]


def test_seeded_batches_count_in_batches_and_resume_mid_epoch() -> None:
    """The trainer's batch sampler: keys ``(index, epoch, seed)``, a shorter last batch kept
    (not a single sample), and ``seek`` continuing exactly where a run stopped."""
    keep = SeededBatches(ResumableSampler(10, seed=2), batch_size=4, seed=7, drop_last=False)
    assert keep.per_epoch == len(keep) == 3
    keep.seek(1)
    whole = list(keep)
    assert [len(b) for b in whole] == [4, 4, 2]
    assert {(e, s) for b in whole for _, e, s in b} == {(1, 7)}
    assert sorted(i for b in whole for i, _, _ in b) == list(range(10))
    keep.seek(1, batches_done=2)
    assert list(keep) == whole[2:]
    assert SeededBatches(ResumableSampler(9), batch_size=4, seed=0, drop_last=False).per_epoch == 2
    drop = SeededBatches(ResumableSampler(10, seed=2), batch_size=4, seed=7)
    drop.seek(1)
    assert list(drop) == whole[:2]
    pk = SeededBatches(PKSampler(_labels(), p=5, k=4, seed=3), batch_size=0, seed=3)
    assert pk.batch_size == 20 and pk.per_epoch == 23 // 5
    assert pk.state_dict(2)["position"] == 2  # P×K positions count batches ...
    assert drop.state_dict(2)["position"] == 8  # ... the random sampler's count samples
    pk.seek(4, batches_done=1)
    rest = list(pk)
    pk.seek(4)
    assert [[i for i, _, _ in b] for b in rest] == [[i for i, _, _ in b] for b in list(pk)[1:]]
