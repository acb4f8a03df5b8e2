"""Notifications of visits: signed webhooks and MQTT topics for home automation.

Both notifiers are *sinks* of a camera worker (``sink(event)`` for every
:class:`~marginface.streams.visits.VisitEvent`) and share one promise: **a sink call never
blocks the camera and never raises into it**. A slow or dead receiver costs a bounded queue
and a line in :meth:`status`, never a dropped frame.

Webhooks (:class:`Webhook`)
    One HTTP POST per event, JSON body::

        {"type": "visit.arrived", "id": "<uuid4>", "sent_at": "<ISO 8601 UTC>",
         "event": {... VisitEvent.to_dict() ...}}

    With a ``secret``, each attempt carries the headers (the scheme of Stripe and GitHub: a
    timestamp in the signed text stops replays)::

        X-Marginface-Timestamp: <unix seconds>
        X-Marginface-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

    and always ``X-Marginface-Event`` (the type), ``X-Marginface-Delivery`` (the delivery's
    id, the same on every retry) and, for a visit event, ``X-Marginface-Event-Id`` (the
    event's own id, :attr:`VisitEvent.event_id`, the same on every retry and whichever node
    sends it: a node taking a camera over sends again what its previous holder may not have
    delivered, so delivery is *at least once* and receivers drop repeats by this id).
    Receivers check a request with :func:`verify_signature`. A 2xx answer is a delivery;
    5xx, 408, 429, timeouts and connection errors are retried with exponential backoff and
    jitter (a ``Retry-After`` is honoured up to ``backoff_max_s``); any other answer (4xx,
    3xx: redirects are not followed, so a signed body never goes where it was not configured
    to) fails at once.

MQTT (:class:`MqttPublisher`), topics under ``topic_prefix`` (default ``marginface``), in the
manner of Frigate's ``frigate/available`` and ``frigate/<camera>/...``::

    <prefix>/available                         "online" / "offline"   retained, last will
    <prefix>/<camera>/events                   every event (JSON)     not retained
    <prefix>/<camera>/arrived | left           the same, by kind      not retained
    <prefix>/<camera>/person/<subject_id>      {"present": ...}       retained (named people)
    <prefix>/<camera>/state                    the camera's status    retained

The event payload is ``VisitEvent.to_dict()`` (its ``event_id`` included: delivery is at least
once, a receiver drops a repeat by it) plus ``type``, ``id`` and ``sent_at``, flat so that a
Home Assistant template reads ``value_json.name``. Camera names and subject ids are
made safe as one topic level: every character other than a letter, digit, ``_``, ``-`` or
``.`` (thus ``/``, ``+``, ``#``, spaces) becomes ``_``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from marginface.config import StrictModel
from marginface.errors import ConfigError
from marginface.streams.notifier import CameraCounters
from marginface.streams.visits import VisitEvent
from marginface.urls import parse_url, redact_url

__all__ = [
    "MqttPublisher",
    "MqttSettings",
    "Webhook",
    "WebhookSettings",
    "sign_payload",
    "topic_level",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Marginface-Signature"
TIMESTAMP_HEADER = "X-Marginface-Timestamp"
EVENT_HEADER = "X-Marginface-Event"
DELIVERY_HEADER = "X-Marginface-Delivery"
EVENT_ID_HEADER = "X-Marginface-Event-Id"

_RETRYABLE_4XX = frozenset({408, 429})
#: Headers marginface sets itself on every POST; ``headers`` may not replace them.
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Content-Type",
        "Content-Length",
        "Host",
        "User-Agent",
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        EVENT_HEADER,
        DELIVERY_HEADER,
        EVENT_ID_HEADER,
    )
)
#: An HTTP header name: RFC 9110's token characters.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _digest(*parts: str) -> str:
    """A short stable name for a notifier's destination (its delivery marks' key)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_json(data: Any) -> bytes:
    # default=str: datetimes (first_seen/last_seen) and other odd values never break a send
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# ----------------------------------------------------------------------------------------------
# Signatures
# ----------------------------------------------------------------------------------------------


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def sign_payload(secret: str, timestamp: str | int, body: str | bytes) -> str:
    """The ``X-Marginface-Signature`` value of ``body`` sent at ``timestamp``:
    ``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    message = str(timestamp).encode() + b"." + _as_bytes(body)
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int | None,
    body: str | bytes,
    header: str | None,
    tolerance_s: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is genuine and fresh: ``header`` (the
    ``X-Marginface-Signature`` value; several ``sha256=...`` separated by commas are accepted,
    for a secret being rotated) matches the HMAC of the *raw* ``body`` and ``timestamp`` (the
    ``X-Marginface-Timestamp`` value), and the timestamp is within ``tolerance_s`` seconds of
    ``now`` (default: the clock), which stops replays of an old request. Comparison is in
    constant time. Never raises on malformed input: it is simply not genuine."""
    if not secret or header is None or timestamp is None:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if tolerance_s is not None and abs(current - ts) > tolerance_s:
        return False
    expected = sign_payload(secret, ts, body)
    return any(
        hmac.compare_digest(expected.encode(), part.strip().encode())
        for part in header.split(",")
        if part.strip()
    )


