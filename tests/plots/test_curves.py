"""The figures' numbers come from the heads and match the papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marginface.plots.curves import (
    BOUNDARY_HEADS,
    decision_regions_angles,
    decision_regions_plane,
    logit_curves,
    make_boundary_head,
)


@pytest.fixture(scope="module")
def curves() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return logit_curves()


def _curve(curves, prefix: str) -> np.ndarray:
    (values,) = [v for k, v in curves[1].items() if k.startswith(prefix)]
    return values


def test_curves_equal_the_papers_formulas(curves) -> None:
    theta = np.radians(curves[0])
    np.testing.assert_allclose(_curve(curves, "Softmax"), np.cos(theta), atol=1e-12)
    np.testing.assert_allclose(_curve(curves, "NormFace"), np.cos(theta), atol=1e-12)
    np.testing.assert_allclose(_curve(curves, "CosFace"), np.cos(theta) - 0.35, atol=1e-12)
    inside = theta + 0.5 <= math.pi
    # atol: the heads clamp cos θ to 1 - 1e-7 before acos (θ ≥ 4.5e-4 rad)
    np.testing.assert_allclose(
        _curve(curves, "ArcFace")[inside], np.cos(theta[inside] + 0.5), atol=3e-4
    )
    inside = 0.9 * theta + 0.4 <= math.pi
    np.testing.assert_allclose(
        _curve(curves, "Combined (0.9")[inside], np.cos(0.9 * theta[inside] + 0.4) - 0.15, atol=3e-4
    )
    k = np.clip(np.floor(4 * theta / math.pi), 0, 3)
    psi = (-1.0) ** k * np.cos(4 * theta) - 2 * k
    np.testing.assert_allclose(_curve(curves, "SphereFace m=4, λ=0"), psi, atol=1e-9)
    np.testing.assert_allclose(
        _curve(curves, "SphereFace m=4, λ=5"), (5 * np.cos(theta) + psi) / 6, atol=1e-9
    )


@pytest.mark.parametrize(
    "prefix", ["ArcFace", "Combined (1,", "Combined (0.9", "SphereFace", "CosFace"]
)
def test_margin_curves_are_monotone_and_below_cos(curves, prefix: str) -> None:
    theta = np.radians(curves[0])
    for name, values in curves[1].items():
        if name.startswith(prefix):
            assert np.all(np.diff(values) <= 1e-12), name
            assert np.all(values <= np.cos(theta) + 1e-12), name


def test_normface_boundary_is_the_diagonal_and_margins_open_a_gap() -> None:
    widths = {}
    for title, name, kwargs in BOUNDARY_HEADS:
        head = make_boundary_head(name, kwargs)
        theta, regions = decision_regions_angles(head)
        diag = np.diagonal(regions)
        widths[name] = float((regions == 0).mean())
        if name == "normface":
            off = ~np.eye(len(theta), dtype=bool)
            expected = np.where(theta[None, :] < theta[:, None], 1, 2)  # rows θ₂, cols θ₁
            assert np.array_equal(regions[off], expected[off])
        elif name == "softmax":
            assert widths[name] == 0.0, "softmax has no margin region"
            # larger ‖W₁‖: class 1 also wins some points where θ₁ > θ₂
            assert (regions[np.tril_indices(len(theta), -1)] == 1).any()
        else:
            assert np.all(diag == 0), f"{title}: the diagonal must lie in the margin region"
    assert widths["sphereface"] > widths["arcface"] > 0


def test_plane_regions_follow_the_weights() -> None:
    head = make_boundary_head("cosface", {"scale": 1.0, "margin": 0.35})
    xs, ys, regions = decision_regions_plane(head, num=201)
    w = head.weight.detach().numpy()

    def at(p):
        return regions[np.argmin(abs(ys - p[1])), np.argmin(abs(xs - p[0]))]

    assert at(w[0]) == 1 and at(w[1]) == 2
    assert at((0.0, 1.5)) == 0  # the bisector of W1 and W2 lies in the margin region
    assert at((0.0, -1.5)) == 0
