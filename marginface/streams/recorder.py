"""Visits into the gallery: each event of a visit (``arrived``, ``identified``, ``corrected``,
``left``) as a logged event, and each unknown visit as a stranger sighting (the review queue
of ``/v1/unknowns``).

:class:`VisitRecorder` is a *sink* of a camera worker (``recorder(event)`` for every
:class:`~marginface.streams.visits.VisitEvent`). Every write is its own committed transaction,
made when the event happens: a service killed (SIGKILL) while cameras run loses at most the
visits that had not finished, never one that had, and leaves the gallery consistent.

What is written:

* every event: ``gallery.events.log(source=camera, subject_id, score, decision=kind,
  time=first_seen (decisions: the visit's first sighting) | last_seen (left),
  details={"kind": "visit", camera, track_id, visit_id, visit_uid, start_s, end_s, first_seen,
  last_seen, dwell_s, faces, threshold[, previous_subject_id][, reason][, visitor_id]})``.
  Named visits count in the attendance report (first in, last out per person per day), once
  each, for the subject of the visit's latest decision (``gallery.events.attendance``);
* an unknown ``left`` event (the stranger's visit is over, its best faces are known): the
  track's best faces go to ``gallery.visitors.record``, which groups them with a visitor
  who looks alike (above the operating point) or starts a new one. Their aligned crops are
  kept only when ``store_crops`` is set (the service's ``store_photos``). The visitor's id is
  logged with the ``left`` event and is known to :meth:`VisitRecorder.visitor_of` afterwards;
* nothing else: the best face of each of the latest visit events is kept **in memory** as a
  JPEG thumbnail (:meth:`VisitRecorder.thumbnail`, the page's recent visits), never written.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from marginface.errors import MarginfaceError, NotFoundError
from marginface.gallery import Event, Gallery, LeaseRef, StaleLeaseError
from marginface.imaging import encode_jpeg
from marginface.streams.notifier import CameraCounters
from marginface.streams.visits import Evidence, PastVisit, VisitEvent

__all__ = ["VisitRecorder", "evidence_arrays", "logged_visit", "past_visits", "visit_details"]

log = logging.getLogger(__name__)

#: Visitor ids remembered per (camera, visit id), for notifications that come after.
_REMEMBERED = 1000
#: Visit events whose face thumbnail is kept in memory (for the page's recent visits).
THUMBNAILS = 200


def evidence_arrays(
    event: VisitEvent,
) -> tuple[np.ndarray, list[float], list[np.ndarray | None]]:
    """The track's best faces of ``event.evidence``: embeddings ``(n, dim)``, their quality
    scores and their aligned crops (RGB, None where a face has none). Empty when the event
    carries no evidence."""
    faces = event.evidence
    if not faces:
        return np.zeros((0, 0), np.float32), [], []
    return (
        np.vstack([np.asarray(f.embedding, np.float32).ravel() for f in faces]),
        [float(f.quality) for f in faces],
        [f.crop for f in faces],
    )


def _when(value: datetime | None) -> datetime:
    """An event's time (now when the event has none: a caller that gave no wall times)."""
    return value if value is not None else datetime.now(UTC)


def visit_details(event: VisitEvent, visitor_id: str | None = None) -> dict[str, Any]:
    """The ``details`` object logged with a visit event (JSON-ready)."""
    first = _when(event.first_seen)
    last = _when(event.last_seen)
    details: dict[str, Any] = {
        "kind": "visit",
        "event_id": event.event_id,
        "camera": event.camera,
        "track_id": int(event.track_id),
        "visit_id": int(event.visit_id),
        "start_s": round(float(event.start_s), 3),
        "end_s": round(float(event.end_s), 3),
        "first_seen": first.isoformat(),
        "last_seen": last.isoformat(),
        "dwell_s": round(max(0.0, float(event.end_s) - float(event.start_s)), 3),
        "faces": int(event.faces),
        "threshold": round(float(event.threshold), 4),
        "visit_uid": event.uid,
        "decided_s": round(float(event.end_s), 3),
    }
    if event.node is not None:
        details["node"] = event.node
        details["epoch"] = event.epoch
    if event.kind == "corrected":
        details["previous_subject_id"] = event.previous_subject_id
        details["previous_name"] = event.previous_name
    if event.kind == "left":
        details["reason"] = event.reason or "ended"
    if visitor_id is not None:
        details["visitor_id"] = visitor_id
    return details


def _thumbnail(event: VisitEvent) -> bytes | None:
    """The best face's aligned crop of ``event`` as a small JPEG, or None without one."""
    crop = next((f.crop for f in event.evidence if f.crop is not None), None)
    if crop is None:
        return None
    return encode_jpeg(crop, 85)