# ----------------------------------------------------------------------------------------------
# Webhooks
# ----------------------------------------------------------------------------------------------

EventKind = Literal["arrived", "identified", "corrected", "left", "state"]


def _default_events() -> list[EventKind]:
    return ["arrived", "identified", "corrected", "left"]


class WebhookSettings(StrictModel):
    """Where and how visit events are POSTed."""

    url: str = Field(
        description="http:// or https:// URL that receives the POSTs; without credentials "
        "(user:password@ is refused: give them in `headers`)"
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="extra headers sent with every POST, for the receiver's credentials, "
        'e.g. {"Authorization": "Bearer <token>"}; never shown in statuses or logs',
    )
    secret: str | None = Field(
        None,
        repr=False,
        description="signs each POST with HMAC-SHA256 (X-Marginface-Signature) when set",
    )
    events: list[EventKind] = Field(
        default_factory=_default_events,
        description="what is sent: the visit events 'arrived', 'identified', 'corrected', "
        "'left' (default: all four), and 'state' (camera status changes)",
    )
    timeout_s: float = Field(10.0, gt=0.0, le=300.0, description="per request")
    max_attempts: int = Field(6, ge=1, le=100, description="tries per event, the first included")
    backoff_initial_s: float = Field(
        1.0, ge=0.0, description="wait before the first retry; doubled after each failure"
    )
    backoff_max_s: float = Field(60.0, ge=0.0, description="longest wait between tries")
    queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="events waiting to be sent; when full the oldest is dropped (and counted)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = parse_url(value, schemes=("http", "https"), what="webhook URL")
        if url.has_credentials:
            raise ValueError(
                f"the webhook URL {url.redacted!r} carries credentials (user:password@ or a "
                "token before @), which are neither sent safely nor kept secret there: remove "
                'them from the URL and give them in `headers`, e.g. {"Authorization": '
                '"Basic <base64 of user:password>"} or {"Authorization": "Bearer <token>"}'
            )
        return url.text

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"the header {name!r} is set by marginface itself")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
                raise ValueError(f"the value of header {name!r} contains a control character")
        return value

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "events must name at least one of 'arrived', 'identified', 'corrected', 'left', "
                "'state'"
            )
        return list(dict.fromkeys(value))


@dataclass
class _Delivery:
    type: str
    body: bytes
    id: str
    camera: str | None = None
    attempts: int = 0
    event: VisitEvent | None = None  # a visit event's delivery (its id, its mark)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError: a signed body is not sent elsewhere


