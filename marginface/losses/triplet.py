"""FaceNet's triplet loss with online mining: ``max(0, d(a,p) - d(a,n) + α)``."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.losses.base import check_embeddings, check_labels

__all__ = ["TripletLoss", "pairwise_distances"]

Mining = Literal["all", "hard", "semihard"]
Distance = Literal["squared_l2", "cosine"]


def pairwise_distances(embeddings: Tensor, distance: Distance = "squared_l2") -> Tensor:
    """``(B, B)`` distances between L2-normalised embeddings.

    ``squared_l2`` is ``‖a - b‖²`` (in [0, 4]); ``cosine`` is ``1 - cos(a, b)`` (in [0, 2]).
    """
    x = F.normalize(embeddings, dim=1, eps=1e-12)
    if distance == "squared_l2":
        sq = (x * x).sum(dim=1)
        d = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())
        return d.clamp_min(0.0)
    if distance == "cosine":
        return 1.0 - x @ x.t()
    raise ValueError(f"unknown distance {distance!r}; choose 'squared_l2' or 'cosine'")


class TripletLoss(nn.Module):
    """Triplet loss over the triplets mined online from a batch (use a P×K batch sampler).

    Mining strategies, all over anchors ``a``, positives ``p`` (same label, ``p ≠ a``) and
    negatives ``n`` (other labels):

    - ``all``: every valid triplet;
    - ``hard`` (batch-hard): for each anchor, its farthest positive and its nearest negative;
    - ``semihard`` (FaceNet): for each anchor-positive pair, the negatives with
      ``d(a,p) < d(a,n) < d(a,p) + α``; a pair with none falls back to its anchor's hardest
      (nearest) negative (``semihard_fallback=False`` drops such pairs instead).

    The loss is the mean over the selected triplets whose loss is positive (zero, with a
    gradient, when there are none). ``last_triplet_count`` holds how many triplets were selected.
    """

    def __init__(
        self,
        margin: float = 0.2,
        *,
        mining: Mining = "semihard",
        distance: Distance = "squared_l2",
        semihard_fallback: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        if mining not in ("all", "hard", "semihard"):
            raise ValueError(f"unknown mining {mining!r}; choose 'all', 'hard' or 'semihard'")
        if distance not in ("squared_l2", "cosine"):
            raise ValueError(f"unknown distance {distance!r}; choose 'squared_l2' or 'cosine'")
        self.margin = float(margin)
        self.mining = mining
        self.distance = distance
        self.semihard_fallback = semihard_fallback
        self.validate = validate
        self.last_triplet_count = 0

    def mine(self, dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Indices ``(a, p, n)`` of the selected triplets for a ``(B, B)`` distance matrix."""
        B = labels.shape[0]
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(B, dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        d = dist.detach()
        if self.mining == "all":
            valid = pos_mask.unsqueeze(2) & neg_mask.unsqueeze(1)
            a, p, n = valid.nonzero(as_tuple=True)
            return a, p, n
        if self.mining == "hard":
            inf = torch.finfo(d.dtype).max
            has = pos_mask.any(dim=1) & neg_mask.any(dim=1)
            p = torch.where(pos_mask, d, torch.full_like(d, -inf)).argmax(dim=1)
            n = torch.where(neg_mask, d, torch.full_like(d, inf)).argmin(dim=1)
            a = torch.arange(B, device=labels.device)
            return a[has], p[has], n[has]
        # semihard
        d_ap = d.unsqueeze(2)  # (a, p, 1)
        d_an = d.unsqueeze(1)  # (a, 1, n)
        band = (d_an > d_ap) & (d_an < d_ap + self.margin)
        valid = pos_mask.unsqueeze(2) & neg_mask.unsqueeze(1) & band
        a, p, n = valid.nonzero(as_tuple=True)
        if not self.semihard_fallback:
            return a, p, n
        lonely = pos_mask & ~valid.any(dim=2)  # anchor-positive pairs with no semi-hard negative
        if lonely.any():
            inf = torch.finfo(d.dtype).max
            hardest = torch.where(neg_mask, d, torch.full_like(d, inf)).argmin(dim=1)
            has_neg = neg_mask.any(dim=1)
            la, lp = (lonely & has_neg.unsqueeze(1)).nonzero(as_tuple=True)
            a = torch.cat([a, la])
            p = torch.cat([p, lp])
            n = torch.cat([n, hardest[la]])
        return a, p, n

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean positive triplet loss of the mined triplets."""
        if self.validate:
            check_embeddings(embeddings)
            check_labels(labels, embeddings.shape[0])
        dist = pairwise_distances(
            embeddings.float()
            if embeddings.dtype in (torch.float16, torch.bfloat16)
            else embeddings,
            self.distance,
        )
        a, p, n = self.mine(dist, labels)
        self.last_triplet_count = int(a.numel())
        losses = F.relu(dist[a, p] - dist[a, n] + self.margin)
        if losses.numel() == 0:
            return dist.sum() * 0.0
        return losses.sum() / (losses > 0).sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}"
