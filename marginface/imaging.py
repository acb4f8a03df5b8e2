"""Decoding image files into RGB ``uint8`` arrays, safely: the one decoder of marginface.

Inference (``marginface.align``: the pipeline, the gallery, the service, evaluation) and training
(``marginface.data``: data sets, RecordIO packing, ``.bin`` pair sets) both decode through
:func:`decode_image`, so a photo gives the same pixels wherever it enters. EXIF orientation is
applied, every Pillow mode (grayscale, grayscale+alpha, palette, RGBA, CMYK, 16-bit and float)
becomes 8-bit RGB (transparent pixels white), animated files give their first frame (and say
so), and a decompression-bomb guard refuses images whose header announces more pixels than
``max_pixels`` *before* any pixel is decoded.

Fast path: a complete 8-bit grayscale or colour JPEG (baseline, extended or progressive) without
an Exif segment, which is what training sets hold, is decoded by OpenCV (about twice as fast as
Pillow, the same pixels). Its size comes from the frame header (the bomb guard); anything else,
including every JPEG with Exif data (orientation may apply), a truncated file or a failure of
the fast decode, takes the Pillow path, which gives the reasons for errors.

This module sits below ``align`` and ``data`` (it imports only ``marginface.errors``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from marginface.errors import ImageError

if TYPE_CHECKING:  # Pillow is imported only for the images OpenCV does not decode
    from PIL.Image import Image as PILImage

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageSource",
    "ImageWarning",
    "decode_image",
    "describe_source",
    "encode_jpeg",
    "encode_png",
    "ensure_rgb_array",
    "read_image",
]

#: Images whose header announces more pixels than this are refused (about 100 megapixels,
#: 300 MB as RGB). Pass ``max_pixels`` to change it per call.
DEFAULT_MAX_PIXELS = 100_000_000

ImageSource = str | Path | bytes | bytearray | memoryview | np.ndarray


class ImageWarning(UserWarning):
    """Something about an image was handled but deserves attention (e.g. an animated GIF)."""


@dataclass
class DecodedImage:
    """A decoded image and what had to be done to get it."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    source: str = ""
    format: str = ""
    mode: str = ""  # the file's Pillow mode before conversion
    animated: bool = False
    n_frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def describe_source(src: ImageSource) -> str:
    """How error messages name an image source: its path, ``array(shape)`` or ``<N bytes>``."""
    if isinstance(src, str | Path):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"array{tuple(src.shape)}"
    return f"<{len(src)} bytes>"


def _read_bytes(src: str | Path) -> bytes:
    path = Path(src).expanduser()
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Map integer or float pixel values of any depth onto 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if peak <= 1.0 else (255.0 / 65535.0 if peak > 255.0 else 1.0)
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    values = array.astype(np.int64)
    peak = int(values.max()) if values.size else 0
    if peak <= 255:
        return np.clip(values, 0, 255).astype(np.uint8)
    # 16-bit data (also 16-bit stored in Pillow's 32-bit "I" mode): full range -> 0..255.
    return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)


def _pil_to_rgb(img: PILImage) -> np.ndarray:
    """Convert any Pillow image to an (H, W, 3) uint8 RGB array."""
    from PIL import Image  # heavy: Pillow, loaded on first use

    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        # Transparent regions become white, as image viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode in ("1", "L"):
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode.startswith("I") or mode == "F":
        gray = _to_8bit(np.asarray(img))
        if gray.ndim == 3:
            gray = gray[:, :, 0]
        return np.repeat(gray[:, :, None], 3, axis=2)
    # CMYK, YCbCr, LAB, HSV, RGBX, ...: Pillow knows the conversion.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def ensure_rgb_array(array: np.ndarray) -> np.ndarray:
    """Validate an in-memory image and return it as contiguous (H, W, 3) uint8 RGB.

    Accepts (H, W) grayscale, (H, W, 1), (H, W, 3) RGB and (H, W, 4) RGBA (alpha dropped), of
    any integer or float dtype (floats in 0..1 or 0..255).
    """
    if not isinstance(array, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"unsupported image array shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"empty image array of shape {array.shape}")
    array = _to_8bit(array)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


#: JPEG frame types that OpenCV and Pillow decode alike: baseline, extended and progressive
#: Huffman. Arithmetic-coded, lossless and hierarchical files take the Pillow path.
_FAST_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2})