class _DeliveryError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Webhook:
    """A sink that POSTs each visit event to a URL, signed, retried, never blocking.

    ``webhook(event)`` only enqueues (O(1), never raises for a delivery problem); one
    background thread sends, in order, retrying each event up to ``max_attempts`` times with
    exponential backoff and jitter (a wait drawn between half and all of the doubled
    delay, so many cameras' retries do not synchronise).
    Call :meth:`close` when done (or use it as a context manager)."""

    kind = "webhook"
    retains_state = False

    def __init__(self, settings: WebhookSettings, *, user_agent: str | None = None) -> None:
        self.settings = settings
        self.key = "webhook:" + _digest(settings.url, *sorted(settings.events))
        self.on_done: Callable[[VisitEvent], None] | None = None
        self._user_agent = user_agent or "marginface-webhook/1"
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: deque[_Delivery] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()  # abandon now (close's deadline passed)
        self._closing = False  # no new events; drain then exit
        self._in_flight = 0
        self._sending: _Delivery | None = None
        self._random = random.Random()
        self._counts = CameraCounters(("delivered", "failed", "retries", "dropped"))
        self._shown_url = redact_url(settings.url, query=False)  # the query may hold anything
        self._last_failure_at: str | None = None
        self._last_delivered_at: str | None = None
        self._last_status: int | None = None
        self._thread = threading.Thread(target=self._run, name="marginface-webhook", daemon=True)
        self._thread.start()

    # -- the sink ---------------------------------------------------------------------------
    def __call__(self, event: VisitEvent) -> None:
        """Queue ``event`` for delivery (when its kind is in ``settings.events``)."""
        if event.kind not in self.settings.events:
            self._done(event)  # not wanted here: nothing to deliver, nothing to send again
            return
        self._enqueue(f"visit.{event.kind}", {"event": event.to_dict()}, event.camera, event)

    def publish_state(self, camera: str, status: Mapping[str, Any]) -> None:
        """Queue a ``camera.state`` POST, only when ``'state'`` is in ``settings.events``
        (callers send it when a camera's state changes, not for every frame)."""
        if "state" not in self.settings.events:
            return
        self._enqueue("camera.state", {"camera": camera, "state": dict(status)}, camera)

    def _done(self, event: VisitEvent | None) -> None:
        if event is not None and self.on_done is not None:
            try:
                self.on_done(event)
            except Exception:  # the mark is bookkeeping: never a reason to stop delivering
                log.warning("webhook %s: noting a delivery failed", self._shown_url, exc_info=True)

    def _enqueue(
        self,
        kind: str,
        content: dict[str, Any],
        camera: str | None,
        event: VisitEvent | None = None,
    ) -> None:
        delivery_id = str(uuid.uuid4())
        try:
            body = _to_json({"type": kind, **content, "id": delivery_id, "sent_at": _now_iso()})
        except (TypeError, ValueError) as exc:  # never raise into the camera worker
            with self._cond:
                self._note_failure(camera, "failed", f"cannot encode {kind}: {exc}")
            return
        with self._cond:
            if self._closing:
                self._counts.add(camera, "dropped")
                return
            if len(self._queue) >= self.settings.queue_size:
                self._counts.add(self._queue.popleft().camera, "dropped")
            self._queue.append(_Delivery(kind, body, delivery_id, camera, event=event))
            self._cond.notify()

    # -- status and shutdown ----------------------------------------------------------------
    def status(self, camera: str | None = None) -> dict[str, Any]:
        """Counters and the last error, of ``camera``'s messages (None: of all):
        ``delivered``, ``failed`` (given up on), ``retries`` (extra attempts), ``dropped``
        (queue full or closed), ``pending`` (queued or being sent), ``last_error``; plus, for
        the webhook as a whole, ``url`` (without credentials or query), ``last_failure_at``,
        ``last_delivered_at`` and ``last_status`` (the last HTTP status seen)."""
        with self._cond:
            pending = sum(1 for d in self._queue if camera is None or d.camera == camera)
            if self._sending is not None and camera in (None, self._sending.camera):
                pending += 1
            return {
                "url": self._shown_url,
                **self._counts.get(camera),
                "pending": pending,
                "last_failure_at": self._last_failure_at,
                "last_delivered_at": self._last_delivered_at,
                "last_status": self._last_status,
            }

    def forget(self, camera: str) -> None:
        """Drop a deleted camera's counters."""
        self._counts.forget(camera)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking events, deliver what can be delivered within ``timeout`` seconds, then
        stop the thread (what is still pending then is counted as dropped)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.flush(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=min(1.0, self.settings.timeout_s))
        with self._cond:
            for delivery in self._queue:
                self._counts.add(delivery.camera, "dropped")
            self._queue.clear()

    def __enter__(self) -> Webhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sending thread -----------------------------------------------------------------
    def _note_failure(self, camera: str | None, counter: str, message: str) -> None:
        self._counts.fail(camera, counter, message)
        self._last_failure_at = _now_iso()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set() or not self._queue:
                    return  # stopped, or closing with nothing left
                delivery = self._queue.popleft()
                self._in_flight = 1
                self._sending = delivery
            try:
                if self._deliver(delivery):
                    self._done(delivery.event)
            except Exception as exc:  # a bug must not kill the thread silently
                log.exception("webhook delivery crashed")
                with self._cond:
                    self._note_failure(delivery.camera, "failed", f"internal error: {exc!r}")
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._sending = None
                    self._cond.notify_all()

    def _deliver(self, delivery: _Delivery) -> bool:
        """Send one delivery, retrying; True when it is done (delivered, or given up on after
        its attempts), False when it was abandoned at close (to be sent again later)."""
        s = self.settings
        while not self._stop.is_set():
            delivery.attempts += 1
            try:
                status = self._post(delivery)
            except _DeliveryError as failure:
                message = f"attempt {delivery.attempts}/{s.max_attempts}: {failure}"
                give_up = not failure.retryable or delivery.attempts >= s.max_attempts
                with self._cond:
                    self._note_failure(delivery.camera, "failed" if give_up else "retries", message)
                if give_up:
                    log.warning(
                        "webhook %s: %s %s not delivered: %s",
                        self._shown_url,
                        delivery.type,
                        delivery.id,
                        message,
                    )
                    return True
                delay = self._backoff(delivery.attempts, failure.retry_after)
                if self._stop.wait(delay):
                    break
                continue
            with self._cond:
                self._counts.add(delivery.camera, "delivered")
                self._last_delivered_at = _now_iso()
                self._last_status = status
            return True
        with self._cond:  # stopped while retrying: abandoned
            self._counts.add(delivery.camera, "dropped")
        return False

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** (attempts - 1))
        delay = self._random.uniform(ceiling / 2.0, ceiling)  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.backoff_max_s))
        return delay

    def _post(self, delivery: _Delivery) -> int:
        s = self.settings
        headers = {
            **s.headers,
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            EVENT_HEADER: delivery.type,
            DELIVERY_HEADER: delivery.id,
        }
        if delivery.event is not None:
            headers[EVENT_ID_HEADER] = delivery.event.event_id
        if s.secret:
            timestamp = str(int(time.time()))  # signed per attempt: a retry is fresh too
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign_payload(s.secret, timestamp, delivery.body)
        request = urllib.request.Request(s.url, data=delivery.body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=s.timeout_s) as response:
                response.read(65536)
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            code = int(exc.code)
            with self._cond:
                self._last_status = code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            raise _DeliveryError(
                f"HTTP {code} {exc.reason}".strip(),
                retryable=code >= 500 or code in _RETRYABLE_4XX,
                retry_after=retry_after,
            ) from None
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
            reason = getattr(exc, "reason", exc)
            raise _DeliveryError(f"{type(reason).__name__}: {reason}", retryable=True) from None
        if not 200 <= status < 300:
            raise _DeliveryError(f"HTTP {status}", retryable=False)
        return status


