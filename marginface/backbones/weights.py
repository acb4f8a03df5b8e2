"""Loading backbone weights: insightface ``backbone.pth``, safetensors, and DDP checkpoints.

:func:`infer_architecture` reads the registry name and embedding size from a state dict's keys
and shapes, so an insightface ``backbone.pth`` can be used without being told what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from marginface.backbones.iresnet import LAYERS
from marginface.backbones.registry import canonical_name, create
from marginface.errors import ModelError

__all__ = ["ArchitectureGuess", "infer_architecture", "load_backbone", "load_state_dict_file"]


class ArchitectureGuess(dict):
    """``{"name": ..., "embedding_dim": ..., "kwargs": {...}}`` for :func:`create`."""


def load_state_dict_file(path: str | Path, fmt: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only``).

    ``fmt`` (``"safetensors"`` or ``"torch"``) overrides the guess from the file suffix. A
    ``"state_dict"``/``"model"``/``"backbone"`` entry of a checkpoint is unwrapped and a
    DDP/compile ``module.``/``_orig_mod.`` prefix is removed. :class:`ModelError` when the file
    is missing, empty, corrupt or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: weights file is empty")
    safetensors = fmt == "safetensors" if fmt else path.suffix == ".safetensors"
    try:
        if safetensors:
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise ModelError(
            f"{path}: cannot read weights, corrupt or unreadable "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(f"{path}: not a state dict of tensors (found {type(state).__name__})")
    return {_strip_prefix(k): v for k, v in state.items()}


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def infer_architecture(state: Mapping[str, torch.Tensor]) -> ArchitectureGuess:
    """Registry name, embedding size and constructor options that produce ``state``'s keys."""
    keys = set(state)
    if "conv_sep.layers.0.weight" in keys and "features.layers.2.weight" in keys:
        scale = int(state["layers.0.layers.0.weight"].shape[0]) // 64
        dim = int(state["features.layers.2.weight"].shape[0])
        kh, kw = (int(s) for s in state["features.layers.0.layers.0.weight"].shape[2:])
        # blocks[0] == 1 is a plain ConvBlock (``layers.1.layers.0.weight``), else a Residual.
        first = (
            1 if "layers.1.layers.0.weight" in keys else _count(keys, r"layers\.1\.layers\.(\d+)\.")
        )
        blocks = (
            first,
            _count(keys, r"layers\.3\.layers\.(\d+)\."),
            _count(keys, r"layers\.5\.layers\.(\d+)\."),
            _count(keys, r"layers\.7\.layers\.(\d+)\."),
        )
        name = "mbf_large" if (blocks, scale) == ((2, 8, 12, 4), 4) else "mbf"
        kwargs: dict[str, Any] = {"input_size": (kh * 16, kw * 16)}
        if name == "mbf" and (blocks, scale) != ((1, 4, 6, 2), 2):
            kwargs.update(blocks=blocks, scale=scale)
        return ArchitectureGuess(name=name, embedding_dim=dim, kwargs=kwargs)
    if "conv1.weight" in keys and "layer4.0.conv1.weight" in keys and "fc.weight" in keys:
        layers = tuple(_count(keys, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        by_layers = {spec: arch for arch, spec in LAYERS.items()}
        if layers not in by_layers:
            raise ModelError(f"IResNet with blocks {layers} is not a registered depth")
        name = by_layers[layers]
        dim, fc_in = (int(s) for s in state["fc.weight"].shape)
        cells = fc_in // 512
        side = round(cells**0.5)
        input_size = (side * 16, side * 16) if side * side == cells else (112, 112)
        return ArchitectureGuess(name=name, embedding_dim=dim, kwargs={"input_size": input_size})
    raise ModelError(
        "cannot tell the architecture from these weights (expected insightface "
        "iresnet* or mbf keys)"
    )


def _count(keys: set[str], pattern: str) -> int:
    rx = re.compile("^" + pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def load_backbone(
    path: str | Path, name: str | None = None, embedding_dim: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build a backbone and load weights from ``path`` with ``strict=True``.

    Without ``name`` the architecture is read from the weights' shapes. Mismatching weights
    raise :class:`ModelError` with the first missing/unexpected keys.
    """
    state = load_state_dict_file(path)
    if name is None:
        guess = infer_architecture(state)
        name = guess["name"]
        embedding_dim = embedding_dim or guess["embedding_dim"]
        kwargs = {**guess["kwargs"], **kwargs}
    model = create(name, embedding_dim=embedding_dim or 512, **kwargs)
    arch = canonical_name(name)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise ModelError(f"{path}: weights do not fit {arch!r}: {detail[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{path}: weights do not fit {arch!r}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]})"
        )
    return model.eval()
