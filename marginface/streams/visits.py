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
The wall-clock times given to :meth:`VisitTracker.observe` (epoch seconds, a frame's
``wall``) become the events' ``first_seen`` / ``last_seen``. Each track also keeps the aligned
crops of its best faces when they are given; a ``left`` event carries them with their
embeddings as :class:`Evidence` (not serialised), so a stranger's best faces can be kept for
review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import Field

from marginface.align.quality import FaceQuality
from marginface.config import StrictModel
from marginface.decision import IdentificationPolicy
from marginface.embed import l2_normalize
from marginface.errors import GalleryError
from marginface.gallery import Gallery

__all__ = ["Evidence", "VisitEvent", "VisitSettings", "VisitTracker"]


class VisitSettings(StrictModel):
    """How much evidence a track needs, and when a face is worth embedding."""

    min_faces: int = Field(3, ge=1, le=50, description="faces embedded before deciding")
    max_faces: int = Field(5, ge=1, le=50, description="best faces a track keeps")
    min_eye_distance: float = Field(
        12.0, ge=0.0, description="smallest face worth embedding: eyes this many pixels apart"
    )
    min_quality: float = Field(
        0.05, ge=0.0, le=1.0, description="smallest FaceQuality.score worth embedding"
    )
    revisit_s: float = Field(
        60.0,
        ge=0.0,
        description="a person back on the same camera "
        "within this many seconds continues the same visit",
    )
    min_gain: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="once a track keeps max_faces "
        "faces, a new face is embedded only when its quality beats the "
        "worst kept one by this fraction (a face approaching the camera "
        "improves a little every frame)",
    )
    patience_s: float = Field(
        0.6,
        ge=0.0,
        le=60.0,
        description="a track still undecided this "
        "many seconds after it began also embeds faces below "
        "min_quality (its best so far): a person seen only small, "
        "blurred or turned is decided promptly rather than never",
    )


