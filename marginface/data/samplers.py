"""Deterministic, resumable samplers for single-process and DDP training.

Both samplers derive every epoch's order from ``(seed, epoch)`` alone, so all ranks agree
without communication, and both expose a *position* so a run stopped mid-epoch continues with
exactly the samples it had not seen:

    state = sampler.state_dict(consumed=batches_done_this_epoch)   # save with the checkpoint
    sampler.load_state_dict(state)                                  # after restart
    for batch in loader: ...                                        # resumes mid-epoch

DataLoader workers prefetch, so the sampler cannot know what the training loop consumed; pass
``consumed`` (batches for :class:`PKSampler`, samples for :class:`ResumableSampler`) counted in
this epoch on this rank. Without it the sampler's own count of what it handed out is used.

:class:`SeededBatches` is the trainer's batch sampler over either: it counts positions in
batches whatever it wraps, and yields ``(index, epoch, seed)`` keys for
:class:`~marginface.data.datasets.SeededSamples` (augmentation seeded per sample).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PKSampler", "ResumableSampler", "SeededBatches"]


def _check_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if world_size is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            world_size = 1 if world_size is None else world_size
            rank = 0 if rank is None else rank
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world size {world_size}")
    return rank, world_size


class _ResumableMixin:
    epoch: int
    _start: int
    _handed_out: int

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (resets the position)."""
        if epoch != self.epoch:
            self._start = 0
        self.epoch = int(epoch)
        self._handed_out = self._start

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """``{"epoch", "position", ...}``; ``consumed`` overrides the position (see module doc)."""
        position = self._handed_out if consumed is None else int(consumed)
        return {"epoch": self.epoch, "position": position, **self._identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: next iteration starts at its position."""
        mine = self._identity()
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]!r}, this sampler has {value!r}"
                )
        self.epoch = int(state["epoch"])
        self._start = int(state["position"])
        self._handed_out = self._start

    def _identity(self) -> dict[str, Any]:
        raise NotImplementedError


class ResumableSampler(_ResumableMixin, Sampler[int]):
    """Random (or sequential) sample order, split across DDP ranks, resumable mid-epoch.

    Like :class:`torch.utils.data.DistributedSampler`: each epoch is a permutation of all
    samples seeded by ``seed + epoch``; with ``drop_last=False`` it is padded by repeating
    samples so every rank gets the same count, and rank ``r`` takes items ``r, r + W, ...``.
    The position is the number of samples already consumed on this rank in this epoch.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the data set is empty")
        self.num_total = int(num_samples)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = _check_rank(rank, world_size)
        self.drop_last = drop_last
        if drop_last:
            self.per_rank = self.num_total // self.world_size
        else:
            self.per_rank = -(-self.num_total // self.world_size)
        if self.per_rank == 0:
            raise ValueError(f"{num_samples} samples cannot feed {self.world_size} ranks")
        self.epoch = 0
        self._start = 0
        self._handed_out = 0

    def _identity(self) -> dict[str, Any]:
        return {
            "kind": "resumable",
            "seed": self.seed,
            "num_samples": self.num_total,
            "world_size": self.world_size,
            "rank": self.rank,
            "shuffle": self.shuffle,
        }

    def order(self, epoch: int) -> np.ndarray:
        """This rank's full index order for ``epoch``."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.num_total)
        else:
            order = np.arange(self.num_total)
        total = self.per_rank * self.world_size
        if total > len(order):
            reps = -(-total // len(order))
            order = np.tile(order, reps)
        order = order[:total]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.per_rank - min(self._start, self.per_rank)

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        start = min(self._start, self.per_rank)
        self._handed_out = start
        self._start = 0  # the next epoch (or a second iteration) starts from the beginning
        for i in order[start:]:
            self._handed_out += 1
            yield int(i)


class PKSampler(_ResumableMixin, Sampler[list[int]]):
    """Batch sampler: each batch holds ``p`` identities × ``k`` images (FaceNet-style P×K).

    Use it as a DataLoader ``batch_sampler``. Every epoch visits each eligible identity (at
    least ``min_images`` images) once, in an order seeded by ``(seed, epoch)``, ``p`` per batch;
    ``batches_per_epoch`` instead fixes the epoch length (cycling through identities as often as
    needed). An identity with at least ``k`` images contributes ``k`` distinct ones, chosen at
    random; one with fewer contributes all of them plus random repeats (sampling with
    replacement). Under DDP, global batches are dealt round-robin: rank ``r`` gets global
    batches ``r, r + W, ...``, and each rank sees the same number. The position is the number
    of batches this rank consumed in this epoch.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        *,
        seed: int = 0,
        min_images: int = 1,
        batches_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be positive, got p={p}, k={k}")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.p, self.k = int(p), int(k)
        self.seed = int(seed)
        self.rank, self.world_size = _check_rank(rank, world_size)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keep = counts >= max(1, min_images)
        self._order = order
        self.classes = classes[keep]
        self._starts = starts[keep]
        self._counts = counts[keep]
        if len(self.classes) < self.p:
            raise ValueError(
                f"only {len(self.classes)} identities have at least {min_images} "
                f"images; a P×K batch needs p={self.p}"
            )
        if batches_per_epoch is None:
            global_batches = len(self.classes) // self.p
        else:
            global_batches = int(batches_per_epoch) * self.world_size
        self.batches_per_rank = global_batches // self.world_size
        if self.batches_per_rank < 1:
            raise ValueError(
                f"{len(self.classes)} identities make {global_batches} batches of "
                f"p={self.p}: too few for {self.world_size} ranks"
            )
        self.epoch = 0
        self._start = 0
        self._handed_out = 0

    @property
    def batch_size(self) -> int:
        """``p * k``."""
        return self.p * self.k

    def _identity(self) -> dict[str, Any]:
        return {
            "kind": "pk",
            "seed": self.seed,
            "p": self.p,
            "k": self.k,
            "world_size": self.world_size,
            "rank": self.rank,
            "num_identities": len(self.classes),
        }

    def __len__(self) -> int:
        return self.batches_per_rank - min(self._start, self.batches_per_rank)

    def _identity_order(self, rng: np.random.Generator, n_global: int) -> np.ndarray:
        """``(n_global, p)`` identity indices; each row is distinct (cut from one permutation)."""
        per_perm = len(self.classes) // self.p
        rows: list[np.ndarray] = []
        n_rows = 0
        while n_rows < n_global:
            perm = rng.permutation(len(self.classes))[: per_perm * self.p]
            rows.append(perm.reshape(per_perm, self.p))
            n_rows += per_perm
        return np.concatenate(rows)[:n_global]

    def _draw(self, rng: np.random.Generator, c: int) -> np.ndarray:
        start, count = self._starts[c], self._counts[c]
        members = self._order[start : start + count]
        if count >= self.k:
            return members[rng.choice(count, self.k, replace=False)]
        extra = members[rng.integers(0, count, self.k - count)]
        return rng.permutation(np.concatenate([members, extra]))

    def batches(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        """This rank's batches for ``epoch``, from its ``start``-th batch (deterministic)."""
        n_global = self.batches_per_rank * self.world_size
        rng = np.random.default_rng([self.seed, epoch])
        ids = self._identity_order(rng, n_global)
        # One generator per global batch: skipping batches (other ranks', or already consumed
        # ones when resuming) costs nothing and changes nothing.
        for b in range(start * self.world_size + self.rank, n_global, self.world_size):
            batch_rng = np.random.default_rng([self.seed, epoch, b])
            yield np.concatenate([self._draw(batch_rng, c) for c in ids[b]]).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        start = min(self._start, self.batches_per_rank)
        self._handed_out = start
        self._start = 0
        for batch in self.batches(self.epoch, start):
            self._handed_out += 1
            yield batch


class SeededBatches:
    """The trainer's batch sampler: batches of ``(index, epoch, seed)`` keys, positioned in batches.

    It wraps a :class:`PKSampler` (already a batch sampler) or a :class:`ResumableSampler`,
    whose samples it groups into batches of ``batch_size``: ``drop_last=False`` keeps a shorter
    last batch of an epoch, unless it would hold a single sample (BatchNorm needs two). The
    keys let :class:`~marginface.data.datasets.SeededSamples` draw each sample's augmentation
    from ``(seed, epoch, index)`` alone.

    ``seek(epoch, batches_done)`` selects the epoch and skips the batches already trained (a
    resume in mid-epoch); ``state_dict(batches_done)`` is the wrapped sampler's state there.
    """

    def __init__(
        self,
        sampler: PKSampler | ResumableSampler,
        *,
        batch_size: int,
        seed: int,
        drop_last: bool = True,
    ) -> None:
        self.sampler = sampler
        self.seed = int(seed)
        self.epoch = 0
        self.drop_last = drop_last
        self.pk = isinstance(sampler, PKSampler)
        self.batch_size = sampler.batch_size if isinstance(sampler, PKSampler) else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")

    def _batches(self, samples: int) -> int:
        full, rest = divmod(samples, self.batch_size)
        return full + (1 if rest >= 2 and not self.drop_last else 0)

    @property
    def per_epoch(self) -> int:
        """Batches in a whole epoch on this rank."""
        if isinstance(self.sampler, PKSampler):
            return self.sampler.batches_per_rank
        return self._batches(self.sampler.per_rank)

    def __len__(self) -> int:
        if isinstance(self.sampler, PKSampler):
            return len(self.sampler)
        return self._batches(len(self.sampler))

    def seek(self, epoch: int, batches_done: int = 0) -> None:
        """Iterate ``epoch`` next, from its batch ``batches_done`` on."""
        self.sampler.set_epoch(epoch)
        self.epoch = int(epoch)
        if batches_done:
            self.sampler.load_state_dict(self.state_dict(batches_done))

    def state_dict(self, batches_done: int) -> dict[str, Any]:
        """The wrapped sampler's state after ``batches_done`` batches of the current epoch."""
        per_batch = 1 if self.pk else self.batch_size
        return self.sampler.state_dict(consumed=batches_done * per_batch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the same epoch and position)."""
        self.sampler.load_state_dict(state)
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, seed = self.epoch, self.seed
        for batch in self._index_batches():
            yield [(int(i), epoch, seed) for i in batch]

    def _index_batches(self) -> Iterator[list[int]]:
        if isinstance(self.sampler, PKSampler):
            yield from self.sampler
            return
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if len(batch) >= 2 and not self.drop_last:
            yield batch
