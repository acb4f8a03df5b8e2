"""Angular statistics on features whose angles are known."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.plots.metrics import angular_stats, class_centres


def _on_circle(degrees: list[float], norm: float = 1.0) -> np.ndarray:
    r = np.radians(degrees)
    return norm * np.stack([np.cos(r), np.sin(r)], 1)


def test_known_angles() -> None:
    feats = np.concatenate(
        [_on_circle([-10, 10], 3.0), _on_circle([80, 100]), _on_circle([170, 190], 0.2)]
    )
    labels = np.array([0, 0, 1, 1, 2, 2])
    s = angular_stats(feats, labels, quantile=1.0)
    assert s.mean_intra_angle == pytest.approx(10.0)
    assert s.min_inter_angle == pytest.approx(90.0)
    assert s.angular_gap == pytest.approx(70.0)
    np.testing.assert_allclose(class_centres(feats, labels), _on_circle([0, 90, 180]), atol=1e-12)


def test_overlap_gives_a_negative_gap() -> None:
    feats = _on_circle([0, 40, 20, 60])
    s = angular_stats(feats, np.array([0, 0, 1, 1]), quantile=1.0)
    assert s.min_inter_angle == pytest.approx(20.0)
    assert s.angular_gap == pytest.approx(-20.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        angular_stats(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError):
        angular_stats(_on_circle([0, 1]), np.array([0, 0]))
