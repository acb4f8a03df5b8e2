"""CosFace / LMCL: ``s·(cos θ_y - m)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from marginface.losses.margins import cosine_margin
from marginface.losses.normface import NormFace

__all__ = ["CosFace"]


class CosFace(NormFace):
    """Large margin cosine loss: the target logit is ``s·(cos θ_y - m)`` (defaults s = 64,
    m = 0.35). See :mod:`marginface.losses.bounds` for the paper's bounds on s and m."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        scale: float = 64.0,
        margin: float = 0.35,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale=scale, **kwargs)
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.m = float(margin)

    def margin(self, cos: Tensor) -> Tensor:
        return cosine_margin(cos, self.m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.m}"
