"""Small labelled image sets for the feature-space figures: a few identities of real faces.

Sources (``name`` in :func:`load_identities`):

- ``celeba``: ``celeba-train-112/`` of the shared data (aligned 112×112 CelebA faces);
- ``orl``: the AT&T / ORL faces (10 photos per person);
- ``yale``: the Yale faces (about 11 photos per person);
- ``digits``: scikit-learn's bundled 8×8 digits, a fallback that needs no shared data;
- any folder with one sub-folder of images per identity.

The identities with the most images are chosen (ties broken by name), so the selection is the
same on every machine. Images are resized to a small square and scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginface.data import load_image
from marginface.errors import DataError, ImageError

__all__ = [
    "BUILTIN_SOURCES",
    "FaceSubset",
    "default_data_root",
    "load_identities",
]

BUILTIN_SOURCES: dict[str, str] = {
    "celeba": "celeba-train-112",
    "orl": "orl",
    "yale": "yale",
}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class FaceSubset:
    """Images ``(N, 3, S, S)`` float32 in ``[-1, 1]``, labels ``(N,)`` int64, identity names."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.names)


def default_data_root() -> Path:
    """``$MARGINFACE_SHARED_DATA``, else ``../shared/data`` beside the project (or the cwd)."""
    env = os.environ.get("MARGINFACE_SHARED_DATA")
    if env:
        return Path(env)
    project = Path(__file__).resolve().parents[2]
    for candidate in (project.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return project.parent / "shared" / "data"


def _natural_key(name: str) -> tuple[int, int | str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    if name.isdigit():
        return (0, int(name))
    if digits and name.rstrip("0123456789") and name.endswith(digits):
        return (1, f"{name.rstrip('0123456789')}{int(digits):012d}")
    return (2, name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.stem),
    )


def _read(path: Path, size: int) -> np.ndarray:
    import cv2  # slow to import: only loading a folder needs it

    try:
        image = load_image(path)  # the package's one decoder (GIF, 16-bit, EXIF, ...)
    except ImageError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    h, w = image.shape[:2]
    side = min(h, w)  # centre square crop, then resize (faces are roughly centred)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))


def _from_folders(
    root: Path, source: str, num_identities: int, per_identity: int, min_images: int, size: int
) -> FaceSubset:
    if not root.is_dir():
        raise DataError(
            f"data folder {root} not found; pass --data-root pointing at the shared data "
            "(or set MARGINFACE_SHARED_DATA), or use --data digits, which needs no files"
        )
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    counted = [(len(_image_files(p)), p) for p in folders]
    counted = [(n, p) for n, p in counted if n >= min_images]
    if len(counted) < num_identities:
        raise DataError(
            f"{root} has only {len(counted)} identities with at least {min_images} images; "
            f"{num_identities} are needed"
        )
    counted.sort(key=lambda item: (-item[0], _natural_key(item[1].name)))
    chosen = sorted((p for _, p in counted[:num_identities]), key=lambda p: _natural_key(p.name))
    images, labels = [], []
    for label, folder in enumerate(chosen):
        for path in _image_files(folder)[:per_identity]:
            images.append(_read(path, size))
            labels.append(label)
    stack = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return FaceSubset(
        stack, np.asarray(labels, dtype=np.int64), tuple(p.name for p in chosen), source
    )


def _digits(num_identities: int, per_identity: int, size: int) -> FaceSubset:
    import cv2  # slow to import; see _read
    from sklearn.datasets import load_digits  # heavy, and only this fallback needs it

    if num_identities > 10:
        raise DataError(f"the digits fallback has 10 classes; {num_identities} were asked for")
    digits = load_digits()
    images, labels = [], []
    for label in range(num_identities):
        idx = np.flatnonzero(digits.target == label)[:per_identity]
        for i in idx:
            img = (digits.images[i] / 16.0 * 255.0).astype(np.uint8)
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
            images.append(np.repeat(img[None], 3, axis=0))
            labels.append(label)
    stack = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return FaceSubset(
        stack,
        np.asarray(labels, dtype=np.int64),
        tuple(str(i) for i in range(num_identities)),
        "digits",
    )


def load_identities(
    source: str = "celeba",
    *,
    data_root: str | Path | None = None,
    num_identities: int = 8,
    per_identity: int = 30,
    min_images: int = 10,
    image_size: int = 32,
) -> FaceSubset:
    """Load ``num_identities`` identities (those with the most images) from ``source``.

    ``source`` is ``celeba``, ``orl``, ``yale``, ``digits`` or a folder of identity folders;
    ``data_root`` is the shared data folder (default :func:`default_data_root`).
    Raises :class:`~marginface.errors.DataError` when the data is missing or too small.
    """
    if num_identities < 2:
        raise DataError(f"at least 2 identities are needed, got {num_identities}")
    if per_identity < 2:
        raise DataError(f"at least 2 images per identity are needed, got {per_identity}")
    if image_size < 8:
        raise DataError(f"image_size must be at least 8 pixels, got {image_size}")
    key = str(source).lower()
    if key == "digits":
        return _digits(num_identities, per_identity, image_size)
    if key in BUILTIN_SOURCES:
        root = Path(data_root) if data_root is not None else default_data_root()
        return _from_folders(
            root / BUILTIN_SOURCES[key],
            key,
            num_identities,
            per_identity,
            min(min_images, per_identity),
            image_size,
        )
    folder = Path(source)
    if folder.is_dir():
        return _from_folders(
            folder,
            str(folder),
            num_identities,
            per_identity,
            min(min_images, per_identity),
            image_size,
        )
    raise DataError(
        f"unknown data source {source!r}; use celeba, orl, yale, digits or a folder of "
        "identity folders"
    )