@dataclass(frozen=True)
class Evidence:
    """One of a track's best faces: its quality score, unit embedding and aligned crop (RGB
    uint8, e.g. 112x112; None when the caller keeps no crops)."""

    quality: float
    embedding: np.ndarray
    crop: np.ndarray | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class VisitEvent:
    """``arrived`` (a track was decided) or ``left`` (it ended).

    ``first_seen`` / ``last_seen``: wall-clock times of the visit's first and latest face
    (aware UTC datetimes; None when the caller gave no wall times). ``evidence``: the faces the
    decision used (``arrived``) or the track's best faces at its end (``left``), best first;
    not part of :meth:`to_dict`.
    """

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
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    evidence: tuple[Evidence, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (times as ISO 8601 strings; no evidence)."""
        return {
            "kind": self.kind,
            "camera": self.camera,
            "track_id": self.track_id,
            "visit_id": self.visit_id,
            "subject_id": self.subject_id,
            "name": self.name,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "faces": self.faces,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
        }


@dataclass
class _Track:
    start_s: float
    last_s: float
    faces: list[Evidence] = field(default_factory=list)  # best first
    decided: VisitEvent | None = None
    visit_id: int = -1
    first_wall: float | None = None
    last_wall: float | None = None


@dataclass
class _Visit:
    visit_id: int
    subject_id: str
    start_s: float
    end_s: float
    best: float
    first_wall: float | None = None
    last_wall: float | None = None


def _when(wall: float | None) -> datetime | None:
    return datetime.fromtimestamp(wall, tz=UTC) if wall is not None else None


class VisitTracker:
    """The visits of one camera: feed it each tracked face, and it says when to embed and
    when a track has become a decided visit. Not thread-safe: one per camera worker.
    ``policy``: how visits are identified (default: the gallery's)."""

    def __init__(
        self,
        gallery: Gallery,
        camera: str,
        settings: VisitSettings | None = None,
        *,
        policy: IdentificationPolicy | None = None,
    ) -> None:
        self.gallery = gallery
        self.camera = camera
        self.settings = settings or VisitSettings()
        if self.settings.min_faces > self.settings.max_faces:
            raise GalleryError("min_faces cannot exceed max_faces")
        self.policy = policy
        self._tracks: dict[int, _Track] = {}
        self._recent: list[_Visit] = []  # decided, named visits that may continue
        self._next_visit = 1

    # -- evidence -------------------------------------------------------------------------------
    def wants_embedding(self, track_id: int, quality: FaceQuality, t: float | None = None) -> bool:
        """Whether this face of the track is worth embedding: large enough, good enough
        (``min_quality``, waived for an undecided track older than ``patience_s``), and better
        than the worst face the track keeps by ``min_gain`` (or the track keeps fewer than
        ``max_faces``). ``t``: when the face was seen (default: the track's latest time)."""
        s = self.settings
        if quality.size < s.min_eye_distance:
            return False
        track = self._tracks.get(track_id)
        if quality.score < s.min_quality:
            now = t if t is not None else (track.last_s if track is not None else 0.0)
            waiting = now - track.start_s if track is not None else 0.0
            if track is None or track.decided is not None or waiting < s.patience_s:
                return False
        if track is None or len(track.faces) < s.max_faces:
            return True
        return quality.score > track.faces[-1].quality * (1.0 + s.min_gain)

    def is_open(self, track_id: int) -> bool:
        """Whether ``track_id`` has been observed and not ended."""
        return track_id in self._tracks

    def decision(self, track_id: int) -> VisitEvent | None:
        """The open track's decision (its ``arrived`` event, or the one that continued an
        earlier visit), or None while undecided."""
        track = self._tracks.get(track_id)
        return track.decided if track is not None else None

    @property
    def open_tracks(self) -> int:
        """Tracks observed and not ended."""
        return len(self._tracks)

    def observe(
        self,
        track_id: int,
        t: float,
        quality: FaceQuality | None = None,
        embedding: np.ndarray | None = None,
        *,
        crop: np.ndarray | None = None,
        wall: float | None = None,
    ) -> VisitEvent | None:
        """A face of ``track_id`` seen at ``t`` (with its embedding when
        :meth:`wants_embedding` said so, and optionally its aligned ``crop``, kept while the
        face is among the track's best); ``wall``: the same moment in epoch seconds. Returns
        the ``arrived`` event when this face completes the evidence, else None.

        Faces keep being collected after the decision (the best ``max_faces`` are the
        ``left`` event's evidence) but do not change it."""
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = _Track(start_s=t, last_s=t, first_wall=wall)
        track.last_s = max(track.last_s, t)
        if wall is not None:
            if track.first_wall is None:
                track.first_wall = wall
            track.last_wall = wall if track.last_wall is None else max(track.last_wall, wall)
        if embedding is None or quality is None:
            return None
        e = l2_normalize(np.asarray(embedding, dtype=np.float32).ravel())
        track.faces.append(Evidence(max(quality.score, 1e-6), e, crop))
        track.faces.sort(key=lambda f: -f.quality)
        del track.faces[self.settings.max_faces :]
        if track.decided is not None or len(track.faces) < self.settings.min_faces:
            return None
        return self._decide(track_id, track)

    def _decide(self, track_id: int, track: _Track) -> VisitEvent | None:
        weights = np.asarray([f.quality for f in track.faces])
        mean = (weights[:, None] * np.vstack([f.embedding for f in track.faces])).sum(axis=0)
        answer = self.gallery.identify(mean[None, :], self.policy)[0]
        visit = self._continuing(answer.subject_id, track.start_s)
        first_wall = track.first_wall
        if visit is not None and visit.first_wall is not None:
            first_wall = visit.first_wall
        event = VisitEvent(
            "arrived",
            self.camera,
            track_id,
            visit.visit_id if visit else self._new_visit(),
            answer.subject_id,
            answer.name,
            float(answer.score),
            float(answer.threshold),
            visit.start_s if visit else track.start_s,
            track.last_s,
            len(track.faces),
            _when(first_wall),
            _when(track.last_wall),
            tuple(track.faces),
        )
        track.decided = event
        track.visit_id = event.visit_id
        if visit is not None:  # the same visit goes on: no second "arrived"
            return None
        if answer.subject_id is not None:
            self._recent.append(
                _Visit(
                    event.visit_id,
                    answer.subject_id,
                    track.start_s,
                    track.last_s,
                    float(answer.score),
                    track.first_wall,
                    track.last_wall,
                )
            )
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
        first_wall = track.first_wall
        if visit is not None:
            visit.end_s = max(visit.end_s, track.last_s)
            visit.best = max(visit.best, arrived.score)
            start = min(visit.start_s, start)
            if track.last_wall is not None:
                visit.last_wall = max(visit.last_wall or track.last_wall, track.last_wall)
            if visit.first_wall is not None:
                first_wall = min(visit.first_wall, first_wall or visit.first_wall)
        return VisitEvent(
            "left",
            self.camera,
            track_id,
            track.visit_id,
            arrived.subject_id,
            arrived.name,
            visit.best if visit else arrived.score,
            arrived.threshold,
            start,
            track.last_s,
            arrived.faces,
            _when(first_wall),
            _when(track.last_wall),
            tuple(track.faces),
        )

    def forget_before(self, t: float) -> None:
        """Drop finished visits that can no longer continue (older than ``revisit_s``)."""
        self._recent = [v for v in self._recent if t - v.end_s <= self.settings.revisit_s]
