"""Request and response bodies of the REST API (they also document it at ``/docs``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from marginface.errors import GalleryError
from marginface.gallery.validate import MAX_NAME_LENGTH, clean_name, metadata_json, name_pattern
from marginface.streams.camera import CameraSettings
from marginface.streams.manager import CameraState
from marginface.streams.sources import CameraSource
from marginface.streams.visits import VisitSettings

__all__ = [
    "AttendanceOut",
    "AttendanceRowOut",
    "CameraCreate",
    "CameraListOut",
    "CameraOut",
    "CameraStatusOut",
    "CameraUpdate",
    "CandidateOut",
    "EnrollOut",
    "ErrorOut",
    "EventListOut",
    "EventOut",
    "FaceOut",
    "FrameAcceptedOut",
    "HealthOut",
    "IdentifiedFaceOut",
    "IdentifyOut",
    "KeyCreate",
    "KeyCreatedOut",
    "KeyOut",
    "NodeListOut",
    "NodeOut",
    "PhotoConflictOut",
    "PhotoOutcomeOut",
    "SubjectCreate",
    "SubjectDetailOut",
    "SubjectListOut",
    "SubjectOut",
    "SubjectUpdate",
    "VerifyOut",
    "VisitListOut",
    "VisitOut",
    "VisitorAssign",
    "VisitorAssignedOut",
    "VisitorListOut",
    "VisitorOut",
]

Role = Literal["admin", "enrol", "recognise"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _Body(BaseModel):
    """A JSON request body: unknown keys refused, and strict about types (``{"enabled": 0}``
    is not a boolean, ``"5"`` not a number), as its schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


#: What the gallery accepts as a name (``clean_name``), stated in the schema: no control
#: character, surrogate or bidirectional override, something visible.
NAME_SCHEMA: dict[str, Any] = {"pattern": name_pattern()}


def _gallery_rule(
    rule: Callable[..., Any], *, checks_only: bool = False, **kwargs: Any
) -> AfterValidator:
    """A validator applying one of the gallery's rules (a refusal becomes pydantic's
    ``ValueError``, hence a 422 naming the field): the value as the rule returns it, or the
    value unchanged for a rule that ``checks_only``."""

    def validate(value: Any) -> Any:
        if value is None:
            return value
        try:
            result = rule(value, **kwargs)
        except GalleryError as exc:
            raise ValueError(str(exc)) from None
        return value if checks_only else result

    return AfterValidator(validate)


# The gallery's own rules (marginface.gallery.validate), applied while the request is parsed so
# that nothing is stored, and no photo processed, for a value the gallery would refuse.
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="Display name; may repeat. No control characters or bidirectional "
        "overrides; something visible.",
        json_schema_extra=NAME_SCHEMA,
    ),
    _gallery_rule(clean_name),
]
Metadata = Annotated[
    dict[str, Any],
    Field(description="A small JSON object (at most 16 KiB, 8 levels, 256 keys, finite numbers)."),
    _gallery_rule(metadata_json, checks_only=True),
]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. no_face, not_found.")
    message: str = Field(description="What went wrong, for a person.")
    details: Any | None = None


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    model: str | None
    subjects: int
    faces: int
    uptime_s: float
    node: str = Field(description="This service's name in the camera cluster.")
    cameras_running: int = Field(description="Cameras this node runs now.")


# -- subjects ---------------------------------------------------------------------------------
class SubjectCreate(_Body):
    name: Name
    metadata: Metadata = Field(default_factory=dict)


class SubjectUpdate(_Body):
    name: Name | None = None
    metadata: Metadata | None = Field(
        default=None, description="Replaces the whole metadata object."
    )


class SubjectOut(_Out):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    n_faces: int


class FaceOut(_Out):
    id: int
    subject_id: str
    model: str
    dim: int
    created_at: datetime
    has_crop: bool


class SubjectDetailOut(SubjectOut):
    faces: list[FaceOut]


class SubjectListOut(BaseModel):
    subjects: list[SubjectOut]
    total: int
    limit: int
    offset: int


class PhotoConflictOut(_Out):
    subject_id: str
    name: str
    score: float | None = Field(
        description="Cosine: the identification score (matches_other), or the best score "
        "against the subject's own faces (mismatch); null for a stored duplicate photo."
    )
    threshold: float | None = Field(
        description="The threshold the score was held to: identification's (matches_other) "
        "or the 1:1 verification threshold (mismatch)."
    )


