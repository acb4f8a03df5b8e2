"""The verification protocol: embed a pair set, score it, and report the standard metrics.

Failed-image policy: an image that cannot be read or shows no face gets no embedding; every
pair that uses it is scored with similarity ``-1`` (the lowest cosine), so it is always declared
"different". A matched pair with a failed image therefore counts as a false reject (against the
model and its pipeline), a mismatched one as a correct reject. Failed images and the number of
pairs they touch are listed in the report; nothing is dropped silently. Calibration
(:mod:`marginface.eval.calibrate`) leaves such pairs out instead, so that missing faces do not
bias the thresholds.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marginface.card import ModelCard
from marginface.embed import Embedder
from marginface.errors import DataError
from marginface.eval.embeddings import EmbeddingCache, EmbedOptions, embed_images
from marginface.eval.metrics import (
    DEFAULT_FARS,
    auc,
    best_threshold,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
)
from marginface.eval.pairs import PairSet

__all__ = [
    "FAILED_IMAGE_POLICY",
    "FAILED_PAIR_SCORE",
    "ScoredPairs",
    "default_face_selection",
    "pair_similarities",
    "score_pairs",
    "verification_metrics",
    "verify",
]

#: The similarity given to a pair whose image failed (the minimum cosine).
FAILED_PAIR_SCORE = -1.0

FAILED_IMAGE_POLICY = (
    "a pair with an unreadable image or an image without a detected face is scored with "
    "similarity -1 (always 'different'): a matched pair counts as a false reject, a mismatched "
    "pair as a correct reject; failed images are listed here, never dropped"
)


def default_face_selection(pairs: PairSet) -> str:
    """The face a photo showing several is compared by when no selection is asked for:
    ``central`` for LFW-format ``pairs.txt`` sets, ``largest`` for the others.

    LFW's photos were cropped around the person they are filed under and often show other
    people too; the protocol means that person, the face at the centre, which is not always
    the largest (a taller neighbour, a poster behind). Other pair sets carry no such promise.
    """
    return "central" if pairs.format == "lfw" else "largest"


@dataclass
class ScoredPairs:
    """Similarity of every pair of a pair set, and which pairs touch a failed image."""

    pairs: PairSet
    scores: np.ndarray  # (P,) float64 cosine similarity, FAILED_PAIR_SCORE where failed
    failed: np.ndarray  # (P,) bool
    failures: dict[int, str]  # image index -> reason
    embedding_stats: dict[str, Any]


def pair_similarities(
    embeddings: np.ndarray, ok: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The verification protocol's pair scores: ``(scores, failed)``.

    ``scores[p]`` is the cosine similarity of images ``left[p]`` and ``right[p]`` (rows of
    ``embeddings`` are unit-norm), clipped to ``[-1, 1]``; a pair with an image that failed
    (``ok`` False) scores :data:`FAILED_PAIR_SCORE` and is marked in ``failed``. A score that
    is not finite (a diverged network) raises :class:`DataError`. ``eval verify``,
    ``calibrate``, training-time verification and ``train-eval`` all score pairs here.
    """
    e = np.asarray(embeddings)
    ok = np.asarray(ok, dtype=bool)
    scores = np.einsum("ij,ij->i", e[left], e[right]).astype(np.float64)
    failed = ~(ok[left] & ok[right])
    scores[failed] = FAILED_PAIR_SCORE
    if not np.all(np.isfinite(scores)):
        raise DataError("pair scores are not finite (the network diverged)")
    return np.clip(scores, -1.0, 1.0), failed


