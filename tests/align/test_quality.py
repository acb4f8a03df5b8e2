"""Face quality measures from landmarks and the aligned crop."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.align.quality import face_quality, sharpness

# the ArcFace 112x112 template: eyes, nose, mouth corners
FRONTAL = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])


def test_pose_from_landmarks() -> None:
    q = face_quality(FRONTAL, 0.95, None)
    assert q.size == pytest.approx(35.2, abs=0.1)
    assert abs(q.yaw) < 0.02 and 0.4 < q.pitch < 0.6
    turned = FRONTAL.copy()
    turned[2, 0] += 15  # nose towards the right eye: head turned
    assert face_quality(turned, 0.95, None).yaw > 0.4
    # rotating and scaling the whole face changes neither yaw nor pitch
    a = np.deg2rad(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = face_quality(2 * FRONTAL @ rot.T + 100, 0.95, None)
    assert moved.yaw == pytest.approx(q.yaw, abs=1e-6)
    assert moved.pitch == pytest.approx(q.pitch, abs=1e-6)
    assert moved.size == pytest.approx(2 * q.size)
    degenerate = face_quality(np.zeros((5, 2)), 0.9, None)
    assert degenerate.size == 0 and degenerate.score == 0


def test_sharpness_falls_with_blur() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(112, 112, 3)).astype(np.uint8)
    blurred = crop.astype(np.float32)
    for _ in range(3):
        blurred = (blurred + np.roll(blurred, 1, 0) + np.roll(blurred, 1, 1)) / 3
    assert sharpness(blurred.astype(np.uint8)) < sharpness(crop) / 5
    assert sharpness(np.zeros((2, 2))) == 0.0


def test_score_ranks_faces() -> None:
    small_blurred = face_quality(FRONTAL / 4, 0.5, np.full((112, 112), 128, np.uint8))
    good = face_quality(FRONTAL, 0.95, None)
    assert good.score > 0.8 > small_blurred.score
    assert set(good.to_dict()) == {
        "size",
        "detection_score",
        "sharpness",
        "yaw",
        "pitch",
        "face_prob",
        "score",
    }
