"""Search and identification: the index's nearest faces, checked against SQL, then the
policy's rule, the k-NN vote per subject (:meth:`IdentificationPolicy.decide`), at the
operating point's threshold.

No gallery-wide lock: concurrent searches share the index (:meth:`IndexSync.search`) and each
looks its faces up in SQL on a connection of its own.
"""

from __future__ import annotations

import numpy as np

from marginface.decision import IdentificationPolicy, OperatingPoint
from marginface.errors import GalleryError
from marginface.gallery.db import Database
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import Candidate, Hit, Identification

__all__ = ["Searcher"]

#: face id -> (subject id, subject name)
Owners = dict[int, tuple[str, str]]


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

    def identify(
        self, q: np.ndarray, point: OperatingPoint, policy: IdentificationPolicy
    ) -> list[Identification]:
        """Each normalised query's decision: the policy's k-NN vote among its ``policy.k``
        nearest faces, then the operating point's threshold; below it, unknown."""
        threshold = point.threshold
        hits, owners = self.nearest(q, policy.k)
        results = []
        for row in hits:
            if not row:
                results.append(
                    Identification(
                        match=None, score=-1.0, threshold=threshold, operating_point=point
                    )
                )
                continue
            winner, ranked = policy.decide(
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
