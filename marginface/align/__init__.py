"""Face detection, five-point alignment and safe image decoding.

``read_image`` turns files or bytes into RGB arrays (:mod:`marginface.imaging`'s decoder, the
one training uses too); ``load_detector`` gives a :class:`Detector` (YuNet by default, MTCNN
optionally); ``estimate_similarity``, ``warp`` and ``align_face`` map five landmarks onto the
ArcFace template, whose crop size ``template_size`` gives.
"""

from marginface.align.aligner import (
    DEFAULT_MIN_FACE_SIZE,
    DEFAULT_SCORE_THRESHOLD,
    Aligner,
    AlignResult,
)
from marginface.align.detect import (
    Detection,
    Detector,
    Selection,
    YuNetDetector,
    load_detector,
    select_faces,
)
from marginface.align.image import (
    DEFAULT_MAX_PIXELS,
    MIN_IMAGE_SIDE,
    DecodedImage,
    ImageTooSmallError,
    ImageWarning,
    decode_image,
    ensure_rgb_array,
    read_image,
    resize_longest_side,
)
from marginface.align.transform import (
    TEMPLATES,
    align_face,
    estimate_similarity,
    template_points,
    template_size,
    transform_points,
    warp,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_FACE_SIZE",
    "DEFAULT_SCORE_THRESHOLD",
    "MIN_IMAGE_SIDE",
    "TEMPLATES",
    "AlignResult",
    "Aligner",
    "DecodedImage",
    "Detection",
    "Detector",
    "ImageTooSmallError",
    "ImageWarning",
    "Selection",
    "YuNetDetector",
    "align_face",
    "decode_image",
    "ensure_rgb_array",
    "estimate_similarity",
    "load_detector",
    "read_image",
    "resize_longest_side",
    "select_faces",
    "template_points",
    "template_size",
    "transform_points",
    "warp",
]
