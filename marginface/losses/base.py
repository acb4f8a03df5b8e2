"""The base class of classification heads, and input validation shared by every loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.losses.functional import DEFAULT_CHUNK_SIZE, margin_cross_entropy

__all__ = ["MarginHead", "check_embeddings", "check_labels"]


def check_embeddings(embeddings: Tensor, dim: int | None = None, *, finite: bool = True) -> None:
    """Raise ``ValueError`` unless ``embeddings`` is a non-empty, finite ``(B, dim)`` float
    tensor."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}"
        )
    if embeddings.shape[0] == 0:
        raise ValueError("empty batch: embeddings has no rows")
    if not embeddings.dtype.is_floating_point:
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if dim is not None and embeddings.shape[1] != dim:
        raise ValueError(
            f"embedding dimension mismatch: the loss expects {dim}, got {embeddings.shape[1]}"
        )
    if finite and not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings contain NaN or inf")


def check_labels(labels: Tensor, batch: int, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``labels`` is a ``(batch,)`` integer tensor in range."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != batch:
        raise ValueError(f"labels has {labels.shape[0]} entries but the batch has {batch} rows")
    if labels.numel() == 0:
        raise ValueError("empty batch: labels has no entries")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"labels must be non-negative, got {lo}")
    if num_classes is not None and hi >= num_classes:
        raise ValueError(f"label {hi} is out of range for {num_classes} classes")


class MarginHead(nn.Module):
    """A classification head: class weights ``W`` of shape ``(num_classes, dim)`` and a loss.

    Subclasses set ``normalize_embeddings`` / ``normalize_weight`` and implement ``margin`` (the
    target-cosine transform) and ``scale_for`` (the logit scale per sample).

    - ``head(embeddings, labels)`` returns the mean loss over the batch.
    - ``head.logits(embeddings)`` returns the margin-free logits ``(B, C)``, for accuracy.
    - ``head.loss_with_weight(embeddings, labels, weight)`` computes the same loss against any
      rows of ``W`` (Partial FC passes sampled rows; model parallel passes a shard).
    - ``head.target_logit(theta)`` is the target logit as a function of the angle, for plots.
    """

    normalize_embeddings: bool = True
    normalize_weight: bool = True
    subcenters: int = 1

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        bias: bool = False,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.chunk_size = chunk_size
        self.validate = validate
        shape: tuple[int, ...] = (num_classes, embedding_dim)
        if self.subcenters > 1:
            shape = (num_classes, self.subcenters, embedding_dim)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``W`` (normal, std 0.01 as insightface) and the bias (zeros)."""
        nn.init.normal_(self.weight, std=0.01)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # -- what subclasses define ---------------------------------------------------------------
    def margin(self, cos: Tensor) -> Tensor:
        """The target-cosine transform ``f(cos θ_y)``; identity for margin-free heads."""
        return cos

    def scale_for(self, embeddings: Tensor) -> Tensor | float:
        """The logit scale: a float ``s`` or a ``(B,)`` tensor."""
        return 1.0

    @property
    def has_margin(self) -> bool:
        """Whether ``margin`` changes the target logit (used to skip work)."""
        return type(self).margin is not MarginHead.margin

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean loss over the batch."""
        return self.loss_with_weight(embeddings, labels, self.weight, self.bias)

    def loss_with_weight(
        self,
        embeddings: Tensor,
        labels: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        group: object | None = None,
    ) -> Tensor:
        """The loss against the rows ``weight`` (labels index those rows; ``-1``: other shard)."""
        if self.validate:
            check_embeddings(embeddings, self.embedding_dim)
            if group is None:
                check_labels(labels, embeddings.shape[0], weight.shape[0])
        x = self._prepare(embeddings)
        return margin_cross_entropy(
            x,
            weight.reshape(-1, weight.shape[-1]),
            labels.long(),
            scale=self.scale_for(embeddings),
            margin=self.margin if self.has_margin else None,
            bias=bias,
            normalize_weight=self.normalize_weight,
            subcenters=self.subcenters,
            chunk_size=self.chunk_size,
            group=group,
        )

    def _prepare(self, embeddings: Tensor) -> Tensor:
        if self.normalize_embeddings:
            return F.normalize(embeddings, dim=1, eps=1e-12)
        return embeddings

    # -- logits and curves --------------------------------------------------------------------
    def cosine(self, embeddings: Tensor) -> Tensor:
        """Margin-free ``(B, C)`` cosines (or raw dot products for unnormalised heads)."""
        if self.validate:
            check_embeddings(embeddings, self.embedding_dim)
        x = self._prepare(embeddings)
        w: Tensor = self.weight
        if self.normalize_weight:
            w = F.normalize(w, dim=-1)
        if self.subcenters > 1:
            c = torch.einsum("bd,ckd->bck", x, w).amax(dim=2)
        else:
            c = x @ w.t()
        if self.bias is not None:
            c = c + self.bias
        return c

    def logits(self, embeddings: Tensor) -> Tensor:
        """Margin-free logits ``s·cos θ_j`` (``(B, C)``), e.g. for training accuracy."""
        scale = self.scale_for(embeddings)
        c = self.cosine(embeddings)
        if isinstance(scale, Tensor) and scale.dim() == 1:
            return c * scale.unsqueeze(1)
        return c * scale

    def target_logit(self, theta: Tensor) -> Tensor:
        """The target logit ``s·f(cos θ)`` over angles in radians (unit feature norm)."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        scale = self.scale_for(
            torch.ones(1, self.embedding_dim, dtype=torch.float64) / math.sqrt(self.embedding_dim)
        )
        if isinstance(scale, Tensor):
            scale = float(scale.reshape(-1)[0])
        return scale * self.margin(torch.cos(theta))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}"
