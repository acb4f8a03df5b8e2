"""Recognition events and attendance: ``/v1/events`` and ``/v1/attendance`` (JSON or CSV)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import WithJsonSchema

from marginface.gallery.events import day_bounds
from marginface.serve.auth import AdminKey
from marginface.serve.deps import GalleryDep
from marginface.serve.errors import ApiError
from marginface.serve.params import AUTH_ERRORS, Day, Offset, Responses, Time
from marginface.serve.schemas import AttendanceOut, EventListOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["events"], responses=AUTH_ERRORS)

#: Both exports answer JSON, or CSV with ``format=csv``.
_CSV_TOO: Responses = {200: {"content": {"text/csv": {}}}}
Format = Annotated[Literal["json", "csv"], Query()]
#: The IANA zones of this machine's time zone database, by name: the parameter's enum in the
#: schema, and the one check (a name is never used as a path before it is found here).
TIME_ZONES = frozenset(available_timezones())
TimeZoneName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(TIME_ZONES)})]
TimeZone = Annotated[
    TimeZoneName | None,
    Query(description="IANA time zone name (one of the enum); default the server's"),
]


@router.get(
    "/events", response_model=EventListOut, responses=_CSV_TOO, summary="Recognition events"
)
def events(
    gallery: GalleryDep,
    _key: AdminKey,
    subject_id: Annotated[str | None, Query(description="Only this subject")] = None,
    source: Annotated[str | None, Query(description="Only this camera or door")] = None,
    decision: Annotated[
        Literal["match", "unknown", "arrived", "identified", "corrected", "left"] | None,
        Query(
            description="match / unknown (photos), arrived / identified / corrected / left "
            "(camera visits)"
        ),
    ] = None,
    since: Annotated[Time | None, Query(description="From this time (ISO 8601)")] = None,
    until: Annotated[Time | None, Query(description="Before this time (ISO 8601)")] = None,
    day: Annotated[
        Day | None, Query(alias="date", description="Only this day (YYYY-MM-DD, in tz)")
    ] = None,
    tz: TimeZone = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Offset = 0,
    format: Format = "json",
) -> Any:
    """Logged identifications, newest first, filtered by subject, source, decision and time."""
    zone = _zone(tz)
    # Times without an offset are in ``tz``; as epoch seconds every date-time and every day of
    # the schema is answered, the first and last days Python can represent included.
    start = _seconds(since, zone)
    end = _seconds(until, zone)
    if day is not None:
        day_start, day_end = day_bounds(day, zone)
        start = max(start, day_start) if start is not None else day_start
        end = min(end, day_end) if end is not None else day_end
    filters: dict[str, Any] = {
        "subject": subject_id,
        "source": source,
        "decision": decision,
        "start": start,
        "end": end,
        "limit": limit,
        "offset": offset,
    }
    if format == "csv":
        return _csv_download(gallery.events.csv(**filters), "events.csv")
    return {"events": gallery.events.list(**filters), "limit": limit, "offset": offset}


@router.get(
    "/attendance",
    response_model=AttendanceOut,
    responses=_CSV_TOO,
    summary="Attendance of one day",
)
def attendance(
    gallery: GalleryDep,
    _key: AdminKey,
    day: Annotated[Day | None, Query(alias="date", description="YYYY-MM-DD; default today")] = None,
    tz: TimeZone = None,
    format: Format = "json",
    source: Annotated[
        list[str] | None,
        Query(
            max_length=100,
            description="Only these cameras or doors (repeat the parameter "
            "for a group of cameras); default every source",
        ),
    ] = None,
) -> Any:
    """First and last sighting of each identified subject on one day (for cameras: first in,
    last out, from the visits), how often (photos identified, visits) and where they were seen.
    ``format=csv`` downloads it as a spreadsheet."""
    zone = _zone(tz)
    day = day or datetime.now(zone).date()
    sources = source or None
    if format == "csv":
        return _csv_download(
            gallery.events.attendance_csv(day, tz=zone, sources=sources), f"attendance-{day}.csv"
        )
    return {
        "date": day.isoformat(),
        "timezone": _zone_name(zone),
        "rows": gallery.events.attendance(day, tz=zone, sources=sources),
    }


def _csv_download(text: str, filename: str) -> PlainTextResponse:
    """CSV text (already neutralised by the gallery's ``csv_text``) as a file download."""
    return PlainTextResponse(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _seconds(when: datetime | None, zone: tzinfo) -> float | None:
    """``when`` as epoch seconds, read in ``zone`` when it has no offset."""
    if when is None:
        return None
    return (when.replace(tzinfo=zone) if when.tzinfo is None else when).timestamp()


def _zone(tz: str | None) -> tzinfo:
    """The named IANA zone, or the server's local zone. The parameter's schema lists the names
    (``TIME_ZONES``): anything else is a 422 before any file is looked for."""
    if tz is None:
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone
    if tz not in TIME_ZONES:  # never a file name ZoneInfo would look for
        raise ApiError(422, "invalid_request", f"unknown time zone {tz[:64]!r}")
    return ZoneInfo(tz)


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or zone.tzname(datetime.now()) or "local"
