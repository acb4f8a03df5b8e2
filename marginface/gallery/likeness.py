"""The one rule for faces added to a subject: they must look like the subject.

Every path that adds faces to an existing subject calls :func:`unlike`: photos added to a
subject (:meth:`Recognizer.add_photos`, ``POST /v1/subjects/{id}/faces``, ``marginface enroll
--to``) and a camera's stranger assigned to a subject (:meth:`Gallery.assign_visitor`,
``POST /v1/unknowns/{id}/assign``). A face whose best cosine to the subject's own faces is
below the 1:1 (verification) threshold is *unlike* the subject: probably another person, and
storing it under the subject's name would make that person be identified as the subject. The
service lets only admin keys force such faces in.

Faces of one visitor are grouped by a camera, not chosen by a person, so an assignment also
calls :func:`unlike_each_other`: faces that do not link with the others (several groups of
faces, each a person) mean the grouping mixed people, and the assignment is refused until the
faces of one person are chosen (or the visitor is split).

A subject without faces (a new subject) has nothing to be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marginface.errors import GalleryError

__all__ = ["FacesUnlikeError", "Unlike", "unlike", "unlike_each_other"]


@dataclass(frozen=True)
class Unlike:
    """A face (its row ``index`` among the faces checked) whose best cosine (``score``) to the
    faces it was compared with is below ``threshold``."""

    index: int
    score: float
    threshold: float


def _rows(faces: np.ndarray) -> np.ndarray:
    mat = np.asarray(faces, dtype=np.float32)
    if mat.ndim == 1:
        mat = mat[None, :]
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.maximum(norms, 1e-12)


def unlike(subject_faces: np.ndarray, faces: np.ndarray, threshold: float) -> list[Unlike]:
    """The ``faces`` (rows) whose best cosine to any of ``subject_faces`` is below
    ``threshold``; none when the subject has no face."""
    new = _rows(faces)
    if len(subject_faces) == 0 or len(new) == 0:
        return []
    best = (_rows(subject_faces) @ new.T).max(axis=0)
    return [
        Unlike(i, round(float(score), 4), round(float(threshold), 4))
        for i, score in enumerate(best)
        if score < threshold
    ]


def unlike_each_other(faces: np.ndarray, threshold: float) -> list[Unlike]:
    """The ``faces`` that do not belong with the others: faces link when their cosine reaches
    ``threshold``, and every face outside the largest linked group is unlike (its score: its
    best cosine to that group; every face when two groups are the largest). One person's faces
    link, through each other when not directly; two people's faces make two groups, however
    many faces each has. None for a single face."""
    mat = _rows(faces)
    n = len(mat)
    if n < 2:
        return []
    sims = mat @ mat.T
    group = list(range(n))  # union-find over the links

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if sims[i, j] >= threshold:
                group[root(i)] = root(j)
    roots = [root(i) for i in range(n)]
    sizes = {r: roots.count(r) for r in set(roots)}
    biggest = max(sizes.values())
    largest = [r for r, size in sizes.items() if size == biggest]
    if len(largest) > 1:  # no group is the person: every face is refused
        np.fill_diagonal(sims, -np.inf)
        best = sims.max(axis=1)
        return [Unlike(i, round(float(best[i]), 4), round(float(threshold), 4)) for i in range(n)]
    members = [i for i in range(n) if roots[i] == largest[0]]
    return [
        Unlike(i, round(float(sims[i, members].max()), 4), round(float(threshold), 4))
        for i in range(n)
        if roots[i] != largest[0]
    ]


class FacesUnlikeError(GalleryError):
    """Faces were not added: ``reason`` ``"subject"`` (they do not look like the subject they
    were to be added to; forceable) or ``"each_other"`` (the faces of one assignment do not look
    like each other: choose the faces of one person). ``faces`` are the face ids refused with
    their scores; ``subject_id`` and ``name`` the subject."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        faces: list[tuple[int, Unlike]],
        subject_id: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.faces = faces
        self.subject_id = subject_id
        self.name = name

    def details(self) -> list[dict[str, object]]:
        """Each refused face: ``face_id``, ``score`` and ``threshold`` (JSON-ready)."""
        return [
            {"face_id": face_id, "score": u.score, "threshold": u.threshold}
            for face_id, u in self.faces
        ]
