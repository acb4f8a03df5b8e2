"""Calibration into the card and the loud refusal to use an uncalibrated model silently."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.card import ModelCard
from marginface.decision import resolve_threshold
from marginface.errors import DataError, GalleryError
from marginface.eval.calibrate import calibrate


def _scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    neg = rng.normal(0.1, 0.1, 3000)
    pos = rng.normal(0.6, 0.1, 3000)
    return np.r_[pos, neg], np.r_[np.ones(3000, bool), np.zeros(3000, bool)]


def test_calibrate_writes_resolvable_thresholds() -> None:
    s, y = _scores()
    cal = calibrate(s, y, dataset="synthetic")
    assert list(cal.thresholds) == ["1e-2", "1e-3"]  # 3000 negatives cannot resolve 1e-4
    assert cal.default_far == "1e-3" and cal.n_negative_pairs == 3000 and cal.n_pairs == 6000
    neg = s[~y]
    assert np.mean(neg >= cal.thresholds["1e-3"]) <= 1e-3
    assert np.mean(neg >= cal.thresholds["1e-2"]) <= 1e-2
    assert cal.thresholds["1e-3"] > cal.thresholds["1e-2"]
    card = ModelCard(name="m", architecture="mbf", embedding_dim=8, calibration=cal)
    assert resolve_threshold(card) == cal.thresholds["1e-3"]
    assert resolve_threshold(card, far="1e-2") == cal.thresholds["1e-2"]
    with pytest.raises(GalleryError, match="FAR=1e-4"):
        resolve_threshold(card, far="1e-4")


def test_calibrate_default_falls_back_and_too_small_set_fails() -> None:
    s, y = _scores()
    keep = np.r_[np.arange(3000), 3000 + np.arange(500)]  # 500 negatives: only 1e-2
    cal = calibrate(s[keep], y[keep])
    assert list(cal.thresholds) == ["1e-2"] and cal.default_far == "1e-2"
    with pytest.raises(DataError, match="cannot resolve"):
        calibrate(s[:3050], y[:3050])


def test_uncalibrated_model_is_loud() -> None:
    card = ModelCard(name="raw", architecture="mbf", embedding_dim=8)
    with pytest.raises(GalleryError, match=r"no calibrated threshold.*marginface calibrate"):
        resolve_threshold(card)
    assert resolve_threshold(card, 0.4) == 0.4  # explicit is allowed
    with pytest.raises(GalleryError):
        resolve_threshold(card, 3.0)
