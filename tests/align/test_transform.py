"""Umeyama similarity, warping and the alignment templates."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.align import (
    TEMPLATES,
    align_face,
    estimate_similarity,
    template_points,
    template_size,
    transform_points,
    warp,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


def test_recovers_an_exact_similarity():
    src = np.array([[10, 20], [60, 22], [35, 50], [15, 80], [55, 78]], dtype=np.float64)
    m = _similarity(23.0, 1.7, -12.0, 40.0)
    dst = transform_points(src, m)
    np.testing.assert_allclose(estimate_similarity(src, dst), m, atol=1e-9)


def test_matches_scikit_image_least_squares_with_noise():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(3)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = transform_points(src, _similarity(-40.0, 0.4, 5.0, 9.0)) + rng.normal(0, 2.0, (5, 2))
    reference = (
        SimilarityTransform.from_estimate(src, dst)
        if hasattr(SimilarityTransform, "from_estimate")
        else None
    )
    if reference is None:
        reference = SimilarityTransform()
        assert reference.estimate(src, dst)
    np.testing.assert_allclose(estimate_similarity(src, dst), reference.params[:2], atol=1e-8)


def test_reflections_are_never_returned():
    src, _ = template_points()
    mirrored = src.copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_points_are_refused():
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError):
        estimate_similarity(np.full((5, 2), np.nan), np.ones((5, 2)))


def test_templates_and_crop_sizes():
    p112, s112 = template_points("arcface_112x112")
    p96, s96 = template_points("arcface_112x96")
    assert s112 == (112, 112) and s96 == (112, 96)
    np.testing.assert_allclose(p112 - p96, [[8, 0]] * 5)
    np.testing.assert_allclose(p112[0], [38.2946, 51.6963])
    assert set(TEMPLATES) == {"arcface_112x112", "arcface_112x96"}
    with pytest.raises(ValueError):
        template_points("nope")
    # the one place crop sizes come from (aligner, embedder, evaluation, training, dev crops)
    assert template_size("arcface_112x112") == (112, 112)
    assert template_size("arcface_112x96") == (112, 96)
    with pytest.raises(ValueError, match="unknown alignment template"):
        template_size("nope")


def test_align_face_puts_landmarks_on_the_template():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
    m = _similarity(15.0, 2.5, 100.0, 20.0)
    pts, _ = template_points()
    landmarks = transform_points(pts, m)  # the template's points as seen in the image
    for name in ("arcface_112x112", "arcface_112x96"):
        crop = align_face(image, landmarks, template=name)
        points, (h, w) = template_points(name)
        assert crop.shape == (h, w, 3) and crop.dtype == np.uint8
        back = transform_points(landmarks, estimate_similarity(landmarks, points))
        np.testing.assert_allclose(back, points, atol=1e-3)


def test_warp_is_black_outside_the_image():
    image = np.full((50, 50, 3), 200, dtype=np.uint8)
    shifted = warp(image, np.array([[1, 0, 30], [0, 1, 0]], dtype=np.float64), (40, 40))
    assert shifted[:, :25].min() == 0 and shifted[:, 35:].min() == 200
