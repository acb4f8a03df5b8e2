"""The event log (one row per recognition) and the attendance reports read from it; their CSV
forms go through :func:`marginface.gallery.csvtext.csv_text`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, tzinfo
from time import time as _now
from typing import Any

from marginface.errors import GalleryError, NotFoundError
from marginface.gallery.cluster import check_lease
from marginface.gallery.csvtext import csv_text
from marginface.gallery.db import Database
from marginface.gallery.types import AttendanceRow, Event, LeaseRef, utc_from_ts
from marginface.gallery.validate import clean_name, metadata_json

__all__ = [
    "ARRIVED",
    "CORRECTED",
    "IDENTIFIED",
    "LEFT",
    "VISIT_DECISIONS",
    "EventLog",
    "attendance_csv",
    "day_bounds",
    "events_csv",
    "to_timestamp",
]

#: The decisions of a camera visit's events: when the person was decided (``arrived``), when
#: better evidence named an unknown visit (``identified``) or changed a named one
#: (``corrected``), and when it ended (``left``). A visit counts once in the attendance, for the
#: subject of its latest decision.
ARRIVED = "arrived"
IDENTIFIED = "identified"
CORRECTED = "corrected"
LEFT = "left"
VISIT_DECISIONS = (ARRIVED, IDENTIFIED, CORRECTED)

_EVENT_COLS = "id, ts, source, subject_id, subject_name, score, decision, details, logged_at"


def day_bounds(day: date, zone: tzinfo | None) -> tuple[float, float]:
    """``[start, end)`` of ``day`` in ``zone`` as epoch seconds: from its midnight to the next
    one (23 or 25 hours on the days clocks change). Every date has bounds, 0001-01-01 and
    9999-12-31 included (the day after the last representable one ends 24 hours later)."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    if day == date.max:
        return start, start + 86400.0
    after = day + timedelta(days=1)
    return start, datetime(after.year, after.month, after.day, tzinfo=zone).timestamp()


