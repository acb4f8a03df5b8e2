"""The :class:`Gallery`: one object over a gallery's parts, which live in their own modules.

* :mod:`~marginface.gallery.db` and :mod:`~marginface.gallery.schema` - the SQL store, its
  connections and its versioned schema;
* :mod:`~marginface.gallery.model` - the embedding model of the faces and their normalisation;
* :mod:`~marginface.gallery.subjects` - subjects and faces (and their export);
* :mod:`~marginface.gallery.sync` - the vector index kept in step with SQL;
* :mod:`~marginface.gallery.search` - search, and the decision of the policy's rule at the
  operating point's threshold (both from :mod:`marginface.decision`);
* :mod:`~marginface.gallery.events` - the event log and attendance;
* :mod:`~marginface.gallery.keys` - the service's API keys;
* :mod:`~marginface.gallery.cameras` - the cameras a service watches;
* :mod:`~marginface.gallery.cluster` - the nodes sharing the gallery, the camera leases they
  hold (fencing epochs) and the notifiers' delivery marks;
* :mod:`~marginface.gallery.visitors` - strangers seen by cameras, grouped for review.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marginface.decision import (
    DEFAULT_FPIR,
    GalleryComposition,
    IdentificationPolicy,
    OperatingPoint,
    fpir_key,
    one_to_one_threshold,
)
from marginface.errors import GalleryError
from marginface.gallery.cameras import CameraStore
from marginface.gallery.cluster import ClusterStore
from marginface.gallery.db import Database
from marginface.gallery.events import EventLog, attendance_csv, events_csv
from marginface.gallery.index import VectorIndex, create_index
from marginface.gallery.keys import KeyStore
from marginface.gallery.model import bind_model
from marginface.gallery.search import Searcher
from marginface.gallery.subjects import Guard, SubjectStore
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import (
    ApiKey,
    AttendanceRow,
    Camera,
    CameraLease,
    ClaimResult,
    Event,
    FaceRecord,
    Heartbeat,
    Hit,
    Identification,
    LeaseRef,
    NodeRecord,
    StrangerSighting,
    Subject,
    Visitor,
)
from marginface.gallery.visitors import GROUP_FAR, KEEP_FACES, PAIR_FAR, VisitorStore

if TYPE_CHECKING:
    from marginface.card import ModelCard

__all__ = ["GALLERY_URL_ENV", "Gallery", "default_gallery_url"]

#: Environment variable naming the gallery (a SQLite path, sqlite:///..., or postgresql://...).
GALLERY_URL_ENV = "MARGINFACE_GALLERY_URL"


def default_gallery_url() -> str:
    """``$MARGINFACE_GALLERY_URL``, else ``$XDG_DATA_HOME/marginface/gallery.db``
    (``~/.local/share/marginface/gallery.db``)."""
    env = os.environ.get(GALLERY_URL_ENV, "").strip()
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return str(Path(base) / "marginface" / "gallery.db")


class Gallery:
    """Enrolled subjects and their face embeddings, with recognition events and API keys.

    Open it with :meth:`open`. All methods are thread-safe; searches run concurrently. Several
    processes may share one gallery (SQLite in WAL mode, or PostgreSQL): each keeps its
    in-process index in step with the SQL store through a generation counter checked before
    every search.
    """

    def __init__(
        self,
        db: Database,
        index: str,
        *,
        model_name: str | None,
        dim: int | None,
        card: ModelCard | None = None,
        policy: IdentificationPolicy | None = None,
        index_options: dict[str, Any] | None = None,
        url: str = "",
    ) -> None:
        self._db = db
        self.url = url
        self.card = card
        #: how this handle's searches decide unless a caller hands another policy
        self.policy = policy if policy is not None else IdentificationPolicy()
        self.index_kind = index.lower()
        self._model = bind_model(db, model_name, dim)
        vectors = (
            create_index(self.index_kind, self._model.dim, **dict(index_options or {}))
            if self._model.dim is not None
            else None
        )
        self._sync = IndexSync(db, vectors)
        self._subjects = SubjectStore(db, self._model, self._sync)
        self._search = Searcher(db, self._sync)
        self._events = EventLog(db, lambda subject_id: self._subjects.get(subject_id).name)
        self._keys = KeyStore(db)
        self._cameras = CameraStore(db)
        self._cluster = ClusterStore(db)
        self._visitors = VisitorStore(
            db, self._model, self._subjects, lambda mean: self.identify(mean)[0]
        )
        self._close_lock = threading.Lock()
        self._closed = False
        # (generation, composition), then (generation, target FPIR) -> operating point
        self._points_lock = threading.Lock()
        self._composition: tuple[int, GalleryComposition] | None = None
        self._points: dict[str, OperatingPoint] = {}

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | Path | None = None,
        model_name: str | None = None,
        dim: int | None = None,
        index: str = "exact",
        *,
        card: ModelCard | None = None,
        policy: IdentificationPolicy | None = None,
        index_options: dict[str, Any] | None = None,
        create: bool = True,
    ) -> Gallery:
        """Open the gallery at ``url``, creating it unless ``create`` is False (then a SQLite
        file that does not exist is :class:`NotFoundError`, so a mistyped path is not taken
        for an empty gallery). A gallery of an older schema is upgraded in place.

        ``url``: a SQLite file path, ``sqlite:///path``, or ``postgresql://user@host/db``;
        default :func:`default_gallery_url`. ``model_name``/``dim`` name the embedding model;
        a gallery holding faces of another model is refused with :class:`GalleryError`. Leave
        them out to adopt the gallery's recorded model (read-only uses such as listing).
        ``index``: ``exact``, ``faiss`` or ``milvus`` (``index_options`` go to
        :func:`marginface.gallery.create_index`; Milvus defaults to a Milvus Lite file beside
        a SQLite gallery). Use ``faiss`` for large galleries: by default it is
        :class:`FaissBinaryIndex` (2-4 ms a query at a million faces, the same answers as
        exact search for enrolled people, rebuilt from SQL at start in seconds plus the read).
        ``policy`` (:class:`~marginface.decision.IdentificationPolicy`; default: all defaults)
        is how identification decides: its target false positive identification rate (default:
        the gallery's stored target, :meth:`set_target_fpir`, else ``1e-2``), whose threshold
        is derived from the ``card``'s impostor table for the gallery as it is and follows
        every enrolment and erasure (:meth:`operating_point`), or an explicit cosine threshold
        (experts), and the ``k`` of the k-NN vote. When ``card`` is given and ``model_name``
        is not, the card's name and dimension are used.
        """
        if card is not None:
            model_name = model_name or card.name
            dim = dim or card.embedding_dim
        url_s = str(url) if url is not None else default_gallery_url()
        db = Database(url_s, create=create)
        options = dict(index_options or {})
        if index.lower() == "milvus" and "uri" not in options:
            if db.dialect != "sqlite":
                db.close()
                raise GalleryError("a Milvus index beside PostgreSQL needs index_options['uri']")
            options["uri"] = str(Path(db.target).with_suffix(".milvus.db"))
        try:
            return cls(
                db,
                index,
                model_name=model_name,
                dim=dim,
                card=card,
                policy=policy,
                index_options=options,
                url=url_s,
            )
        except BaseException:
            db.close()
            raise

    # -- properties -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """The embedding model this gallery's faces come from (None while unset)."""
        return self._model.name

    @property
    def dim(self) -> int | None:
        """The embedding dimension (None while unset)."""
        return self._model.dim

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    @property
    def index(self) -> VectorIndex | None:
        """The vector index (None until the model is known)."""
        return self._sync.index

    def close(self) -> None:
        """Release the index (once no search uses it) and the database connections."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._sync.close()
        self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statement_count(self) -> int:
        """SQL statements the calling thread has run on this gallery so far (to measure what
        a thread's work costs the database)."""
        return self._db.statements()

    def refresh(self) -> None:
        """Bring the index in step with SQL now (normally automatic before each search)."""
        self._sync.refresh()

    # -- subjects -------------------------------------------------------------------------------
    def create_subject(
        self,
        name: str,
        metadata: dict[str, Any] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
        subject_id: str | None = None,
        guard: Guard | None = None,
    ) -> Subject:
        """Create a subject, optionally with its first faces, in ONE transaction.

        Display names may repeat (each subject gets its own id). A crash leaves either the whole
        subject with all its faces, or nothing. ``guard`` runs inside the transaction,
        serialised with every other guarded change of faces (across processes), and refuses
        the write by raising: how enrolment re-checks what concurrent enrolments stored.
        """
        return self._subjects.create(
            name, metadata, embeddings, source_hashes, crops, subject_id, guard
        )

    def get_subject(self, subject_id: str) -> Subject:
        """The subject with this id; :class:`NotFoundError` when there is none."""
        return self._subjects.get(subject_id)

    def has_subject(self, subject_id: str) -> bool:
        """Whether a subject with this id exists."""
        return self._subjects.exists(subject_id)

    def find_subjects(self, name: str) -> list[Subject]:
        """Subjects whose display name equals ``name`` (there may be several)."""
        return self._subjects.find(name)

    def list_subjects(
        self, *, limit: int | None = None, offset: int = 0, search: str | None = None
    ) -> list[Subject]:
        """Subjects ordered by name then creation; ``search`` filters names (case-insensitive
        substring, taken literally)."""
        return self._subjects.page(limit, offset, search)

    def count_subjects(self, search: str | None = None) -> int:
        """Number of subjects (whose names contain ``search``, as :meth:`list_subjects`)."""
        return self._subjects.count(search)

    def count_faces(self) -> int:
        """Number of stored faces."""
        return self._subjects.count_faces()

    def update_subject(
        self, subject_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Subject:
        """Rename a subject and/or replace its metadata."""
        return self._subjects.update(subject_id, name, metadata)

    def delete_subject(self, subject_id: str, *, erase_events: bool = True) -> int:
        """Delete a subject, all its faces (SQL and index, immediately) and, by default, its
        recognition events (else they stay, without the subject). Returns the number of faces
        removed."""
        return self._subjects.delete(subject_id, erase_events)

    # -- faces ----------------------------------------------------------------------------------
    def add_faces(
        self,
        subject_id: str,
        embeddings: np.ndarray,
        *,
        source_hashes: Sequence[str | None] | None = None,
        crops: Sequence[bytes | None] | None = None,
        guard: Guard | None = None,
    ) -> list[int]:
        """Add embeddings (N, dim) to an existing subject in ONE transaction; return face ids.
        ``guard`` as for :meth:`create_subject`."""
        return self._subjects.add_faces(subject_id, embeddings, source_hashes, crops, guard)

    def max_face_id(self) -> int:
        """The highest face id so far (0 for none); ids are never reused, so the faces stored
        after a moment are those above its ``max_face_id``."""
        return self._subjects.max_face_id()

    def faces_after(self, face_id: int) -> list[tuple[FaceRecord, str, np.ndarray]]:
        """The faces stored after ``face_id`` (see :meth:`max_face_id`): each record, its
        subject's name and its normalised embedding."""
        return self._subjects.faces_after(face_id)

    def faces(self, subject_id: str) -> list[FaceRecord]:
        """The faces of a subject (:class:`NotFoundError` for an unknown subject)."""
        return self._subjects.faces(subject_id)

    def get_face(self, face_id: int) -> FaceRecord:
        """One face record (:class:`NotFoundError` when unknown)."""
        return self._subjects.face(face_id)

    def faces_with_source_hashes(self, source_hashes: Sequence[str]) -> dict[str, list[FaceRecord]]:
        """The stored faces enrolled from photos with these SHA-256 hashes
        (:attr:`FaceRecord.source_hash`), by hash: how enrolment finds a photo that is stored
        already, and for which subject."""
        return self._subjects.with_source_hashes(source_hashes)

    def face_crop(self, face_id: int) -> bytes | None:
        """The stored aligned crop (PNG bytes) of a face, when crops are kept."""
        return self._subjects.crop(face_id)

    def subject_embeddings(self, subject_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(face ids (N,), embeddings (N, dim))`` of one subject."""
        return self._subjects.embeddings(subject_id)

    def delete_face(self, face_id: int) -> FaceRecord:
        """Delete one face from SQL and from the index, immediately; return its record."""
        return self._subjects.delete_face(face_id)

    # -- search and identification -------------------------------------------------------------
    def search(self, embeddings: np.ndarray, k: int | None = None) -> list[list[Hit]]:
        """The ``k`` nearest stored faces of each query (cosine, best first; default: the
        policy's ``k``)."""
        k = self.policy.k if k is None else k
        return self._search.nearest(self._model.normalise(embeddings), k)[0]

    @property
    def fpir(self) -> str:
        """The target FPIR this handle's searches decide at when no threshold is given: the
        policy's, else the one stored with the gallery (:meth:`set_target_fpir`), else
        ``1e-2`` (:func:`~marginface.decision.resolve_target` without the thresholds)."""
        target = IdentificationPolicy(fpir=self.policy.fpir).target(self.stored_target_fpir)
        assert target.fpir is not None  # no threshold was given
        return target.fpir

    def stored_target_fpir(self) -> str | None:
        """The target FPIR stored with the gallery (None: the default, ``1e-2``)."""
        stored = self._db.query_one("SELECT value FROM meta WHERE key = 'target_fpir'")
        return str(stored[0]) if stored is not None else None

    def set_target_fpir(self, fpir: str | float | None) -> str:
        """Store the gallery's target FPIR, which every process and the service then use
        unless told otherwise (None: back to the default ``1e-2``); returns it."""
        key = fpir_key(fpir) if fpir is not None else None
        with self._db.transaction():
            self._db.execute("DELETE FROM meta WHERE key = 'target_fpir'")
            if key is not None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('target_fpir', ?)", (key,))
        return key or DEFAULT_FPIR

    def composition(self) -> GalleryComposition:
        """How many subjects have how many faces, as stored now (read again only after a
        change of faces, by this or another process)."""
        generation = self._sync.stored_generation()
        with self._points_lock:
            if self._composition is not None and self._composition[0] == generation:
                return self._composition[1]
        comp = GalleryComposition(self._subjects.faces_per_subject())
        with self._points_lock:
            if self._composition is None or self._composition[0] != generation:
                self._composition = (generation, comp)
                self._points = {}
        return comp

    def operating_point(
        self,
        threshold: float | None = None,
        fpir: str | float | None = None,
        *,
        policy: IdentificationPolicy | None = None,
    ) -> OperatingPoint:
        """The threshold identification decides with now, and how it was chosen.

        ``threshold`` and ``fpir`` are a request's; ``policy`` the settings (default: this
        handle's :attr:`policy`). :func:`~marginface.decision.resolve_target` decides between
        them, the gallery's stored target and the default. An explicit threshold is used as
        given; the card's impostor table, when there is one, says what FPIR it gives this
        gallery. A target FPIR is turned into the threshold that meets it for the gallery's
        current subjects and faces per subject
        (:func:`marginface.decision.operating_point`), recomputed after every change of faces.
        A card without an impostor table raises :class:`GalleryError` saying how to calibrate
        it.
        """
        policy = policy if policy is not None else self.policy
        target = policy.target(self.stored_target_fpir, threshold=threshold, fpir=fpir)
        comp = self.composition()
        key = target.fpir
        if key is None:  # an explicit threshold
            return target.point(self.card, comp)
        with self._points_lock:
            cached = self._points.get(key)
            if (
                cached is not None
                and self._composition is not None
                and self._composition[1] is comp
            ):
                return cached
        point = target.point(self.card, comp)
        with self._points_lock:
            if self._composition is not None and self._composition[1] is comp:
                self._points[key] = point
        return point

    def identify(
        self,
        embeddings: np.ndarray,
        policy: IdentificationPolicy | None = None,
        *,
        point: OperatingPoint | None = None,
    ) -> list[Identification]:
        """Identify each query as ``policy`` decides (default: this handle's :attr:`policy`):
        its ``k`` nearest stored faces (cosine), the k-NN vote per subject
        (:meth:`IdentificationPolicy.decide`), then the operating point's threshold (``point``,
        else :meth:`operating_point` for the policy); below it, unknown."""
        policy = policy if policy is not None else self.policy
        if point is None:
            point = self.operating_point(policy=policy)
        return self._search.identify(self._model.normalise(embeddings), point, policy)

    # -- events and attendance ------------------------------------------------------------------
    def log_event(
        self,
        source: str,
        *,
        subject_id: str | None,
        score: float | None,
        decision: str,
        time: datetime | float | None = None,
        details: dict[str, Any] | None = None,
        lease: LeaseRef | None = None,
    ) -> Event:
        """Record one recognition (camera/door ``source``, result, score). ``lease``: the
        camera lease the event is written under (a camera of the cluster): refused with
        :class:`~marginface.gallery.cluster.StaleLeaseError`, nothing written, unless its node
        still holds that epoch's lease (:meth:`claim_cameras`). The event's ``logged_at`` is
        the database's clock at the write."""
        return self._events.log(source, subject_id, score, decision, time, details, lease)

    def events(
        self,
        *,
        subject: str | None = None,
        source: str | None = None,
        start: datetime | float | None = None,
        end: datetime | float | None = None,
        decision: str | None = None,
        limit: int | None = 1000,
        offset: int = 0,
        after_id: int | None = None,
    ) -> list[Event]:
        """Logged events, newest first, filtered by subject id, source, decision and
        ``[start, end)`` times (aware datetimes or epoch seconds; naive ones are local time),
        and ``after_id`` (only events written after that one: ids only grow)."""
        return self._events.select(subject, source, start, end, decision, limit, offset, after_id)

    def get_event(self, event_id: int) -> Event:
        """One logged event; :class:`NotFoundError` when there is none with this id."""
        return self._events.get(event_id)

    def attendance(
        self,
        day: date | str | None = None,
        *,
        tz: tzinfo | None = None,
        sources: Sequence[str] | str | None = None,
    ) -> list[AttendanceRow]:
        """First and last sighting per identified subject on ``day`` (default today) in time zone
        ``tz`` (default: the machine's local zone): first in, last out.

        Camera visits are logged as two events, ``arrived`` (at the visit's first sighting) and
        ``left`` (at its last): ``first_seen`` is the earliest event, ``last_seen`` the latest,
        and ``count`` counts sightings, every event but ``left`` (one per visit; a photo
        recognition, ``match``, counts one). ``sources`` keeps only the events of these sources:
        one camera's name, or a camera group's names (None: all). Unknown events never count.
        """
        return self._events.attendance(day, tz, sources)

    def attendance_csv(
        self,
        day: date | str | None = None,
        *,
        tz: tzinfo | None = None,
        sources: Sequence[str] | str | None = None,
    ) -> str:
        """The attendance of ``day`` (of ``sources``, as :meth:`attendance`) as CSV text (date,
        subject_id, name, first_seen, last_seen, count, sources)."""
        return attendance_csv(self.attendance(day, tz=tz, sources=sources))

    def events_csv(self, **filters: Any) -> str:
        """Events (same filters as :meth:`events`) as CSV text."""
        return events_csv(self.events(**filters))

    # -- cameras --------------------------------------------------------------------------------
    def create_camera(
        self, name: str, url: str, settings: dict[str, Any] | None = None, enabled: bool = True
    ) -> Camera:
        """Add a camera: a unique ``name`` (the ``source`` of its events; the rules of subject
        names, at most 100 characters), the ``url`` it is read from and its ``settings`` (a
        JSON object stored as given: the streams layer validates it). A name in use is
        :class:`ConflictError`. URLs may carry passwords: show them with
        ``Camera.to_dict()``, which redacts them."""
        return self._cameras.create(name, url, settings, enabled)

    def get_camera(self, id_or_name: str) -> Camera:
        """The camera with this id, else this name; :class:`NotFoundError` when none."""
        return self._cameras.get(id_or_name)

    def list_cameras(self) -> list[Camera]:
        """Every camera, by name."""
        return self._cameras.records()

    def update_camera(
        self,
        camera_id: str,
        *,
        name: str | None = None,
        url: str | None = None,
        settings: dict[str, Any] | None = None,
        enabled: bool | None = None,
    ) -> Camera:
        """Change what is given of a camera (found by id, else name); ``settings`` replace the
        stored ones whole. :class:`NotFoundError` for an unknown camera, :class:`ConflictError`
        for a name another camera has."""
        return self._cameras.update(camera_id, name, url, settings, enabled)

    def delete_camera(self, camera_id: str) -> Camera:
        """Remove a camera (found by id, else name) and return its record; its events and
        visitors stay (until :meth:`purge_stream_data`). :class:`NotFoundError` when unknown."""
        return self._cameras.delete(camera_id)

    def camera_position(self, camera_id: str) -> float | None:
        """Where the camera's reading of its URL stopped: the presentation time (seconds) of
        the last frame it processed of a video file, so that a restart goes on from there
        instead of recording the file's visits again. None when unknown, or when the camera's
        URL changed since (a new file is read from its start)."""
        return self._cameras.position(camera_id)

    def set_camera_position(
        self, camera_id: str, position_s: float | None, *, lease: LeaseRef | None = None
    ) -> None:
        """Remember where the camera's reading of its current URL stopped (None: forget it,
        the next reading starts at the beginning). :class:`NotFoundError` for an unknown
        camera; deleting a camera forgets its position. ``lease`` as for :meth:`log_event`:
        a node that lost the camera cannot move its position."""
        self._cameras.set_position(camera_id, position_s, lease)

    # -- the camera cluster: nodes, leases, delivery marks ---------------------------------------
    def register_node(
        self,
        name: str,
        instance: str,
        *,
        address: str = "",
        ttl_s: float = 15.0,
        capacity: int = 0,
        info: dict[str, Any] | None = None,
        gone: str | None = None,
    ) -> NodeRecord:
        """Register the process ``instance`` (any unique text) as node ``name`` (the rules of
        names), live from now for ``ttl_s`` seconds of the database's clock unless it
        heartbeats (:meth:`node_heartbeat`). A name held by another live instance is
        :class:`~marginface.gallery.cluster.NodeNameTakenError` (its ``holder`` says since
        when; a crashed predecessor's registration expires after its TTL). The cameras a
        previous instance of this name held are freed: nobody runs them. ``gone``: an instance
        its caller knows to be dead (a process of this machine that no longer exists), whose
        registration is taken over at once."""
        return self._cluster.register(name, instance, address, ttl_s, capacity, info, gone)

    def node_heartbeat(
        self,
        name: str,
        instance: str,
        *,
        address: str | None = None,
        ttl_s: float = 15.0,
        capacity: int = 0,
        info: dict[str, Any] | None = None,
    ) -> Heartbeat:
        """One heartbeat of a registered node, in ONE transaction: the node is live for
        ``ttl_s`` more seconds, every lease it holds unexpired is renewed for as long (an
        expired one is not: another node may have it), and the snapshot the node decides by
        is returned: its leases, the live nodes, the free cameras and when the next lease
        expires. :class:`~marginface.gallery.cluster.NodeReplacedError` when another process
        registered this name (this one was taken for dead). ``info`` (JSON-ready, at most
        256 KiB) is what the node publishes: frames/s, CPU, its cameras' status."""
        return self._cluster.heartbeat(name, instance, address, ttl_s, capacity, info)

    def claim_cameras(
        self,
        node: str,
        instance: str,
        *,
        count: int = 1,
        camera_ids: Sequence[str] | None = None,
        exclusive: bool = False,
    ) -> ClaimResult:
        """Take up to ``count`` free cameras (enabled, held by nobody or by an expired lease;
        of ``camera_ids`` when given), the longest free first, for node ``node`` (registered
        as ``instance``): each lease gets a new epoch and runs for the node's TTL. Locked
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: nodes claiming together never take one
        camera twice. ``exclusive``: take nothing while another node holds a camera (a
        SQLite gallery: one node runs the cameras), saying which in ``blocked_by``."""
        return self._cluster.claim(node, instance, count, camera_ids, exclusive)

    def release_camera(self, lease: LeaseRef, *, to: str | None = None) -> CameraLease | None:
        """Give a held camera up: to node ``to`` when it is live (a new epoch, its TTL), else
        to nobody (free to claim). None when ``lease`` is not held any more."""
        return self._cluster.release(lease, to)

    def leave_node(self, name: str, instance: str) -> int:
        """Node ``name`` stops: its cameras are freed and it is ``left``; returns how many
        cameras it gave up (0 when another process holds the name now)."""
        return self._cluster.leave(name, instance)

    def list_nodes(self) -> list[NodeRecord]:
        """Every registered node, by name: ``live``, ``lost`` (no heartbeat within its TTL)
        or ``left``, with the cameras each holds."""
        return self._cluster.nodes()

    def camera_leases(self) -> list[CameraLease]:
        """Every camera's lease (who holds it, its epoch, until when), by camera name."""
        return self._cluster.leases()

    def purge_nodes(self, older_than_s: float) -> int:
        """Forget the nodes lost or left more than ``older_than_s`` seconds ago."""
        return self._cluster.purge(older_than_s)

    def delivery_marks(self, sink: str, camera_ids: Sequence[str]) -> dict[str, int]:
        """The newest event id of each camera that the notifier ``sink`` delivered (or gave up
        on); a camera it has none for is marked at its newest event."""
        return self._cluster.marks(sink, camera_ids)

    def advance_delivery_marks(self, sink: str, marks: dict[str, int]) -> None:
        """Move ``sink``'s marks (camera id -> event id) forward, never back."""
        self._cluster.advance_marks(sink, marks)

    # -- strangers: visitors and their review ---------------------------------------------------
    def record_stranger(
        self,
        camera: str,
        first_seen: datetime | float,
        last_seen: datetime | float,
        embeddings: np.ndarray,
        qualities: Sequence[float],
        crops: Sequence[np.ndarray | bytes | None] | None = None,
        threshold: float | None = None,
        *,
        pair_threshold: float | None = None,
        keep_faces: int = KEEP_FACES,
        lease: LeaseRef | None = None,
    ) -> StrangerSighting:
        """Record an unknown visit (a track no subject matched) and group it with the visitor
        it looks like, in ONE transaction (serialised with every other one, across processes).

        ``embeddings`` (N, dim) are the visit's faces, ``qualities`` their quality scores
        (:attr:`marginface.align.quality.FaceQuality.score`), ``crops`` their aligned crops
        (RGB uint8 arrays, or PNG bytes; None for faces without). Pass crops only when the
        gallery keeps them (the service's ``store_photos``, ``Recognizer.store_crops``).
        The visit joins the most similar ``pending`` or ``dismissed`` visitor only on strong,
        consistent evidence: its quality-weighted mean embedding has cosine >= ``threshold``
        with the visitor's mean (default: the model's 1:1 threshold at FAR 1e-4,
        ``visitors.GROUP_FAR``) **and** most of its faces match one of the visitor's kept
        faces at ``pair_threshold`` (default: ``threshold`` when that is given, else the 1:1
        threshold at FAR 1e-3); else it starts a new pending visitor. A pending visitor's mean
        follows its visits and it keeps its ``keep_faces`` best faces by quality. A dismissed
        visitor only counts the visit and moves ``last_seen``: a dismissed person does not come
        back to the review queue, until the retention purge removes the visitor
        (:meth:`purge_stream_data`). A dimension unlike the gallery's is :class:`GalleryError`.
        """
        if threshold is None:
            threshold = one_to_one_threshold(self.card, GROUP_FAR)
            if pair_threshold is None:
                pair_threshold = one_to_one_threshold(self.card, PAIR_FAR)
        return self._visitors.record(
            camera,
            first_seen,
            last_seen,
            embeddings,
            qualities,
            crops,
            threshold,
            keep_faces,
            pair_threshold,
            lease,
        )

    def list_visitors(
        self, status: str | None = "pending", *, limit: int | None = 100, offset: int = 0
    ) -> list[Visitor]:
        """Visitors of one status (``pending``, ``assigned``, ``dismissed``; None: all), the
        most recently seen first, each with its kept faces (best first)."""
        return self._visitors.page(status, limit, offset)

    def count_visitors(self, status: str | None = "pending") -> int:
        """Number of visitors of one status (None: all)."""
        return self._visitors.count(status)

    def visitor_embeddings(self, visitor_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A visitor's kept faces as ``(qualities (N,), embeddings (N, dim))``, best first
        (what a camera taking over needs to know the stranger again); NotFoundError for an
        unknown visitor."""
        return self._visitors.embeddings(visitor_id)

    def get_visitor(self, visitor_id: str) -> Visitor:
        """One visitor; :class:`NotFoundError` when unknown."""
        return self._visitors.get(visitor_id)

    def visitor_face_crop(self, face_id: int) -> bytes | None:
        """A visitor face's aligned crop (PNG bytes), None when none was kept;
        :class:`NotFoundError` for an unknown face."""
        return self._visitors.crop(face_id)

    def assign_visitor(
        self,
        visitor_id: str,
        *,
        subject_id: str | None = None,
        name: str | None = None,
        faces: Sequence[int] | None = None,
        force: bool = False,
        force_mismatch: bool = False,
        threshold: float | None = None,
    ) -> Subject:
        """Enrol a pending visitor's stored faces into the existing subject ``subject_id`` or
        a NEW subject named ``name`` (one of the two), and mark the visitor ``assigned`` to it,
        in ONE transaction (the enrolment's, with its index update and concurrency guard).

        ``faces``: the visitor's face ids to enrol (default: its best, up to 5), with their
        crops when kept. No retraining: the subject identifies the person at once. Refused with
        :class:`ConflictError` when the visitor is assigned or dismissed already, or, unless
        ``force``, when its mean embedding is identified as another subject at the gallery's
        current operating point (:meth:`operating_point`): it is probably that person.

        The faces are held to the rule of every face added to a subject
        (:mod:`marginface.gallery.likeness`), at the 1:1 ``threshold`` (default: the
        policy's verification threshold, :meth:`IdentificationPolicy.verification_threshold`):
        refused with
        :class:`~marginface.gallery.likeness.FacesUnlikeError` when one of them does not look
        like the subject's own faces (checked in the write's transaction; ``force_mismatch``
        stores them anyway), or when one does not look like the others (the grouping mixed
        people: choose the faces of one person with ``faces``)."""
        if threshold is None:
            threshold = self.policy.verification_threshold(self.card)
        return self._visitors.assign(
            visitor_id, subject_id, name, faces, force, force_mismatch, float(threshold)
        )

    def dismiss_visitor(self, visitor_id: str) -> Visitor:
        """Take a visitor out of the review queue (status ``dismissed``). Its later visits are
        still grouped with it and only counted (see :meth:`record_stranger`). Dismissing twice
        changes nothing; an assigned visitor is :class:`ConflictError`."""
        return self._visitors.dismiss(visitor_id)

    def split_visitor(self, visitor_id: str, faces: Sequence[int]) -> Visitor:
        """Move ``faces`` of a pending visitor to a new pending visitor, in ONE transaction:
        the review queue grouped two people, and a person says which faces are the other's.
        Both visitors keep the means of their own faces. Returns the new visitor;
        :class:`ConflictError` for a visitor not pending, :class:`GalleryError` for faces not
        its own or all of them."""
        return self._visitors.split(visitor_id, faces)

    def purge_stream_data(self, older_than: datetime | float) -> dict[str, int]:
        """Retention of camera data: delete visitor faces (with their crops) seen before
        ``older_than``, the visitors left without faces and not seen since (assigned ones
        stay), and the camera visits' events (details ``kind`` ``"visit"``) before it; one
        transaction. Subjects, their faces and other events are never touched. Returns how many
        rows went: ``{"visitor_faces", "visitors", "events"}``."""
        return self._visitors.purge(older_than)

    # -- API keys -------------------------------------------------------------------------------
    def create_api_key(self, name: str, role: str) -> tuple[ApiKey, str]:
        """Create a key; return its record and the secret key text, which is never stored
        (only its SHA-256) and cannot be shown again."""
        return self._keys.create(name, role)

    def create_first_admin_key(self, name: str = "first admin") -> tuple[ApiKey, str] | None:
        """Create an admin key when the gallery has none; return it as :meth:`create_api_key`
        does, or None when an admin key exists. The count and the insert are one transaction,
        serialised across processes, so services starting together create one key."""
        return self._keys.create_first(name, "admin")

    def authenticate(self, secret: str | None, *, touch: bool = True) -> ApiKey | None:
        """The key record for a presented secret, or None when it is wrong or revoked."""
        return self._keys.authenticate(secret, touch)

    def list_api_keys(self) -> list[ApiKey]:
        """Every key's public record."""
        return self._keys.records()

    def delete_api_key(self, key_id: str, *, allow_last_admin: bool = False) -> ApiKey:
        """Revoke a key and return its record (:class:`NotFoundError` when unknown).

        The last admin key is kept (:class:`ConflictError`) unless ``allow_last_admin``: without
        one nobody could manage the gallery through the service. The check and the delete are one
        transaction, serialised across processes (SQLite's write lock, a PostgreSQL advisory
        lock), so two concurrent revocations cannot both pass it.
        """
        return self._keys.delete(key_id, allow_last_admin)

    def count_api_keys(self, role: str | None = None) -> int:
        """Number of keys (of one role)."""
        return self._keys.count(role)

    # -- reporting ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts and settings for status pages and ``/healthz``."""
        index = self._sync.index
        return {
            "backend": self.backend,
            "model": self._model.name,
            "dim": self._model.dim,
            "subjects": self.count_subjects(),
            "faces": self.count_faces(),
            "events": self._events.count(),
            "index": index.describe() if index is not None else None,
        }

    def export(self, *, include_embeddings: bool = False) -> dict[str, Any]:
        """Subjects and faces as a JSON-ready dict (embeddings only when asked: they are
        biometric data)."""
        return self._subjects.export(include_embeddings)