class PhotoOutcomeOut(_Out):
    source: str = Field(description="The uploaded file's name.")
    status: Literal[
        "enrolled",
        "no_face",
        "multiple_faces",
        "near_duplicate",
        "unreadable",
        "duplicate_photo",
        "matches_other",
        "mismatch",
    ] = Field(
        description="enrolled, or why not: no_face, multiple_faces (policy reject), "
        "near_duplicate (the subject has this face), unreadable, duplicate_photo (this exact "
        "photo is stored already), matches_other (identified as another subject) or mismatch "
        "(unlike the subject's own faces)."
    )
    message: str
    face_id: int | None
    box: list[float] | None
    similarity: float | None
    conflict: PhotoConflictOut | None = Field(
        description="The subject the photo collides with: why it was held back, or what a "
        "forced enrolment overrode."
    )
    forceable: bool = Field(
        description="Held back, but the same request with force=true would "
        "enrol it (a mismatch only with an admin key)."
    )
    forced: bool = Field(description="Enrolled only because force=true overrode a conflict.")


class EnrollOut(BaseModel):
    subject: SubjectOut
    photos: list[PhotoOutcomeOut]
    created: bool
    enrolled: int


# -- recognition -------------------------------------------------------------------------------
class CandidateOut(_Out):
    subject_id: str
    name: str
    score: float = Field(description="Best cosine similarity among the subject's neighbours.")
    votes: int
    weight: float
    face_id: int


class OperatingPointOut(BaseModel):
    threshold: float = Field(description="The cosine threshold in force.")
    source: Literal["fpir", "threshold"] = Field(
        description="fpir: derived from the target FPIR for this gallery; threshold: set "
        "explicitly."
    )
    target_fpir: float | None = Field(
        description="The target false positive identification "
        "rate (null for an explicit threshold)."
    )
    expected_fpir: float | None = Field(
        description="The FPIR the model card predicts at this threshold for this gallery."
    )
    gallery_subjects: int = Field(description="Subjects (with faces) it was computed for.")
    gallery_faces: int
    note: str | None


class IdentifiedFaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the photo's pixels.")
    detection_score: float
    landmarks: list[list[float]]
    match: CandidateOut | None = Field(description="The identified subject; null for unknown.")
    score: float = Field(description="The best candidate's cosine similarity.")
    threshold: float
    operating_point: OperatingPointOut | None = Field(description="How the threshold was decided.")
    candidates: list[CandidateOut] | None = Field(
        description="The nearest subjects with their scores; null for a recognise key (they "
        "name enrolled people) unless the service is configured to show them."
    )


class IdentifyOut(BaseModel):
    faces: list[IdentifiedFaceOut]
    source: str | None = Field(description="The event source, when the answer was logged.")


class VerifyOut(_Out):
    same: bool
    score: float
    threshold: float
    box_a: list[float] | None
    box_b: list[float] | None
    subject_id: str | None
    faces_a: int
    faces_b: int


# -- events ------------------------------------------------------------------------------------
class EventOut(_Out):
    id: int
    time: datetime
    source: str
    subject_id: str | None
    subject_name: str | None
    score: float | None
    decision: str
    details: dict[str, Any]


class EventListOut(BaseModel):
    events: list[EventOut]
    limit: int
    offset: int


class AttendanceRowOut(_Out):
    date: str
    subject_id: str
    name: str
    first_seen: datetime
    last_seen: datetime
    count: int
    sources: list[str]


class AttendanceOut(BaseModel):
    date: str
    timezone: str
    rows: list[AttendanceRowOut]


# -- keys --------------------------------------------------------------------------------------
class KeyCreate(_Body):
    name: (
        Annotated[
            str,
            Field(min_length=1, max_length=100, json_schema_extra=NAME_SCHEMA),
            _gallery_rule(clean_name, what="key name", max_length=100),
        ]
        | None
    ) = Field(
        default=None,
        description="Who or what uses the key; default '<role> key (API)' (optional, as "
        "for `marginface keys create`).",
    )
    role: Role


class KeyOut(_Out):
    id: str
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None


class KeyCreatedOut(BaseModel):
    key: KeyOut
    secret: str = Field(description="The API key itself. It is shown once and never stored.")


# -- cameras -----------------------------------------------------------------------------------
CameraName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="Unique camera name; the `source` of its visit events (and attendance).",
        json_schema_extra=NAME_SCHEMA,
    ),
    _gallery_rule(clean_name, what="camera name", max_length=100),
]
CameraUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="Where frames come from: `rtsp://user:pass@host:554/path` or `rtsps://` "
        "(add `?transport=udp` or `tcp`), `http(s)://` (MJPEG), or `push:` for a camera that "
        "POSTs JPEG snapshots to `/v1/cameras/{camera_id}/frames`; a video file (a path or "
        "`file://`) only under the service's `media_roots`, a webcam (`0`, `/dev/video0`, "
        "`webcam:0`) only among its `allowed_devices` (both empty by default). Anything else "
        "is refused (422, 'not allowed'); the URL is not connected to at creation. Passwords "
        "and tokens are never shown back.",
    ),
]


