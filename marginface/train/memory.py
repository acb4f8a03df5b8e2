"""Training on images held in memory: the demo and the feature plots use the one trainer too.

:func:`train_arrays` runs :class:`~marginface.train.trainer.Trainer` on an
:class:`~marginface.data.ArrayDataset`: quietly, on the CPU, the images put once into a tensor
(``data.preload: device``), in a temporary output folder that is removed afterwards. The
caller describes its training as a :class:`~marginface.train.config.TrainConfig` mapping, like
any run (backbone from the registry, loss, optimiser, schedule, epochs, seed); what the trainer
does with it (sampler, flips, Partial FC, the step, the schedule) is the same as for
``marginface train``. :func:`embed_arrays` embeds images with the trained backbone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from marginface.card import Preprocessing
from marginface.data import ArrayDataset, LabelMap, to_tensor
from marginface.train.checkpoint import RunState
from marginface.train.config import train_config
from marginface.train.trainer import Trainer, TrainModel, TrainResult

__all__ = ["QUIET_CPU", "ArrayRun", "embed_arrays", "train_arrays"]

#: What :func:`train_arrays` sets unless the caller's mapping says otherwise: one CPU process,
#: fp32, no DataLoader workers, nothing printed, no checkpoint before the last step.
QUIET_CPU: dict[str, Any] = {
    "device": "cpu",
    "amp": "none",
    "channels_last": False,
    "data": {"workers": 0, "preload": "device", "pin_memory": False},
    "log": {"progress": False, "tensorboard": False, "console": False},
    "checkpoint": {"every_steps": 1_000_000_000, "at_epoch_end": False, "keep": 1},
    "verify": {"at_epoch_end": False},
}


@dataclass
class ArrayRun:
    """A finished in-memory run: the trained networks (backbone in eval mode), the
    preprocessing its inputs need, and the trainer's result (``epoch_losses`` and all)."""

    model: TrainModel
    preprocessing: Preprocessing
    result: TrainResult

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def train_arrays(
    config: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    label_map: LabelMap | None = None,
    name: str = "arrays",
    on_epoch_end: Callable[[RunState], None] | None = None,
) -> ArrayRun:
    """Train as ``config`` (a TrainConfig mapping over :data:`QUIET_CPU`) says on ``images``.

    ``images``: ``(N, H, W, 3)`` uint8 RGB; ``labels``: ``(N,)``; ``label_map``: the classes
    (default ``0 .. max(labels)``; give it to keep classes with no image here).
    ``on_epoch_end(state)`` is called after every epoch. Ctrl-C: ``KeyboardInterrupt`` once the
    trainer has finished its step.
    """
    dataset = ArrayDataset(images, labels, label_map=label_map, name=name)
    with tempfile.TemporaryDirectory(prefix="marginface-train-") as tmp:
        values = _merged(QUIET_CPU, config)
        values = _merged(values, {"data": {"train": name}, "output": tmp})
        trainer = Trainer(train_config(values), dataset=dataset)
        trainer.on_epoch_end = on_epoch_end
        result = trainer.run()
    if result.interrupted:
        raise KeyboardInterrupt
    model = trainer.model
    assert model is not None and trainer.data is not None
    model.backbone.eval()
    return ArrayRun(model=model, preprocessing=trainer.data.preprocessing, result=result)


def embed_arrays(
    backbone: nn.Module, images: np.ndarray, preprocessing: Preprocessing, *, batch_size: int = 256
) -> Tensor:
    """Raw (not normalised) embeddings ``(N, D)`` of uint8 RGB ``images``, prepared by
    :func:`marginface.data.to_tensor` as in training; the backbone in eval mode."""
    backbone.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            batch = torch.stack(
                [to_tensor(im, preprocessing) for im in images[lo : lo + batch_size]]
            )
            out.append(backbone(batch))
    return torch.cat(out)
