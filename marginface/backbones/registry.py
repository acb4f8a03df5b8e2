"""A small timm-style registry of backbone constructors.

Every backbone maps ``(B, 3, H, W)`` float images, already normalised as the model card says,
to ``(B, D)`` embeddings that are *not* L2-normalised. :func:`check_kwargs` tells a misspelt
constructor argument before anything is built (the training config calls it when it is read).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from marginface.errors import ConfigError

__all__ = [
    "accepted_kwargs",
    "check_kwargs",
    "create",
    "is_model",
    "list_models",
    "model_info",
    "register_model",
    "takes_input_size",
]

F = TypeVar("F", bound=Callable[..., nn.Module])


class _Registry:
    """Name -> constructor, plus aliases. One instance lives in this module."""

    def __init__(self) -> None:
        self.constructors: dict[str, Callable[..., nn.Module]] = {}
        self.aliases: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}
        self.sized: set[str] = set()

    def resolve(self, name: str) -> str:
        key = name.strip().lower()
        key = self.aliases.get(key, key)
        if key not in self.constructors:
            known = ", ".join(list_models(include_aliases=True))
            raise ConfigError(f"unknown backbone {name!r}; known backbones: {known}")
        return key


_REGISTRY = _Registry()


def register_model(
    name: str, *, aliases: tuple[str, ...] = (), description: str = "", sized: bool = False
) -> Callable[[F], F]:
    """Decorator that registers ``fn(embedding_dim=..., **kwargs) -> nn.Module`` under ``name``.

    ``sized``: the network is built for one input size and takes ``input_size=(h, w)``.
    """

    def decorator(fn: F) -> F:
        key = name.lower()
        if key in _REGISTRY.constructors or key in _REGISTRY.aliases:
            raise ValueError(f"backbone name {name!r} is already registered")
        _REGISTRY.constructors[key] = fn
        if sized:
            _REGISTRY.sized.add(key)
        _REGISTRY.descriptions[key] = description or (fn.__doc__ or "").strip().split("\n")[0]
        for alias in aliases:
            alias_key = alias.lower()
            if alias_key in _REGISTRY.constructors or alias_key in _REGISTRY.aliases:
                raise ValueError(f"backbone alias {alias!r} is already registered")
            _REGISTRY.aliases[alias_key] = key
        return fn

    return decorator


def list_models(include_aliases: bool = False) -> list[str]:
    """Canonical backbone names (sorted); with ``include_aliases`` also every alias."""
    names = set(_REGISTRY.constructors)
    if include_aliases:
        names |= set(_REGISTRY.aliases)
    return sorted(names)


def is_model(name: str) -> bool:
    """Whether ``name`` (or an alias) is a registered backbone."""
    key = name.strip().lower()
    return key in _REGISTRY.constructors or key in _REGISTRY.aliases


def canonical_name(name: str) -> str:
    """The canonical registry name for ``name`` or an alias (``"r50"`` -> ``"iresnet50"``)."""
    return _REGISTRY.resolve(name)


def takes_input_size(name: str) -> bool:
    """Whether backbone ``name`` is built for one input size (its ``input_size`` argument)."""
    return _REGISTRY.resolve(name) in _REGISTRY.sized


def model_info(name: str) -> dict[str, Any]:
    """Canonical name, aliases and one-line description of a backbone."""
    key = _REGISTRY.resolve(name)
    aliases = sorted(a for a, k in _REGISTRY.aliases.items() if k == key)
    return {"name": key, "aliases": aliases, "description": _REGISTRY.descriptions[key]}


def accepted_kwargs(fn: Callable[..., Any]) -> list[str] | None:
    """The keyword arguments a function or class takes: its parameters that have a default.

    ``**kwargs`` is followed into the class a function returns (its return annotation) and into
    a class's base classes, up to PyTorch's own (``nn.Module`` takes none). None when it cannot
    be told (``**kwargs`` with nowhere to follow).
    """
    names: list[str] = []
    target: Any = fn
    while True:
        if isinstance(target, type):
            inits = [
                k.__dict__["__init__"]
                for k in target.__mro__
                if "__init__" in k.__dict__
                and k is not object
                and not k.__module__.startswith("torch")
            ]
        else:
            inits = [target]
        forwards = False
        for init in inits:
            params = inspect.signature(init).parameters.values()
            names += [
                p.name
                for p in params
                if p.default is not inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            forwards = any(p.kind is p.VAR_KEYWORD for p in params)
            if not forwards:
                break
        if not forwards or isinstance(target, type):
            return sorted(set(names))
        try:
            target = typing.get_type_hints(target).get("return")
        except (NameError, TypeError):
            return None
        if not isinstance(target, type):
            return None


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """:class:`ConfigError` naming the keys of ``kwargs`` that backbone ``name`` does not take,
    and the ones it does. Values are checked when the network is built."""
    key = _REGISTRY.resolve(name)
    accepted = accepted_kwargs(_REGISTRY.constructors[key])
    if accepted is None:
        return
    accepted = [a for a in accepted if a != "embedding_dim"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"backbone {key!r}: invalid arguments {unknown}; it takes {', '.join(accepted)}"
        )


def create(name: str, embedding_dim: int = 512, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name`` (or an alias) with output size ``embedding_dim``.

    Extra keyword arguments go to the constructor (e.g. ``dropout``, ``fp16``,
    ``input_size``). Unknown names and invalid arguments raise :class:`ConfigError`.
    """
    key = _REGISTRY.resolve(name)
    if not isinstance(embedding_dim, int) or isinstance(embedding_dim, bool) or embedding_dim <= 0:
        raise ConfigError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
    check_kwargs(key, kwargs)
    try:
        return _REGISTRY.constructors[key](embedding_dim=embedding_dim, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"backbone {key!r}: invalid arguments {sorted(kwargs)}: {exc}") from None
