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
* :mod:`~marginface.gallery.visitors` - strangers seen by cameras, grouped for review.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
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
from marginface.gallery.db import Database
from marginface.gallery.events import EventLog
from marginface.gallery.index import VectorIndex, create_index
from marginface.gallery.keys import KeyStore
from marginface.gallery.model import bind_model
from marginface.gallery.search import Searcher
from marginface.gallery.subjects import SubjectStore
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import (
    Hit,
    Identification,
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
        #: subjects and their faces
        self.subjects = SubjectStore(db, self._model, self._sync)
        self._search = Searcher(db, self._sync)
        #: the recognition events and the attendance read from them
        self.events = EventLog(db, lambda subject_id: self.subjects.get(subject_id).name)
        #: the service's API keys
        self.keys = KeyStore(db)
        #: the cameras a service watches
        self.cameras = CameraStore(db)
        self._visitors = VisitorStore(
            db, self._model, self.subjects, lambda mean: self.identify(mean)[0]
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

    def refresh(self) -> None:
        """Bring the index in step with SQL now (normally automatic before each search)."""
        self._sync.refresh()

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
        comp = GalleryComposition(self.subjects.faces_per_subject())
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

    # -- reporting ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts and settings for status pages and ``/healthz``."""
        index = self._sync.index
        return {
            "backend": self.backend,
            "model": self._model.name,
            "dim": self._model.dim,
            "subjects": self.subjects.count(),
            "faces": self.subjects.count_faces(),
            "events": self.events.count(),
            "index": index.describe() if index is not None else None,
        }

    def export(self, *, include_embeddings: bool = False) -> dict[str, Any]:
        """The gallery as a JSON-ready dict: its format, model and every subject with its faces
        (:meth:`SubjectStore.export`; embeddings only when asked: they are biometric data)."""
        return {
            "format": "marginface-gallery",
            "version": 1,
            "model": self._model.name,
            "dim": self._model.dim,
            "exported_at": datetime.now(UTC).isoformat(),
            "subjects": self.subjects.export(include_embeddings=include_embeddings),
        }
