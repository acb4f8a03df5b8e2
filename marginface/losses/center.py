"""Intra-class compactness (centre loss) and inter-class separation of class centres."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.losses.base import check_embeddings, check_labels

__all__ = ["CenterLoss", "InterClassLoss"]


class CenterLoss(nn.Module):
    """Centre loss (Wen et al. 2016): ``½·mean_i ‖x_i - c_{y_i}‖²`` with learnable centres.

    The centres are a parameter updated by the optimiser; its learning rate plays the paper's
    α. With ``normalize=True`` the embeddings and centres are L2-normalised first, which suits
    the angular heads it is usually combined with (e.g. ``ArcFace + 0.01·CenterLoss``).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        normalize: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_dim < 1:
            raise ValueError("num_classes and embedding_dim must be positive")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.normalize = normalize
        self.validate = validate
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if self.validate:
            check_embeddings(embeddings, self.embedding_dim)
            check_labels(labels, embeddings.shape[0], self.num_classes)
        x = embeddings
        c = self.centers.index_select(0, labels.long()).to(x.dtype)
        if self.normalize:
            x = F.normalize(x, dim=1)
            c = F.normalize(c, dim=1)
        return 0.5 * (x - c).pow(2).sum(dim=1).mean()


class InterClassLoss(nn.Module):
    """Pushes class centres (rows of a head's ``W``) apart.

    For each class ``i`` (or each class in ``classes``, e.g. the labels of the batch) the loss
    takes ``max_{j≠i} cos(W_i, W_j)``, the cosine to its nearest other class, and averages it
    (``reduction="max"``); ``reduction="mean"`` averages all pairwise cosines instead. Rows are
    processed in chunks, so it never builds a ``C × C`` matrix at once.
    """

    def __init__(self, reduction: Literal["max", "mean"] = "max", chunk_size: int = 4096) -> None:
        super().__init__()
        if reduction not in ("max", "mean"):
            raise ValueError(f"unknown reduction {reduction!r}; choose 'max' or 'mean'")
        self.reduction = reduction
        self.chunk_size = int(chunk_size)

    def forward(self, weight: Tensor, classes: Tensor | None = None) -> Tensor:
        if weight.dim() == 3:  # sub-centres: use each class's mean direction
            weight = F.normalize(weight, dim=-1).mean(dim=1)
        if weight.dim() != 2 or weight.shape[0] < 2:
            raise ValueError(f"weight must be (num_classes >= 2, dim), got {tuple(weight.shape)}")
        w = F.normalize(weight, dim=1)
        if classes is None:
            rows = torch.arange(w.shape[0], device=w.device)
        else:
            check_labels(classes.reshape(-1), classes.numel(), w.shape[0])
            rows = torch.unique(classes.reshape(-1).long())
        parts = []
        for lo in range(0, rows.numel(), self.chunk_size):
            r = rows[lo : lo + self.chunk_size]
            cos = w.index_select(0, r) @ w.t()
            cos = cos.scatter(1, r.unsqueeze(1), float("-inf") if self.reduction == "max" else 0.0)
            if self.reduction == "max":
                parts.append(cos.amax(dim=1))
            else:
                parts.append(cos.sum(dim=1) / (w.shape[0] - 1))
        return torch.cat(parts).mean()