class VisitSettingsBody(VisitSettings):
    """Per-track evidence and the re-appearance window (strict, as every body)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CameraSourceBody(CameraSource):
    """How the source is read (strict, as every body)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CameraSettingsBody(CameraSettings):
    """Processing settings, all optional (unknown keys refused): `fps` (frames processed per
    second, separately from the stream's rate), `detect_max_side`, `detect_upscale`,
    `min_face_size`, `track_buffer_s`, `score_threshold`, `cut_threshold`, `visits` (evidence,
    appearance checks and the re-appearance window), `source` (how the stream is read).
    docs/streams.md lists every setting with its default. Strangers' crops are kept for
    review unless the service's review_crops is off."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_store_crops(cls, data: Any) -> Any:
        """A request may not give ``store_crops`` any more (stored cameras may: the stored
        settings drop it)."""
        return data

    visits: VisitSettingsBody = Field(
        default_factory=VisitSettingsBody,
        description="evidence per track and the re-appearance window",
    )
    source: CameraSourceBody = Field(
        default_factory=CameraSourceBody,
        description="how the source is read: `transport` (RTSP), `open_timeout`, "
        "`read_timeout`, `backoff_initial`, `backoff_max`, `loop` (a video file played as a "
        "live camera); `transport` is for rtsp:// URLs only, `loop` for files only (422)",
    )

    def given(self) -> dict[str, Any]:
        """The settings as given (what is stored): the keys set, defaults left out."""
        return self.model_dump(mode="json", exclude_unset=True)


class CameraCreate(_Body):
    name: CameraName
    url: CameraUrl
    settings: CameraSettingsBody = Field(default_factory=CameraSettingsBody)
    enabled: bool = Field(
        default=True,
        description="Run it now and whenever the service "
        "starts (POST .../start and .../stop change it too).",
    )


class CameraUpdate(_Body):
    name: CameraName | None = None
    url: CameraUrl | None = None
    settings: CameraSettingsBody | None = Field(
        default=None, description="Replaces the whole settings object."
    )
    enabled: bool | None = None


class NotificationStatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="gallery (visits written to the gallery), webhook or mqtt.")
    last_error: str | None = None


class CameraStatusOut(BaseModel):
    state: CameraState = Field(
        description="stopped (disabled, or camera workers are off), waiting (enabled, no node "
        "holds it yet: every node is full, or it is changing node), starting, connecting, "
        "running, reconnecting (the stream dropped or cannot be reached; retried with "
        "backoff), ended (a video file played to its end) or failed (the worker crashed or "
        "cannot start; restarted with backoff). Reported by the node running the camera."
    )
    running: bool = Field(description="A worker is watching the camera now.")
    last_error: str | None = Field(description="Why it is not running well (passwords hidden).")
    restarts: int = Field(description="Restarts of the worker after a failure.")
    read_fps: float | None = Field(description="Frames per second read from the stream.")
    process_fps: float | None = Field(description="Frames per second processed.")
    lag_s: float | None = Field(description="Age of the latest frame when it was processed.")
    frames_read: int
    frames_processed: int
    ms_per_frame: float | None = Field(description="Processing time per frame (moving average).")
    frame_errors: int = Field(description="Frames whose processing failed (skipped).")
    frames_dropped: int = Field(description="Frames skipped to stay at the latest frame.")
    frames_corrupt: int = Field(description="Frames that could not be decoded (skipped).")
    reconnects: int
    tracks_open: int = Field(description="Faces being followed now.")
    visits: int = Field(description="Visits decided since the worker started.")
    width: int | None
    height: int | None
    stream_fps: float | None = Field(description="The stream's own frame rate, when known.")
    notifications: list[NotificationStatusOut] = Field(
        description="Delivery status of the visit records and notifications (every camera "
        "shares them): counts, and the last error."
    )


class CameraOut(_Out):
    id: str
    name: str
    url: str = Field(description="The URL with any password replaced by ***.")
    settings: dict[str, Any]
    enabled: bool
    push: bool = Field(description="Frames are POSTed to /v1/cameras/{camera_id}/frames.")
    created_at: datetime
    updated_at: datetime
    node: str | None = Field(
        None, description="The node running it (/v1/nodes); null while no node holds it."
    )
    epoch: int | None = Field(
        None,
        description="The fencing epoch of that node's lease on the camera: it grows with every "
        "new holder, and every visit event carries it.",
    )
    status: CameraStatusOut


class CameraListOut(BaseModel):
    cameras: list[CameraOut]
    total: int


class FrameAcceptedOut(BaseModel):
    accepted: Literal[True]
    status: CameraStatusOut


class VisitOut(BaseModel):
    id: int = Field(description="The event's id (/v1/events).")
    time: datetime
    camera: str
    kind: Literal["arrived", "identified", "corrected", "left"] = Field(
        description="arrived: the visit was decided (a name, or unknown); identified: an "
        "unknown visit's better faces named someone; corrected: a named visit's better faces "
        "named someone else, or nobody; left: it ended."
    )
    known: bool = Field(
        description="The decision: a named person (true) or a stranger (false). Every key "
        "gets it; who the person is (subject_id, name) only an admin key."
    )
    subject_id: str | None = Field(
        description="The person seen (admin keys; null for a stranger, and for other keys)."
    )
    name: str | None = Field(description="The person's name (admin keys only).")
    score: float | None
    track_id: int | None
    visit_id: int | None
    first_seen: datetime | None
    last_seen: datetime | None
    dwell_s: float | None
    faces: int | None = Field(description="Face embeddings the decision used.")
    visitor_id: str | None = Field(
        description="A stranger's visitor in /v1/unknowns (on its left event; enrol and admin "
        "keys)."
    )
    face: bool = Field(
        False,
        description="A thumbnail of the visit's best face this key may see is at "
        "/v1/visits/{id}/face.jpg (kept in memory for the latest visits only): a stranger's "
        "for enrol keys, anyone's for admin keys, none for recognise keys.",
    )


class VisitListOut(BaseModel):
    visits: list[VisitOut]
    limit: int


# -- unknowns (visitors) -----------------------------------------------------------------------
class VisitorFaceOut(_Out):
    id: int
    ts: datetime = Field(description="When this face was seen.")
    camera: str
    quality: float
    has_crop: bool = Field(description="Its crop is at .../faces/{face_id}.png.")


class VisitorOut(_Out):
    id: str
    status: Literal["pending", "assigned", "dismissed"]
    subject_id: str | None = Field(description="The subject it was assigned to.")
    first_seen: datetime
    last_seen: datetime
    sightings: int = Field(description="Unknown visits grouped into this visitor.")
    cameras: list[str]
    faces: list[VisitorFaceOut] = Field(description="Its best kept faces, best first.")
    face_ids: list[int]
    created_at: datetime
    updated_at: datetime


class VisitorListOut(BaseModel):
    visitors: list[VisitorOut]
    total: int
    limit: int
    offset: int


FaceIdValue = Annotated[int, Field(ge=1, le=2**63 - 1)]


class VisitorAssign(_Body):
    subject_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="An existing subject to add the visitor's faces to."
    )
    name: Name | None = Field(default=None, description="Or: a new subject's name.")
    faces: Annotated[list[FaceIdValue], Field(max_length=100)] | None = Field(
        default=None, description="The visitor's face ids to enrol (default: its best, up to 5)."
    )
    force: bool = Field(
        default=False,
        description="Assign even though the visitor looks like another enrolled subject "
        "(otherwise 409) and, with an admin key only, even though its faces do not look like "
        "the subject's own (otherwise 422 photo_mismatch; 403 for other keys).",
    )


class VisitorSplit(_Body):
    faces: Annotated[list[FaceIdValue], Field(min_length=1, max_length=100)] = Field(
        description="The visitor's face ids that are another person's: they become a new "
        "pending visitor."
    )


class VisitorSplitOut(BaseModel):
    visitor: VisitorOut = Field(description="The visitor, with the faces it keeps.")
    new: VisitorOut = Field(description="The new visitor, with the faces split off.")


class VisitorAssignedOut(BaseModel):
    visitor: VisitorOut
    subject: SubjectOut


# -- nodes -------------------------------------------------------------------------------------
class NodeOut(BaseModel):
    name: str
    address: str = Field(description="Where the other nodes reach it.")
    state: Literal["live", "lost", "left"] = Field(
        description="live (its heartbeat is recent), lost (no heartbeat within its lease TTL: "
        "killed, switched off, cut off from the database) or left (stopped, cameras given up)."
    )
    this: bool = Field(description="The node answering this request.")
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_s: float = Field(description="Seconds since its last heartbeat.")
    lease_ttl_s: float
    cameras: list[str] = Field(description="Names of the cameras it holds.")
    cameras_held: int
    capacity: int = Field(description="Cameras it takes at most now (max_cameras, CPU budget).")
    max_cameras: int | None
    fps: float | None = Field(description="Frames per second its cameras process, in all.")
    cpu: float | None = Field(description="Cores its process uses (last minute).")
    cpu_per_camera: float | None = Field(description="Cores each camera costs it (measured).")
    cores: int | None
    version: str | None


class NodeListOut(BaseModel):
    nodes: list[NodeOut]
    this: str = Field(description="The name of the node answering.")
    mode: Literal["cluster", "single"] = Field(
        description="cluster: PostgreSQL, the cameras spread over the live nodes; single: "
        "SQLite, one node runs every camera."
    )
