"""Sub-center ArcFace: K sub-centres per class, the class cosine is the max over them."""

from __future__ import annotations

from typing import Any

from marginface.losses.arcface import ArcFace

__all__ = ["SubCenterArcFace"]


class SubCenterArcFace(ArcFace):
    """ArcFace over ``K`` sub-centres per class (default K = 3); ``weight`` is ``(C, K, dim)``.

    Each sample is pulled only towards the nearest sub-centre of its class, so noisy or atypical
    faces gather around secondary sub-centres instead of distorting the dominant one.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, *, subcenters: int = 3, **kwargs: Any
    ) -> None:
        if not 1 <= subcenters <= 255:
            raise ValueError(f"subcenters must be in [1, 255], got {subcenters}")
        self.subcenters = int(subcenters)
        super().__init__(num_classes, embedding_dim, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, subcenters={self.subcenters}"
