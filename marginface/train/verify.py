"""Verification during training: k-fold accuracy and TAR@FAR on a pairs file.

:class:`PairVerifier` reads the pairs once (``marginface.eval.load_pairs``: LFW ``pairs.txt``,
CSV ``path1,path2,same`` or insightface ``.bin``), turns every image into an aligned crop once
(aligned data is read as is; raw photos such as ``celeba-dev`` go through detection and
five-point alignment from ``marginface.align``) and keeps the crops in memory. Each call then
embeds the crops with the network being trained and scores the pairs with
``marginface.eval``'s metrics. A pair whose image could not be read or shows no face counts as
a rejected pair (score -1), as the LFW protocol counts failures against the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marginface.card import Preprocessing
from marginface.errors import DataError, ImageError

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
        return {"accuracy": self.accuracy, "std": self.std,
                **{f"tar@far={k}": v for k, v in self.tar.items()},
                "n_pairs": self.n_pairs, "n_failed_images": self.n_failed_images}

    def __str__(self) -> str:
        tars = ", ".join(f"TAR@FAR={k} {v:.3f}" for k, v in self.tar.items() if v is not None)
        return (f"{self.name}: {100 * self.accuracy:.2f} ± {100 * self.std:.2f} % "
                f"({self.n_pairs} pairs{', ' + tars if tars else ''})")


@torch.no_grad()
def embed_crops(model: nn.Module, crops: np.ndarray, preprocessing: Preprocessing,
                device: torch.device, *, flip: bool = True, batch_size: int = 128,
                amp_dtype: torch.dtype | None = None,
                channels_last: bool = False) -> np.ndarray:
    """L2-normalised embeddings ``(N, D)`` of ``(N, H, W, 3)`` uint8 RGB crops."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for lo in range(0, len(crops), batch_size):
            chunk = crops[lo:lo + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
            x = x.permute(0, 3, 1, 2).float()
            if preprocessing.color == "BGR":
                x = x.flip(1)
            x = (x - preprocessing.mean) / preprocessing.std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                e = model(x).float()
                if flip:
                    e = e + model(x.flip(3)).float()
            out.append(torch.nn.functional.normalize(e, dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


class PairVerifier:
    """Pairs and their prepared crops; call :meth:`evaluate` with the network."""

    def __init__(self, pairs: str | Path, *, root: str | Path | None = None,
                 aligned: bool | str = "auto", preprocessing: Preprocessing | None = None,
                 flip: bool = True, batch_size: int = 128, name: str = "") -> None:
        from marginface.eval.pairs import load_pairs

        self.pre = preprocessing or Preprocessing()
        self.flip = flip
        self.batch_size = batch_size
        path = Path(pairs)
        self.pairs = load_pairs(path, root)
        self.name = name or (path.parent.name if path.suffix.lower() != ".bin" else path.stem)
        images = [self._read(ref) for ref in self.pairs.images]
        template_hw = (112, 96) if self.pre.template == "arcface_112x96" else (112, 112)
        if aligned == "auto":
            shapes = {im.shape[:2] for im in images if isinstance(im, np.ndarray)}
            aligned = self.pairs.format == "bin" or shapes <= {template_hw,
                                                               tuple(self.pre.input_size)}
        self.aligned = bool(aligned)
        detector = None
        if not self.aligned:
            from marginface.align import load_detector

            detector = load_detector("yunet")
        h, w = self.pre.input_size
        self.crops = np.zeros((len(images), h, w, 3), dtype=np.uint8)
        self.failures: dict[int, str] = {}
        for i, im in enumerate(images):
            if isinstance(im, str):
                self.failures[i] = im
                continue
            crop = im if self.aligned else self._align(im, detector)
            if isinstance(crop, str):
                self.failures[i] = crop
                continue
            from marginface.data.augment import resize_to

            self.crops[i] = resize_to(crop, (h, w))

    @staticmethod
    def _read(ref: Any) -> np.ndarray | str:
        from marginface.align import read_image

        try:
            return read_image(ref.data if ref.data is not None else ref.path)
        except ImageError as exc:
            return f"unreadable: {exc}"

    def _align(self, image: np.ndarray, detector: Any) -> np.ndarray | str:
        from marginface.align import align_face, select_faces

        faces = select_faces(detector.detect(image), image.shape, selection="largest")
        if not faces:
            return "no face found"
        return align_face(image, faces[0].landmarks, template=self.pre.template)

    def evaluate(self, model: nn.Module, device: torch.device, *,
                 amp_dtype: torch.dtype | None = None, channels_last: bool = False
                 ) -> VerifyResult:
        """Embed every crop with ``model`` and score the pairs."""
        from marginface.eval.metrics import kfold_accuracy, tar_at_far

        emb = embed_crops(model, self.crops, self.pre, device, flip=self.flip,
                          batch_size=self.batch_size, amp_dtype=amp_dtype,
                          channels_last=channels_last)
        p = self.pairs
        scores = np.sum(emb[p.left] * emb[p.right], axis=1).astype(np.float64)
        if self.failures:
            bad = np.zeros(len(emb), dtype=bool)
            bad[list(self.failures)] = True
            scores[bad[p.left] | bad[p.right]] = -1.0
        if not np.all(np.isfinite(scores)):
            raise DataError("verification produced non-finite scores (the network diverged)")
        kf = kfold_accuracy(scores, p.issame, p.folds)
        tars = tar_at_far(scores, p.issame, fars=("1e-2", "1e-3"))
        return VerifyResult(name=self.name, accuracy=kf.mean, std=kf.std,
                            tar={k: v.tar for k, v in tars.items()}, n_pairs=p.n_pairs,
                            n_failed_images=len(self.failures))
