"""From faces tracked across video frames to visits whose decisions follow the evidence.

A camera sees the same person in dozens of frames a second. Identifying every frame would
give dozens of chances for a false match and a flood of events; instead each *track* (one face
followed across frames by a tracker) gathers evidence, and its *visit* is decided, and decided
again only when the evidence says more:

* **evidence**: a track keeps the embeddings of its best faces only (ranked by
  :attr:`marginface.align.quality.FaceQuality.score`); :meth:`VisitTracker.wants_embedding`
  tells the caller whether a new face is worth embedding;
* **one person per track**: every embedded face turned towards the camera is verified against
  the track's own faces (:meth:`VisitTracker.verify`); a face that disagrees at the
  1:1 threshold ``split_far`` is another person, and the caller splits the track
  (:meth:`VisitTracker.end` with ``reason="split"``, then a new track), so a name never passes
  from one person to the next;
* **only faces open visits**: a track is decided only after ``min_face_frames`` of its detections
  were faces turned towards the camera (:attr:`FaceQuality.faces_camera`: ONet's face probability,
  both eyes, the head not turned away). The back of a head, an ear, hair, a pattern never
  opens a visit;
* **the decision** (``arrived``): once a track has ``min_faces`` embedded faces, their
  quality-weighted mean is identified by the gallery at its operating point: a named subject,
  or unknown. A track whose faces stay too small to embed (a low-resolution stream, a person
  far away) opens an unknown visit after ``small_wait_s``: it is counted, and identified once
  a face large enough comes;
* **decisions follow the evidence**: when the track's evidence has clearly improved (a face
  ``reidentify_gain`` better than the best one decided on), the mean is identified again. An
  unknown visit that now matches someone is ``identified``; a named visit whose better faces
  name someone else, or nobody, is ``corrected`` (the same person by appearance: a different
  person would have split the track). Nothing is relabelled silently;
* **visit**: when the track ends, a ``left`` event gives its dwell time, its decision and the
  best faces. A person who reappears on the same camera within ``revisit_s`` continues the
  same visit (no second ``arrived``): a named person by subject, a stranger by appearance
  (the new track's faces match the earlier visit's at the 1:1 threshold ``rejoin_far``).

Events, in order, for one visit: ``arrived`` (subject or unknown), then any number of
``identified`` / ``corrected``, then ``left`` (one per track of the visit). Every event of a
visit carries the visit's ``uid`` (unique across cameras and restarts), so a receiver can follow
a visit's decision; :meth:`VisitEvent.to_dict` is the one serialised form (JSONL, webhooks,
MQTT, the gallery's log).

The clock is the caller's: seconds from the start of the source, or any monotonic time. The
wall-clock times given to :meth:`VisitTracker.observe` (epoch seconds, a frame's ``wall``)
become the events' ``first_seen`` / ``last_seen``. Each track also keeps the aligned crops of
its best faces when they are given; events carry them with their embeddings as
:class:`Evidence` (not serialised), so a stranger's best faces can be kept for review.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import Field

from marginface.align.detection import box_iou
from marginface.align.quality import FaceQuality
from marginface.config import StrictModel
from marginface.decision import IdentificationPolicy, one_to_one_threshold
from marginface.embed import l2_normalize
from marginface.errors import GalleryError
from marginface.gallery import Gallery

__all__ = [
    "RESUME_GRACE_S",
    "EventKind",
    "Evidence",
    "PastVisit",
    "TrackState",
    "Verdict",
    "VisitEvent",
    "VisitSettings",
    "VisitTracker",
]

EventKind = Literal["arrived", "identified", "corrected", "left"]
#: What :meth:`VisitTracker.verify` says of a new face: the track's person, another person, or
#: nothing either way (a face turned away, small, or the track's first).
Verdict = Literal["same", "different", "unsure"]
#: What the system says of a tracked face now.
TrackState = Literal["undecided", "known", "unknown"]


class VisitSettings(StrictModel):
    """How much evidence a track needs, when a face is worth embedding, and when a face is
    another person's."""

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
        le=86400.0,
        description="a person back on the same camera within this many seconds continues the "
        "same visit",
    )
    min_gain: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="once a track keeps max_faces faces, a new face joins them only when its "
        "quality beats the worst kept one by this fraction",
    )
    patience_s: float = Field(
        0.6,
        ge=0.0,
        le=60.0,
        description="a track still undecided this many seconds after it began also embeds "
        "faces below min_quality (its best so far): a person seen only blurred or turned is "
        "decided promptly rather than never",
    )
    min_face_frames: int = Field(
        2,
        ge=0,
        le=50,
        description="detections of a track that must show a face turned towards the camera "
        "before it opens a visit (0: any detection): backs of heads, ears and hair open none",
    )
    small_wait_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="a track whose faces are all too small to embed opens an unknown visit "
        "after this many seconds (counted; identified when a larger face comes)",
    )
    verify_s: float = Field(
        0.4,
        ge=0.0,
        le=10.0,
        description="a track's faces turned towards the camera are embedded and verified "
        "against the track this often, and at once after a jump of its box (0: every "
        "processed frame)",
    )
    split_far: str = Field(
        "1e-2",
        pattern=r"^1e-[1-9]$",
        description="a face seen from the front whose best cosine with its track's faces is "
        "below the model's 1:1 threshold at this false-accept rate is another person: the "
        "track splits",
    )
    rejoin_far: str = Field(
        "1e-4",
        pattern=r"^1e-[1-9]$",
        description="a new track continues an ended visit of the camera when its first face "
        "(or a stranger's mean face) matches that visit's faces at the model's 1:1 threshold "
        "at this false-accept rate",
    )
    reidentify_gain: float = Field(
        0.25,
        ge=0.0,
        le=10.0,
        description="a decided track is identified again when a face this fraction better "
        "than the best face of its last decision arrives",
    )
    hold_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="a named track's box keeps its name on faces that cannot be verified "
        "(turned away, small) for this long after its last verified face, while it moves "
        "smoothly",
    )
    smooth_iou: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a box overlapping the track's previous box by less than this (IoU) is a "
        "jump: a face turned towards the camera is verified at once, one that cannot be "
        "verified splits a verified track (it may be someone else)",
    )
    quick_margin: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="a track whose first faces name someone this far above the threshold is "
        "decided before min_faces (a clear face is announced at once)",
    )
    leave_s: float = Field(
        1.0,
        ge=0.0,
        le=600.0,
        description="a visit whose tracks all ended is announced left after this many "
        "seconds without a track continuing it (a split track rejoins its visit meanwhile)",
    )
    correct_margin: float = Field(
        0.03,
        ge=0.0,
        le=1.0,
        description="a named visit is corrected to unknown only when its better evidence "
        "scores this far below the threshold",
    )


