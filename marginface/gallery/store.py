"""The :class:`Gallery`: a facade over a gallery's parts, which live in their own modules.

Its public parts, each a class documented where it lives, share the one
:class:`~marginface.gallery.db.Database` (its transactions, its connections, its
cross-process locks):

* ``gallery.subjects`` - :class:`~marginface.gallery.subjects.SubjectStore`, subjects and
  their faces (every change of faces goes through the index sync);
* ``gallery.events`` - :class:`~marginface.gallery.events.EventLog`, the event log and the
  attendance;
* ``gallery.keys`` - :class:`~marginface.gallery.keys.KeyStore`, the service's API keys;
* ``gallery.cameras`` - :class:`~marginface.gallery.cameras.CameraStore`, the cameras a
  service watches;
* ``gallery.visitors`` - :class:`~marginface.gallery.visitors.VisitorStore`, strangers seen
  by cameras, grouped for review;
* ``gallery.cluster`` - :class:`~marginface.gallery.cluster.ClusterStore`, the nodes sharing
  the gallery, the camera leases they hold (fencing epochs) and the notifiers' delivery
  marks.

Behind them: :mod:`~marginface.gallery.db` and :mod:`~marginface.gallery.schema` (the SQL
store and its versioned schema), :mod:`~marginface.gallery.model` (the faces' embedding model
and their normalisation), :mod:`~marginface.gallery.sync` (the vector index kept in step with
SQL) and :mod:`~marginface.gallery.search` (search, and the decision of the policy's rule at
the operating point's threshold, both from :mod:`marginface.decision`).

The facade keeps only what spans the parts: opening and closing, the model binding, the index
and its refresh, search, identification and its operating point (the policy, the stored
target, the gallery's composition), a visitor's assignment (visitors, subjects and
identification), the retention purge (visitors and events in one transaction), ``stats`` and
``export``.
"""

from __future__ import annotations

import math
import os
import secrets
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
from marginface.errors import ConflictError, GalleryError
from marginface.gallery.cameras import CameraStore
from marginface.gallery.cluster import ClusterStore
from marginface.gallery.db import Database
from marginface.gallery.events import EventLog, to_timestamp
from marginface.gallery.index import VectorIndex, create_index
from marginface.gallery.keys import KeyStore
from marginface.gallery.likeness import FacesUnlikeError, unlike, unlike_each_other
from marginface.gallery.model import bind_model
from marginface.gallery.search import Searcher
from marginface.gallery.subjects import SubjectStore
from marginface.gallery.sync import IndexSync
from marginface.gallery.types import Hit, Identification, Subject
from marginface.gallery.validate import clean_name
from marginface.gallery.visitors import VisitorStore

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
    """Enrolled subjects and their face embeddings, with recognition events, API keys,
    cameras and the strangers they see: a facade over its parts, ``subjects``, ``events``,
    ``keys``, ``cameras`` and ``visitors``, which share its database.

    Open it with :meth:`open`. All methods, the parts' included, are thread-safe; searches run
    concurrently. Several processes may share one gallery (SQLite in WAL mode, or
    PostgreSQL): each keeps its in-process index in step with the SQL store through a
    generation counter checked before every search.
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
        #: strangers seen by cameras, grouped as visitors for review
        self.visitors = VisitorStore(
            db, self._model, lambda far: one_to_one_threshold(self.card, far)
        )
        #: the nodes of a camera cluster, their camera leases and the delivery marks
        self.cluster = ClusterStore(db)
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

    # -- what spans parts: a visitor's assignment, the retention purge -------------------------
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
        threshold = float(threshold)
        if (subject_id is None) == (name is None):
            raise GalleryError(
                "assign a visitor to an existing subject (subject_id) or to a "
                "new one (name), one of the two"
            )
        visitor = self.visitors.get(visitor_id)
        if visitor.status != "pending":
            raise ConflictError(f"visitor {visitor.id} is {visitor.status} already")
        target = self.subjects.get(subject_id) if subject_id is not None else None
        new_name = clean_name(name) if name is not None else None
        chosen, vecs, crops = self.visitors.faces_to_enrol(visitor, faces)
        mixed = unlike_each_other(vecs, threshold)
        if mixed:
            raise FacesUnlikeError(
                f"the faces of visitor {visitor.id} do not all look alike (faces "
                + ", ".join(f"{chosen[u.index]}: best cosine {u.score:.3f}" for u in mixed)
                + f" to the others, below the 1:1 threshold {threshold:.3f}): the camera "
                "grouped more than one person; assign the faces of one person (`faces`)",
                reason="each_other",
                faces=[(chosen[u.index], u) for u in mixed],
            )
        if not force:
            self._refuse_lookalike(visitor.id, target)
        sid = target.id if target is not None else secrets.token_hex(8)

        def mark_assigned() -> None:  # inside the enrolment's transaction
            if target is not None and not force_mismatch:
                _, own = self.subjects.embeddings(target.id)
                refused = unlike(own, vecs, threshold)
                if refused:
                    raise FacesUnlikeError(
                        f"visitor {visitor.id} does not look like {target.name!r} "
                        f"({target.id}): faces "
                        + ", ".join(
                            f"{chosen[u.index]}: best cosine {u.score:.3f}" for u in refused
                        )
                        + f" to the subject's faces, below the 1:1 threshold {threshold:.3f}",
                        reason="subject",
                        faces=[(chosen[u.index], u) for u in refused],
                        subject_id=target.id,
                        name=target.name,
                    )
            self.visitors.mark_assigned(visitor.id, sid)

        if target is not None:
            self.subjects.add_faces(sid, vecs, crops=crops, guard=mark_assigned)
            return self.subjects.get(sid)
        assert new_name is not None
        return self.subjects.create(
            new_name, embeddings=vecs, crops=crops, subject_id=sid, guard=mark_assigned
        )

    def _refuse_lookalike(self, visitor_id: str, target: Subject | None) -> None:
        """:class:`ConflictError` when the visitor's mean is identified as another subject than
        ``target``, at the gallery's operating point."""
        answer = self.identify(self.visitors.mean(visitor_id))[0]
        for cand in answer.candidates:
            if cand.score >= answer.threshold and (target is None or cand.subject_id != target.id):
                raise ConflictError(
                    f"visitor {visitor_id} looks like subject {cand.name!r} ({cand.subject_id}): "
                    f"score {cand.score:.3f} >= the operating point's threshold "
                    f"{answer.threshold:.3f}; assign it to that subject, or force"
                )

    def purge_stream_data(self, older_than: datetime | float) -> dict[str, int]:
        """Retention of camera data: delete visitor faces (with their crops) seen before
        ``older_than``, the visitors left without faces and not seen since (assigned ones
        stay), and the camera visits' events (details ``kind`` ``"visit"``) before it; one
        transaction. Subjects, their faces and other events are never touched. Returns how many
        rows went: ``{"visitor_faces", "visitors", "events"}``."""
        cutoff = to_timestamp(older_than)
        if not math.isfinite(cutoff):
            raise GalleryError("the purge's cutoff must be a finite time")
        with self._db.transaction():
            removed = self.visitors.delete_seen_before(cutoff)
            removed["events"] = self.events.delete_visits_before(cutoff)
        self._db.checkpoint()
        return removed

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
