"""Accuracy of several models on one verification set (used to report what int8 costs)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["compare_on_pairs"]


def compare_on_pairs(
    models: list[str | Path], pairs: str | Path, root: str | Path | None = None,
    *, progress: bool = True,
) -> list[tuple[str, float]]:
    """``(model name, mean 10-fold verification accuracy)`` for each model on ``pairs``, run
    with marginface's evaluation protocol (:func:`marginface.eval.verify.verify`)."""
    from marginface.embed.loader import load_embedder
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import verify

    pair_set = load_pairs(pairs, root)
    rows = []
    for spec in models:
        embedder = load_embedder(spec)
        report, _ = verify(pair_set, embedder, progress=progress, model_spec=str(spec))
        accuracy = float(report["accuracy_mean"])
        rows.append((embedder.name, accuracy / 100.0 if accuracy > 1.0 else accuracy))
    return rows
