"""A training set decoded once into device memory (``data.preload: device``).

41,600 aligned 112×112 RGB faces are 1.6 GB as ``uint8``: they fit in a GPU's memory, so the
JPEGs are decoded once (threads on the host) and every batch is gathered, flipped and
normalised on the device. No DataLoader workers, no host-to-device copies per step.

The batches are those of the normal loader: the same sampler, so the same indices in the same
order for a seed and epoch, and the same labels. With ``augment: none`` the images are
identical to the normal loader's; with ``flip`` each sample's flip is drawn from
``(seed, epoch, index)`` (a different random stream than albumentations', equally seeded and
independent of ranks and resumes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from marginface.card import Preprocessing
from marginface.data.augment import resize_to
from marginface.data.datasets import FaceBatch, FaceDataset, SkippedSample
from marginface.data.samplers import SeededBatches
from marginface.errors import DataError, ImageError

__all__ = ["PreloadedImages", "PreloadedLoader", "flip_mask", "preload_images"]


@dataclass
class PreloadedImages:
    """Every image of a data set as ``(N, H, W, 3)`` uint8 RGB on one device.

    ``ok[i]`` is False for an image that could not be decoded (its slot is zeros; the loader
    drops it from a batch and reports it as skipped).
    """

    images: Tensor
    labels: Tensor
    ok: Tensor
    sources_failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.images.numel())

    def matches(self, dataset: FaceDataset, size: tuple[int, int]) -> bool:
        """True when this was preloaded from a data set like ``dataset`` at ``size``."""
        return (
            len(self) == len(dataset)
            and tuple(self.images.shape[1:3]) == tuple(size)
            and np.array_equal(self.labels.cpu().numpy(), np.asarray(dataset.labels))
        )


def preload_images(
    dataset: FaceDataset,
    size: tuple[int, int],
    device: torch.device,
    *,
    threads: int = 8,
    progress: bool = True,
) -> PreloadedImages:
    """Decode (and resize to ``size``) every image of ``dataset`` into ``device`` memory."""
    n = len(dataset)
    h, w = int(size[0]), int(size[1])
    host = np.zeros((n, h, w, 3), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    failed: dict[int, str] = {}
    t0 = time.perf_counter()

    def load(i: int) -> None:
        try:
            image = dataset.load_image(i)
        except (ImageError, DataError) as exc:
            ok[i] = False
            failed[i] = str(exc)
            return
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        host[i] = resize_to(image, (h, w))

    chunk = 4096
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for lo in range(0, n, chunk):
            list(pool.map(load, range(lo, min(n, lo + chunk))))
            if progress:
                print(
                    f"preload: {min(n, lo + chunk)}/{n} images decoded "
                    f"({time.perf_counter() - t0:.1f} s)",
                    flush=True,
                )
    images = torch.from_numpy(host).to(device)
    labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.long).to(device)
    return PreloadedImages(
        images=images,
        labels=labels,
        ok=torch.from_numpy(ok).to(device),
        sources_failed=failed,
        seconds=time.perf_counter() - t0,
    )


def flip_mask(n: int, p: float, seed: int, epoch: int) -> Tensor:
    """Which of ``n`` samples are mirrored in ``epoch``: a function of (seed, epoch, index)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63)
    return torch.rand(n, generator=gen) < p


class PreloadedLoader:
    """Iterates the trainer's :class:`SeededBatches` and builds each batch on the device."""

    def __init__(
        self,
        data: PreloadedImages,
        batches: SeededBatches,
        preprocessing: Preprocessing,
        hflip: float,
        sources: Any = None,
    ) -> None:
        self.data = data
        self.batches = batches
        self.pre = preprocessing
        self.hflip = float(hflip)
        self.seed = batches.seed
        self.sources = sources
        self._flips: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def _flip_mask(self, epoch: int) -> Tensor:
        if self._flips is None or self._flips[0] != epoch:
            mask = flip_mask(len(self.data), self.hflip, self.seed, epoch)
            self._flips = (epoch, mask.to(self.data.images.device))
        return self._flips[1]

    def __iter__(self) -> Iterator[FaceBatch]:
        dev = self.data.images.device
        mean, std = float(self.pre.mean), float(self.pre.std)
        for keys in self.batches:
            if not keys:
                continue
            epoch = keys[0][1]
            idx = torch.tensor([k[0] for k in keys], dtype=torch.long)
            skipped = []
            good = self.data.ok[idx.to(dev)]
            if not bool(good.all()):
                bad = idx[~good.cpu()]
                skipped = [
                    SkippedSample(
                        int(i),
                        self._source(int(i)),
                        self.data.sources_failed.get(int(i), "unreadable"),
                    )
                    for i in bad
                ]
                idx = idx[good.cpu()]
            idx_dev = idx.to(dev, non_blocking=True)
            x = self.data.images.index_select(0, idx_dev).permute(0, 3, 1, 2).float()
            if self.pre.color == "BGR":
                x = x.flip(1)
            if self.hflip > 0 and len(idx):
                m = self._flip_mask(epoch).index_select(0, idx_dev).view(-1, 1, 1, 1)
                x = torch.where(m, x.flip(3), x)
            x = (x - mean) / std
            yield FaceBatch(x, self.data.labels.index_select(0, idx_dev), skipped, idx_dev)

    def _source(self, index: int) -> str:
        try:
            return str(self.sources(index)) if self.sources is not None else f"#{index}"
        except Exception:
            return f"#{index}"