@dataclass(frozen=True)
class Evidence:
    """One of a track's best faces: its quality score, unit embedding, aligned crop (RGB
    uint8, e.g. 112x112; None when the caller keeps no crops) and whether it showed a face turned
    towards the camera (:attr:`FaceQuality.faces_camera`; only those verify a track's
    person)."""

    quality: float
    embedding: np.ndarray
    crop: np.ndarray | None = None
    facing: bool = True


#: A visit taken over from a camera's previous holder that had not ended there is announced
#: ``left`` this long after the take-over unless a track continues it (the person, still in
#: view, needs a moment to be tracked and decided again).
RESUME_GRACE_S = 5.0


@dataclass(frozen=True)
class PastVisit:
    """A visit of this camera that an earlier holder of it recorded (read from the gallery, not
    from memory): what a worker taking the camera over needs to continue it rather than
    announce its person again. ``first_seen`` / ``last_seen``: epoch seconds; ``ended``: its
    ``left`` was recorded; ``faces``: a stranger's faces (its visitor's), to know them again."""

    uid: str
    subject_id: str | None
    name: str | None
    score: float
    threshold: float
    first_seen: float
    last_seen: float
    ended: bool
    faces: tuple[Evidence, ...] = ()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class VisitEvent:
    """One step of a visit: ``arrived`` (the visit's first decision), ``identified`` (an
    unknown visit matched someone), ``corrected`` (a named visit's better evidence names
    someone else, or nobody: ``previous_subject_id`` / ``previous_name`` say who it was) or
    ``left`` (a track of the visit ended; ``reason``: ``ended``, ``split`` when the track's new
    face was another person, ``cut`` at a shot change, ``closed`` at the end of the source).

    ``uid``: the visit's id, unique across cameras and restarts (``visit_id`` is the camera
    worker's own number). ``first_seen`` / ``last_seen``: wall-clock times of the visit's first
    and latest face (aware UTC datetimes; None when the caller gave no wall times).
    ``evidence``: the faces the decision used (decisions) or the track's best faces at its end
    (``left``), best first; not part of :meth:`to_dict`.
    """

    kind: EventKind
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
    uid: str = ""
    previous_subject_id: str | None = None
    previous_name: str | None = None
    reason: str | None = None
    #: this event's own id, made once when it happens: the gallery keeps it, webhooks send it
    #: (``X-Marginface-Event-Id``) and MQTT payloads carry it, the same on every delivery
    event_id: str = field(default_factory=lambda: secrets.token_hex(12))
    #: the node that made it and its lease's fencing epoch (in a camera cluster; else None)
    node: str | None = None
    epoch: int | None = None
    #: the gallery's event id once recorded (not part of :meth:`to_dict`)
    record_id: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (times as ISO 8601 strings; no evidence)."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "kind": self.kind,
            "camera": self.camera,
            "track_id": self.track_id,
            "visit_id": self.visit_id,
            "visit_uid": self.uid,
            "subject_id": self.subject_id,
            "name": self.name,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "faces": self.faces,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "node": self.node,
            "epoch": self.epoch,
        }
        if self.kind == "corrected":
            out["previous_subject_id"] = self.previous_subject_id
            out["previous_name"] = self.previous_name
        if self.kind == "left":
            out["reason"] = self.reason or "ended"
        return out


