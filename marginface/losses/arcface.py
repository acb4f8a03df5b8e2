"""ArcFace: additive angular margin, ``s·cos(θ_y + m)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from marginface.losses.margins import additive_angular
from marginface.losses.normface import NormFace

__all__ = ["ArcFace"]


class ArcFace(NormFace):
    """Additive angular margin loss (defaults s = 64, m = 0.5).

    The gradient flows exactly through ``cos(θ + m)`` (no straight-through trick). Where
    ``θ + m > π`` the target logit continues as ``cos θ - (1 - cos m)``: continuous at
    ``θ = π - m`` and strictly decreasing, so it never rewards a larger angle.

    ``easy_margin=True`` applies the margin only where ``cos θ > 0`` and keeps ``cos θ`` elsewhere
    (insightface's option; it is not monotone at θ = π/2 by construction).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale=scale, **kwargs)
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.m = float(margin)
        self.easy_margin = bool(easy_margin)

    def margin(self, cos: Tensor) -> Tensor:
        return additive_angular(cos, self.m, self.easy_margin)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.m}, easy_margin={self.easy_margin}"
