"""Fixtures: synthetic faces and a transparent embedder for fast protocol tests.

Each synthetic subject is a random low-resolution colour pattern; its images are that pattern
plus noise, stored as 112x112 PNGs. ``PatternEmbedder`` (a real :class:`Embedder` subclass)
averages the normalised crop over an 8x8 grid, so images of one subject are close in cosine
and images of different subjects are not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from marginface.align.detect import Detection, Detector
from marginface.align.transform import template_points
from marginface.card import ModelCard
from marginface.embed.base import Embedder


class PatternEmbedder(Embedder):
    """8x8x3 block means of the preprocessed crop: a 192-d embedding, counting its calls."""

    def __init__(self, name: str = "pattern") -> None:
        super().__init__(ModelCard(name=name, architecture="test", embedding_dim=192))
        self.n_embedded = 0

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        self.n_embedded += batch.shape[0]
        n = batch.shape[0]
        return batch.reshape(n, 3, 8, 14, 8, 14).mean(axis=(3, 5)).reshape(n, -1)


class CentreDetector(Detector):
    """Finds one 'face' (template landmarks scaled to the image) unless the image is black."""

    name = "centre"

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.mean() < 5:
            return []
        h, w = image.shape[:2]
        points, _ = template_points("arcface_112x112")
        lm = (points * np.array([w / 112.0, h / 112.0])).astype(np.float32)
        return [Detection(box=np.array([0, 0, w, h], np.float32), score=0.99, landmarks=lm)]


def synthetic_faces(
    root: Path, n_subjects: int = 8, per_subject: int = 4, seed: int = 0, size: int = 112
) -> dict[str, list[Path]]:
    """Write ``<root>/<subject>/<subject>_<n:04d>.png`` and return the files per subject."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for s in range(n_subjects):
        name = f"person_{s:02d}"
        base = rng.integers(30, 226, size=(8, 8, 3)).astype(np.float64)
        base = np.kron(base, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
        (root / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(1, per_subject + 1):
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            path = root / name / f"{name}_{i:04d}.png"
            Image.fromarray(img).save(path)
            out[name].append(path)
    return out


def lfw_pairs_for(
    files: dict[str, list[Path]],
    path: Path,
    ext_root: Path,
    n_folds: int = 2,
    per_fold: int = 6,
    seed: int = 1,
) -> Path:
    """An LFW-format pairs file over ``files`` (names in ``<root>/<name>/<name>_NNNN``)."""
    rng = np.random.default_rng(seed)
    names = sorted(files)
    lines = [f"{n_folds}\t{per_fold}"]
    for _ in range(n_folds):
        for _ in range(per_fold):
            name = names[rng.integers(len(names))]
            a, b = rng.choice(len(files[name]), 2, replace=False) + 1
            lines.append(f"{name}\t{a}\t{b}")
        for _ in range(per_fold):
            n1, n2 = rng.choice(len(names), 2, replace=False)
            lines.append(
                f"{names[n1]}\t{rng.integers(len(files[names[n1]])) + 1}\t"
                f"{names[n2]}\t{rng.integers(len(files[names[n2]])) + 1}"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_faces() -> Callable[..., dict[str, list[Path]]]:
    """:func:`synthetic_faces`, for tests that need their own subjects."""
    return synthetic_faces


@pytest.fixture
def faces(tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    """Eight synthetic subjects with four 112x112 PNG 'crops' each."""
    root = tmp_path / "faces"
    return root, synthetic_faces(root)


@pytest.fixture
def embedder_factory() -> type[PatternEmbedder]:
    return PatternEmbedder


@pytest.fixture
def centre_detector() -> CentreDetector:
    return CentreDetector()


@pytest.fixture
def write_lfw_pairs() -> Callable[..., Path]:
    return lfw_pairs_for


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A model directory holding an untrained tiny network (fast, and uncalibrated)."""
    import torch
    from safetensors.torch import save_file

    from marginface.backbones import create
    from marginface.card import ModelCard

    torch.manual_seed(0)
    net = create("tiny", embedding_dim=32).eval()
    folder = tmp_path / "tiny_model"
    folder.mkdir()
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(folder / "weights.safetensors"),
    )
    ModelCard(name="tiny-test", architecture="tiny", embedding_dim=32).save(folder)
    return folder