def score_pairs(
    pairs: PairSet,
    embedder: Embedder,
    options: EmbedOptions | None = None,
    *,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> ScoredPairs:
    """Embed each unique image of ``pairs`` once and score every pair by cosine similarity."""
    emb = embed_images(
        pairs.images, embedder, options, cache=cache, workers=workers, progress=progress
    )
    scores, failed = pair_similarities(emb.embeddings, emb.ok, pairs.left, pairs.right)
    n_images = len(pairs.images)
    stats = {
        "n_images": n_images,
        "from_cache": emb.n_cached,
        "computed": emb.n_computed,
        "seconds": round(emb.seconds, 3),
        "images_per_second": round(emb.n_computed / emb.seconds, 1)
        if emb.n_computed and emb.seconds > 0
        else None,
    }
    return ScoredPairs(
        pairs=pairs, scores=scores, failed=failed, failures=emb.failures, embedding_stats=stats
    )


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def verification_metrics(
    scores: np.ndarray,
    issame: np.ndarray,
    folds: np.ndarray,
    fars: tuple[str, ...] = DEFAULT_FARS,
) -> dict[str, Any]:
    """The report's metric block for scored pairs (accuracies in %, rates as fractions)."""
    kf = kfold_accuracy(scores, issame, folds)
    th, acc = best_threshold(scores, issame)
    curve = roc(scores, issame)
    rate, eer_th = eer(curve)
    tars = tar_at_far(scores, issame, fars)
    return {
        "accuracy_mean": _r(100.0 * kf.mean, 4),
        "accuracy_std": _r(100.0 * kf.std, 4),
        "fold_accuracies": [_r(100.0 * a, 4) for a in kf.accuracies],
        "fold_thresholds": [_r(t) for t in kf.thresholds],
        "threshold": _r(th),
        "accuracy_at_threshold": _r(100.0 * acc, 4),
        "auc": _r(auc(curve)),
        "eer": _r(rate),
        "eer_threshold": _r(eer_th),
        "tar_at_far": {k: _r(v.tar) for k, v in tars.items()},
        "tar_at_far_thresholds": {k: _r(v.threshold) for k, v in tars.items()},
        "tar_at_far_observed_far": {k: _r(v.observed_far) for k, v in tars.items()},
        "tar_at_far_reasons": {k: v.reason for k, v in tars.items() if v.reason},
    }


def _at_card_thresholds(
    card: ModelCard | None, scores: np.ndarray, issame: np.ndarray
) -> dict[str, Any]:
    """How the card's calibrated thresholds behave on this set (FAR and TAR observed here)."""
    cal = card.calibration if card is not None else None
    if cal is None or not cal.thresholds:
        return {}
    pos, neg = scores[issame], scores[~issame]
    return {
        far: {
            "threshold": _r(t),
            "far": _r(float(np.mean(neg >= t))),
            "tar": _r(float(np.mean(pos >= t))),
        }
        for far, t in cal.thresholds.items()
    }


def verify(
    pairs: PairSet,
    embedder: Embedder,
    options: EmbedOptions | None = None,
    *,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
    model_spec: str | None = None,
    fars: tuple[str, ...] = DEFAULT_FARS,
    face_selection_default: bool = False,
) -> tuple[dict[str, Any], ScoredPairs]:
    """Run the verification protocol; returns the JSON-ready report and the scored pairs.

    Without ``options``, faces are chosen by :func:`default_face_selection`. The report's
    ``options`` record the selection and whether it was that default (``options=None``, or
    ``face_selection_default`` from a caller that applied it)."""
    if options is None:
        options = EmbedOptions(selection=default_face_selection(pairs))
        face_selection_default = True
    scored = score_pairs(pairs, embedder, options, cache=cache, workers=workers, progress=progress)
    metrics = verification_metrics(scored.scores, pairs.issame, pairs.folds, fars)
    card = embedder.card
    report: dict[str, Any] = {
        "model": getattr(embedder, "name", card.name),
        "model_spec": model_spec,
        "pairs": pairs.source,
        "pairs_format": pairs.format,
        "n_pairs": pairs.n_pairs,
        "n_matched": int(pairs.issame.sum()),
        "n_mismatched": int((~pairs.issame).sum()),
        "n_folds": pairs.n_folds,
        "folds": pairs.folds_note,
        **metrics,
        "calibrated_thresholds_on_this_set": _at_card_thresholds(card, scored.scores, pairs.issame),
        "failed_images": [
            {"image": pairs.images[i].key, "reason": reason}
            for i, reason in scored.failures.items()
        ],
        "n_failed_images": len(scored.failures),
        "n_failed_pairs": int(scored.failed.sum()),
        "failed_image_policy": FAILED_IMAGE_POLICY,
        "options": {
            "aligned": options.aligned,
            "flip": options.flip,
            **(
                {}
                if options.aligned
                else {
                    "detector": options.detector,
                    "face_selection": options.selection,
                    "face_selection_default": face_selection_default,
                    "template": card.preprocessing.template,
                }
            ),
        },
        "embedding": scored.embedding_stats,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return report, scored


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as indented JSON (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
