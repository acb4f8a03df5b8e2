"""Five-point face alignment: a least-squares similarity transform onto a fixed template.

The templates are insightface's: ``arcface_112x112`` is ``arcface_dst`` (the geometry of
MS1MV2/Glint360K training crops and of ``../shared/data/celeba-train-112``) and
``arcface_112x96`` is the original 96-wide SphereFace/CosFace template, the same points 8 px to
the left. Points are ordered: eye on the image's left (the subject's right eye), eye on the
image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TEMPLATES",
    "align_face",
    "estimate_similarity",
    "template_points",
    "template_size",
    "transform_points",
    "warp",
]

_ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

#: name -> (landmark points (5, 2) in pixels, crop size (height, width))
TEMPLATES: dict[str, tuple[np.ndarray, tuple[int, int]]] = {
    "arcface_112x112": (_ARCFACE_112, (112, 112)),
    "arcface_112x96": (_ARCFACE_112 - np.array([8.0, 0.0], dtype=np.float32), (112, 96)),
}


def _template(template: str) -> tuple[np.ndarray, tuple[int, int]]:
    if template not in TEMPLATES:
        raise ValueError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def template_points(template: str = "arcface_112x112") -> tuple[np.ndarray, tuple[int, int]]:
    """The template's five points (a copy) and its crop size (height, width)."""
    points, size = _template(template)
    return points.copy(), size


def template_size(template: str = "arcface_112x112") -> tuple[int, int]:
    """The size (height, width) of the crops aligned to ``template``: ``(112, 112)`` or
    ``(112, 96)``. Every part of marginface that needs a template's crop size asks here."""
    return _template(template)[1]


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``
    in the least-squares sense (Umeyama, 1991). Both are (N, 2) with N >= 2.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need two matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("landmarks contain NaN or infinity")
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise ValueError("degenerate landmarks: all points coincide")
    if rank == 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rotation = u @ vt
        else:
            last = d[1]
            d[1] = -1.0
            rotation = u @ np.diag(d) @ vt
            d[1] = last
    else:
        rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = float(s @ d) / src_var
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * (rotation @ src_mean)
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(
    image: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int] = (112, 112)
) -> np.ndarray:
    """Warp ``image`` by the (2, 3) ``matrix`` into a crop of ``size`` (height, width).

    Bilinear interpolation, black outside the image (as insightface's ``norm_crop`` and the
    training crops).
    """
    import cv2  # heavy: cv2

    height, width = (size, size) if isinstance(size, int) else size
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(width), int(height)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def align_face(
    image: np.ndarray, landmarks: np.ndarray, template: str = "arcface_112x112"
) -> np.ndarray:
    """The aligned crop ((112, 112, 3) or (112, 96, 3), same dtype and colour order as ``image``)
    whose five ``landmarks`` best match ``template``."""
    points, size = template_points(template)
    matrix = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), points)
    return warp(image, matrix, size)