def to_timestamp(value: datetime | float | int) -> float:
    """Epoch seconds of an aware datetime, a naive one (local time) or a number."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive: local time
        return value.timestamp()
    return float(value)


def _event(row: tuple) -> Event:
    return Event(
        id=int(row[0]),
        time=utc_from_ts(row[1]),
        source=row[2],
        subject_id=row[3],
        subject_name=row[4],
        score=row[5],
        decision=row[6],
        details=json.loads(row[7] or "{}"),
        logged_at=utc_from_ts(row[8]) if row[8] is not None else None,
    )


class EventLog:
    """The recognition events of one gallery and the attendance read from them:
    ``gallery.events``. ``subject_name(id)`` names a subject, raising
    :class:`~marginface.errors.NotFoundError` for an unknown one."""

    def __init__(self, db: Database, subject_name: Callable[[str], str]) -> None:
        self._db = db
        self._subject_name = subject_name

    def log(
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
        """Record one recognition (camera/door ``source``, result, score); a cluster node
        writes under its camera's ``lease``
        (:class:`~marginface.gallery.cluster.StaleLeaseError` when another node holds it now,
        and nothing is written). The event's ``logged_at`` is the database's clock."""
        ts = to_timestamp(time) if time is not None else _now()
        source = clean_name(source, what="source", max_length=100) if source else ""
        details_text = metadata_json(details)
        score = None if score is None else float(score)
        name = self._subject_name(subject_id) if subject_id is not None else None
        with self._db.transaction():
            check_lease(self._db, lease)
            logged_at = self._db.now()
            event_id = int(
                self._db.scalar(
                    "INSERT INTO events (ts, source, subject_id, subject_name, score, decision, "
                    "details, logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (ts, source, subject_id, name, score, decision, details_text, logged_at),
                )
            )
        return Event(
            id=event_id,
            time=utc_from_ts(ts),
            source=source,
            subject_id=subject_id,
            subject_name=name,
            score=score,
            decision=decision,
            details=dict(details or {}),
            logged_at=utc_from_ts(logged_at),
        )

    def get(self, event_id: int) -> Event:
        """One logged event; :class:`NotFoundError` when there is none with this id."""
        row = self._db.query_one(f"SELECT {_EVENT_COLS} FROM events WHERE id = ?", (int(event_id),))
        if row is None:
            raise NotFoundError(f"unknown event {event_id}")
        return _event(row)

    def count(self) -> int:
        """Number of logged events."""
        return int(self._db.scalar("SELECT COUNT(*) FROM events"))

    def delete_visits_before(self, cutoff: float) -> int:
        """Delete the camera visits' events (details ``kind`` ``"visit"``) before ``cutoff``
        (epoch seconds), in one transaction; how many went. A step of
        :meth:`Gallery.purge_stream_data <marginface.gallery.Gallery.purge_stream_data>`, which
        runs it with the visitors' in one transaction."""
        with self._db.transaction():
            # details {"kind": "visit", ...} (JSON text written sorted, so the LIKE finds every
            # candidate; the JSON decides)
            ids = [
                int(i)
                for i, details in self._db.query(
                    "SELECT id, details FROM events WHERE ts < ? AND details LIKE ?",
                    (cutoff, '%"kind": "visit"%'),
                )
                if json.loads(details or "{}").get("kind") == "visit"
            ]
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                self._db.execute(
                    f"DELETE FROM events WHERE id IN ({','.join('?' * len(part))})", part
                )
        return len(ids)

    def csv(self, **filters: Any) -> str:
        """Events (same filters as :meth:`list`) as CSV text (id, time, source, subject_id,
        subject_name, score, decision)."""
        return events_csv(self.list(**filters))

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

        A camera visit counts once (its events share ``details.visit_uid``), for the subject of
        its **latest decision**: a visit ``arrived`` as one person and ``corrected`` to another
        (or to nobody) counts for the other (or for nobody), never for the first; an unknown
        visit ``identified`` later counts for the person it named, from its first sighting.
        """
        wanted = _sources(sources)
        zone = tz or datetime.now().astimezone().tzinfo
        if day is None:
            day = datetime.now(zone).date()
        elif isinstance(day, str):
            try:
                day = date.fromisoformat(day)
            except ValueError:
                raise GalleryError(f"date {day!r} is not YYYY-MM-DD") from None
        start, end = day_bounds(day, zone)
        sql = (
            "SELECT subject_id, subject_name, ts, source, decision, details FROM events "
            "WHERE (subject_id IS NOT NULL OR decision = ?) AND ts >= ? AND ts < ?"
        )
        params: list[Any] = [CORRECTED, start, end]
        if wanted is not None:
            sql += f" AND source IN ({','.join('?' * len(wanted))})"
            params += wanted
        rows = self._db.query(sql + " ORDER BY id", params)
        uids = [_visit_uid(r[5]) for r in rows]
        final: dict[str, str | None] = {}  # visit uid -> the subject of its latest decision
        for (sid, _, _, _, decision, _), uid in zip(rows, uids, strict=True):
            if uid is not None and decision in VISIT_DECISIONS:
                final[uid] = sid
        table: dict[str, dict[str, Any]] = {}
        counted: set[tuple[str, str]] = set()
        for (sid, name, ts, src, decision, _), uid in zip(rows, uids, strict=True):
            if sid is None or (uid is not None and final.get(uid, sid) != sid):
                continue  # a decision the visit's later evidence overturned
            entry = table.setdefault(
                sid, {"name": name, "first": ts, "last": ts, "count": 0, "sources": []}
            )
            entry["first"] = min(entry["first"], ts)
            entry["last"] = max(entry["last"], ts)
            if uid is None:
                entry["count"] += int(decision != LEFT)
            elif (sid, uid) not in counted:
                counted.add((sid, uid))
                entry["count"] += 1
            if src not in entry["sources"]:
                entry["sources"].append(src)
        out = [
            AttendanceRow(
                date=day.isoformat(),
                subject_id=sid,
                name=e["name"] or "",
                first_seen=datetime.fromtimestamp(e["first"], zone),
                last_seen=datetime.fromtimestamp(e["last"], zone),
                count=e["count"],
                sources=e["sources"],
            )
            for sid, e in table.items()
        ]
        return sorted(out, key=lambda r: (r.first_seen, r.name))

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

    # Last in the class: below this method, `list` in an annotation would name it (mypy).
    def list(
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
        """Logged events, newest first, filtered by subject id, source, decision,
        ``[start, end)`` times (aware datetimes or epoch seconds; naive ones are local time)
        and ids after ``after_id`` (what came since a delivery mark)."""
        where: list[str] = []
        params: list[Any] = []
        if after_id is not None:
            where.append("id > ?")
            params.append(int(after_id))
        for column, value in (("subject_id", subject), ("source", source), ("decision", decision)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for bound, moment in ((">=", start), ("<", end)):
            if moment is not None:
                where.append(f"ts {bound} ?")
                params.append(to_timestamp(moment))
        sql = f"SELECT {_EVENT_COLS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC"
        clause, bounds = self._db.page(limit, offset)
        sql += clause
        params += bounds
        return [_event(r) for r in self._db.query(sql, params)]


def _visit_uid(details: Any) -> str | None:
    """A logged event's camera visit (``details.visit_uid``), or None for other events."""
    if not details or "visit_uid" not in str(details):
        return None
    try:
        value = json.loads(details).get("visit_uid")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def _sources(sources: Sequence[str] | str | None) -> list[str] | None:
    """The attendance filter's source names (None: every source)."""
    if sources is None:
        return None
    names = [sources] if isinstance(sources, str) else list(sources)
    if not names:
        raise GalleryError("the attendance filter names no source (camera)")
    if not all(isinstance(n, str) for n in names):
        raise GalleryError("attendance sources must be names (text)")
    return list(dict.fromkeys(names))


def attendance_csv(rows: list[AttendanceRow]) -> str:
    """Attendance rows as CSV text (date, subject_id, name, first_seen, last_seen, count,
    sources)."""
    return csv_text(
        ["date", "subject_id", "name", "first_seen", "last_seen", "count", "sources"],
        (
            [
                r.date,
                r.subject_id,
                r.name,
                r.first_seen.isoformat(),
                r.last_seen.isoformat(),
                r.count,
                ";".join(r.sources),
            ]
            for r in rows
        ),
    )


def events_csv(events: list[Event]) -> str:
    """Events as CSV text (id, time, source, subject_id, subject_name, score, decision)."""
    return csv_text(
        ["id", "time", "source", "subject_id", "subject_name", "score", "decision"],
        (
            [
                e.id,
                e.time.isoformat(),
                e.source,
                e.subject_id or "",
                e.subject_name or "",
                "" if e.score is None else round(e.score, 4),
                e.decision,
            ]
            for e in events
        ),
    )
