"""Images as face detection sees them: the decoder, the smallest usable image, detection size.

Decoding is :mod:`marginface.imaging`'s (shared with training); its names are available here
and from ``marginface.align`` as before. This module adds the rules that belong to finding
faces: :data:`MIN_IMAGE_SIDE` with :class:`ImageTooSmallError`, and
:func:`resize_longest_side`.
"""

from __future__ import annotations

import numpy as np

from marginface.errors import ImageError
from marginface.imaging import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageSource,
    ImageWarning,
    decode_image,
    describe_source,
    ensure_rgb_array,
    read_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_IMAGE_SIDE",
    "DecodedImage",
    "ImageSource",
    "ImageTooSmallError",
    "ImageWarning",
    "decode_image",
    "describe_source",
    "ensure_rgb_array",
    "read_image",
    "resize_longest_side",
]

#: The smallest image side (pixels) that can hold a usable face.
MIN_IMAGE_SIDE = 20


class ImageTooSmallError(ImageError):
    """The image (or every face in it) is too small to hold a usable face."""


def resize_longest_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink ``image`` so its longest side is at most ``max_side``; returns (image, scale).

    ``scale`` is new/old size (1.0 when nothing changed); divide coordinates found in the
    returned image by it to map them back.
    """
    import cv2  # heavy: cv2

    height, width = image.shape[:2]
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return image, 1.0
    scale = max_side / float(longest)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # Use the exact per-axis ratio actually applied (rounding) for the common scale.
    return resized, size[0] / float(width)
