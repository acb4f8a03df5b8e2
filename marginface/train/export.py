"""Writing a trained backbone as a model directory: ``weights.safetensors`` + ``model.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from marginface.card import ModelCard, Preprocessing

__all__ = ["backbone_state_dict", "export_model"]


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with insightface-compatible keys, on the CPU, contiguous.

    Wrappers' prefixes (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``) are removed.
    """
    out = {}
    for key, value in model.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def export_model(
    output: str | Path,
    backbone: nn.Module,
    *,
    name: str,
    architecture: str,
    embedding_dim: int,
    preprocessing: Preprocessing,
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    notes: str = "",
    architecture_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``weights.safetensors`` (atomically) and the card ``model.json`` into ``output``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tensors = backbone_state_dict(backbone)
    tmp = output / f".weights.safetensors.tmp{os.getpid()}"
    try:
        save_file(
            tensors,
            str(tmp),
            metadata={"architecture": architecture, "embedding_dim": str(embedding_dim)},
        )
        os.replace(tmp, output / "weights.safetensors")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    card = ModelCard(
        name=name,
        architecture=architecture,
        embedding_dim=embedding_dim,
        architecture_kwargs=dict(architecture_kwargs or {}),
        weights="weights.safetensors",
        format="safetensors",
        preprocessing=preprocessing,
        training=training,
        metrics=metrics or {},
        notes=notes,
    )
    card.save(output)
    return output
