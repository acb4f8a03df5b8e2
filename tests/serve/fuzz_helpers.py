"""Machinery of the schema-driven API fuzzing suite (``test_fuzz.py``).

Schemathesis reads the service's own OpenAPI document and generates requests from it: first its
deterministic *coverage* cases (boundary values, missing and wrongly typed fields, unexpected
methods), then Hypothesis-driven *fuzzing* with schema-valid (positive) and schema-invalid
(negative) data. :class:`FuzzRun` sends them in-process to an app built with the fake pipeline,
authenticated with a key of one role, and checks every response with schemathesis' checks plus a
role check of our own.

Two things make the requests reach deep into the service instead of bouncing off it:

- photos: in positive cases the generated photo fields (random strings) are often replaced with
  real PNG/JPEG photos from :data:`PHOTO_BANK`, so enrolment, identification and verification
  succeed and create subjects, faces and events;
- ids: path parameters (``subject_id``, ``face_id``, ``key_id``) and id-like fields are often
  replaced with ids that exist, taken from a :class:`Registry` fed by the responses themselves.

Failures do not stop the run: each distinct one (operation, check, status, and for a 500 the
exception and the line that raised it) is recorded once with its smallest reproducing request, so
one run lists them all. The random choices are drawn by Hypothesis (derandomized) or, for coverage
cases, by a ``random.Random`` seeded with the role and operation, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import available_timezones

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core import NotSet
from schemathesis.core.transport import Response
from schemathesis.errors import FailureGroup
from schemathesis.openapi import from_asgi
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.transport.serialization import Binary

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import (
    DIM,
    FAKE_CAMERAS,
    QUICK,
    FakePipeline,
    camera_frame,
    hue_rgb,
    make_photo,
)

T = TypeVar("T")

ROLES = ("admin", "enrol", "recognise")
ROLE_RANK = {"recognise": 0, "enrol": 1, "admin": 2}

#: The role each operation needs (the service's documented role model). A response in the 2xx
#: range to a weaker key is a failure. Operations missing here are not role-checked.
REQUIRED_ROLE: dict[str, str | None] = {
    "GET /healthz": None,
    "GET /metrics": "recognise",
    "GET /v1/me": "recognise",
    "POST /v1/identify": "recognise",
    "POST /v1/verify": "recognise",
    "POST /v1/subjects": "enrol",
    "GET /v1/subjects": "enrol",
    "GET /v1/subjects/{subject_id}": "enrol",
    "PATCH /v1/subjects/{subject_id}": "enrol",
    "POST /v1/enroll": "enrol",
    "POST /v1/subjects/{subject_id}/faces": "enrol",
    "DELETE /v1/subjects/{subject_id}": "admin",
    "DELETE /v1/subjects/{subject_id}/faces/{face_id}": "admin",
    "GET /v1/subjects/{subject_id}/faces/{face_id}/crop": "admin",
    "GET /v1/events": "admin",
    "GET /v1/attendance": "admin",
    "GET /v1/keys": "admin",
    "POST /v1/keys": "admin",
    "DELETE /v1/keys/{key_id}": "admin",
    "POST /v1/cameras": "admin",
    "GET /v1/cameras": "recognise",
    "GET /v1/cameras/{camera_id}": "recognise",
    "PATCH /v1/cameras/{camera_id}": "admin",
    "DELETE /v1/cameras/{camera_id}": "admin",
    "POST /v1/cameras/{camera_id}/start": "admin",
    "POST /v1/cameras/{camera_id}/stop": "admin",
    "POST /v1/cameras/{camera_id}/frames": "enrol",
    "GET /v1/cameras/{camera_id}/snapshot.jpg": "recognise",
    "GET /v1/cameras/{camera_id}/visits": "recognise",
    "GET /v1/visits": "recognise",
    "GET /v1/visits/{event_id}/face.jpg": "enrol",
    "GET /v1/unknowns": "recognise",
    "GET /v1/unknowns/{visitor_id}": "recognise",
    "GET /v1/unknowns/{visitor_id}/faces/{face_id}.png": "enrol",
    "POST /v1/unknowns/{visitor_id}/assign": "enrol",
    "POST /v1/unknowns/{visitor_id}/dismiss": "enrol",
    "POST /v1/unknowns/{visitor_id}/split": "enrol",
    "GET /v1/nodes": "recognise",
}

#: Cameras: the fake worker; failing cameras (random URLs) retry slowly, not every 0.2 s.
FUZZ_CAMERAS = {**FAKE_CAMERAS, "restart_initial_s": 1.0, "restart_max_s": 5.0}
#: A frame of person 4 (a seed: enrolled) for the push cameras, and one of a stranger.
FRAME = camera_frame((4, 60))
STRANGER_FRAME = camera_frame((9, 60))  # 9: no seed, bank photo or seeded visitor
#: Camera URLs the service reads (the fuzzer's push cameras, an unreachable stream).
CAMERA_URLS = ("push:", "rtsp://127.0.0.1:9/stream", "http://127.0.0.1:9/mjpg")

OWN_KEY_REVOCATION = "DELETE /v1/keys/{key_id}"

#: Examples Hypothesis generates per operation and generation mode, on top of the coverage cases:
#: many where the key's role may use the operation, a few where every valid request gets 403.
#: ``MARGINFACE_FUZZ_SCALE`` multiplies them for a deeper run by hand (CI uses 1).
FUZZ_EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 12}
FUZZ_EXAMPLES_FORBIDDEN = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 5}
#: Coverage cases sent per operation the role may not use: the run of a role that may use it
#: holds the operation to its schema; here only the refusal matters (every request is
#: answered 401 or 403 before its input is read), and the first cases already send the
#: schema's edge values.
COVERAGE_FORBIDDEN = 12
#: The coverage phase sends a ``tz`` enum's every member, one case per IANA zone (about 600 an
#: operation, a third of all the cases): a sweep keeps its first zone, every
#: ``ZONE_SWEEP_STEP``-th and the edge zones of ``TIME_ZONES``; the rest adds nothing the
#: route's zone check has not answered already.
ZONE_SWEEP_STEP = 25

# The schemathesis checks run on every response. positive_data_acceptance (ST202: a schema-valid
# request refused) runs on the cases generated positive that the fuzzer kept schema-valid, with
# the rejections the schema cannot express allowed per operation (ST202_ALLOWED). Left out, on
# purpose:
# - use_after_free, ensure_resource_availability: they judge a response by its parent request
#   in a stateful (links) run and do nothing on single requests;
# - object_level_authorization: needs several identities owning objects; keys here have roles,
#   not owners (the role model is checked by ``role_enforcement`` below);
# - max_response_time: timings on a shared 2-core CI machine would make it flaky.
# ``ignored_auth`` re-sends a 2xx request without a key and with a wrong one; it runs until an
# operation has passed it once (as schemathesis' own runner does), not on every response.
BASE_CHECKS: tuple[Callable[..., bool | None], ...] = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    positive_data_acceptance,
)

#: ST202: what a schema-valid request may be answered besides 2xx. schemathesis' default list
#: (3xx, 401 for generated credentials, 403 for a weaker key, 404 for ids that do not exist,
#: 409 for a conflict with what is stored, 429, 5xx: not_a_server_error reports those), plus,
#: per operation, the refusals no JSON schema can state: what a photo shows (400 not an image,
#: 422 no face or several; 413 a body above the upload limit), a metadata object's depth, keys
#: and size (422), "exactly one of" two fields (422), a visitor's faces unlike the subject's
#: (422 photo_mismatch, faces_disagree), a camera URL the service's media roots and devices do
#: not allow or whose file is missing (422), a pushed frame's content (400 malformed form, 415,
#: 422 not an image). Nothing else: a 422 for a value the schema allows is a limit the OpenAPI
#: document should state (dates, time zones, names, camera settings were such limits).
ST202_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
_PHOTOS = ["400", "413", "422"]
ST202_ALLOWED: dict[str, list[str]] = {
    "POST /v1/enroll": _PHOTOS,  # and the metadata form field's JSON text
    "POST /v1/subjects/{subject_id}/faces": _PHOTOS,
    "POST /v1/identify": _PHOTOS,
    "POST /v1/verify": _PHOTOS,  # and exactly one of photo_b and subject_id
    "POST /v1/subjects": ["422"],  # metadata: depth, keys, size
    "PATCH /v1/subjects/{subject_id}": ["422"],  # metadata
    "POST /v1/cameras": ["422"],  # the URL: the service's media roots and devices
    "PATCH /v1/cameras/{camera_id}": ["422"],  # the URL
    "POST /v1/cameras/{camera_id}/frames": ["400", "413", "415", "422"],  # the frame itself
    "POST /v1/unknowns/{visitor_id}/assign": ["422"],  # one of two; faces unlike the subject
    "POST /v1/unknowns/{visitor_id}/split": ["422"],  # faces not the visitor's, or all of them
}


def schemathesis_config() -> SchemathesisConfig:
    """The run's configuration: ST202's accepted rejections per operation."""
    operations = [
        {
            "include-name": label,
            "checks": {"positive_data_acceptance": {"expected-statuses": ST202_DEFAULT + extra}},
        }
        for label, extra in ST202_ALLOWED.items()
    ]
    return SchemathesisConfig.from_dict({"operations": operations})


_AUTH_HEADERS = ("x-api-key", "authorization")

# Values at the edges, mixed into generated data (Hypothesis and schemathesis rarely reach them):
# the first and last days and instants Python can represent, real time zones (the extreme
# offsets among them), and free-form JSON objects nested deeper than any sane limit.
EDGE_DATES = ("0001-01-01", "9999-12-31", "1970-01-01", "1969-12-31", "2000-02-29")
EDGE_DATETIMES = (
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:59:59-12:00",
    "1970-01-01T00:00:00Z",
    "2038-01-19T03:14:08Z",
)
TIME_ZONES = ("UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York", "Asia/Kolkata")
ZONES = frozenset(available_timezones())  # what the service's ``tz`` enum lists
EDGE_INTS = (2**31, 2**63 - 1, 2**63, 2**64, 10**30)  # around the 32/64-bit integer limits
NESTING_DEPTHS = (9, 300)  # 300: deeper than pydantic serialises (255)


def thin_zone_sweeps(cases: list[Case]) -> list[Case]:
    """``cases`` without most of each sweep over the ``tz`` enum: of cases that differ only by
    their (valid) zone, the first, every ``ZONE_SWEEP_STEP``-th and ``TIME_ZONES``' stay."""
    seen: Counter[str] = Counter()
    kept = []
    for case in cases:
        query = case.query if isinstance(case.query, dict) else {}
        zone = query.get("tz")
        if isinstance(zone, str) and zone in ZONES and zone not in TIME_ZONES:
            rest = {k: v for k, v in query.items() if k != "tz"}
            key = repr((case.method, case.path, rest, case.path_parameters, case.body))
            seen[key] += 1
            if (seen[key] - 1) % ZONE_SWEEP_STEP:
                continue
        kept.append(case)
    return kept


