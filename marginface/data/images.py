"""Decoding and encoding of face images for data loading (RGB ``uint8`` ``(H, W, 3)`` arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marginface.errors import ImageError

__all__ = ["IMAGE_EXTENSIONS", "decode_image", "encode_jpeg", "is_image_file", "load_image"]

#: File name suffixes treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp",
})


def is_image_file(name: str | Path) -> bool:
    """Whether ``name`` has an image suffix (case-insensitive) and is not a hidden file."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def decode_image(data: bytes | bytearray | memoryview | np.ndarray, source: str = "") -> np.ndarray:
    """Decode encoded image bytes to an RGB ``uint8`` array ``(H, W, 3)``.

    Grayscale, RGBA and 16-bit inputs become 8-bit RGB. Raises :class:`ImageError` naming
    ``source`` when the bytes are empty or not a decodable image.
    """
    import cv2

    where = f"{source}: " if source else ""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.size == 0:
        raise ImageError(f"{where}empty image data")
    img = cv2.imdecode(buf.reshape(-1), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageError(f"{where}not a readable image (corrupt, truncated or unknown format)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to RGB ``uint8``; :class:`ImageError` when impossible."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, source=str(path))


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB ``uint8`` image as JPEG bytes at ``quality`` (1-100)."""
    import cv2

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    rgb = np.ascontiguousarray(image)
    bgr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()
