"""``l2_normalize``: the one normalisation rule (embedder outputs, gallery vectors, visit
evidence, visitor means, export checks)."""

from __future__ import annotations

import numpy as np

from marginface.embed import l2_normalize


def test_rows_and_single_vectors_become_unit_float32() -> None:
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]])
    one = l2_normalize(np.array([3, 4]))  # a vector: its last axis
    assert one.shape == (2,) and one.dtype == np.float32
    np.testing.assert_allclose(one, [0.6, 0.8])


def test_float64_is_normalised_before_rounding_and_zero_stays_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16))  # float64
    np.testing.assert_array_equal(
        l2_normalize(x), (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    )
    np.testing.assert_array_equal(l2_normalize(np.zeros(4)), np.zeros(4, np.float32))
