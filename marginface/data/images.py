"""Face images for data loading: which files are images, decoding, JPEG encoding.

Decoding is :func:`marginface.imaging.decode_image`, the decoder inference uses (EXIF
orientation, every Pillow mode, the decompression-bomb guard, OpenCV's fast path for plain
JPEGs); it is available here under the same name, as is :func:`~marginface.imaging.encode_jpeg`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marginface.imaging import decode_image, encode_jpeg, read_image

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "encode_jpeg", "is_image_file", "load_image"]

#: File name suffixes treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".pgm",
        ".ppm",
        ".pbm",
        ".pnm",
        ".tif",
        ".tiff",
        ".webp",
    }
)


def is_image_file(name: str | Path) -> bool:
    """Whether ``name`` has an image suffix (case-insensitive) and is not a hidden file."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to RGB ``uint8``; :class:`ImageError` when impossible."""
    return read_image(Path(path))