def _parses(parse: Callable[[str], Any], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _photo_bank() -> list[tuple[str, bytes]]:
    """Real photos for the fake pipeline: one face of several people and sizes (PNG and JPEG),
    two faces, and none."""
    bank = []
    for i, person in enumerate(range(0, 18, 2)):
        for side in (50, 80):
            fmt = "JPEG" if (i + side // 10) % 3 == 0 else "PNG"
            bank.append((f"p{person}-{side}.{fmt.lower()}", make_photo((person, side), fmt=fmt)))
    bank.append(("two-faces.png", make_photo((3, 60), (11, 60))))
    bank.append(("no-face.png", make_photo()))
    return bank


PHOTO_BANK = _photo_bank()
#: Face sizes no seed or bank photo has (the fake embedding varies with the size).
NEW_SIDES = (30, 40, 65, 100, 110, 120, 130, 140)
_PHOTO_NAMES = {data: name for name, data in PHOTO_BANK}


class Chooser:
    """The fuzzer's own random choices: drawn by Hypothesis while fuzzing (so they are part of the
    example), from a seeded ``random.Random`` for coverage cases."""

    def __init__(self, data: Any = None, seed: str = "") -> None:
        self._data = data
        self._rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        if self._data is not None:
            return bool(self._data.draw(st.integers(0, 99)) < p * 100)
        return self._rng.random() < p

    def pick(self, items: Sequence[T]) -> T:
        """One of ``items`` (not empty). The draw does not depend on how many there are, so
        Hypothesis sees the same draws whatever the service's state."""
        if self._data is not None:
            return items[self._data.draw(st.integers(0, 2**16 - 1)) % len(items)]
        return items[self._rng.randrange(2**16) % len(items)]


@dataclass
class Registry:
    """Ids that exist in the service, in creation order, learned from its answers."""

    subjects: list[str] = field(default_factory=list)
    faces: list[tuple[str, int]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: the person (fake pipeline colour) each seeded subject shows
    persons: dict[str, int] = field(default_factory=dict)

    def add_subject(self, subject: Any) -> None:
        if isinstance(subject, dict) and isinstance(subject.get("id"), str):
            if subject["id"] not in self.subjects:
                self.subjects.append(subject["id"])
            name = subject.get("name")
            if isinstance(name, str) and name and name not in self.names:
                self.names.append(name)

    def observe(self, label: str, params: dict[str, Any], status: int, body: Any) -> None:
        """Update the registry from one answer (only successful ones change anything)."""
        if status >= 300:
            return
        if label == "POST /v1/subjects":
            self.add_subject(body)
        elif label in ("POST /v1/enroll", "POST /v1/subjects/{subject_id}/faces"):
            subject = body.get("subject") if isinstance(body, dict) else None
            self.add_subject(subject)
            sid = subject.get("id") if isinstance(subject, dict) else None
            for photo in body.get("photos") or [] if isinstance(body, dict) else []:
                if isinstance(photo, dict) and photo.get("status") == "enrolled":
                    face_id = photo.get("face_id")
                    if isinstance(face_id, int) and isinstance(sid, str):
                        self.faces.append((sid, face_id))
        elif label == "DELETE /v1/subjects/{subject_id}":
            sid = str(params.get("subject_id"))
            self.subjects = [s for s in self.subjects if s != sid]
            self.faces = [f for f in self.faces if f[0] != sid]
        elif label == "DELETE /v1/subjects/{subject_id}/faces/{face_id}":
            face_id = str(params.get("face_id"))
            self.faces = [f for f in self.faces if str(f[1]) != face_id]
        elif label == "POST /v1/keys" and isinstance(body, dict):
            key = body.get("key")
            if isinstance(key, dict) and isinstance(key.get("id"), str):
                self.keys.append(key["id"])
        elif label == "DELETE /v1/keys/{key_id}":
            self.keys = [k for k in self.keys if k != str(params.get("key_id"))]
        elif label == "POST /v1/identify" and isinstance(body, dict):
            source = body.get("source")
            if isinstance(source, str) and source not in self.sources:
                self.sources.append(source)


@dataclass
class FuzzFailure:
    """One distinct failure, with the smallest request that showed it."""

    role: str
    operation: str
    check: str
    status: int | None
    title: str
    detail: str
    request: str
    count: int = 1

    def render(self) -> str:
        status = self.status if self.status is not None else "-"
        lines = [
            f"[{self.role}] {self.operation} -> {status}: {self.check}: {self.title} "
            f"(seen {self.count}x)",
            f"    request: {self.request}",
        ]
        lines += [f"    {line}" for line in self.detail.strip().splitlines()[:12]]
        return "\n".join(lines)


@dataclass
class RunStats:
    role: str
    generated: int = 0  # generated requests sent (coverage + fuzzing)
    coverage: int = 0
    fuzzing: int = 0
    http_requests: int = 0  # every request the app received (with set-up and check probes)
    skipped_own_key: int = 0
    seconds: float = 0.0
    per_operation: Counter[str] = field(default_factory=Counter)  # requests per operation
    successes: Counter[str] = field(default_factory=Counter)  # 2xx answers per operation
    statuses: Counter[int] = field(default_factory=Counter)
    failures: int = 0


class CountingApp:
    """ASGI wrapper counting the HTTP requests the app receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.http_requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.http_requests += 1
        await self.app(scope, receive, send)


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, Binary):
        value = value.data
    if isinstance(value, bytes):
        name = _PHOTO_NAMES.get(value)
        if name:
            return f"<photo {name}>"
        return repr(value) if len(value) <= limit else f"<{len(value)} bytes: {value[:40]!r}...>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _body_repr(body: Any) -> str:
    def clean(value: Any, depth: int) -> Any:
        if isinstance(value, bytes | Binary):
            return _short(value)
        if isinstance(value, dict | list) and depth >= 6:
            return f"<{_depth(value)} levels deep>"
        if isinstance(value, dict):
            return {str(k): clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, depth + 1) for v in value]
        return value

    text = json.dumps(clean(body, 0), ensure_ascii=True, default=str)
    return text if len(text) <= 400 else text[:397] + "..."


def _depth(value: Any) -> int:
    """How deep a JSON value is nested (without recursion)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth - 1


def describe(case: Case, auth: dict[str, str], secrets: dict[str, str]) -> str:
    """A compact, readable request line: method, URL, auth and body (photos by name)."""
    url = case.formatted_path
    if case.query:
        url += "?" + urlencode(case.query, doseq=True)
    parts = [f"{case.method.upper()} {url}"]
    names = {secret: f"<{role} key>" for role, secret in secrets.items()}
    for name, value in auth.items():
        shown = value
        for secret, label in names.items():
            shown = shown.replace(secret, label)
        parts.append(f"{name}: {shown}")
    extra = {k: v for k, v in (case.headers or {}).items() if k.lower() not in _AUTH_HEADERS}
    if not auth:
        extra.update({k: v for k, v in (case.headers or {}).items() if k.lower() in _AUTH_HEADERS})
    extra.pop("X-Schemathesis-TestCaseId", None)
    if extra:
        parts.append(f"headers={_body_repr(extra)}")
    if case.body is not None and not isinstance(case.body, NotSet):
        parts.append(f"{case.media_type or ''} body={_body_repr(case.body)}")
    return " | ".join(parts)


def _check_name(failure: Any) -> str:
    """The check a failure came from (a custom check's is in its title)."""
    if failure.checks:
        return str(failure.checks[0])
    match = re.search(r"`(\w+)`", failure.title or "")
    return match.group(1) if match else type(failure).__name__


def _json_or_none(response: Response) -> Any:
    if "json" not in (response.headers.get("content-type") or [""])[0]:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _where(frame: traceback.FrameSummary) -> str:
    path = frame.filename
    if "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif "/marginface/" in path:
        path = "marginface/" + path.split("/marginface/", 1)[1]
    return f"{path}:{frame.lineno} in {frame.name}"


def root_cause(exc: BaseException) -> tuple[str, str]:
    """(key, text) of an exception: its type and message, the frame that raised it and, when
    that is a library's, the innermost frame of the service on the way."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/marginface/" in f.filename and "site-packages" not in f.filename]
    message = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{type(exc).__name__}: {message}"
    key = type(exc).__name__
    innermost = frames[-1] if frames else None
    service = ours[-1] if ours else None
    for label, frame in (("raised at", innermost), ("in", service)):
        if frame is None or (label == "in" and frame is innermost):
            continue
        text += f"\n  {label} {_where(frame)}"
        if frame.line:
            text += f"\n      {frame.line.strip()}"
        key += f"@{_where(frame)}"
    return key, text


def _raised_by_app(exc: BaseException) -> bool:
    """Whether an exception came out of the app (rather than from preparing the request)."""
    markers = ("/marginface/", "/starlette/", "/fastapi/")
    frames = traceback.extract_tb(exc.__traceback__)
    return any(marker in frame.filename for frame in frames for marker in markers)


def role_enforcement_check(
    role: str, recognise_candidates: bool = False
) -> Callable[[CheckContext, Response, Case], bool | None]:
    """A check of the documented role model: an operation the key's role may not use never
    succeeds, and identify gives a recognise key no candidates (the nearest subjects' names and
    scores) unless the service is configured to (``recognise_candidates``)."""

    def role_enforcement(ctx: CheckContext, response: Response, case: Case) -> bool | None:
        label = f"{case.method.upper()} {case.path}"
        if label not in REQUIRED_ROLE or not 200 <= response.status_code < 300:
            return None
        needed = REQUIRED_ROLE[label]
        if needed is not None and ROLE_RANK[role] < ROLE_RANK[needed]:
            raise AssertionError(
                f"a {role!r} key got {response.status_code} from {label}, which needs {needed!r}"
            )
        if label == "POST /v1/identify" and role == "recognise" and not recognise_candidates:
            body = _json_or_none(response)
            faces = body.get("faces") if isinstance(body, dict) else None
            for face in faces if isinstance(faces, list) else []:
                if isinstance(face, dict) and face.get("candidates"):
                    raise AssertionError(
                        "identify showed a recognise key the candidates (names and scores of "
                        f"enrolled people): {face['candidates']!r:.200}"
                    )
        return True

    return role_enforcement


class LogCapture(logging.Handler):
    """Keeps the service's log records of the current request (for the cause of a 500)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_service_log() -> Iterator[LogCapture]:
    """Capture the service's log instead of printing it: each 500 logs a traceback, which the
    run reports itself, once per distinct failure, instead of hundreds of times."""
    logger = logging.getLogger("marginface.serve")
    handler = LogCapture()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def fuzz_scale() -> float:
    try:
        return max(0.05, float(os.environ.get("MARGINFACE_FUZZ_SCALE", "1")))
    except ValueError:
        return 1.0


def _operation_order(label: str) -> tuple[int, int, str]:
    """Creations first, deletions last (faces before subjects, keys last), so reads and updates
    meet existing data and deletions do not empty the gallery for the others."""
    method, path = label.split(" ", 1)
    rank = {"POST": 0, "PATCH": 1, "GET": 1, "DELETE": 3}.get(method, 2)
    if method == "DELETE" and path.startswith("/v1/keys"):
        rank = 4
    return rank, -path.count("/"), label


class FuzzRun:
    """One fuzzing run: a fresh app and gallery, a key of ``role``, every operation."""

    def __init__(self, role: str, settings: ServeSettings) -> None:
        self.role = role
        self.settings = settings
        self.app = CountingApp(
            create_app(settings, pipeline=FakePipeline(), camera_options=FUZZ_CAMERAS)
        )
        self._seed_cameras: list[str] = []
        self._camera_count = 0
        self._seed_visitor_person = 0
        self.stats = RunStats(role)
        self.registry = Registry()
        self.secrets: dict[str, str] = {}
        self.own_key_id = ""
        self.failures: dict[tuple, FuzzFailure] = {}
        self.notes: list[str] = []
        self.operation_labels: list[str] = []
        self.auth_confirmed: set[str] = set()
        self._seed_person = 0
        self.schema: Any = None
        self.client: Any = None
        self.log = LogCapture()
        reveal = bool(getattr(settings, "recognise_candidates", False))
        self.checks = (*BASE_CHECKS, role_enforcement_check(role, reveal))

    # -- set-up ---------------------------------------------------------------------------------
    @contextmanager
    def started(self) -> Iterator[FuzzRun]:
        """Start the app's lifespan (schemathesis' ASGI client runs it), create the keys and seed
        the gallery; stop the lifespan (closing the gallery) at the end."""
        try:
            with captured_service_log() as log, asgi.get_client(self.app) as client:
                self.log = log
                self.client = client
                self.schema = from_asgi("/openapi.json", self.app, config=schemathesis_config())
                self._create_keys()
                self._seed()
                yield self
        finally:
            self.stats.http_requests = self.app.http_requests
            asgi.shutdown_lifespans()

    def _api(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> Any:
        r = self.client.request(method, path, headers={"X-API-Key": self.secrets[role]}, **kwargs)
        if r.status_code >= 300:
            raise AssertionError(f"set-up request {method} {path} failed: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def _create_keys(self) -> None:
        self.secrets["admin"] = Path(self.settings.key_file).read_text().strip()
        for role in ("enrol", "recognise"):
            body = self._api("POST", "/v1/keys", json={"name": f"{role} key", "role": role})
            self.secrets[role] = body["secret"]
        for role in ROLES:
            self.registry.keys.append(self._api("GET", "/v1/me", role=role)["id"])
        self.own_key_id = self._api("GET", "/v1/me", role=self.role)["id"]

    def _enrol_seed(self) -> None:
        person = self._seed_person % 18
        self._seed_person += 1
        photos = [
            ("photos", (f"s{person}-{side}.png", make_photo((person, side)), "image/png"))
            for side in (50, 80)
        ]
        # Forced: a seed enrolled again (after deletions) is someone enrolled already.
        body = self._api(
            "POST",
            "/v1/enroll",
            data={
                "name": f"Seed person {person}",
                "metadata": json.dumps({"seed": person}),
                "force": "true",
            },
            files=photos,
        )
        self.registry.observe("POST /v1/enroll", {}, 201, body)
        self.registry.persons[body["subject"]["id"]] = person

    def _seed(self) -> None:
        for _ in range(6):
            self._enrol_seed()
        for person, source in ((0, "door-1"), (1, "door-1"), (2, "cam-2"), (13, "cam-2")):
            self._api(
                "POST",
                "/v1/identify",
                data={"source": source},
                files={"photo": ("q.png", make_photo((person * 2 % 18, 70)), "image/png")},
            )
            if source not in self.registry.sources:
                self.registry.sources.append(source)

    # -- cameras and strangers (seeded through the service itself: faster than HTTP) ----------
    @property
    def service(self) -> Any:
        return self.app.app.state.service

    def _push_camera(self) -> str:
        """A running push camera that has processed a frame (snapshots answer 200)."""
        cameras = self.service.cameras
        self._camera_count += 1
        listed = cameras.list_cameras()
        if len(listed) + 1 >= cameras.max_cameras:  # make room: fuzzing fills the service
            for view in listed[: len(listed) // 2]:
                if view["id"] not in self._seed_cameras:
                    cameras.delete(view["id"])
        cam = cameras.create(f"seed camera {self._camera_count}", "push:", QUICK)
        deadline = time.monotonic() + 10
        while cameras.status(cam["id"])["frames_processed"] == 0:
            if time.monotonic() > deadline:
                raise AssertionError("the fuzzer's push camera processes no frame")
            if cameras.status(cam["id"])["running"]:
                with contextlib.suppress(Exception):
                    cameras.push(cam["id"], FRAME)
            time.sleep(0.03)
        return str(cam["id"])

    def _ensure_cameras(self, minimum: int = 2) -> None:
        """Keep ``minimum`` running push cameras with a frame (fuzzing stops, changes and
        deletes them)."""
        cameras = self.service.cameras
        healthy = []
        for camera_id in self._seed_cameras:
            try:
                view = cameras.get(camera_id)
            except Exception:
                continue
            ok = view["push"] and view["status"]["running"]
            if ok and view["status"]["frames_processed"] > 0:
                healthy.append(camera_id)
            else:
                with contextlib.suppress(Exception):
                    cameras.delete(camera_id)
        self._seed_cameras = healthy
        while len(self._seed_cameras) < minimum:
            self._seed_cameras.append(self._push_camera())

    def _ensure_visitors(self, minimum: int = 3) -> None:
        """Keep ``minimum`` pending visitors (each a stranger seen once, with crops)."""
        gallery = self.service.cameras.gallery
        while gallery.visitors.count("pending") < minimum:
            person = 12 + self._seed_visitor_person % 6
            self._seed_visitor_person += 1
            emb = np.zeros((2, DIM), np.float32)
            emb[:, person] = 1.0
            emb[1, DIM - 1 - self._seed_visitor_person % 8] = 0.2
            crop = np.full((112, 112, 3), hue_rgb(person), np.uint8)
            now = time.time()
            # threshold 1.01: always a new visitor, never grouped with an assigned one
            gallery.visitors.record("door-1", now - 5, now, emb, [0.9, 0.8], [crop, crop], 1.01)

    def _ensure_subjects(self, minimum: int = 3) -> None:
        """Enrol seed people again when deletions left too few subjects or faces to pick."""
        for _ in range(minimum):
            if len(self.registry.subjects) >= minimum and len(self.registry.faces) >= minimum:
                return
            self._enrol_seed()
        if not self.registry.subjects or not self.registry.faces:
            raise AssertionError("the fuzzer cannot enrol anyone: no subject or face to pick")

    # -- mutations --------------------------------------------------------------------------------
    def _prepare(
        self, case: Case, chooser: Chooser, label: str
    ) -> tuple[dict[str, str], bool, bool]:
        """Put real ids and photos into a positive case and choose its credentials; returns the
        credentials, whether the case was generated positive, and whether it still is
        schema-valid (an integer edge value may lie outside a parameter's bounds)."""
        positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
        valid = positive
        # Generated cases share containers (coverage cases are variations of one template), so
        # each gets its own copies before anything is changed.
        for container in ("path_parameters", "query", "headers", "body"):
            value = getattr(case, container)
            if isinstance(value, Mapping) and value:
                setattr(case, container, dict(value))
        if positive:
            self._ensure_subjects()
            if "{camera_id}" in label or "{event_id}" in label:
                self._ensure_cameras()
            if label.startswith(("GET /v1/unknowns", "POST /v1/unknowns")):
                self._ensure_visitors()
            if self._edge_values(case, chooser):
                valid = False  # an integer beyond the schema's bounds: not for ST202
            self._real_ids(case, chooser, label)
            self._real_urls(case, chooser, label)
            self._real_photos(case, chooser)
        return self._auth(case, chooser), positive, valid

    def _real_ids(self, case: Case, chooser: Chooser, label: str) -> None:
        reg = self.registry
        params = case.path_parameters
        if params and "camera_id" in params and chooser.chance(0.7):
            params["camera_id"] = chooser.pick(self._seed_cameras)
        if params and "visitor_id" in params:
            if chooser.chance(0.7):
                gallery = self.service.cameras.gallery
                status = "pending" if label.startswith("POST") else None
                visitors = gallery.visitors.list(status, limit=20) or gallery.visitors.list(None)
                visitor = chooser.pick(visitors)
                params["visitor_id"] = visitor.id
                own_face = chooser.chance(0.85)  # drawn whatever the state: reproducible
                if "face_id" in params and visitor.face_ids and own_face:
                    params["face_id"] = chooser.pick(visitor.face_ids)
                split_off = chooser.chance(0.6)  # drawn whatever the label: reproducible
                splits = label == "POST /v1/unknowns/{visitor_id}/split"
                if splits and split_off and len(visitor.face_ids) > 1:
                    case.body = {"faces": [visitor.face_ids[-1]]}  # another person's face
            self._real_review(case, chooser, label)
            return
        if params and "event_id" in params and chooser.chance(0.7):
            params["event_id"] = chooser.pick(self._visit_faces())
        if label == "POST /v1/cameras/{camera_id}/frames" and chooser.chance(0.75):
            if isinstance(case.body, dict):
                case.body["frame"] = Binary(FRAME)
            else:
                case.body = FRAME
        if params:
            if "face_id" in params and chooser.chance(0.6):
                sid, fid = chooser.pick(reg.faces)
                other = chooser.pick(reg.subjects)
                params["face_id"] = fid
                params["subject_id"] = sid if chooser.chance(0.85) else other
            elif "subject_id" in params and chooser.chance(0.6):
                params["subject_id"] = chooser.pick(reg.subjects)
            if "key_id" in params and chooser.chance(0.6):
                # Never the caller's own key: revoking it would end the run (see send()).
                others = [k for k in reg.keys if k != self.own_key_id] or ["no-such-key"]
                params["key_id"] = chooser.pick(others)
        query = case.query
        if isinstance(query, dict):
            if "subject_id" in query and chooser.chance(0.5):
                query["subject_id"] = chooser.pick(reg.subjects)
            if "source" in query and chooser.chance(0.4):
                query["source"] = chooser.pick(reg.sources or ["api"])
            if label == "GET /v1/subjects" and "name" in query and chooser.chance(0.3):
                query["name"] = chooser.pick(reg.names or ["Seed"])[:6]

    def _visit_faces(self) -> list[int]:
        """Visit events with a face the run's role may see: a stranger's for an enrol key
        (an enrolled person's needs an admin key), any for the others. A seed camera's
        visits are made when there are none: a seed person and a stranger walk past."""
        cameras = self.service.cameras

        def faces() -> list[int]:
            visits = cameras.recent_visits(None, 50)
            ok = [v for v in visits if v["face"]]
            if self.role == "enrol":
                ok = [v for v in ok if v["subject_id"] is None]
            return [v["id"] for v in ok]

        found = faces()
        if not found:
            for frame in (FRAME, STRANGER_FRAME):
                for _ in range(10):
                    with contextlib.suppress(Exception):
                        cameras.push(self._seed_cameras[0], frame)
                    time.sleep(0.03)
            with contextlib.suppress(Exception):
                cameras.push(self._seed_cameras[0], camera_frame())  # both have gone
            time.sleep(0.1)
            found = faces()
        return found or [0]

    def _real_urls(self, case: Case, chooser: Chooser, label: str) -> None:
        """A camera's URL is often one the service reads (push, a stream): a generated string
        is a file path, which the service refuses unless it lies under a media root."""
        if label not in ("POST /v1/cameras", "PATCH /v1/cameras/{camera_id}"):
            return
        if isinstance(case.body, dict) and "url" in case.body and chooser.chance(0.6):
            case.body["url"] = chooser.pick(CAMERA_URLS)

    def _real_review(self, case: Case, chooser: Chooser, label: str) -> None:
        """An assignment often names a new subject, or an existing one, with force (the
        generated bodies rarely give exactly one of the two)."""
        if label != "POST /v1/unknowns/{visitor_id}/assign" or not chooser.chance(0.6):
            return
        if chooser.chance(0.5):
            case.body = {"name": f"Reviewed {chooser.pick(range(1000))}", "force": True}
        else:
            case.body = {"subject_id": chooser.pick(self.registry.subjects), "force": True}

    def _edge_values(self, case: Case, chooser: Chooser) -> bool:
        """Edge values: a generated date or date-time in the query often becomes one of the
        first or last Python can represent, a ``tz`` a real (possibly extreme) time zone, an
        integer in the query or path one around the 64-bit limits, and a free-form JSON object
        of the body (``metadata``, also sent as JSON text in a multipart form) sometimes one
        nested deeper than anything serialises. Returns whether a value may now lie outside the
        schema (an integer beyond a parameter's bounds, an object where the schema names the
        keys)."""
        outside = False
        for container in (case.query, case.path_parameters):
            if not isinstance(container, dict):
                continue
            for name, value in list(container.items()):
                edge_date, edge_time = chooser.pick(EDGE_DATES), chooser.pick(EDGE_DATETIMES)
                edge_int = chooser.pick(EDGE_INTS)
                if isinstance(value, int) and not isinstance(value, bool):
                    if chooser.chance(0.15):
                        container[name] = edge_int
                        outside = True
                elif not isinstance(value, str) or not chooser.chance(0.4):
                    continue
                elif name == "tz":
                    container[name] = chooser.pick(TIME_ZONES)
                elif value.isdigit():
                    container[name] = str(edge_int)
                elif _parses(date.fromisoformat, value):
                    container[name] = edge_date
                elif _parses(datetime.fromisoformat, value):
                    container[name] = edge_time
        body = case.body
        if not isinstance(body, dict):
            return outside
        multipart = (case.media_type or "").startswith("multipart/")
        for name, value in list(body.items()):
            deep = nested(chooser.pick(NESTING_DEPTHS))
            if not chooser.chance(0.15):
                continue
            if isinstance(value, dict):
                body[name] = deep
                outside = outside or name != "metadata"  # free-form only as metadata
            elif multipart and name == "metadata":
                body[name] = json.dumps(deep)
        return outside

    def _real_photos(self, case: Case, chooser: Chooser) -> None:
        """Real photos in the multipart photo fields (and a real subject for verify), as
        schemathesis' ``Binary`` (sent as the bytes). Schemathesis cannot validate binary values
        and then takes the case for a negative one, so ``send`` does not run
        ``negative_data_rejection`` on cases generated positive: they stay schema-valid."""
        body = case.body
        if not isinstance(body, dict) or not (case.media_type or "").startswith("multipart/"):
            return
        if chooser.chance(0.8):
            # A multipart form has no null: an optional field is left out instead (schemathesis
            # would send the text "null").
            for name in [k for k, v in body.items() if v is None]:
                del body[name]
        if isinstance(body.get("photos"), list) and chooser.chance(0.75):
            photos: list[Any] = [
                Binary(chooser.pick(PHOTO_BANK)[1]) for _ in range(chooser.pick((1, 1, 2, 3)))
            ]
            if body["photos"] and chooser.chance(0.2):
                photos.append(body["photos"][0])  # and one generated: not an image
            body["photos"] = photos
        person = self.registry.persons.get(str((case.path_parameters or {}).get("subject_id")))
        if isinstance(body.get("photos"), list) and person is not None and chooser.chance(0.5):
            # Adding photos to a seeded subject: often a new photo of the same person (a size
            # the seeds do not have), so that the subject's own-face check lets some through.
            body["photos"] = [Binary(make_photo((person, chooser.pick(NEW_SIDES))))]
        if isinstance(body.get("photo"), str) and chooser.chance(0.75):
            body["photo"] = Binary(chooser.pick(PHOTO_BANK)[1])
        photo_b = Binary(chooser.pick(PHOTO_BANK)[1])
        subject_id = chooser.pick(self.registry.subjects)
        if f"{case.method.upper()} {case.path}" == "POST /v1/verify" and chooser.chance(0.6):
            # verify compares with exactly one of photo_b and subject_id: often give one.
            if chooser.chance(0.5):
                body.pop("subject_id", None)
                body["photo_b"] = photo_b
            else:
                body.pop("photo_b", None)
                body["subject_id"] = subject_id

    def _auth(self, case: Case, chooser: Chooser) -> dict[str, str]:
        """The caller's key, as X-API-Key or (sometimes) a bearer token; rarely, the generated
        credentials are kept instead (random: expect 401)."""
        headers = case.headers
        generated = headers is not None and any(k.lower() in _AUTH_HEADERS for k in headers)
        keep = chooser.chance(0.04)
        if generated and (keep or case.operation.schema.is_security_param_negated(case)):
            # A case made invalid through its credentials keeps them: replacing them with a
            # valid key would send a valid request that schemathesis expects to be refused.
            return {}
        if headers:
            for name in [k for k in headers if k.lower() in _AUTH_HEADERS]:
                del headers[name]
        secret = self.secrets[self.role]
        if chooser.chance(0.2):
            return {"Authorization": f"Bearer {secret}"}
        return {"X-API-Key": secret}

    # -- sending and checking ---------------------------------------------------------------------
    def allowed(self, operation: str) -> bool:
        """Whether the run's role may use ``operation`` (unknown operations: assumed so)."""
        needed = REQUIRED_ROLE.get(operation)
        return needed is None or ROLE_RANK[self.role] >= ROLE_RANK[needed]

    def send(self, case: Case, chooser: Chooser, phase: str, operation: str) -> None:
        """Send one generated case (of ``operation``; coverage cases may change its method),
        check the answer and record what fails."""
        label = f"{case.method.upper()} {case.path}"
        auth, positive, valid = self._prepare(case, chooser, label)
        params = case.path_parameters or {}
        if label == OWN_KEY_REVOCATION and str(params.get("key_id")) == self.own_key_id:
            self.stats.skipped_own_key += 1  # the one request left out: it would end the run
            return
        self.stats.generated += 1
        setattr(self.stats, phase, getattr(self.stats, phase) + 1)
        self.stats.per_operation[operation] += 1
        self.log.records.clear()
        try:
            response = self._call(case, auth)
        except Exception as exc:
            key, text = root_cause(exc)
            if _raised_by_app(exc):
                # The in-process transport re-raises what the app raised behind its 500 answer.
                self.stats.statuses[500] += 1
                check, status, title = "not_a_server_error", 500, "Server error"
            else:  # the request could not even be sent
                check, status, title = "fuzzer_error", None, "Request not sent"
            self._record(case, auth, label, check, status, title, text, key)
            return
        self.stats.statuses[response.status_code] += 1
        if 200 <= response.status_code < 300 and label == operation:
            self.stats.successes[operation] += 1
        cause = self._logged_cause() if response.status_code >= 500 else None
        self.registry.observe(label, params, response.status_code, _json_or_none(response))
        # negative_data_rejection judges negative cases only (see _real_photos);
        # positive_data_acceptance (ST202) the positive ones that stayed schema-valid.
        skip = {negative_data_rejection} if positive else {positive_data_acceptance}
        if not valid:
            skip.add(positive_data_acceptance)
        checks = [c for c in self.checks if c not in skip]
        if 200 <= response.status_code < 300 and label not in self.auth_confirmed:
            checks.append(ignored_auth)
        try:
            case.validate_response(
                response, checks=checks, headers=auth, transport_kwargs={"headers": dict(auth)}
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                name = _check_name(failure)
                detail = failure.message or ""
                key = self._failure_key(failure)
                body = response.content[:300].decode("utf-8", "replace")
                if name == "not_a_server_error":
                    key, logged = cause or ("", "")
                    detail = "\n".join(filter(None, [detail, logged]))
                if body:
                    detail += f"\nresponse body: {body}"
                status = response.status_code
                self._record(case, auth, label, name, status, failure.title, detail, key)
                if name == "ignored_auth":
                    self.auth_confirmed.add(label)  # reported; do not probe it again
        except Exception as exc:  # a check itself crashed: report it, go on
            key, text = root_cause(exc)
            status = response.status_code
            self._record(case, auth, label, "check_error", status, "Check crashed", text, key)
        else:
            if ignored_auth in checks:
                self.auth_confirmed.add(label)

    def _send_guarded(self, case: Case, chooser: Chooser, phase: str, operation: str) -> None:
        """``send``; should the fuzzer itself fail on a case, that is reported as a failure too
        (and the run goes on)."""
        try:
            self.send(case, chooser, phase, operation)
        except Exception as exc:
            key, text = root_cause(exc)
            self.failures[(operation, "fuzzer_error", phase, key)] = FuzzFailure(
                self.role, operation, "fuzzer_error", None, "the fuzzer failed", text, "-"
            )

    def _call(self, case: Case, auth: dict[str, str]) -> Response:
        """``case.call()``, except that a real photo in a part schemathesis sends without a file
        name goes as a file, as any client sends it. Schemathesis sends a part as a file only
        when its schema says binary at the top; ``verify``'s optional ``photo_b`` says
        ``anyOf: [binary, null]``, so it would always go as a text field and be refused."""
        body = case.body
        if isinstance(body, dict) and any(isinstance(v, Binary) for v in body.values()):
            kwargs = case.as_transport_kwargs(headers=dict(auth))
            files = kwargs.get("files") or []
            fixed = [
                (name, (_PHOTO_NAMES[part[1]], part[1], "application/octet-stream"))
                if part[0] is None and isinstance(part[1], bytes) and part[1] in _PHOTO_NAMES
                else (name, part)
                for name, part in files
            ]
            if fixed != files:
                kwargs["files"] = fixed
                return Response.from_requests(self.client.request(**kwargs), verify=True)
        return case.call(session=self.client, headers=dict(auth))

    def _logged_cause(self) -> tuple[str, str] | None:
        """The cause of a 5xx from the service's log: the exception it logged, else its message."""
        for record in reversed(self.log.records):
            if record.exc_info and record.exc_info[1] is not None:
                return root_cause(record.exc_info[1])
        if self.log.records:
            message = self.log.records[-1].getMessage()
            return message, message
        return None

    @staticmethod
    def _failure_key(failure: Any) -> tuple:
        parts: list[Any] = [type(failure).__name__, failure.title]
        for attr in ("schema_path", "status_code", "media_type", "defined_content_types"):
            value = getattr(failure, attr, None)
            if value is not None:
                parts.append(repr(value))
        return tuple(parts)

    def _record(
        self,
        case: Case,
        auth: dict[str, str],
        label: str,
        check: str,
        status: int | None,
        title: str,
        detail: str,
        key: Any,
    ) -> None:
        self.stats.failures += 1
        full_key = (label, check, status, key)
        request = describe(case, auth, self.secrets)
        known = self.failures.get(full_key)
        if known is None:
            self.failures[full_key] = FuzzFailure(
                self.role, label, check, status, title, detail, request
            )
            return
        known.count += 1
        if len(request) < len(known.request):
            known.request, known.detail = request, detail

    # -- the run ----------------------------------------------------------------------------------
    def operations(self) -> list[Any]:
        operations = []
        for result in self.schema.get_all_operations():
            try:
                operations.append(result.ok())
            except Exception as exc:  # an operation schemathesis cannot load is a finding too
                self.notes.append(f"operation not loadable: {exc}")
        return sorted(operations, key=lambda op: _operation_order(op.label))

    def run_coverage(self, operation: Any) -> None:
        config = self.schema.config.generation_for(operation=operation, phase="coverage")
        chooser = Chooser(seed=f"{self.role}|{operation.label}")
        try:
            cases = list(
                self.schema.iter_coverage_cases(
                    operation,
                    generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                    generation_config=config,
                )
            )
        except Exception as exc:
            key, text = root_cause(exc)
            self._record_generation_error(operation.label, "coverage", text, key)
            return
        cases = thin_zone_sweeps(cases)
        if not self.allowed(operation.label):
            cases = cases[:COVERAGE_FORBIDDEN]
        for case in cases:
            self._send_guarded(case, chooser, "coverage", operation.label)

    def run_fuzzing(self, operation: Any, mode: GenerationMode, max_examples: int) -> None:
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception as exc:
            key, text = root_cause(exc)
            self._record_generation_error(operation.label, f"fuzzing/{mode}", text, key)
            return

        @hypothesis.settings(
            max_examples=max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.generate,),
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(case=strategy, data=st.data())
        def fuzz(case: Case, data: Any) -> None:
            self._send_guarded(case, Chooser(data=data), "fuzzing", operation.label)

        try:
            fuzz()
        except Unsatisfiable:
            self.notes.append(f"{operation.label}: no {mode} data could be generated")
        except Exception as exc:
            key, text = root_cause(exc)
            self._record_generation_error(operation.label, f"fuzzing/{mode}", text, key)

    def _record_generation_error(self, label: str, phase: str, text: str, key: str) -> None:
        self.failures[(label, "generation_error", phase, key)] = FuzzFailure(
            self.role, label, "generation_error", None, f"{phase} generation failed", text, "-"
        )

    def execute(self) -> None:
        operations = self.operations()
        self.operation_labels = [op.label for op in operations]
        for operation in operations:
            self.run_coverage(operation)
        scale = fuzz_scale()
        for operation in operations:
            budget = FUZZ_EXAMPLES if self.allowed(operation.label) else FUZZ_EXAMPLES_FORBIDDEN
            for mode, examples in budget.items():
                self.run_fuzzing(operation, mode, max(1, round(examples * scale)))

    def unreached(self) -> list[str]:
        """Operations the role may use that never answered 2xx: the generated requests (with
        the real photos and ids mixed in) never got through to them."""
        return [
            label
            for label in self.operation_labels
            if self.allowed(label) and not self.stats.successes[label]
        ]

    # -- reporting --------------------------------------------------------------------------------
    def summary(self) -> str:
        s = self.stats
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
        return (
            f"fuzz[{self.role}]: {s.generated} generated requests ({s.coverage} coverage, "
            f"{s.fuzzing} fuzzing) over {len(s.per_operation)} operations, "
            f"{s.http_requests} HTTP requests in all, {s.seconds:.1f} s; statuses {{{statuses}}}; "
            f"{s.skipped_own_key} revocations of the caller's own key left out; "
            f"{len(self.failures)} distinct failures ({s.failures} failing responses)"
        )

    def report(self) -> str:
        items = sorted(self.failures.values(), key=lambda f: (f.operation, f.check, f.status or 0))
        lines = [f"{len(items)} distinct failures with a {self.role!r} key:"] if items else []
        lines += [f.render() for f in items]
        unreached = self.unreached()
        if unreached:
            lines.append(f"operations a {self.role!r} key may use that never answered 2xx:")
            lines += [f"    {label}" for label in unreached]
        if self.notes:
            lines += ["notes:", *(f"    {n}" for n in self.notes)]
        return "\n".join(lines)
