"""CosFace's bounds on the scale and the margin (Wang et al. 2018, section 3.3)."""

from __future__ import annotations

import math

__all__ = ["cosface_margin_range", "cosface_min_scale"]


def cosface_min_scale(num_classes: int, p_w: float = 0.9) -> float:
    """Smallest scale ``s`` that lets the target class reach posterior ``p_w``:

    ``s ≥ (C - 1)/C · log((C - 1)·P_W / (1 - P_W))``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 < p_w < 1.0:
        raise ValueError(f"p_w must be in (0, 1), got {p_w}")
    c = num_classes
    return (c - 1) / c * math.log((c - 1) * p_w / (1.0 - p_w))


def cosface_margin_range(num_classes: int, dim: int | None = None) -> tuple[float, float]:
    """The feasible margin range ``0 ≤ m ≤ C/(C - 1)`` for ``C`` classes.

    The bound holds when class weights can be spread as a regular simplex, i.e. when
    ``dim ≥ C - 1``; with fewer dimensions it is an upper bound (the paper's ``K ≥ C - 1`` case).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if dim is not None and dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    return 0.0, num_classes / (num_classes - 1)
