"""Build any loss by name: ``create("arcface", num_classes=..., embedding_dim=..., margin=0.5)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from marginface.losses.arcface import ArcFace
from marginface.losses.base import MarginHead
from marginface.losses.center import CenterLoss, InterClassLoss
from marginface.losses.combined import CombinedMargin
from marginface.losses.cosface import CosFace
from marginface.losses.normface import NormFace
from marginface.losses.softmax import Softmax
from marginface.losses.sphereface import LambdaSchedule, SphereFace
from marginface.losses.subcenter import SubCenterArcFace
from marginface.losses.triplet import TripletLoss

__all__ = ["HEADS", "LOSSES", "create", "create_head", "is_head", "list_losses"]

HEADS: dict[str, type[MarginHead]] = {
    "softmax": Softmax,
    "normface": NormFace,
    "sphereface": SphereFace,
    "cosface": CosFace,
    "arcface": ArcFace,
    "combined": CombinedMargin,
    "subcenter_arcface": SubCenterArcFace,
}
OTHER: dict[str, type[nn.Module]] = {
    "triplet": TripletLoss,
    "center": CenterLoss,
    "interclass": InterClassLoss,
}
LOSSES: dict[str, type[nn.Module]] = {**HEADS, **OTHER}
_ALIASES = {
    "nsl": "normface",
    "lmcl": "cosface",
    "a_softmax": "sphereface",
    "combined_margin": "combined",
    "subcenter": "subcenter_arcface",
}


def list_losses() -> list[str]:
    """Registered loss names."""
    return sorted(LOSSES)


def is_head(name: str) -> bool:
    """Whether ``name`` is a classification head (with class weights)."""
    return _canonical(name) in HEADS


def _canonical(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(list_losses())}")
    return key


def create(
    name: str, *, num_classes: int | None = None, embedding_dim: int | None = None, **kwargs: Any
) -> nn.Module:
    """Instantiate the loss ``name``; heads and the centre loss need ``num_classes`` and
    ``embedding_dim``. SphereFace accepts ``lambda_schedule`` as a mapping or ``None``."""
    key = _canonical(name)
    cls: Callable[..., nn.Module] = LOSSES[key]
    if key == "sphereface" and isinstance(kwargs.get("lambda_schedule"), dict):
        kwargs["lambda_schedule"] = LambdaSchedule(**kwargs["lambda_schedule"])
    if key in HEADS or key == "center":
        if num_classes is None or embedding_dim is None:
            raise ValueError(f"loss {name!r} needs num_classes and embedding_dim")
        return cls(num_classes, embedding_dim, **kwargs)
    return cls(**kwargs)


def create_head(name: str, *, num_classes: int, embedding_dim: int, **kwargs: Any) -> MarginHead:
    """:func:`create` for a classification head (a :class:`MarginHead`); ``ValueError`` when
    ``name`` is another loss."""
    if not is_head(name):
        raise ValueError(
            f"loss {name!r} is not a classification head; heads: {', '.join(sorted(HEADS))}"
        )
    head = create(name, num_classes=num_classes, embedding_dim=embedding_dim, **kwargs)
    if not isinstance(head, MarginHead):  # pragma: no cover - HEADS holds MarginHead classes
        raise TypeError(f"loss {name!r} built a {type(head).__name__}, not a MarginHead")
    return head
