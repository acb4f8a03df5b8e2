"""Impostor tables for test models whose scores are not drawn from real faces.

A fake embedder (coloured squares, hand-made vectors) has no impostor population to measure,
but the gallery and the service decide identification at a target FPIR from the card's table.
:func:`log_linear_tail` gives them a plausible one: at threshold ``t`` a probe passes a given
one-face subject with probability ``10 ** (-decades * (t - at))`` of ``fpir_at`` (so the
threshold for FPIR ``fpir_at`` with one subject is ``at``), galleries of ``N`` subjects have
``1 - (1 - p) ** N``, and a subject of ``k`` faces counts as ``k`` subjects.
"""

from __future__ import annotations

import numpy as np

from marginface.card import ImpostorTail
from marginface.eval.openset import GALLERY_SIZES


def log_linear_tail(at: float, *, fpir_at: float = 1e-2, decades: float = 40.0) -> ImpostorTail:
    """A table whose threshold for FPIR ``fpir_at`` with one subject is ``at``, rising by
    ``log10(N) / decades`` for ``N`` subjects."""
    grid = np.round(np.arange(at - 0.3, min(at + 0.3, 1.0) + 1e-9, 0.005), 6)
    sizes = np.asarray(GALLERY_SIZES, dtype=np.float64)
    p = np.minimum(fpir_at * 10.0 ** (-decades * (grid - at)), 1.0)

    def rows(k: int) -> list[list[float]]:
        f = -np.expm1(np.log1p(-np.minimum(p, 1 - 1e-12))[:, None] * (k * sizes)[None, :])
        return [[round(float(max(np.log10(max(v, 1e-300)), -12.0)), 4) for v in row] for row in f]

    return ImpostorTail(
        dataset="synthetic (tests)",
        identities=1000,
        probes=1000,
        comparisons=10**9,
        thresholds=[float(v) for v in grid],
        gallery_sizes=[int(v) for v in sizes],
        log10_fpir=rows(1),
        log10_fpir_by_faces={str(k): rows(k) for k in (2, 3, 5)},
        log10_far=[round(float(np.log10(v)), 4) for v in p],
        max_impostor=float(grid[-1]),
    )