# ----------------------------------------------------------------------------------------------
# MQTT
# ----------------------------------------------------------------------------------------------

_UNSAFE_LEVEL = re.compile(r"[^\w.\-]")


def topic_level(name: str) -> str:
    """``name`` as one safe MQTT topic level: anything but letters, digits, ``_ - .``
    (so ``/ + #``, spaces, NUL) becomes ``_``; never empty, never starting with ``$``."""
    level = _UNSAFE_LEVEL.sub("_", str(name))
    return level or "_"


class MqttSettings(StrictModel):
    """The MQTT broker and the topics events are published on."""

    host: str = Field("localhost", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    username: str | None = Field(None, description="broker user, when it asks for one")
    password: str | None = Field(None, repr=False, description="broker password")
    tls: bool = Field(False, description="connect with TLS (system certificate authorities)")
    tls_ca_certs: str | None = Field(
        None,
        description="CA bundle file for TLS, when the "
        "broker's certificate is not signed by a system CA",
    )
    client_id: str = Field("", description="MQTT client id; empty: marginface-<random>")
    topic_prefix: str = Field("marginface", description="first level(s) of every topic")
    qos: int = Field(1, ge=0, le=2, description="quality of service of every publish")
    keepalive: int = Field(60, ge=5, le=65535, description="seconds between pings")
    queue_size: int = Field(
        1000,
        ge=1,
        description="messages kept while disconnected "
        "(QoS >= 1); beyond it, publishes fail and are counted",
    )
    reconnect_min_s: int = Field(1, ge=1, description="first wait before reconnecting")
    reconnect_max_s: int = Field(30, ge=1, description="longest wait between reconnections")

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not value:
            raise ValueError("topic_prefix cannot be empty")
        if any(c in value for c in "+#\0") or value.startswith("$"):
            raise ValueError(
                f"topic_prefix {value!r} cannot contain '+', '#' or NUL or start with '$'"
            )
        return value


#: What the publisher counts per camera: ``published`` (acknowledged by the broker at QoS >= 1,
#: written at QoS 0), ``failed`` (refused: not connected at QoS 0, offline queue full, bad
#: payload), ``queued`` (accepted while disconnected, sent on reconnection).
_MQTT_COUNTERS = ("published", "failed", "queued")


class MqttPublisher:
    """A sink that publishes visit events and camera state to an MQTT broker.

    The paho-mqtt client runs its own network thread (``loop_start``), connects in the
    background and reconnects by itself with backoff, so creating the publisher never waits
    for the broker and a sink call never blocks on it: while disconnected, QoS >= 1 messages
    are queued by paho (up to ``queue_size``) and sent on reconnection, QoS 0 ones are lost;
    either way :meth:`status` counts them. ``<prefix>/available`` is the broker-held
    availability: ``online`` (retained) on every connection, ``offline`` as the last will
    (the broker publishes it when the connection is lost) and on :meth:`close`."""

    kind = "mqtt"
    retains_state = True

    def __init__(self, settings: MqttSettings) -> None:
        from paho.mqtt import client as mqtt  # imported when used: the module stays light
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self.key = "mqtt:" + _digest(
            settings.host, str(settings.port), settings.topic_prefix, settings.username or ""
        )
        self.on_done: Callable[[VisitEvent], None] | None = None
        self._mqtt = mqtt
        self._lock = threading.Lock()
        self._counts = CameraCounters(_MQTT_COUNTERS)
        self._connects = 0
        self._disconnects = 0
        self._presence: dict[tuple[str, str], set[str]] = {}  # open visits' uids
        # message id -> (camera, the visit event a publish on <camera>/events carries), until
        # the broker acknowledges it
        self._in_flight: dict[int, tuple[str | None, VisitEvent | None]] = {}
        self._early_acks: set[int] = set()  # acknowledged before publish() returned its id
        self._connected = False
        self._last_error: str | None = None
        self._closed = False
        prefix = settings.topic_prefix
        self.availability_topic = f"{prefix}/available"
        client_id = settings.client_id or f"marginface-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            reconnect_on_failure=True,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                client.tls_set(ca_certs=settings.tls_ca_certs)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(f"MQTT TLS settings: {exc}") from None
        client.will_set(self.availability_topic, "offline", qos=max(1, settings.qos), retain=True)
        client.reconnect_delay_set(
            settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s)
        )
        client.max_queued_messages_set(settings.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
        client.loop_start()

    # -- topics -----------------------------------------------------------------------------
    def topic(self, camera: str, *levels: str) -> str:
        """``<prefix>/<camera>/<levels...>`` with the camera made safe (:func:`topic_level`)."""
        return "/".join([self.settings.topic_prefix, topic_level(camera), *levels])

    # -- the sink ---------------------------------------------------------------------------
    def __call__(self, event: VisitEvent) -> None:
        """Publish ``event`` on ``<camera>/events`` and ``<camera>/<kind>``, and the retained
        ``<camera>/person/<subject_id>`` presence of the person it concerns: present from the
        decision that names them (``arrived``, ``identified``, ``corrected``) until the
        visit's ``left``; a ``corrected`` visit is no longer the previous person's."""
        payload = {
            **event.to_dict(),
            "type": f"visit.{event.kind}",
            "id": str(uuid.uuid4()),
            "sent_at": _now_iso(),
        }
        camera = event.camera
        self._publish(
            self.topic(camera, "events"), payload, retain=False, camera=camera, event=event
        )
        self._publish(self.topic(camera, event.kind), payload, retain=False, camera=camera)
        if event.kind == "corrected" and event.previous_subject_id is not None:
            self._update_presence(
                event, event.previous_subject_id, event.previous_name, False, payload
            )
        if event.subject_id is not None:
            self._update_presence(
                event, event.subject_id, event.name, event.kind != "left", payload
            )

    def _update_presence(
        self,
        event: VisitEvent,
        subject_id: str,
        name: str | None,
        here: bool,
        payload: Mapping[str, Any],
    ) -> None:
        """Update and publish whether ``subject_id`` is in view of the event's camera (any of
        their visits open there)."""
        key = (event.camera, subject_id)
        with self._lock:
            visits = self._presence.setdefault(key, set())
            if here:
                visits.add(event.uid)
            else:
                visits.discard(event.uid)
            present = bool(visits)
            if not visits:
                del self._presence[key]
        person = {
            "present": present,
            "subject_id": subject_id,
            "name": name,
            "camera": event.camera,
            "updated_at": payload["sent_at"],
            "event": event.to_dict(),
        }
        self._publish(
            self.topic(event.camera, "person", topic_level(subject_id)),
            person,
            retain=True,
            camera=event.camera,
        )

    def publish_state(self, camera: str, status: Mapping[str, Any]) -> None:
        """Publish a camera's status (retained) on ``<prefix>/<camera>/state``."""
        self._publish(
            self.topic(camera, "state"),
            {"camera": camera, **dict(status), "updated_at": _now_iso()},
            retain=True,
            camera=camera,
        )

    def _publish(
        self,
        topic: str,
        payload: Mapping[str, Any],
        *,
        retain: bool,
        camera: str | None = None,
        event: VisitEvent | None = None,
    ) -> None:
        mqtt = self._mqtt
        try:
            info = self._client.publish(
                topic, _to_json(payload), qos=self.settings.qos, retain=retain
            )
            rc = info.rc
        except (ValueError, TypeError, OSError) as exc:  # never raise into the camera worker
            error = f"publish {topic}: {exc}"
            with self._lock:
                self._last_error = error
            self._counts.fail(camera, "failed", error)
            self._done(event)  # given up on
            return
        if rc == mqtt.MQTT_ERR_NO_CONN and self.settings.qos > 0:
            self._counts.add(camera, "queued")  # kept by paho, sent on reconnection
        elif rc != mqtt.MQTT_ERR_SUCCESS:
            error = f"publish {topic}: {mqtt.error_string(rc)}"
            with self._lock:
                self._last_error = error
            self._counts.fail(camera, "failed", error)
            self._done(event)  # given up on
            return
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                acked = True
            else:
                self._in_flight[info.mid] = (camera, event)
                acked = False
        if acked:
            self._counts.add(camera, "published")
            self._done(event)

    def _done(self, event: VisitEvent | None) -> None:
        if event is not None and self.on_done is not None:
            try:
                self.on_done(event)
            except Exception:  # the mark is bookkeeping: never a reason to stop publishing
                log.warning("MQTT: noting a delivery failed", exc_info=True)

    # -- callbacks (paho's network thread) --------------------------------------------------
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        if reason_code.is_failure:
            with self._lock:
                self._connected = False
                self._last_error = f"broker refused the connection: {reason_code}"
            return
        with self._lock:
            self._connected = True
            self._connects += 1
        client.publish(
            self.availability_topic, "online", qos=max(1, self.settings.qos), retain=True
        )

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            if was:
                self._disconnects += 1
            if not self._closed:
                self._last_error = (
                    f"disconnected from {self.settings.host}:{self.settings.port}: {reason_code}"
                )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._lock:
            self._connected = False
            self._last_error = (
                f"cannot connect to {self.settings.host}:{self.settings.port} (retrying)"
            )

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any = None
    ) -> None:
        event: VisitEvent | None = None
        with self._lock:
            if mid in self._in_flight:
                camera, event = self._in_flight.pop(mid)
            else:  # not ours (the availability topic), or faster than publish() returned
                camera = None
                self._early_acks.add(mid)
                if len(self._early_acks) > 10_000:  # availability messages: never claimed
                    self._early_acks.clear()
            if getattr(reason_code, "is_failure", False):
                self._last_error = f"broker refused a publish: {reason_code}"
        if getattr(reason_code, "is_failure", False):
            self._counts.fail(camera, "failed", f"broker refused a publish: {reason_code}")
        else:
            self._counts.add(camera, "published")
        self._done(event)

    # -- status and shutdown ----------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the client holds an accepted connection to the broker now."""
        with self._lock:
            return self._connected

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection (for start-up checks and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected:
                return True
            time.sleep(0.02)
        return self.connected

    def status(self, camera: str | None = None) -> dict[str, Any]:
        """``published`` (acknowledged by the broker), ``failed`` and ``queued`` (accepted
        while disconnected) of ``camera``'s messages (None: of all), and for the connection
        as a whole ``connected``, ``connects``, ``disconnects``, ``last_error``, ``broker``
        (host:port) and ``topic_prefix``."""
        counts = self._counts.get(camera)
        with self._lock:
            return {
                "connected": self._connected,
                **counts,
                "connects": self._connects,
                "disconnects": self._disconnects,
                "last_error": self._last_error
                if camera is None
                else counts["last_error"] or (None if self._connected else self._last_error),
                "broker": f"{self.settings.host}:{self.settings.port}",
                "topic_prefix": self.settings.topic_prefix,
            }

    def forget(self, camera: str) -> None:
        """Drop a deleted camera's counters."""
        self._counts.forget(camera)

    def close(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` (retained) when connected, wait up to ``timeout`` seconds for
        it and for queued messages, disconnect and stop the network thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connected = self._connected
        client = self._client
        if connected:
            try:
                info = client.publish(
                    self.availability_topic, "offline", qos=max(1, self.settings.qos), retain=True
                )
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError, OSError) as exc:
                with self._lock:
                    self._last_error = f"publishing offline: {exc}"
        try:
            client.disconnect()
        finally:
            client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