class VisitRecorder:
    """A camera worker's sink that writes visits to the gallery as they happen.

    Thread-safe (one recorder may serve every camera of a service). A failing write is logged
    and counted (:meth:`status`), never raised into the camera: a camera keeps watching while
    its database is briefly unavailable.
    """

    def __init__(self, gallery: Gallery, *, store_crops: bool = False) -> None:
        self.gallery = gallery
        self.store_crops = store_crops
        self._lock = threading.Lock()
        self._visitors: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._counts = CameraCounters(("events", "strangers", "failed", "fenced"))
        self._thumbnails: OrderedDict[int, bytes] = OrderedDict()

    def __call__(self, event: VisitEvent) -> None:
        """Record ``event`` (an ``arrived`` or a ``left``)."""
        try:
            self.write(event)
        except StaleLeaseError as exc:  # not under a lease here: cannot happen, but never raise
            self._counts.fail(event.camera, "fenced", str(exc))

    def write(self, event: VisitEvent, lease: LeaseRef | None = None) -> int | None:
        """Record ``event`` under ``lease``; its gallery id, or None when the write failed
        (logged and counted, never raised: the camera goes on while the database is briefly
        unavailable). A write the gallery refuses because ``lease`` was lost raises
        ``StaleLeaseError`` (the caller stops the camera)."""
        try:
            return self.record(event, lease)
        except StaleLeaseError:
            raise
        except Exception as exc:  # never into the camera worker
            log.warning(
                "camera %r: cannot record the %s event of track %s: %s",
                event.camera,
                event.kind,
                event.track_id,
                exc,
                exc_info=not isinstance(exc, MarginfaceError),
            )
            self._counts.fail(event.camera, "failed", f"{type(exc).__name__}: {exc}")
            return None

    def fenced(self, camera: str) -> None:
        """Count an event of ``camera`` dropped because this node no longer held it."""
        self._counts.add(camera, "fenced")

    def record(self, event: VisitEvent, lease: LeaseRef | None = None) -> int:
        """Write ``event`` (under the camera's ``lease`` in a cluster: a node that lost the
        camera has its write refused, ``StaleLeaseError``); returns the gallery's event id.
        Raises what the gallery raises."""
        visitor_id = None
        if event.kind == "left" and event.subject_id is None:
            visitor_id = self._record_stranger(event, lease)
        elif event.subject_id is None:
            visitor_id = self.visitor_of(event.camera, event.visit_id)
        at = _when(event.last_seen if event.kind == "left" else event.first_seen)
        details = visit_details(event, visitor_id)
        try:
            logged = self.gallery.events.log(
                event.camera,
                subject_id=event.subject_id,
                score=event.score,
                decision=event.kind,
                time=at,
                details=details,
                lease=lease,
            )
        except NotFoundError:
            # The subject was erased while in view: the visit stays, without the person.
            details["erased_subject"] = True
            logged = self.gallery.events.log(
                event.camera,
                subject_id=None,
                score=event.score,
                decision=event.kind,
                time=at,
                details=details,
                lease=lease,
            )
        thumbnail = _thumbnail(event)
        self._counts.add(event.camera, "events")
        with self._lock:
            if thumbnail is not None:
                self._thumbnails[logged.id] = thumbnail
                while len(self._thumbnails) > THUMBNAILS:
                    self._thumbnails.popitem(last=False)
        return logged.id

    def thumbnail(self, event_id: int) -> bytes | None:
        """The JPEG of the best face of a recent visit event (kept in memory only, for the
        latest :data:`THUMBNAILS` events; None for older ones and after a restart)."""
        with self._lock:
            return self._thumbnails.get(int(event_id))

    def _record_stranger(self, event: VisitEvent, lease: LeaseRef | None) -> str | None:
        embeddings, qualities, crops = evidence_arrays(event)
        if not len(embeddings):
            return None
        kept: Sequence[np.ndarray | None] = crops if self.store_crops else [None] * len(crops)
        sighting = self.gallery.visitors.record(
            event.camera,
            _when(event.first_seen),
            _when(event.last_seen),
            embeddings,
            qualities,
            list(kept),
            lease=lease,
        )
        visitor_id = sighting.visitor_id
        self._counts.add(event.camera, "strangers")
        with self._lock:
            self._visitors[(event.camera, int(event.visit_id))] = visitor_id
            while len(self._visitors) > _REMEMBERED:
                self._visitors.popitem(last=False)
        return visitor_id

    def visitor_of(self, camera: str, visit_id: int) -> str | None:
        """The visitor an unknown visit of ``camera`` was grouped into (once it has left)."""
        with self._lock:
            return self._visitors.get((camera, int(visit_id)))

    def status(self, camera: str | None = None) -> dict[str, Any]:
        """``events`` written, ``strangers`` recorded, ``failed`` writes, ``fenced`` events
        (dropped: made after this node lost the camera), ``last_error``: of ``camera``'s
        visits, or of all (None)."""
        return self._counts.get(camera)

    def forget(self, camera: str) -> None:
        """Drop a deleted camera's counters."""
        self._counts.forget(camera)