@dataclass
class _Visit:
    """A decided visit: its decision now, its best faces, and what may continue it."""

    visit_id: int
    uid: str
    subject_id: str | None
    name: str | None
    score: float
    threshold: float
    start_s: float
    end_s: float
    best: float
    first_wall: float | None = None
    last_wall: float | None = None
    faces: list[Evidence] = field(default_factory=list)  # best of all its tracks
    open_tracks: int = 0
    last_track: int = 0
    closing_since: float | None = None  # when its last open track ended (left not yet sent)
    end_reason: str = "ended"


@dataclass
class _Track:
    start_s: float
    last_s: float
    faces: list[Evidence] = field(default_factory=list)  # best first
    visit: _Visit | None = None  # set once decided (or continuing a visit)
    decided_best: float = 0.0  # best face quality when last identified
    decided_faces: int = 0
    verified_s: float = -1e9  # when a face was last verified to be the track's person
    box: np.ndarray | None = None  # the latest detection's box
    smooth: bool = False  # every box since the latest verified face overlapped the one before
    facing: int = 0  # detections that showed a face turned towards the camera
    seen: int = 0  # detections observed
    overlaps: dict[int, int] = field(default_factory=dict)  # other track -> frames overlapping
    embeddable: bool = False  # a face large enough to embed was seen
    first_wall: float | None = None
    last_wall: float | None = None


def _when(wall: float | None) -> datetime | None:
    return datetime.fromtimestamp(wall, tz=UTC) if wall is not None else None


def _unit(v: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(v, dtype=np.float32).ravel())


def _weighted_mean(faces: list[Evidence]) -> np.ndarray:
    weights = np.asarray([f.quality for f in faces])
    return _unit((weights[:, None] * np.vstack([f.embedding for f in faces])).sum(axis=0))


def _best(faces: list[Evidence], keep: int) -> list[Evidence]:
    """The ``keep`` best faces, each once (a visit's faces and its track's overlap)."""
    unique = {id(f): f for f in faces}
    return sorted(unique.values(), key=lambda f: -f.quality)[:keep]


