"""Verification during training: k-fold accuracy and TAR@FAR on a pairs file.

:class:`PairVerifier` reads the pairs once (``marginface.eval.load_pairs``: LFW ``pairs.txt``,
CSV ``path1,path2,same`` or insightface ``.bin``), turns every image into an aligned crop once
with ``marginface.eval``'s crop preparation (aligned data is read as is; raw photos such as
``celeba-dev`` are detected, filtered by the pipeline's score and size rules and aligned, as
``marginface eval verify`` does) and keeps the crops in memory. Each call then embeds the crops
with the network being trained and scores the pairs with ``marginface.eval``'s pair scoring and
metrics. A pair whose image could not be read or shows no usable face counts as a rejected
pair (score -1), as the LFW protocol counts failures against the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marginface.card import Preprocessing
from marginface.errors import ImageError
from marginface.eval.embeddings import EmbedOptions, aligned_sizes, prepare_crops
from marginface.eval.metrics import kfold_accuracy, tar_at_far
from marginface.eval.pairs import ImageRef, load_pairs
from marginface.eval.verify import pair_similarities
from marginface.imaging import read_image

__all__ = ["PairVerifier", "VerifyResult", "embed_crops"]


@dataclass
class VerifyResult:
    """Cross-validated accuracy (fractions), TAR at FAR, and what failed."""

    name: str
    accuracy: float
    std: float
    tar: dict[str, float | None]
    n_pairs: int
    n_failed_images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "std": self.std,
            **{f"tar@far={k}": v for k, v in self.tar.items()},
            "n_pairs": self.n_pairs,
            "n_failed_images": self.n_failed_images,
        }

    def __str__(self) -> str:
        tars = ", ".join(f"TAR@FAR={k} {v:.3f}" for k, v in self.tar.items() if v is not None)
        return (
            f"{self.name}: {100 * self.accuracy:.2f} ± {100 * self.std:.2f} % "
            f"({self.n_pairs} pairs{', ' + tars if tars else ''})"
        )


@torch.no_grad()
def embed_crops(
    model: nn.Module,
    crops: np.ndarray,
    preprocessing: Preprocessing,
    device: torch.device,
    *,
    flip: bool = True,
    batch_size: int = 128,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """L2-normalised embeddings ``(N, D)`` of ``(N, H, W, 3)`` uint8 RGB crops."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for lo in range(0, len(crops), batch_size):
            chunk = crops[lo : lo + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
            x = x.permute(0, 3, 1, 2).float()
            if preprocessing.color == "BGR":
                x = x.flip(1)
            x = (x - preprocessing.mean) / preprocessing.std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                e = model(x).float()
                if flip:
                    e = e + model(x.flip(3)).float()
            out.append(torch.nn.functional.normalize(e, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


class PairVerifier:
    """Pairs and their prepared crops; call :meth:`evaluate` with the network.

    ``aligned="auto"``: the images are taken as aligned crops when the file is a ``.bin`` or
    every readable image has the template's or the input's size; otherwise each photo is
    detected and aligned. ``workers`` threads prepare the crops (default: up to 8).
    """

    def __init__(
        self,
        pairs: str | Path,
        *,
        root: str | Path | None = None,
        aligned: bool | str = "auto",
        preprocessing: Preprocessing | None = None,
        flip: bool = True,
        batch_size: int = 128,
        name: str = "",
        workers: int | None = None,
    ) -> None:
        self.pre = preprocessing or Preprocessing()
        self.flip = flip
        self.batch_size = batch_size
        path = Path(pairs)
        self.pairs = load_pairs(path, root)
        self.name = name or (path.parent.name if path.suffix.lower() != ".bin" else path.stem)
        if aligned == "auto":
            sizes = aligned_sizes(self.pre)
            aligned = self.pairs.format == "bin" or all(
                _size(ref) in (None, *sizes) for ref in self.pairs.images
            )
        self.aligned = bool(aligned)
        self.crops, self.failures = prepare_crops(
            self.pairs.images, self.pre, EmbedOptions(aligned=self.aligned), workers=workers
        )

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device,
        *,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> VerifyResult:
        """Embed every crop with ``model`` and score the pairs."""
        emb = embed_crops(
            model,
            self.crops,
            self.pre,
            device,
            flip=self.flip,
            batch_size=self.batch_size,
            amp_dtype=amp_dtype,
            channels_last=channels_last,
        )
        p = self.pairs
        ok = np.ones(len(emb), dtype=bool)
        ok[list(self.failures)] = False
        scores, _ = pair_similarities(emb, ok, p.left, p.right)
        kf = kfold_accuracy(scores, p.issame, p.folds)
        tars = tar_at_far(scores, p.issame, fars=("1e-2", "1e-3"))
        return VerifyResult(
            name=self.name,
            accuracy=kf.mean,
            std=kf.std,
            tar={k: v.tar for k, v in tars.items()},
            n_pairs=p.n_pairs,
            n_failed_images=len(self.failures),
        )


def _size(ref: ImageRef) -> tuple[int, int] | None:
    """An image's (height, width), None when it cannot be read."""
    try:
        image = read_image(ref.data if ref.data is not None else (ref.path or ref.key))
    except ImageError:
        return None
    return image.shape[0], image.shape[1]