def _datetime(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


#: The kinds of a visit's events.
_VISIT_KINDS = ("arrived", "identified", "corrected", "left")


def logged_visit(event: Event) -> VisitEvent | None:
    """The :class:`VisitEvent` a logged visit event was written from (its ``event_id``, node
    and epoch included, no evidence), with the gallery's id as ``record_id``: what is sent
    again to a notifier that may have missed it. None for other events."""
    d = event.details or {}
    kind = event.decision
    if d.get("kind") != "visit" or kind not in _VISIT_KINDS:
        return None
    try:
        return VisitEvent(
            kind=kind,  # type: ignore[arg-type]
            camera=event.source,
            track_id=int(d.get("track_id") or 0),
            visit_id=int(d.get("visit_id") or 0),
            subject_id=event.subject_id,
            name=event.subject_name,
            score=float(event.score if event.score is not None else -1.0),
            threshold=float(d.get("threshold") or 0.0),
            start_s=float(d.get("start_s") or 0.0),
            end_s=float(d.get("end_s") or 0.0),
            faces=int(d.get("faces") or 0),
            first_seen=_datetime(d.get("first_seen")),
            last_seen=_datetime(d.get("last_seen")),
            uid=str(d.get("visit_uid") or ""),
            previous_subject_id=d.get("previous_subject_id"),
            previous_name=d.get("previous_name"),
            reason=d.get("reason"),
            event_id=str(d.get("event_id") or f"event-{event.id}"),
            node=d.get("node"),
            epoch=None if d.get("epoch") is None else int(d["epoch"]),
            record_id=event.id,
        )
    except (TypeError, ValueError):
        return None


def past_visits(
    gallery: Gallery, camera: str, within_s: float, *, limit: int = 300
) -> list[PastVisit]:
    """The visits of ``camera`` last seen less than ``within_s`` seconds ago, as its earlier
    holders recorded them in the gallery (from its newest ``limit`` events): each visit's
    latest decision, first and last sighting, whether its ``left`` came after that decision,
    and a stranger's faces (its visitor's, once the visit ended and was grouped)."""
    now = datetime.now(UTC).timestamp()
    visits: dict[str, dict[str, Any]] = {}
    for event in gallery.events.list(source=camera, limit=limit):
        d = event.details or {}
        uid = d.get("visit_uid")
        first, last = _datetime(d.get("first_seen")), _datetime(d.get("last_seen"))
        if d.get("kind") != "visit" or not uid or first is None or last is None:
            continue
        if event.decision not in _VISIT_KINDS:
            continue
        v = visits.setdefault(
            str(uid),
            {"first": first.timestamp(), "last": last.timestamp(), "decided": -1, "left": -1},
        )
        v["first"] = min(v["first"], first.timestamp())
        v["last"] = max(v["last"], last.timestamp())
        if event.decision == "left":
            v["left"] = max(v["left"], event.id)
            v["visitor"] = v.get("visitor") or d.get("visitor_id")
        elif event.id > v["decided"]:  # the visit's latest decision
            v.update(
                decided=event.id,
                subject=event.subject_id,
                name=event.subject_name,
                score=float(event.score if event.score is not None else -1.0),
                threshold=float(d.get("threshold") or 0.0),
            )
    out: list[PastVisit] = []
    for uid, v in visits.items():
        if v["decided"] < 0 or now - v["last"] > within_s:
            continue
        faces: tuple[Evidence, ...] = ()
        if v["subject"] is None and v.get("visitor"):
            try:
                qualities, embeddings = gallery.visitors.embeddings(v["visitor"])
            except NotFoundError:  # purged, or assigned and erased meanwhile
                qualities, embeddings = np.zeros(0), np.zeros((0, 0))
            faces = tuple(
                Evidence(max(float(q), 1e-6), e) for q, e in zip(qualities, embeddings, strict=True)
            )
        out.append(
            PastVisit(
                uid=uid,
                subject_id=v["subject"],
                name=v["name"],
                score=v["score"],
                threshold=v["threshold"],
                first_seen=v["first"],
                last_seen=v["last"],
                ended=v["left"] > v["decided"],
                faces=faces,
            )
        )
    return out
