"""Combined margin: ``s·(cos(m1·θ_y + m2) - m3)``, all three at once."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from marginface.losses.margins import combined_margin
from marginface.losses.normface import NormFace

__all__ = ["CombinedMargin"]


class CombinedMargin(NormFace):
    """SphereFace-, ArcFace- and CosFace-style margins combined (insightface's m1, m2, m3).

    Any ``m1 > 0``, ``m2 ≥ 0``, ``m3 ≥ 0`` is accepted. Past ``θ_max = (π - m2) / m1`` the target
    logit continues as ``cos θ - δ``, continuous and decreasing (see
    :mod:`marginface.losses.margins`), so it is non-increasing on [0, π].
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        m1: float = 1.0,
        m2: float = 0.3,
        m3: float = 0.2,
        scale: float = 64.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale=scale, **kwargs)
        if m1 <= 0:
            raise ValueError(f"m1 must be positive, got {m1}")
        if m2 < 0 or m3 < 0:
            raise ValueError(f"m2 and m3 must be non-negative, got m2={m2}, m3={m3}")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def margin(self, cos: Tensor) -> Tensor:
        return combined_margin(cos, self.m1, self.m2, self.m3)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m1={self.m1}, m2={self.m2}, m3={self.m3}"
