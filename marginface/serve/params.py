"""What the ``/v1`` routers share in their OpenAPI contract: bounded parameter types and the
documented error responses.

Every id and integer a route takes is bounded here, so an out-of-range value is a 422 before any
SQL runs (ids and offsets are 64-bit integers in SQL), and the bound is in the OpenAPI document.
Dates and date-times are not bounded: every value of the schema's ``format: date`` and
``date-time`` is answered (routes work in epoch seconds, see ``gallery.events.day_bounds``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Form, Path, Query
from pydantic import BeforeValidator

from marginface.gallery import MultipleFaces
from marginface.serve.schemas import ErrorOut

__all__ = [
    "AUTH_ERRORS",
    "BODY_ERRORS",
    "ENROL_ERRORS",
    "MAX_ID",
    "MAX_OFFSET",
    "NOT_FOUND",
    "PHOTO_ERRORS",
    "Day",
    "FaceId",
    "ForceField",
    "KeyId",
    "MultipleFacesField",
    "Offset",
    "Responses",
    "SubjectId",
    "Time",
]

#: Ids and offsets are 64-bit integers in SQL; larger numbers are refused with 422, not 500.
MAX_ID = 2**63 - 1
#: No listing is that long; a bound keeps OFFSET arithmetic far from any overflow.
MAX_OFFSET = 10**9
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _iso_day(value: Any) -> Any:
    # pydantic also reads "0" or "86400" as days (Unix time); the schema promises YYYY-MM-DD.
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _iso_time(value: Any) -> Any:
    # pydantic also reads "0" or "1.5" as date-times (Unix time); the schema promises ISO 8601.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be a date-time written YYYY-MM-DDTHH:MM:SS (ISO 8601)")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]
Time = Annotated[datetime, BeforeValidator(_iso_time)]
SubjectId = Annotated[str, Path(min_length=1, max_length=64, description="The subject's id.")]
FaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The face's id.")]
KeyId = Annotated[str, Path(min_length=1, max_length=64, description="The key's id.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
#: The enrolment routes' form fields.
MultipleFacesField = Annotated[
    MultipleFaces | None,
    Form(
        description="A photo showing several faces: reject it, take the largest face, or take "
        "the central one (nearest the photo's centre). Default: the service's setting (reject "
        "unless configured)."
    ),
]
ForceField = Annotated[
    bool,
    Form(
        description="Enrol photos held back as someone else's (matches_other, or a "
        "duplicate_photo stored for another subject) and, with an admin key, photos unlike the "
        "subject (mismatch). Each forced photo's outcome keeps the warning."
    ),
]

Responses = dict[int | str, dict[str, Any]]

#: Every ``/v1`` route needs a key (each router documents these).
AUTH_ERRORS: Responses = {
    401: {"model": ErrorOut, "description": "Missing or wrong API key."},
    403: {"model": ErrorOut, "description": "The key's role may not do this."},
}
#: Routes that take a JSON body: a body that is not UTF-8 cannot even be parsed as JSON.
BODY_ERRORS: Responses = {
    **AUTH_ERRORS,
    400: {"model": ErrorOut, "description": "The body cannot be read (it is not UTF-8 JSON)."},
}
#: Routes that take photos.
PHOTO_ERRORS: Responses = {
    **AUTH_ERRORS,
    400: {
        "model": ErrorOut,
        "description": "No photo is a readable image (each is named, with the reason), or the "
        "multipart body is malformed.",
    },
    413: {"model": ErrorOut, "description": "The upload is larger than the limit."},
    422: {"model": ErrorOut, "description": "No face found, or invalid fields."},
}
#: The enrolment routes: photos, plus the refusals that keep identities apart.
ENROL_ERRORS: Responses = {
    **PHOTO_ERRORS,
    403: {
        "model": ErrorOut,
        "description": "The key's role may not do this; or force=true was asked for a photo that "
        "does not look like the subject (mismatch), which only an admin key may force. Nothing "
        "is stored; details give each photo's outcome.",
    },
    409: {
        "model": ErrorOut,
        "description": "Nothing was enrolled: each photo with a usable face belongs to someone "
        "enrolled already (matches_other: identified as another subject; duplicate_photo: the "
        "same photo is stored). Details name the subject, score and threshold per photo; the "
        "same request with force=true enrols them anyway.",
    },
    422: {
        "model": ErrorOut,
        "description": "No photo could be enrolled (no face, several faces, near duplicate; "
        "photo_mismatch: every usable photo is unlike the subject's own faces, with the scores; "
        "details per photo), or invalid fields.",
    },
}
#: Routes that name a subject, face or key.
NOT_FOUND: Responses = {
    404: {"model": ErrorOut, "description": "No such subject (or face, or key)."}
}
