"""Search and identification: the index's nearest faces, checked against SQL, then the k-NN vote
per subject (:func:`marginface.gallery.vote.knn_vote`) and the decision threshold.

No gallery-wide lock: concurrent searches share the index (:meth:`IndexSync.search`) and each
looks its faces up in SQL on a connection of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from marginface.errors import GalleryError, ModelError
from marginface.eval.openset import OperatingPoint
from marginface.gallery.db import Database
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import Candidate, Hit, Identification
from marginface.gallery.vote import knn_vote

if TYPE_CHECKING:
    from marginface.card import ModelCard

__all__ = ["DEFAULT_K", "Searcher", "resolve_threshold"]

#: Neighbours fetched per query for the k-NN vote.
DEFAULT_K = 5

#: face id -> (subject id, subject name)
Owners = dict[int, tuple[str, str]]


def resolve_threshold(
    card: ModelCard | None, threshold: float | None = None, far: str | None = None
) -> float:
    """The decision threshold: ``threshold`` if given, else the card's calibrated one for
    ``far`` (default: the card's ``default_far``).

    Raises :class:`GalleryError` when neither exists: a model without calibration is never used
    with a silent magic number.
    """
    if threshold is not None:
        t = float(threshold)
        if not -1.0 <= t <= 1.0:
            raise GalleryError(f"threshold {t} is outside the cosine range [-1, 1]")
        return t
    if card is None:
        raise GalleryError(
            "no decision threshold: give one explicitly (e.g. --threshold 0.35) or use a model "
            "whose card has a calibration (marginface calibrate)"
        )
    if card.calibration is None or not card.calibration.thresholds:
        raise GalleryError(
            f"model {card.name!r} has no calibrated threshold in its card: run "
            "`marginface calibrate` on a verification set, or give a threshold explicitly"
        )
    try:
        return float(card.calibration.threshold(far))
    except ModelError as exc:
        raise GalleryError(f"model {card.name!r}: {exc}") from None


class Searcher:
    """Nearest stored faces and identification over one gallery's index and SQL store."""

    def __init__(self, db: Database, sync: IndexSync) -> None:
        self._db = db
        self._sync = sync

    def _owners(self, face_ids: list[int]) -> Owners:
        """From SQL: deleted faces are never returned."""
        owners: Owners = {}
        for rows in self._db.query_in(
            "SELECT f.id, f.subject_id, s.name FROM faces f JOIN subjects s "
            "ON s.id = f.subject_id WHERE f.id IN ({marks})",
            face_ids,
        ):
            owners.update((int(fid), (sid, name)) for fid, sid, name in rows)
        return owners

    def nearest(self, q: np.ndarray, k: int) -> tuple[list[list[Hit]], Owners]:
        """The ``k`` nearest stored faces of each normalised query, best first, and the owners
        of those faces."""
        if k <= 0:
            raise GalleryError("k must be positive")
        if self._sync.index is None:
            return [[] for _ in range(len(q))], {}
        scores, ids = self._sync.search(q, k)
        owners = self._owners(sorted({int(i) for i in ids.ravel() if i >= 0}))
        hits = [
            [
                Hit(face_id=int(i), subject_id=owners[int(i)][0], score=float(s))
                for s, i in zip(srow, irow, strict=True)
                if i >= 0 and int(i) in owners
            ]
            for srow, irow in zip(scores, ids, strict=True)
        ]
        return hits, owners

    def identify(self, q: np.ndarray, point: OperatingPoint, k: int) -> list[Identification]:
        """Each normalised query's decision: k-NN vote among its nearest faces, then the
        operating point's threshold; below it, unknown."""
        threshold = point.threshold
        hits, owners = self.nearest(q, k)
        results = []
        for row in hits:
            if not row:
                results.append(
                    Identification(
                        match=None, score=-1.0, threshold=threshold, operating_point=point
                    )
                )
                continue
            winner, ranked = knn_vote(
                [h.subject_id for h in row], [h.score for h in row], threshold
            )
            cands = [
                Candidate(
                    subject_id=str(r.subject),
                    name=owners[row[r.best_index].face_id][1],
                    score=r.best,
                    votes=r.votes,
                    weight=r.weight,
                    face_id=row[r.best_index].face_id,
                )
                for r in ranked
            ]
            match = cands[0] if winner is not None else None
            best = max(c.score for c in cands)
            results.append(
                Identification(
                    match=match,
                    score=match.score if match else best,
                    threshold=threshold,
                    candidates=cands,
                    operating_point=point,
                )
            )
        return results
