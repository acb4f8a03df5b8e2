"""From faces tracked across video frames to one decision per visit.

A camera sees the same person in dozens of frames a second. Identifying every frame would
give dozens of chances for a false match and a flood of events; instead each *track* (one face
followed across frames by a tracker) gathers evidence and is decided once:

* **evidence**: a track keeps the embeddings of its best faces only (ranked by
  :attr:`marginface.align.quality.FaceQuality.score`); :meth:`VisitTracker.wants_embedding`
  tells the caller whether a new face is worth embedding at all (large and sharp enough, and
  better than what the track already has), so most frames cost no embedding;
* **decision**: once a track has ``min_faces`` faces, their quality-weighted mean embedding is
  identified by the gallery at its open-set operating point (:meth:`Gallery.identify`): a
  named subject, or unknown. That is the ``arrived`` event;
* **visit**: when the track ends, a ``left`` event gives its dwell time, best score and the
  faces used. A person who reappears on the same camera within ``revisit_s`` continues the
  same visit (no second ``arrived``).

The clock is the caller's: seconds from the start of the source, or any monotonic time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from marginface.align.quality import FaceQuality
from marginface.config import StrictModel
from marginface.errors import GalleryError
from marginface.gallery import Gallery

__all__ = ["VisitEvent", "VisitSettings", "VisitTracker"]


class VisitSettings(StrictModel):
    """How much evidence a track needs, and when a face is worth embedding."""

    min_faces: int = Field(3, ge=1, le=50, description="faces embedded before deciding")
    max_faces: int = Field(5, ge=1, le=50, description="best faces a track keeps")
    min_eye_distance: float = Field(
        12.0, ge=0.0, description="smallest face worth embedding: eyes this many pixels apart")
    min_quality: float = Field(0.05, ge=0.0, le=1.0,
                               description="smallest FaceQuality.score worth embedding")
    revisit_s: float = Field(60.0, ge=0.0, description="a person back on the same camera "
                             "within this many seconds continues the same visit")


@dataclass(frozen=True)
class VisitEvent:
    """``arrived`` (a track was decided) or ``left`` (it ended)."""

    kind: Literal["arrived", "left"]
    camera: str
    track_id: int
    visit_id: int
    subject_id: str | None  # None: unknown
    name: str | None
    score: float  # the decision's score (cosine), or the best over the visit for "left"
    threshold: float
    start_s: float
    end_s: float
    faces: int  # embeddings the decision used

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "camera": self.camera, "track_id": self.track_id,
                "visit_id": self.visit_id, "subject_id": self.subject_id, "name": self.name,
                "score": round(self.score, 4), "threshold": round(self.threshold, 4),
                "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "faces": self.faces}


@dataclass
class _Track:
    start_s: float
    last_s: float
    faces: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, embedding)
    decided: VisitEvent | None = None
    visit_id: int = -1


@dataclass
class _Visit:
    visit_id: int
    subject_id: str
    start_s: float
    end_s: float
    best: float


class VisitTracker:
    """The visits of one camera: feed it each tracked face, and it says when to embed and
    when a track has become a decided visit. Not thread-safe: one per camera worker."""

    def __init__(self, gallery: Gallery, camera: str, settings: VisitSettings | None = None,
                 *, fpir: str | float | None = None) -> None:
        self.gallery = gallery
        self.camera = camera
        self.settings = settings or VisitSettings()
        if self.settings.min_faces > self.settings.max_faces:
            raise GalleryError("min_faces cannot exceed max_faces")
        self.fpir = fpir
        self._tracks: dict[int, _Track] = {}
        self._recent: list[_Visit] = []  # decided, named visits that may continue
        self._next_visit = 1

    # -- evidence -------------------------------------------------------------------------------
    def wants_embedding(self, track_id: int, quality: FaceQuality) -> bool:
        """Whether this face of the track is worth embedding: good enough, and better than
        the worst face the track keeps (or the track keeps fewer than ``max_faces``)."""
        s = self.settings
        if quality.size < s.min_eye_distance or quality.score < s.min_quality:
            return False
        track = self._tracks.get(track_id)
        if track is None or len(track.faces) < s.max_faces:
            return True
        return quality.score > min(q for q, _ in track.faces)

    def observe(self, track_id: int, t: float, quality: FaceQuality | None = None,
                embedding: np.ndarray | None = None) -> VisitEvent | None:
        """A face of ``track_id`` seen at ``t`` (with its embedding when
        :meth:`wants_embedding` said so); returns the ``arrived`` event when this face
        completes the evidence, else None."""
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = _Track(start_s=t, last_s=t)
        track.last_s = max(track.last_s, t)
        if embedding is None or quality is None or track.decided is not None:
            return None
        e = np.asarray(embedding, dtype=np.float32).ravel()
        e = e / max(float(np.linalg.norm(e)), 1e-12)
        track.faces.append((max(quality.score, 1e-6), e))
        track.faces.sort(key=lambda f: -f[0])
        del track.faces[self.settings.max_faces:]
        if len(track.faces) < self.settings.min_faces:
            return None
        return self._decide(track_id, track)

    def _decide(self, track_id: int, track: _Track) -> VisitEvent | None:
        weights = np.asarray([q for q, _ in track.faces])
        mean = (weights[:, None] * np.vstack([e for _, e in track.faces])).sum(axis=0)
        answer = self.gallery.identify(mean[None, :], fpir=self.fpir)[0]
        visit = self._continuing(answer.subject_id, track.start_s)
        event = VisitEvent(
            "arrived", self.camera, track_id, visit.visit_id if visit else self._new_visit(),
            answer.subject_id, answer.name, float(answer.score), float(answer.threshold),
            track.start_s, track.last_s, len(track.faces))
        track.decided = event
        track.visit_id = event.visit_id
        if visit is not None:  # the same visit goes on: no second "arrived"
            return None
        if answer.subject_id is not None:
            self._recent.append(_Visit(event.visit_id, answer.subject_id, track.start_s,
                                       track.last_s, float(answer.score)))
        return event

    def _new_visit(self) -> int:
        self._next_visit += 1
        return self._next_visit - 1

    def _continuing(self, subject_id: str | None, t: float) -> _Visit | None:
        if subject_id is None:
            return None
        for visit in reversed(self._recent):
            if visit.subject_id == subject_id and t - visit.end_s <= self.settings.revisit_s:
                return visit
        return None

    # -- ending ---------------------------------------------------------------------------------
    def end(self, track_id: int) -> VisitEvent | None:
        """The tracker lost ``track_id``: its ``left`` event, or None when it was never decided
        (too little evidence: a face seen too briefly or too poorly to say anything)."""
        track = self._tracks.pop(track_id, None)
        if track is None or track.decided is None:
            return None
        arrived = track.decided
        visit = next((v for v in self._recent if v.visit_id == track.visit_id), None)
        start = track.start_s
        if visit is not None:
            visit.end_s = max(visit.end_s, track.last_s)
            visit.best = max(visit.best, arrived.score)
            start = min(visit.start_s, start)
        return VisitEvent("left", self.camera, track_id, track.visit_id, arrived.subject_id,
                          arrived.name, visit.best if visit else arrived.score,
                          arrived.threshold, start, track.last_s, arrived.faces)

    def forget_before(self, t: float) -> None:
        """Drop finished visits that can no longer continue (older than ``revisit_s``)."""
        self._recent = [v for v in self._recent if t - v.end_s <= self.settings.revisit_s]
