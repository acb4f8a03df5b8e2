"""The gallery: enrolled subjects, their face embeddings, recognition events and API keys.

Metadata lives in SQL (one SQLite file in WAL mode by default, or PostgreSQL); vectors live in a
pluggable index (exact in-process numpy, FAISS, or Milvus). Enrolment is one transaction;
deleting a subject or a face removes its embeddings from SQL and from the index at once.

A :class:`Gallery` is a facade over its parts, each a class of its own sharing the gallery's
database: ``gallery.subjects`` (subjects and faces), ``gallery.events`` (events and
attendance), ``gallery.keys`` (API keys), ``gallery.cameras`` and ``gallery.visitors``
(strangers seen by cameras). The gallery itself keeps what spans them: the model binding, the
index, search and identification at the operating point, a visitor's assignment to a subject,
the retention purge, ``stats`` and ``export``.

Identification decides as a :class:`marginface.decision.IdentificationPolicy` says (target
FPIR or explicit threshold, ``k``), handed to :meth:`Gallery.open` and the :class:`Recognizer`.

Typical use::

    from marginface.embed import Pipeline
    from marginface.gallery import Gallery, Recognizer

    pipeline = Pipeline.from_names(model="default")
    gallery = Gallery.open("~/.local/share/marginface/gallery.db",
                           model_name=pipeline.embedder.name, dim=pipeline.embedder.embedding_dim,
                           card=pipeline.embedder.card)
    rec = Recognizer(gallery, pipeline)
    rec.enroll("Ada Lovelace", ["ada1.jpg", "ada2.jpg"])
    print(gallery.subjects.count(), "subjects,", gallery.subjects.count_faces(), "faces")
    for face in rec.identify("door-camera.jpg"):
        print(face.box, face.identification.name or "unknown", face.identification.score)
"""

from __future__ import annotations

from marginface.gallery.cluster import NodeNameTakenError, NodeReplacedError, StaleLeaseError
from marginface.gallery.index import (
    INDEX_KINDS,
    ExactIndex,
    FaissBinaryIndex,
    FaissIndex,
    MilvusIndex,
    VectorIndex,
    create_index,
)
from marginface.gallery.likeness import FacesUnlikeError, Unlike, unlike, unlike_each_other
from marginface.gallery.recognizer import (
    MULTIPLE_FACES,
    EnrollmentError,
    IdentityConflictError,
    MismatchForceError,
    MultipleFaces,
    Photo,
    Recognizer,
)
from marginface.gallery.store import GALLERY_URL_ENV, Gallery, default_gallery_url
from marginface.gallery.types import (
    ROLES,
    VISITOR_STATUSES,
    ApiKey,
    AttendanceRow,
    Camera,
    CameraLease,
    Candidate,
    ClaimResult,
    EnrollResult,
    Event,
    Face,
    FaceRecord,
    Heartbeat,
    Hit,
    Identification,
    LeaseRef,
    Match,
    NodeRecord,
    PhotoConflict,
    PhotoOutcome,
    PhotoStatus,
    RecognizedFace,
    StrangerSighting,
    Subject,
    Verification,
    Visitor,
    VisitorFace,
    redact_url,
    to_jsonable,
)

__all__ = [
    "GALLERY_URL_ENV",
    "INDEX_KINDS",
    "MULTIPLE_FACES",
    "ROLES",
    "VISITOR_STATUSES",
    "ApiKey",
    "AttendanceRow",
    "Camera",
    "CameraLease",
    "Candidate",
    "ClaimResult",
    "EnrollResult",
    "EnrollmentError",
    "Event",
    "ExactIndex",
    "Face",
    "FaceRecord",
    "FacesUnlikeError",
    "FaissBinaryIndex",
    "FaissIndex",
    "Gallery",
    "Heartbeat",
    "Hit",
    "Identification",
    "IdentityConflictError",
    "LeaseRef",
    "Match",
    "MilvusIndex",
    "MismatchForceError",
    "MultipleFaces",
    "NodeNameTakenError",
    "NodeRecord",
    "NodeReplacedError",
    "Photo",
    "PhotoConflict",
    "PhotoOutcome",
    "PhotoStatus",
    "RecognizedFace",
    "Recognizer",
    "StaleLeaseError",
    "StrangerSighting",
    "Subject",
    "Unlike",
    "VectorIndex",
    "Verification",
    "Visitor",
    "VisitorFace",
    "create_index",
    "default_gallery_url",
    "redact_url",
    "to_jsonable",
    "unlike",
    "unlike_each_other",
]
