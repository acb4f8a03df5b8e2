"""Recognition events and attendance: ``/v1/events`` and ``/v1/attendance`` (JSON or CSV)."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

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
TimeZone = Annotated[str | None, Query(description="IANA time zone; default the server's")]


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
    # Times without an offset are in ``tz``; only then can they be compared with the day.
    since = since.replace(tzinfo=zone) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=zone) if until and until.tzinfo is None else until
    if day is not None:
        start_day = datetime(day.year, day.month, day.day, tzinfo=zone)
        since = max(since, start_day) if since else start_day
        end_day = start_day + timedelta(days=1)
        until = min(until, end_day) if until else end_day
    filters: dict[str, Any] = {
        "subject": subject_id,
        "source": source,
        "decision": decision,
        "start": since,
        "end": until,
        "limit": limit,
        "offset": offset,
    }
    if format == "csv":
        return _csv_download(gallery.events_csv(**filters), "events.csv")
    return {"events": gallery.events(**filters), "limit": limit, "offset": offset}


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
            gallery.attendance_csv(day, tz=zone, sources=sources), f"attendance-{day}.csv"
        )
    return {
        "date": day.isoformat(),
        "timezone": _zone_name(zone),
        "rows": gallery.attendance(day, tz=zone, sources=sources),
    }


def _csv_download(text: str, filename: str) -> PlainTextResponse:
    """CSV text (already neutralised by the gallery's ``csv_text``) as a file download."""
    return PlainTextResponse(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _zone(tz: str | None) -> tzinfo:
    """The named IANA zone (422 when unknown), or the server's local zone."""
    if not tz:
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_request", f"unknown time zone {tz!r}") from None


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or zone.tzname(datetime.now()) or "local"
