"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` file is a pickle of ``(bins, issame)``: ``bins`` a list of ``2 * P`` encoded images
(JPEG/PNG bytes of aligned 112×112 faces), ``issame`` a list of ``P`` booleans; pair ``i`` is
images ``2 * i`` and ``2 * i + 1``. insightface wrote them with Python 2, so they are read with
``encoding="bytes"``.

The pickle is read with a restricted unpickler that only rebuilds plain containers, bytes,
numbers and numpy arrays, so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marginface.data.augment import resize_to
from marginface.data.images import decode_image, encode_jpeg
from marginface.errors import DataError, ImageError

__all__ = ["VerificationSet", "read_verification_bin", "write_verification_bin"]

_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "bool"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .bin file")
        return super().find_class(module, name)


@dataclass
class VerificationSet:
    """Decoded pairs: ``images`` ``(2P, H, W, 3)`` uint8 RGB, ``issame`` ``(P,)`` bool."""

    name: str
    images: np.ndarray
    issame: np.ndarray

    def __len__(self) -> int:
        return int(self.issame.shape[0])

    @property
    def first(self) -> np.ndarray:
        """The first image of every pair, ``(P, H, W, 3)``."""
        return self.images[0::2]

    @property
    def second(self) -> np.ndarray:
        """The second image of every pair, ``(P, H, W, 3)``."""
        return self.images[1::2]


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, np.ndarray):
        return item.astype(np.uint8, copy=False).tobytes()
    if isinstance(item, str):  # Python-2 str read with encoding="latin1"
        return item.encode("latin1")
    raise DataError(f"unexpected image entry of type {type(item).__name__}")


def read_verification_bin(
    path: str | Path, image_size: tuple[int, int] | None = None, threads: int = 4
) -> VerificationSet:
    """Read and decode a verification ``.bin``.

    Images are resized to ``image_size`` ``(height, width)`` when given; otherwise they must all
    have one size. Raises :class:`DataError` for a missing, malformed or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"verification file not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = _SafeUnpickler(fh, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
    ) as exc:
        raise DataError(f"{path}: not a verification .bin file ({exc})") from None
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DataError(f"{path}: expected a pickle of (images, issame)")
    bins, issame_list = data
    issame = np.asarray([bool(x) for x in issame_list], dtype=bool)
    if len(bins) != 2 * len(issame):
        raise DataError(
            f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})"
        )
    if len(issame) == 0:
        raise DataError(f"{path}: contains no pairs")

    def decode(i: int) -> np.ndarray:
        try:
            img = decode_image(_as_bytes(bins[i]), source=f"{path}[{i}]").pixels
        except ImageError as exc:
            raise DataError(
                f"{path}: image {i} (pair {i // 2}) cannot be decoded: "
                f"{str(exc).split(': ', 1)[-1]}"
            ) from None
        return resize_to(img, image_size) if image_size is not None else img

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        images = list(pool.map(decode, range(len(bins))))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(
            f"{path}: images have different sizes {sorted(shapes)[:3]}; "
            "pass image_size to resize them"
        )
    return VerificationSet(path.stem, np.stack(images), issame)


def write_verification_bin(
    path: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    quality: int = 95,
) -> Path:
    """Write RGB ``uint8`` images (pairs consecutive) and ``issame`` as an insightface ``.bin``."""
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs")
    bins = [encode_jpeg(np.asarray(im), quality) for im in images]
    buf = io.BytesIO()
    pickle.dump((bins, [bool(x) for x in issame]), buf, protocol=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
