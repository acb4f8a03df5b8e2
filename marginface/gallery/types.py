"""The records the gallery hands out: plain immutable dataclasses (JSON via ``to_dict``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from marginface.decision.operating_point import OperatingPoint
from marginface.urls import redact_url

__all__ = [
    "ROLES",
    "VISITOR_STATUSES",
    "ApiKey",
    "AttendanceRow",
    "Camera",
    "CameraLease",
    "Candidate",
    "ClaimResult",
    "EnrollResult",
    "Event",
    "Face",
    "FaceRecord",
    "Heartbeat",
    "Hit",
    "Identification",
    "LeaseRef",
    "Match",
    "NodeRecord",
    "PhotoConflict",
    "PhotoOutcome",
    "PhotoStatus",
    "RecognizedFace",
    "StrangerSighting",
    "Subject",
    "Verification",
    "Visitor",
    "VisitorFace",
    "redact_url",
    "to_jsonable",
]

#: Roles an API key can hold: ``admin`` (keys, subjects, everything), ``enrol`` (subjects and
#: faces, plus recognition), ``recognise`` (identify and verify only).
ROLES: tuple[str, ...] = ("admin", "enrol", "recognise")

#: What happened to one photo during enrolment. Held back (nothing stored): ``no_face``,
#: ``multiple_faces`` (policy ``reject``), ``near_duplicate`` (the subject has this face),
#: ``unreadable``, ``duplicate_photo`` (these exact bytes are stored already), ``matches_other``
#: (identification names another subject) and ``mismatch`` (unlike the subject's own faces).
PhotoStatus = Literal[
    "enrolled",
    "no_face",
    "multiple_faces",
    "near_duplicate",
    "unreadable",
    "duplicate_photo",
    "matches_other",
    "mismatch",
]


def to_jsonable(value: Any) -> Any:
    """Turn records, arrays and datetimes into plain JSON types (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of this record."""
        return to_jsonable(self)


def utc_from_ts(ts: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True)
class Subject(_Record):
    """An enrolled person. Display names may repeat; ``id`` is unique."""

    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    n_faces: int = 0


@dataclass(frozen=True)
class FaceRecord(_Record):
    """One stored face embedding of a subject (the embedding itself is not carried here)."""

    id: int
    subject_id: str
    model: str
    dim: int
    created_at: datetime
    source_hash: str | None = None  # sha256 of the source photo's bytes, when known
    has_crop: bool = False  # an aligned crop is stored only when the gallery is told to


#: Alias kept for the name used in the design notes (not ``marginface.embed.Face``).
Face = FaceRecord


@dataclass(frozen=True)
class Hit(_Record):
    """One nearest neighbour of a query: a stored face and its cosine similarity."""

    face_id: int
    subject_id: str
    score: float


@dataclass(frozen=True)
class Candidate(_Record):
    """A subject among a query's top-k neighbours, after the k-NN vote.

    ``score`` is the subject's best cosine similarity among the neighbours, ``votes`` the number
    of its faces among them and ``weight`` the sum of their similarities.
    """

    subject_id: str
    name: str
    score: float
    votes: int
    weight: float
    face_id: int  # the subject's best-matching face


#: A decided match is a candidate that passed the threshold.
Match = Candidate


@dataclass(frozen=True)
class Identification(_Record):
    """The answer for one query embedding: a match, or unknown (``match is None``)."""

    match: Candidate | None
    score: float  # the best candidate's score (cosine); -1.0 when the gallery is empty
    threshold: float
    candidates: list[Candidate] = field(default_factory=list)
    #: how the threshold was chosen: target FPIR, gallery size (None for bare calls)
    operating_point: OperatingPoint | None = None

    @property
    def known(self) -> bool:
        """True when a subject passed the threshold."""
        return self.match is not None

    @property
    def subject_id(self) -> str | None:
        """The matched subject's id, or None for unknown."""
        return self.match.subject_id if self.match else None

    @property
    def name(self) -> str | None:
        """The matched subject's display name, or None for unknown."""
        return self.match.name if self.match else None


@dataclass(frozen=True)
class RecognizedFace(_Record):
    """One face found in a photo and the gallery's answer for it."""

    box: list[float]  # x1, y1, x2, y2 in the photo's pixels
    detection_score: float
    landmarks: list[list[float]]
    identification: Identification

    def answer(self, *, candidates: bool = True) -> dict[str, Any]:
        """The one JSON shape of an answered face, shared by the CLI and the API: ``box``,
        ``detection_score``, ``landmarks``, ``match`` (the subject, or None for unknown),
        ``score``, ``threshold``, ``operating_point`` (how the threshold was decided: the
        target FPIR and the gallery size it was computed for) and ``candidates``.
        ``candidates=False`` gives the decision only (``candidates`` is None): the runners-up
        name enrolled people, which a caller allowed only to recognise must not learn."""
        ident = self.identification
        return {
            "box": list(self.box),
            "detection_score": self.detection_score,
            "landmarks": [list(p) for p in self.landmarks],
            "match": ident.match.to_dict() if ident.match is not None else None,
            "score": ident.score,
            "threshold": ident.threshold,
            "operating_point": (
                ident.operating_point.to_dict() if ident.operating_point is not None else None
            ),
            "candidates": [c.to_dict() for c in ident.candidates] if candidates else None,
        }


@dataclass(frozen=True)
class PhotoConflict(_Record):
    """The subject an enrolment photo collides with, and how closely: why the photo was held
    back, or what a forced enrolment was warned about.

    ``matches_other``: the subject identification names for the face (its ``score`` and the
    identification ``threshold``); ``duplicate_photo``: a subject that already holds these
    exact bytes (nothing compared: no score); ``mismatch``: the subject the photo was added to,
    its best cosine to that subject's faces and the 1:1 verification threshold it fell below.
    """

    subject_id: str
    name: str
    score: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class PhotoOutcome(_Record):
    """What enrolment did with one photo."""

    source: str  # file name or "photo[i]"
    status: PhotoStatus
    message: str = ""
    face_id: int | None = None  # set when enrolled
    box: list[float] | None = None
    similarity: float | None = None  # for near duplicates: cosine to the existing face
    #: the subject this photo collides with (held back, or enrolled with ``force`` despite it)
    conflict: PhotoConflict | None = None
    #: held back, but enrolment with ``force`` would store it
    forceable: bool = False
    #: enrolled only because ``force`` overrode a conflict (``message`` says which)
    forced: bool = False


@dataclass(frozen=True)
class EnrollResult(_Record):
    """The outcome of enrolling photos into one subject."""

    subject: Subject
    photos: list[PhotoOutcome]
    created: bool  # True when the subject was created by this enrolment

    @property
    def face_ids(self) -> list[int]:
        """Ids of the faces added."""
        return [p.face_id for p in self.photos if p.face_id is not None]

    @property
    def enrolled(self) -> int:
        """How many photos were enrolled."""
        return sum(p.status == "enrolled" for p in self.photos)


@dataclass(frozen=True)
class Verification(_Record):
    """Photo against photo (or against a subject): cosine score and the decision."""

    score: float
    threshold: float
    same: bool
    box_a: list[float] | None = None
    box_b: list[float] | None = None
    subject_id: str | None = None
    faces_a: int = 1  # faces found in each photo; the largest one is compared
    faces_b: int = 1


@dataclass(frozen=True)
class Event(_Record):
    """A logged recognition: when, where (camera/door), whom, how sure, and the decision."""

    id: int
    time: datetime
    source: str
    subject_id: str | None
    subject_name: str | None
    score: float | None
    decision: str  # e.g. "match", "unknown", "granted", "denied"
    details: dict[str, Any] = field(default_factory=dict)
    #: when the row was written, by the database's clock (None for rows older than schema 5)
    logged_at: datetime | None = None


@dataclass(frozen=True)
class AttendanceRow(_Record):
    """First and last sighting of one subject on one day."""

    date: str  # YYYY-MM-DD in the requested time zone
    subject_id: str
    name: str
    first_seen: datetime
    last_seen: datetime
    count: int
    sources: list[str]


@dataclass(frozen=True)
class ApiKey(_Record):
    """An API key's public record. The key itself is shown once at creation, never stored."""

    id: str
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None = None


#: What a review can make of a visitor: ``pending`` (in the review queue), ``assigned``
#: (enrolled into a subject) or ``dismissed`` (not wanted; see ``gallery.visitors.dismiss``).
VISITOR_STATUSES: tuple[str, ...] = ("pending", "assigned", "dismissed")


@dataclass(frozen=True)
class Camera(_Record):
    """A camera the service watches: its unique ``name`` (the ``source`` of its events), the
    ``url`` it is read from, its ``settings`` (a JSON object the streams layer validates; the
    gallery stores it as given) and whether it runs (``enabled``)."""

    id: str
    name: str
    url: str
    settings: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @property
    def redacted_url(self) -> str:
        """The URL with its credentials and secret query values hidden
        (:func:`marginface.urls.redact_url`)."""
        return redact_url(self.url)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """A JSON-ready dictionary; ``redact`` (the default) hides the URL's password: URLs
        such as ``rtsp://user:pass@host`` carry the camera's credentials."""
        out = to_jsonable(self)
        if redact:
            out["url"] = self.redacted_url
        return out


@dataclass(frozen=True)
class VisitorFace(_Record):
    """One kept face of a visitor: when and where it was seen, its quality score, and whether
    its aligned crop is stored (``gallery.visitors.face_crop``). The embedding is not carried
    here."""

    id: int
    visitor_id: str
    ts: datetime
    camera: str
    quality: float
    has_crop: bool = False


@dataclass(frozen=True)
class Visitor(_Record):
    """Unknown sightings that look alike, grouped as one person awaiting review.

    ``sightings`` counts the unknown visits grouped into it, ``cameras`` the cameras that saw
    it (first sighting first), ``faces`` its best kept faces (best quality first) and
    ``subject_id`` the subject it was assigned to."""

    id: str
    status: str  # one of VISITOR_STATUSES
    subject_id: str | None
    first_seen: datetime
    last_seen: datetime
    sightings: int
    cameras: list[str]
    faces: list[VisitorFace]
    created_at: datetime
    updated_at: datetime

    @property
    def face_ids(self) -> list[int]:
        """Ids of the kept faces, best quality first."""
        return [f.id for f in self.faces]


@dataclass(frozen=True)
class StrangerSighting(_Record):
    """Where ``gallery.visitors.record`` put an unknown sighting: the visitor, whether it was
    created for it (``new``), the cosine between the sighting and that visitor's mean before
    the sighting (-1.0 for a new visitor, which matched none), and the visitor's status
    (``dismissed``: the face of a dismissed visitor, counted but not queued)."""

    visitor_id: str
    new: bool
    score: float
    status: str = "pending"


# -- the camera cluster ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LeaseRef(_Record):
    """A write made under a camera's lease: the camera, the node holding it and the lease's
    fencing ``epoch``. The gallery refuses the write (``StaleLeaseError``) unless that node
    still holds that epoch's lease, unexpired by the database's clock."""

    camera_id: str
    node: str
    epoch: int


@dataclass(frozen=True)
class CameraLease(_Record):
    """Who holds a camera: ``node`` (None: nobody) until ``expires_at`` (the database's
    clock), under the fencing ``epoch``, which grows with every new holder. ``held``: a node
    holds it now. ``previous_node`` / ``previous_epoch`` / ``previous_expires_at``: the holder
    before (when its lease expired or was given up). ``camera``, ``enabled`` and
    ``updated_at`` are the camera's (a holder restarts its worker when the camera changes)."""

    camera_id: str
    camera: str
    enabled: bool
    updated_at: datetime
    node: str | None
    epoch: int
    expires_at: datetime | None
    acquired_at: datetime | None
    previous_node: str | None = None
    previous_epoch: int | None = None
    previous_expires_at: datetime | None = None
    held: bool = False

    @property
    def ref(self) -> LeaseRef:
        """The lease as writes under it name it (:class:`LeaseRef`); only for a held lease."""
        if self.node is None:
            raise ValueError(f"camera {self.camera_id} is held by no node")
        return LeaseRef(self.camera_id, self.node, self.epoch)


@dataclass(frozen=True)
class NodeRecord(_Record):
    """A ``marginface serve`` process sharing the gallery. ``state``: ``live`` (its heartbeat
    is younger than its ``ttl_s``), ``lost`` (it stopped heartbeating: killed, cut off) or
    ``left`` (it stopped and gave its cameras up). ``instance`` tells two processes of one
    name apart; ``capacity`` is how many cameras it takes now; ``info`` what it publishes
    (frames/s, CPU, its cameras' status); ``cameras`` the ids of the cameras it holds;
    ``age_s`` the seconds since its heartbeat, by the database's clock."""

    name: str
    instance: str
    address: str
    state: str
    ttl_s: float
    capacity: int
    started_at: datetime
    heartbeat_at: datetime
    info: dict[str, Any]
    cameras: list[str]
    age_s: float


@dataclass(frozen=True)
class Heartbeat(_Record):
    """What a node's heartbeat found, in one transaction: the database's clock (``now``,
    epoch seconds), the leases it holds (renewed), the live nodes, the enabled cameras nobody
    holds (``free``), and the seconds until the next lease held by another node expires
    (None: none)."""

    now: float
    leases: list[CameraLease]
    nodes: list[NodeRecord]
    free: list[CameraLease]
    next_expiry_s: float | None


@dataclass(frozen=True)
class ClaimResult(_Record):
    """The leases a claim took (each with its new epoch); ``blocked_by``: the node that holds
    the cameras of a gallery only one node may run (SQLite), when that stopped the claim."""

    leases: list[CameraLease]
    blocked_by: str | None = None
