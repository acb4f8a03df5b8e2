"""Partial FC: sampled and model-parallel class centres for any margin head.

:class:`PartialFC` wraps a :class:`~marginface.losses.MarginHead` whose ``weight`` holds this
rank's shard of the class centres (all of them on a single process). Each training step:

1. **Sharding (DDP).** Rank ``r`` of ``W`` holds classes ``[start_r, end_r)`` (an even split).
   Embeddings and labels of the whole global batch are all-gathered, the embeddings with
   autograd (``torch.distributed.nn.functional.all_gather``). Labels of classes on other shards
   become ``-1`` and the head's fused loss all-reduces its softmax statistics over ``group``,
   so the softmax runs over every class of every rank.
2. **Sampling.** With ``sample_rate = r < 1`` the step keeps every positive class of the global
   batch that lives on this shard plus random negatives, ``k = max(ceil(r·C_local),
   min(C_local, global_batch))`` rows in all: a fixed size, so no host synchronisation and no
   recompilation. Labels are remapped to the sampled rows (``searchsorted``). With ``r = 1``
   nothing is sampled and the loss equals the full head's exactly.
3. **Gradient and optimiser state: the row-sparse "sub-weight" scheme** (the choice documented
   here). The sampled rows are copied into a fresh leaf tensor ``sub`` that goes into the
   optimiser's head parameter group for this step only; its optimiser state (SGD momentum,
   AdamW moments) is gathered from full-size buffers kept by this module before the step and
   scattered back after it, together with the updated rows. So rows that were not sampled are
   not touched at all: no momentum drift, no weight decay, no stale updates (the alternative,
   ``index_select`` on the parameter with a dense optimiser, would keep moving unsampled rows
   along their old momentum and decay them every step). Scalar state (AdamW's ``step``) is
   shared by all rows (lazy Adam). GradScaler's unscale / inf-check / skip and learning-rate
   schedules see ``sub`` as an ordinary parameter.

Typical use in a training step::

    loss = pfc(embeddings, labels)             # samples, remaps, computes the head's loss
    loss.backward()
    pfc.attach(optimizer)                      # sub-weights + their state into the optimiser
    optimizer.step()
    pfc.detach(optimizer)                      # rows and state back into the full buffers
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from marginface.losses import create_head
from marginface.losses.base import MarginHead

__all__ = ["PartialFC", "shard_range"]


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Classes ``[start, end)`` held by ``rank``: an even split, the first ranks one more."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``factor`` (undoes DDP's averaging)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


class PartialFC(nn.Module):
    """Sampled (``sample_rate < 1``) and sharded (DDP) class centres around a margin head.

    Args:
        head: the margin head; its ``weight`` is this rank's shard ``(end - start, [K,] D)``.
        num_classes: the total number of classes over all ranks.
        sample_rate: fraction of this shard's rows used per step (all positives always kept).
        rank, world_size, group: the model-parallel layout (``group=None``: single process).
        seed: makes the initial centres independent of the number of ranks (each rank draws
            its rows from one seeded stream of the full matrix); ``None`` keeps the head's
            own initialisation.
    """

    def __init__(
        self,
        head: MarginHead,
        num_classes: int,
        *,
        sample_rate: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        group: dist.ProcessGroup | None = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if not isinstance(head, MarginHead):
            raise TypeError(f"PartialFC wraps a MarginHead, got {type(head).__name__}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.start, self.end = shard_range(num_classes, rank, world_size)
        if head.weight.shape[0] != self.end - self.start:
            raise ValueError(
                f"the head holds {head.weight.shape[0]} classes but rank {rank} of "
                f"{world_size} owns {self.end - self.start} of {num_classes}"
            )
        self.head = head
        self.num_classes = int(num_classes)
        self.sample_rate = float(sample_rate)
        self.rank, self.world_size, self.group = rank, world_size, group
        self.distributed = world_size > 1
        if seed is not None:
            self._init_rows(seed)
        self._opt_state: dict[str, dict[str, Tensor]] = {}
        self._subs: dict[str, Tensor] = {}
        self._index: Tensor | None = None
        self.last_index: Tensor | None = None  # the rows of the last training step
        self.last_labels: Tensor | None = None  # its labels remapped into those rows

    @classmethod
    def create(
        cls,
        name: str,
        num_classes: int,
        embedding_dim: int,
        *,
        sample_rate: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        group: dist.ProcessGroup | None = None,
        seed: int | None = 0,
        **head_kwargs: Any,
    ) -> PartialFC:
        """Build the head ``name`` for this rank's shard and wrap it."""
        start, end = shard_range(num_classes, rank, world_size)
        if end - start < 2:
            raise ValueError(
                f"{num_classes} classes over {world_size} ranks leave rank {rank} "
                "fewer than 2 classes"
            )
        head = create_head(
            name, num_classes=end - start, embedding_dim=embedding_dim, **head_kwargs
        )
        return cls(
            head,
            num_classes,
            sample_rate=sample_rate,
            rank=rank,
            world_size=world_size,
            group=group,
            seed=seed,
        )

    # -- parameters ---------------------------------------------------------------------------
    def row_params(self) -> dict[str, nn.Parameter]:
        """The per-class parameters (sampled and sharded along their first dimension)."""
        out = {"weight": self.head.weight}
        if self.head.bias is not None:
            out["bias"] = self.head.bias
        return out

    @torch.no_grad()
    def _init_rows(self, seed: int) -> None:
        """Normal(0, 0.01) rows drawn from one seeded stream of the whole ``(C, ...)`` matrix."""
        w = self.head.weight
        gen = torch.Generator().manual_seed(int(seed))
        row_shape = w.shape[1:]
        chunk = 65536
        for lo in range(0, self.end, chunk):
            hi = min(self.num_classes, lo + chunk)  # same blocks on every rank
            block = torch.randn((hi - lo, *row_shape), generator=gen) * 0.01
            a, b = max(lo, self.start), min(hi, self.end)
            if a < b:
                w[a - self.start : b - self.start].copy_(block[a - lo : b - lo].to(w.dtype))

    def num_sampled(self, global_batch: int) -> int:
        """Rows used per step for a global batch of ``global_batch`` samples."""
        n = self.end - self.start
        if self.sample_rate >= 1.0:
            return n
        return min(n, max(math.ceil(self.sample_rate * n), min(n, global_batch)))

    # -- the loss -----------------------------------------------------------------------------
    def gather(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """All-gather embeddings (with autograd) and labels over the model-parallel group."""
        if not self.distributed:
            return embeddings, labels
        # optional: needs a torch build with torch.distributed
        from torch.distributed.nn.functional import all_gather

        # Every rank's loss covers the whole global batch over its shard; the all-gather's
        # backward sums their gradients, and DDP then divides the backbone's by the world
        # size, so scale by it once here.
        x = _ScaleGrad.apply(embeddings, float(self.world_size))
        xs = all_gather(x, group=self.group)
        ys = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(ys, labels.contiguous(), group=self.group)
        return torch.cat(xs), torch.cat(ys)

    def sample(self, labels: Tensor) -> tuple[Tensor | None, Tensor]:
        """``(index, local_labels)``: rows kept (None = all) and labels into them (-1: none)."""
        n = self.end - self.start
        local = labels.long() - self.start
        inside = (local >= 0) & (local < n)
        if self.sample_rate >= 1.0:
            return None, torch.where(inside, local, torch.full_like(local, -1))
        k = self.num_sampled(labels.shape[0])
        score = torch.rand(n + 1, device=labels.device)
        slot = torch.where(inside, local, torch.full_like(local, n))
        score.scatter_(0, slot, torch.full_like(score[:1].expand_as(slot), 2.0))
        index = torch.topk(score[:n], k, sorted=False).indices.sort().values
        remapped = torch.searchsorted(index, local.clamp(0, n - 1))
        return index, torch.where(inside, remapped, torch.full_like(remapped, -1))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The head's loss for this (local) batch; under DDP, over the gathered global batch."""
        x, y = self.gather(embeddings, labels)
        if self.training and torch.is_grad_enabled():
            index, local = self.sample(y)
            self._index = index
            self.last_index, self.last_labels = index, local
            subs = {}
            for name, p in self.row_params().items():
                rows = p.detach() if index is None else p.detach().index_select(0, index)
                subs[name] = rows.requires_grad_(True)
            self._subs = subs
            weight, bias = subs["weight"], subs.get("bias")
        else:  # evaluation: every row of the shard
            n = self.end - self.start
            loc = y.long() - self.start
            local = torch.where((loc >= 0) & (loc < n), loc, torch.full_like(loc, -1))
            weight, bias = self.head.weight, self.head.bias
        loss = self.head.loss_with_weight(
            x, local, weight, bias, group=self.group if self.distributed else None
        )
        if self.training and torch.is_grad_enabled():
            iteration = getattr(self.head, "iteration", None)
            if isinstance(iteration, Tensor):  # SphereFace's λ schedule advances per step
                iteration += 1
        return loss

    def sampled_weight(self) -> Tensor | None:
        """This step's sub-weight (the rows used), e.g. for an inter-class term."""
        return self._subs.get("weight")

    # -- the optimiser step -------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer, group_index: int = -1) -> None:
        """Put this step's sub-weights and their optimiser state into ``optimizer``."""
        if not self._subs:
            raise RuntimeError("PartialFC.attach() before a training forward")
        group = optimizer.param_groups[group_index]
        group["params"] = list(self._subs.values())
        for name, sub in self._subs.items():
            stored = self._opt_state.get(name)
            if not stored:
                continue
            state = {}
            for key, value in stored.items():
                if value.dim() > 0 and value.shape[0] == self.row_params()[name].shape[0]:
                    state[key] = (
                        value if self._index is None else value.index_select(0, self._index)
                    )
                else:
                    state[key] = value.clone()
            optimizer.state[sub] = state

    @torch.no_grad()
    def detach(self, optimizer: torch.optim.Optimizer, group_index: int = -1) -> None:
        """Write the updated rows and their optimiser state back; empty the head group."""
        params = self.row_params()
        for name, sub in self._subs.items():
            full = params[name]
            if self._index is None:
                if sub.data_ptr() != full.data_ptr():
                    full.copy_(sub)
            else:
                full.index_copy_(0, self._index, sub.detach())
            state = optimizer.state.pop(sub, None)
            if not state:
                continue
            stored = self._opt_state.setdefault(name, {})
            for key, value in state.items():
                if not isinstance(value, Tensor):
                    continue
                if value.dim() > 0 and value.shape == sub.shape:
                    if self._index is None:
                        stored[key] = value
                    else:
                        buf = stored.get(key)
                        if buf is None:
                            buf = torch.zeros(full.shape, dtype=value.dtype, device=value.device)
                            stored[key] = buf
                        buf.index_copy_(0, self._index, value)
                else:
                    stored[key] = value
        optimizer.param_groups[group_index]["params"] = []
        self._subs = {}
        self._index = None

    # -- checkpoints --------------------------------------------------------------------------
    def shard_state(self) -> dict[str, Any]:
        """This rank's rows, the head's buffers and the rows' optimiser state (for checkpoints)."""
        return {
            "start": self.start,
            "end": self.end,
            "num_classes": self.num_classes,
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "opt_state": {
                n: {k: v.detach().cpu() for k, v in s.items()} for n, s in self._opt_state.items()
            },
        }

    def load_shard_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`shard_state` (same class range)."""
        if (state["start"], state["end"], state["num_classes"]) != (
            self.start,
            self.end,
            self.num_classes,
        ):
            raise ValueError(
                f"checkpoint shard holds classes [{state['start']}, {state['end']}) "
                f"of {state['num_classes']}; this rank owns [{self.start}, "
                f"{self.end}) of {self.num_classes}"
            )
        self.head.load_state_dict(state["head"])
        device = self.head.weight.device
        self._opt_state = {
            n: {k: v.to(device) for k, v in s.items()} for n, s in state["opt_state"].items()
        }

    def extra_repr(self) -> str:
        return (
            f"classes=[{self.start}, {self.end}) of {self.num_classes}, "
            f"sample_rate={self.sample_rate}, world_size={self.world_size}"
        )