class VisitTracker:
    """The visits of one camera: feed it each tracked face, and it says when to embed, whether
    a face is the track's person, and what the track's visit has become. Not thread-safe: one
    per camera worker. ``policy``: how visits are identified (default: the gallery's)."""

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
        self.split_below = one_to_one_threshold(gallery.card, self.settings.split_far)
        self.rejoin_above = one_to_one_threshold(gallery.card, self.settings.rejoin_far)
        self._tracks: dict[int, _Track] = {}
        self._visits: list[_Visit] = []  # open, closing, or recent enough to continue
        self._orphans: list[_Track] = []  # ended undecided tracks with faces (fragments)
        self._next_visit = 1
        self.splits = 0
        self.rejoined = 0
        self.corrections = 0

    def resume(self, visits: list[PastVisit], t: float, wall: float) -> int:
        """Take over the recent visits another worker recorded for this camera (its earlier
        holder, before a failover or a move): ``t`` is now in this tracker's clock, ``wall``
        the same moment in epoch seconds. A person back within ``revisit_s`` of their visit's
        last sighting continues it (no second ``arrived``): a named person by subject, a
        stranger by their visitor's faces. A visit that had not ended is announced ``left``
        :data:`RESUME_GRACE_S` after the take-over unless a track continues it. Returns how
        many visits were taken over."""
        taken = 0
        for past in visits:
            if any(v.uid == past.uid for v in self._visits):
                continue
            ago = max(0.0, wall - past.last_seen)
            if ago > self.settings.revisit_s:
                continue
            end_s = t - ago
            visit = _Visit(
                self._new_visit(),
                past.uid,
                past.subject_id,
                past.name,
                float(past.score),
                float(past.threshold),
                end_s - max(0.0, past.last_seen - past.first_seen),
                end_s,
                float(past.score),
                past.first_seen,
                past.last_seen,
                list(past.faces),
            )
            if not past.ended:
                visit.closing_since = t + RESUME_GRACE_S - self.settings.leave_s
                visit.end_reason = "ended"
            self._visits.append(visit)
            taken += 1
        return taken

    # -- evidence -------------------------------------------------------------------------------
    def _moved(self, track: _Track, box: np.ndarray | None, t: float | None = None) -> bool:
        """Whether ``box`` (seen at ``t``) is not a smooth continuation of the track: it
        overlaps the track's previous box by less than ``smooth_iou``. (Predicting where a
        face should be from its velocity was tried and let a face passing in front of another
        take its track: docs/streams.md.)"""
        if box is None or track.box is None:
            return False
        return box_iou(track.box, np.asarray(box, dtype=np.float64)) < self.settings.smooth_iou

    def wants_embedding(
        self,
        track_id: int,
        quality: FaceQuality,
        t: float | None = None,
        box: np.ndarray | None = None,
    ) -> bool:
        """Whether this face of the track is worth embedding: large enough, and either due
        for verification (a face turned towards the camera, ``verify_s`` after the last one
        or at once after a jump of the box), or needed as evidence (good enough:
        ``min_quality``, waived for an undecided track older than ``patience_s``; better than
        the worst kept face by ``min_gain`` once the track keeps ``max_faces``)."""
        s = self.settings
        if quality.size < s.min_eye_distance:
            return False
        track = self._tracks.get(track_id)
        if track is None:
            return quality.score >= s.min_quality or quality.faces_camera
        now = t if t is not None else track.last_s
        if quality.faces_camera and (
            now - track.verified_s >= s.verify_s - 1e-9 or self._moved(track, box, now)
        ):
            return True  # verification: is the track still its person?
        waiting = track.visit is None and now - track.start_s >= s.patience_s
        if quality.score < s.min_quality and not waiting:
            return False
        if len(track.faces) < s.max_faces:
            return True
        return quality.score > track.faces[-1].quality * (1.0 + s.min_gain)

    def verify(self, track_id: int, quality: FaceQuality, embedding: np.ndarray) -> Verdict:
        """Whether a new embedded face is the track's person: ``different`` when it is a face
        turned towards the camera and its best cosine with the track's kept faces (those
        turned towards the camera) is below the 1:1 threshold ``split_far``; ``unsure`` when
        either side has nothing to compare."""
        track = self._tracks.get(track_id)
        anchors = [f for f in track.faces if f.facing] if track is not None else []
        if not anchors or not quality.faces_camera:
            return "unsure"
        e = _unit(embedding)
        best = max(float(f.embedding @ e) for f in anchors)
        return "different" if best < self.split_below else "same"

    def jumped(self, track_id: int, box: np.ndarray, t: float | None = None) -> bool:
        """Whether the track moved to ``box`` by a jump (IoU with its previous box below
        ``smooth_iou``). Unless the face after the jump is verified to be the track's person,
        it may be someone else's (people crossing, a face passing in front of another), so
        the caller splits the track; the person's next face turned towards the camera
        rejoins their visit."""
        track = self._tracks.get(track_id)
        return track is not None and self._moved(track, box, t)

    def is_open(self, track_id: int) -> bool:
        """Whether ``track_id`` has been observed and not ended."""
        return track_id in self._tracks

    def decision(self, track_id: int) -> tuple[TrackState, str | None, str | None]:
        """The open track's decision: ``("undecided", None, None)``, ``("unknown", None,
        None)`` or ``("known", subject_id, name)``."""
        track = self._tracks.get(track_id)
        if track is None or track.visit is None:
            return ("undecided", None, None)
        v = track.visit
        if v.subject_id is None:
            return ("unknown", None, None)
        return ("known", v.subject_id, v.name)

    def label(self, track_id: int) -> tuple[TrackState, str | None, str | None]:
        """What the track's latest box is labelled (live view, ``--annotate``,
        ``--tracks-jsonl``): its :meth:`decision`, except that a named track's box carries
        its name only while the face is the verified person's: verified in this frame, or
        moved smoothly since a verification less than ``hold_s`` ago. A face that cannot be
        verified after a jump is ``undecided``: a name is never shown on a face that may be
        someone else's."""
        state = self.decision(track_id)
        if state[0] != "known":
            return state
        track = self._tracks[track_id]
        if track.verified_s == track.last_s:
            return state
        if track.smooth and track.last_s - track.verified_s <= self.settings.hold_s:
            return state
        return ("undecided", None, None)

    @property
    def open_tracks(self) -> int:
        """Tracks observed and not ended."""
        return len(self._tracks)

    def idle(self) -> bool:
        """No track open and no visit waiting for its ``left``: nobody is being followed."""
        return not self._tracks and all(v.closing_since is None for v in list(self._visits))

    def observe(
        self,
        track_id: int,
        t: float,
        quality: FaceQuality | None = None,
        embedding: np.ndarray | None = None,
        *,
        crop: np.ndarray | None = None,
        wall: float | None = None,
        box: np.ndarray | None = None,
    ) -> list[VisitEvent]:
        """A detection of ``track_id`` seen at ``t``, with its quality (when measured), its
        embedding (when :meth:`wants_embedding` said so; the caller has :meth:`verify`-ed it:
        a ``different`` face belongs to a new track) and optionally its aligned ``crop``
        (kept while the face is among the track's best); ``wall``: the same moment in epoch
        seconds; ``box``: where it is (x1, y1, x2, y2). Returns the events this causes:
        ``arrived`` when the track's visit opens, ``identified`` / ``corrected`` when better
        evidence changes its decision."""
        s = self.settings
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = _Track(start_s=t, last_s=t, first_wall=wall)
        track.last_s = max(track.last_s, t)
        track.seen += 1
        if box is not None:
            b = np.asarray(box, dtype=np.float64)
            track.smooth = track.smooth and not self._moved(track, b, t)
            track.box = b
        if wall is not None:
            if track.first_wall is None:
                track.first_wall = wall
            track.last_wall = wall if track.last_wall is None else max(track.last_wall, wall)
        if track.visit is not None:
            self._touch(track.visit, t, wall)
        if quality is not None:
            track.facing += int(quality.faces_camera)
            track.embeddable = track.embeddable or quality.size >= s.min_eye_distance
        if embedding is not None and quality is not None:
            e = _unit(embedding)
            if quality.faces_camera:
                track.verified_s = t
                track.smooth = True  # moves are judged from the latest verified face on
                if track.visit is None and not self._rejoin(track_id, track, e, t):
                    self._adopt(track, e, t)
            if len(track.faces) < s.max_faces or quality.score > track.faces[-1].quality:
                face = Evidence(max(quality.score, 1e-6), e, crop, quality.faces_camera)
                track.faces = _best([*track.faces, face], s.max_faces)
        if track.facing < s.min_face_frames:
            return []
        if track.visit is None:
            if len(track.faces) >= s.min_faces or self._clear(track):
                return self._decide(track_id, track, t)
            if not track.embeddable and t - track.start_s >= s.small_wait_s:
                return self._decide(track_id, track, t)  # counted, identified later
            return []
        return self._reconsider(track_id, track, t)

    def overlap(self, a: int, b: int) -> None:
        """Tracks ``a`` and ``b`` overlap in this frame (most of the smaller box lies in the
        other): one may be a second box on the other's person (hair, a forehead)."""
        for one, other in ((a, b), (b, a)):
            track = self._tracks.get(one)
            if track is not None:
                track.overlaps[other] = track.overlaps.get(other, 0) + 1

    def _shadowed(self, track: _Track) -> _Visit | None:
        """The visit of the decided track this one overlapped in most of its frames: a second
        box on that person, which must not open a visit of its own."""
        for other, frames in sorted(track.overlaps.items(), key=lambda x: -x[1]):
            partner = self._tracks.get(other)
            if frames * 2 >= track.seen and partner is not None and partner.visit is not None:
                return partner.visit
        return None

    # -- decisions ------------------------------------------------------------------------------
    def _identify(self, track: _Track) -> Any:
        """The gallery's answer for the track's evidence mean (None without faces)."""
        if not track.faces:
            return None
        mean = _weighted_mean(track.faces)
        return self.gallery.identify(mean[None, :], self.policy)[0]

    def _clear(self, track: _Track) -> bool:
        """Whether the faces so far (fewer than ``min_faces``) name someone clearly enough to
        decide now: the best subject at least ``quick_margin`` above the threshold."""
        if not track.faces or not any(f.facing for f in track.faces):
            return False
        answer = self._identify(track)
        return bool(
            answer is not None
            and answer.subject_id is not None
            and answer.score >= answer.threshold + self.settings.quick_margin
        )

    def _touch(self, visit: _Visit, t: float, wall: float | None) -> None:
        visit.end_s = max(visit.end_s, t)
        if wall is not None:
            visit.last_wall = max(visit.last_wall or wall, wall)

    def _join(self, track_id: int, track: _Track, visit: _Visit) -> None:
        """The track continues ``visit`` (no new ``arrived``)."""
        track.visit = visit
        visit.open_tracks += 1
        visit.last_track = track_id
        visit.closing_since = None
        self._touch(visit, track.last_s, track.last_wall)

    def _event(
        self, kind: EventKind, track_id: int, visit: _Visit, faces: list[Evidence], **extra: Any
    ) -> VisitEvent:
        return VisitEvent(
            kind,
            self.camera,
            track_id,
            visit.visit_id,
            visit.subject_id,
            visit.name,
            float(visit.best if kind == "left" else visit.score),
            float(visit.threshold),
            visit.start_s,
            visit.end_s,
            len(faces),
            _when(visit.first_wall),
            _when(visit.last_wall),
            tuple(faces),
            visit.uid,
            **extra,
        )

    def _decide(self, track_id: int, track: _Track, t: float) -> list[VisitEvent]:
        answer = self._identify(track)
        if answer is None:
            threshold = float(self.gallery.operating_point(policy=self.policy).threshold)
            subject, name, score = None, None, -1.0
        else:
            threshold = float(answer.threshold)
            subject, name, score = answer.subject_id, answer.name, float(answer.score)
        track.decided_best = track.faces[0].quality if track.faces else 0.0
        track.decided_faces = len(track.faces)
        visit = self._shadowed(track) or self._continuing(subject, track)
        if visit is not None:  # the same visit goes on: no second "arrived"
            self._join(track_id, track, visit)
            visit.faces = _best([*visit.faces, *track.faces], self.settings.max_faces)
            return []
        visit = _Visit(
            self._new_visit(),
            secrets.token_hex(8),
            subject,
            name,
            score,
            threshold,
            track.start_s,
            track.last_s,
            score,
            track.first_wall,
            track.last_wall,
            list(track.faces),
        )
        self._join(track_id, track, visit)
        self._visits.append(visit)
        return [self._event("arrived", track_id, visit, track.faces)]

    def _reconsider(self, track_id: int, track: _Track, t: float) -> list[VisitEvent]:
        """Identify a decided track again when its evidence clearly improved; an event when
        the decision changes (``identified`` or ``corrected``)."""
        s = self.settings
        visit = track.visit
        assert visit is not None
        visit.faces = _best([*visit.faces, *track.faces], s.max_faces)
        if not track.faces:
            return []
        best = track.faces[0].quality
        better = best > track.decided_best * (1.0 + s.reidentify_gain) + 1e-9
        grown = track.decided_faces < min(s.min_faces, len(track.faces))
        if not (better or grown):
            return []
        track.decided_best, track.decided_faces = best, len(track.faces)
        answer = self._identify(track)
        if answer is None:
            return []
        if answer.subject_id == visit.subject_id:
            visit.score = float(answer.score)
            visit.best = max(visit.best, visit.score)
            visit.threshold = float(answer.threshold)
            return []
        if visit.subject_id is None:  # unknown -> named
            self._set(visit, answer)
            return [self._event("identified", track_id, visit, track.faces)]
        # named -> someone else, or nobody: only on clear evidence
        current = next(
            (float(c.score) for c in answer.candidates if c.subject_id == visit.subject_id), None
        )
        close = current is not None and current > float(answer.threshold) - s.correct_margin
        if answer.subject_id is None and close:
            return []
        previous = (visit.subject_id, visit.name)
        self._set(visit, answer)
        self.corrections += 1
        return [
            self._event(
                "corrected",
                track_id,
                visit,
                track.faces,
                previous_subject_id=previous[0],
                previous_name=previous[1],
            )
        ]

    @staticmethod
    def _set(visit: _Visit, answer: Any) -> None:
        visit.subject_id, visit.name = answer.subject_id, answer.name
        visit.score = float(answer.score)
        visit.best = max(visit.best, visit.score)
        visit.threshold = float(answer.threshold)

    def _new_visit(self) -> int:
        self._next_visit += 1
        return self._next_visit - 1

    def _free(self, t: float) -> list[_Visit]:
        """Visits a new track seen at ``t`` may continue: those ended within ``revisit_s``, and
        those still open (a track the tracker lost but has not ended yet is the same person
        found again; two boxes on one person at once, a face and the hair above it, are one
        visit: a new track joins an open visit only when its faces match at ``rejoin_far``,
        or name the same subject)."""
        window = self.settings.revisit_s
        return [v for v in self._visits if v.open_tracks > 0 or t - v.end_s <= window]

    def _adopt(self, track: _Track, embedding: np.ndarray, t: float) -> None:
        """An undecided track's face turned towards the camera takes up the evidence of an
        undecided fragment that ended shortly before (a track split at a jump, lost for a
        moment) when it matches that fragment's faces at ``rejoin_far``: a person tracked in
        pieces is decided as one."""
        horizon = self.settings.leave_s + self.settings.patience_s
        best: tuple[float, _Track] | None = None
        for old in self._orphans:
            if t - old.last_s > horizon:
                continue
            score = max(float(f.embedding @ embedding) for f in old.faces if f.facing)
            if score >= self.rejoin_above and (best is None or score > best[0]):
                best = (score, old)
        if best is None:
            return
        old = best[1]
        self._orphans.remove(old)
        track.faces = _best([*old.faces, *track.faces], self.settings.max_faces)
        track.facing += old.facing
        track.embeddable = track.embeddable or old.embeddable
        track.start_s = min(track.start_s, old.start_s)
        if old.first_wall is not None:
            track.first_wall = min(track.first_wall or old.first_wall, old.first_wall)

    def _rejoin(self, track_id: int, track: _Track, embedding: np.ndarray, t: float) -> bool:
        """A new track's face turned towards the camera continues a visit whose tracks ended
        (split, lost, occluded, cut) within ``revisit_s`` when it matches that visit's faces
        at ``rejoin_far``: the track takes the visit, its faces and its decision at once."""
        best: tuple[float, _Visit] | None = None
        for visit in self._free(t):
            anchors = [f.embedding for f in visit.faces if f.facing]
            if anchors:
                score = max(float(a @ embedding) for a in anchors)
                if score >= self.rejoin_above and (best is None or score > best[0]):
                    best = (score, visit)
        if best is None:
            return False
        visit = best[1]
        self._join(track_id, track, visit)
        track.faces = _best(visit.faces, self.settings.max_faces)
        track.decided_best = track.decided_faces = 0  # identified again: the gallery may
        self.rejoined += 1  # have changed since (a stranger enrolled from the review queue)
        return True

    def _continuing(self, subject_id: str | None, track: _Track) -> _Visit | None:
        """The recent visit a newly decided track continues: the same subject's, or for a
        stranger the unknown visit whose faces match this track's at ``rejoin_far``."""
        free = self._free(track.last_s)
        if subject_id is not None:
            return next((v for v in reversed(free) if v.subject_id == subject_id), None)
        if not track.faces:
            return None
        mean = _weighted_mean(track.faces)
        best: tuple[float, _Visit] | None = None
        for visit in free:
            if visit.subject_id is None and visit.faces:
                score = float(_weighted_mean(visit.faces) @ mean)
                if score >= self.rejoin_above and (best is None or score > best[0]):
                    best = (score, visit)
        return best[1] if best is not None else None

    # -- ending ---------------------------------------------------------------------------------
    def end(self, track_id: int, reason: str = "ended") -> list[VisitEvent]:
        """The track ``track_id`` ended (``reason``: ``ended`` when the tracker lost it,
        ``split`` when a face was someone else's, ``jump`` when it jumped to a face that
        could not be verified, ``cut`` at a shot change, ``closed`` at the end of the
        source). Its visit's ``left`` comes from :meth:`flush` once no track has continued
        it for ``leave_s`` (or from :meth:`close`). An undecided track that showed a face
        turned towards the camera ``min_face_frames`` times, one of them good enough
        (``min_quality``), is decided now on the faces it has (a person seen briefly is
        counted): its ``arrived`` is returned."""
        track = self._tracks.pop(track_id, None)
        if track is None:
            return []
        if reason in ("split", "jump"):
            self.splits += 1
        events: list[VisitEvent] = []
        brief = track.facing >= self.settings.min_face_frames and bool(track.faces)
        if track.visit is None and brief and track.faces[0].quality >= self.settings.min_quality:
            self._tracks[track_id] = track  # decided as an open track, then ended below
            events = self._decide(track_id, track, track.last_s)
            del self._tracks[track_id]
        visit = track.visit
        if visit is None:
            if any(f.facing for f in track.faces):  # evidence a later fragment may take up
                self._orphans.append(track)
            return events
        visit.open_tracks = max(0, visit.open_tracks - 1)
        visit.faces = _best([*visit.faces, *track.faces], self.settings.max_faces)
        self._touch(visit, track.last_s, track.last_wall)
        visit.last_track = track_id
        if visit.open_tracks == 0:
            visit.closing_since = track.last_s
            visit.end_reason = reason
        return events

    def flush(self, t: float) -> list[VisitEvent]:
        """The ``left`` events of visits whose last track ended more than ``leave_s`` before
        ``t`` without another track continuing them."""
        due = [
            v
            for v in self._visits
            if v.closing_since is not None and t - v.closing_since >= self.settings.leave_s - 1e-9
        ]
        return [self._left(v) for v in due]

    def close(self) -> list[VisitEvent]:
        """The ``left`` events of every visit whose tracks have all ended (the end of the
        source: call after ending every track)."""
        return [self._left(v) for v in self._visits if v.closing_since is not None]

    def _left(self, visit: _Visit) -> VisitEvent:
        visit.closing_since = None
        return self._event("left", visit.last_track, visit, visit.faces, reason=visit.end_reason)

    def forget_before(self, t: float) -> None:
        """Drop finished visits that can no longer continue (older than ``revisit_s``)."""
        window = self.settings.revisit_s
        horizon = self.settings.leave_s + self.settings.patience_s
        self._orphans = [o for o in self._orphans if t - o.last_s <= horizon]
        self._visits = [
            v
            for v in self._visits
            if v.open_tracks > 0 or v.closing_since is not None or t - v.end_s <= window
        ]