def _plain_jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, components)`` of a JPEG that the fast path may decode, else None.

    Walks the markers up to the first scan: the file must start with SOI and end with EOI (a
    truncated file goes to Pillow, which names it), have one 8-bit frame header of a kind in
    ``_FAST_JPEG_FRAMES`` with 1 (grayscale) or 3 (colour) components, and no Exif segment.
    """
    if data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
        return None
    frame: tuple[int, int, int] | None = None
    pos, last = 2, len(data) - 4
    while pos <= last:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return frame
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or (marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00"):
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if marker not in _FAST_JPEG_FRAMES or frame is not None or pos + 10 > last:
                return None
            precision, components = data[pos + 4], data[pos + 9]
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            if precision != 8 or components not in (1, 3) or not height or not width:
                return None
            frame = (height, width, components)
        pos += 2 + length
    return None


def _decode_plain_jpeg(data: bytes, name: str, max_pixels: int | None) -> DecodedImage | None:
    """The fast path (see the module's docstring); None where the Pillow path must decide."""
    header = _plain_jpeg_header(data)
    if header is None:
        return None
    height, width, components = header
    if max_pixels is not None and height * width > max_pixels:
        return None  # the Pillow path refuses it with the guard's message
    import cv2  # heavy: OpenCV and Pillow load on the first decode, not with marginface

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # no Exif: nothing to orient
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if bgr is None or bgr.shape != (height, width, 3):
        return None
    return DecodedImage(
        pixels=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
        source=name,
        format="JPEG",
        mode="L" if components == 1 else "RGB",
    )


def decode_image(
    src: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, source: str | None = None
) -> DecodedImage:
    """Decode a file path, encoded bytes or an array into RGB, or raise :class:`ImageError`.

    The error message starts with ``source`` (default: the path, ``<N bytes>`` or
    ``array(shape)``) and says why: file not found, empty file, not an image, truncated or
    corrupt data, or an image larger than ``max_pixels`` (the decompression-bomb guard, checked
    from the header before decoding). Animated images yield their first frame with
    ``animated=True`` and a note.
    """
    name = source or describe_source(src)
    if isinstance(src, np.ndarray):
        return DecodedImage(ensure_rgb_array(src), source=name, mode="array")
    if isinstance(src, str | Path):
        data = _read_bytes(src)
    elif isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
    else:
        raise ImageError(f"cannot read an image from a {type(src).__name__}")
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    fast = _decode_plain_jpeg(data, name, max_pixels)
    return fast if fast is not None else _decode_with_pillow(data, name, max_pixels)


def _decode_with_pillow(data: bytes, name: str, max_pixels: int | None) -> DecodedImage:
    """Every format and mode Pillow reads, with EXIF orientation and the bomb guard."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # heavy: Pillow, loaded on first use

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognised)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image is too large (decompression-bomb guard)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: corrupt image ({exc})") from None

    with img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(
                f"{name}: image is {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                f"above the limit of {max_pixels / 1e6:.0f} (decompression-bomb guard)"
            )
        if width == 0 or height == 0:
            raise ImageError(f"{name}: image has no pixels ({width}x{height})")
        fmt, mode = img.format or "", img.mode
        n_frames = int(getattr(img, "n_frames", 1) or 1)
        animated = bool(getattr(img, "is_animated", False)) and n_frames > 1
        notes: list[str] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if animated:
                    img.seek(0)
                img.load()
                oriented = ImageOps.exif_transpose(img)
                pixels = _pil_to_rgb(oriented)
        except Image.DecompressionBombError:
            raise ImageError(f"{name}: image is too large (decompression-bomb guard)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            text = str(exc)
            reason = "truncated image" if "truncated" in text.lower() else f"corrupt image ({text})"
            raise ImageError(f"{name}: {reason}") from None
    if oriented is not img:
        notes.append("EXIF orientation applied")
    if animated:
        notes.append(f"animated {fmt or 'image'} with {n_frames} frames: the first frame is used")
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        source=name,
        format=fmt,
        mode=mode,
        animated=animated,
        n_frames=n_frames,
        notes=notes,
    )


def read_image(
    src: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, source: str | None = None
) -> np.ndarray:
    """Decode an image to an (H, W, 3) uint8 RGB array, or raise :class:`ImageError`.

    :func:`decode_image`'s pixels; animated images give their first frame and an
    :class:`ImageWarning`.
    """
    decoded = decode_image(src, max_pixels=max_pixels, source=source)
    if decoded.animated:
        warnings.warn(f"{decoded.source}: {decoded.notes[-1]}", ImageWarning, stacklevel=2)
    return decoded.pixels


def _encode(image: np.ndarray, ext: str, params: list[int], what: str) -> bytes:
    import cv2  # heavy: cv2

    rgb = np.ascontiguousarray(image)
    bgr = rgb if rgb.ndim == 2 else np.ascontiguousarray(rgb[..., ::-1])
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ImageError(f"{what} encoding failed")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB (or grey) ``uint8`` image as JPEG bytes at ``quality`` (1-100)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    import cv2  # heavy: cv2

    return _encode(image, ".jpg", [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)], "JPEG")


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB (or grey) ``uint8`` image as PNG bytes (lossless: stored face crops)."""
    return _encode(image, ".png", [], "PNG")
