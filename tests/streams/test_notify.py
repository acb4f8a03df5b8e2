"""Notifications: signed, retried webhooks against a local HTTP receiver, and MQTT topics
against a real mosquitto broker started on a free port."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt
from pydantic import ValidationError

from marginface.errors import ConfigError
from marginface.streams.notify import (
    MqttPublisher,
    MqttSettings,
    Webhook,
    WebhookSettings,
    sign_payload,
    topic_level,
    verify_signature,
)
from marginface.streams.visits import VisitEvent
from tests.streams.mqtt_broker import Broker, free_port, mosquitto_broker

SECRET = "s3cr3t-for-tests"


def visit(
    kind: str = "arrived",
    camera: str = "front door",
    track_id: int = 1,
    subject_id: str | None = "alice",
    name: str | None = "Alice",
) -> VisitEvent:
    """A visit event as the camera worker makes them (its id made of its fields, so that
    the same call gives the same event)."""
    return VisitEvent(
        kind,  # type: ignore[arg-type]
        camera,
        track_id,
        track_id,
        subject_id,
        name,
        0.71,
        0.42,
        1.5,
        4.25,
        3,
        event_id=f"{kind}-{camera}-{track_id}",
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ----------------------------------------------------------------------------------------------
# A local HTTP receiver
# ----------------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers ``fail_status`` to the first ``fail_first`` requests (or to
    all when ``fail_first`` is -1), else 204; ``hold`` blocks answers until set."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 500
    hold: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(Received(dict(self.headers.items()), body, time.monotonic()))
                n = len(state.requests)
            if state.hold is not None:
                state.hold.wait(10)
            failing = state.fail_first < 0 or n <= state.fail_first
            self.send_response(state.fail_status if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/visits?token=abc"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()


def fast(url: str, **kw: Any) -> WebhookSettings:
    """Settings with tiny backoffs, for tests."""
    options: dict[str, Any] = {
        "url": url,
        "secret": SECRET,
        "timeout_s": 2.0,
        "backoff_initial_s": 0.04,
        "backoff_max_s": 0.2,
    }
    options.update(kw)
    return WebhookSettings(**options)


# ----------------------------------------------------------------------------------------------
# Settings and signatures
# ----------------------------------------------------------------------------------------------


def test_settings_are_validated() -> None:
    for bad in (
        "ftp://example.com/hook",
        "example.com/hook",
        "http:///nohost",
        "http://example.com:99999/",
    ):
        with pytest.raises(ValidationError, match="webhook URL"):
            WebhookSettings(url=bad)
    with pytest.raises(ValidationError):
        WebhookSettings(url="https://example.com/", events=[])
    with pytest.raises(ValidationError):
        WebhookSettings(url="https://example.com/", events=["entered"])
    defaults = WebhookSettings(url="https://example.com/h")
    assert (
        defaults.events,
        defaults.max_attempts,
        defaults.backoff_initial_s,
        defaults.backoff_max_s,
        defaults.queue_size,
    ) == (["arrived", "identified", "corrected", "left"], 6, 1.0, 60.0, 1000)
    assert SECRET not in repr(fast("https://example.com/h"))
    with pytest.raises(ValidationError, match="topic_prefix"):
        MqttSettings(topic_prefix="home/#")
    with pytest.raises(ValidationError):
        MqttSettings(qos=3)
    assert MqttSettings(topic_prefix="/home/faces/").topic_prefix == "home/faces"
    assert topic_level("front/door +#1") == "front_door___1"
    assert topic_level("$SYS") == "_SYS" and topic_level("") == "_"
    assert topic_level("entrée-2.b") == "entrée-2.b"
    with pytest.raises(ConfigError, match="TLS"):
        MqttPublisher(MqttSettings(tls=True, tls_ca_certs="/nonexistent/ca.pem"))


def test_signature_verifies_and_rejects_forgeries() -> None:
    body = b'{"type":"visit.arrived"}'
    now = int(time.time())
    header = sign_payload(SECRET, now, body)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify_signature(SECRET, str(now), body, header)
    assert verify_signature(SECRET, now, body.decode(), header)
    assert verify_signature(SECRET, now, body, f"sha256={'0' * 64}, {header}")  # rotation
    assert not verify_signature("wrong", now, body, header)
    assert not verify_signature(SECRET, now, body + b" ", header)
    assert not verify_signature(SECRET, now + 1, body, header)
    assert not verify_signature(SECRET, now, body, header.upper())
    assert not verify_signature(SECRET, now, body, None)
    assert not verify_signature(SECRET, "not-a-number", body, header)
    stale = now - 301
    assert not verify_signature(SECRET, stale, body, sign_payload(SECRET, stale, body))
    assert verify_signature(SECRET, stale, body, sign_payload(SECRET, stale, body), tolerance_s=600)


# ----------------------------------------------------------------------------------------------
# Webhooks
# ----------------------------------------------------------------------------------------------


def test_webhook_credentials_go_in_a_header_never_in_the_url(receiver: Receiver) -> None:
    """Issue #25: ``user:password@`` in a webhook URL was accepted, never delivered (the host
    looked up included the credentials) and shown in statuses."""
    for url in ("https://user:pa55word@hooks.lan/in", "https://tok3n-abcdef@hooks.lan/in"):
        with pytest.raises(ValidationError, match=r"carries credentials.*headers") as err:
            WebhookSettings(url=url)
        assert "pa55word" not in str(err.value.errors()[0]["msg"])
        assert "tok3n-abcdef" not in str(err.value.errors()[0]["msg"])
    for headers, words in (
        ({"Bad Name": "x"}, "not an HTTP header name"),
        ({"X-Marginface-Signature": "x"}, "set by marginface"),
        ({"content-type": "text/plain"}, "set by marginface"),
        ({"Authorization": "Bearer a\r\nX-Evil: 1"}, "control character"),
    ):
        with pytest.raises(ValidationError, match=words):
            WebhookSettings(url="https://hooks.lan/in", headers=headers)
    token = "Bearer t0ken-for-the-receiver"
    settings = fast(receiver.url, headers={"Authorization": token})
    assert token not in repr(settings)
    with Webhook(settings) as hook:
        hook(visit("arrived"))
        assert hook.flush(5)
        status = hook.status()
    assert receiver.requests[0].headers["Authorization"] == token
    assert status["delivered"] == 1 and token not in str(status)


def test_webhook_counts_per_camera(receiver: Receiver) -> None:
    """Each camera's status shows its own deliveries, not the service's totals."""
    with Webhook(fast(receiver.url)) as hook:
        hook(visit("arrived", camera="front"))
        hook(visit("left", camera="front"))
        hook(visit("arrived", camera="back"))
        assert hook.flush(5)
        front, back, every = hook.status("front"), hook.status("back"), hook.status()
        assert hook.status("never seen")["delivered"] == 0
    assert (front["delivered"], back["delivered"], every["delivered"]) == (2, 1, 3)


def test_webhook_posts_signed_json(receiver: Receiver) -> None:
    with Webhook(fast(receiver.url)) as hook:
        hook(visit("arrived"))
        hook(visit("left"))
        assert hook.flush(5)
        status = hook.status()
    assert status["delivered"] == 2 and status["failed"] == 0 and status["pending"] == 0
    assert status["last_status"] == 204 and status["last_error"] is None
    assert "token" not in status["url"] and status["url"].endswith("/hooks/visits")
    first, second = receiver.requests
    payload = first.json()
    assert payload["type"] == "visit.arrived" and second.json()["type"] == "visit.left"
    assert payload["event"] == visit("arrived").to_dict()
    assert set(payload) == {"type", "event", "id", "sent_at"}
    h = first.headers
    assert h["Content-Type"] == "application/json"
    assert h["X-Marginface-Event"] == "visit.arrived"
    assert h["X-Marginface-Delivery"] == payload["id"]
    # the event's own id, by which a receiver drops a repeat (retries, a failover)
    assert h["X-Marginface-Event-Id"] == payload["event"]["event_id"] == "arrived-front door-1"
    ts, sig = h["X-Marginface-Timestamp"], h["X-Marginface-Signature"]
    assert abs(int(ts) - time.time()) < 10
    assert verify_signature(SECRET, ts, first.body, sig)
    assert not verify_signature("another secret", ts, first.body, sig)
    tampered = first.body.replace(b"Alice", b"Mallory")
    assert tampered != first.body and not verify_signature(SECRET, ts, tampered, sig)
    assert not verify_signature(SECRET, ts, first.body, sig, now=int(ts) + 301)


def test_webhook_without_secret_is_unsigned_and_filters_events(receiver: Receiver) -> None:
    with Webhook(fast(receiver.url, secret=None, events=["left", "state"])) as hook:
        hook(visit("arrived"))
        hook(visit("left"))
        hook.publish_state("front door", {"state": "running", "lag_s": 0.1})
        assert hook.flush(5)
    assert [r.json()["type"] for r in receiver.requests] == ["visit.left", "camera.state"]
    assert "X-Marginface-Signature" not in receiver.requests[0].headers
    assert receiver.requests[1].json()["state"] == {"state": "running", "lag_s": 0.1}


@pytest.mark.parametrize("code", [500, 503, 429, 408])
def test_webhook_retries_with_backoff_until_delivered(receiver: Receiver, code: int) -> None:
    receiver.fail_first, receiver.fail_status = 3, code
    with Webhook(fast(receiver.url)) as hook:
        hook(visit())
        assert wait_until(lambda: hook.status()["delivered"] == 1, 5)
        status = hook.status()
    assert (status["delivered"], status["retries"], status["failed"]) == (1, 3, 0)
    assert f"HTTP {code}" in status["last_error"] and "attempt 3/6" in status["last_error"]
    assert status["last_failure_at"] is not None
    attempts = receiver.requests
    assert len(attempts) == 4
    assert len({r.headers["X-Marginface-Delivery"] for r in attempts}) == 1  # same delivery
    assert len({r.headers["X-Marginface-Event-Id"] for r in attempts}) == 1  # same event
    assert len({r.body for r in attempts}) == 1
    for r in attempts:  # every attempt freshly signed
        assert verify_signature(
            SECRET, r.headers["X-Marginface-Timestamp"], r.body, r.headers["X-Marginface-Signature"]
        )
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    # ceilings 0.04, 0.08, 0.16 s; each wait is between half and all of its ceiling
    for gap, ceiling in zip(gaps, (0.04, 0.08, 0.16), strict=True):
        assert ceiling / 2 - 0.005 <= gap <= ceiling + 0.25


def test_webhook_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status = -1, 503
    with Webhook(fast(receiver.url, max_attempts=3)) as hook:
        hook(visit())
        assert wait_until(lambda: hook.status()["failed"] == 1, 5)
        status = hook.status()
    assert receiver.count() == 3
    assert (status["delivered"], status["retries"], status["failed"]) == (0, 2, 1)
    assert "HTTP 503" in status["last_error"] and "attempt 3/3" in status["last_error"]


def test_webhook_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status = -1, 400
    with Webhook(fast(receiver.url)) as hook:
        hook(visit())
        assert hook.flush(5)
        status = hook.status()
    assert receiver.count() == 1
    assert (status["delivered"], status["retries"], status["failed"]) == (0, 0, 1)
    assert "HTTP 400" in status["last_error"] and status["last_failure_at"]
    assert status["last_status"] == 400


def test_unreachable_webhook_never_blocks_the_camera() -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    hook = Webhook(fast(url, max_attempts=2, backoff_initial_s=0.01))
    try:
        start = time.perf_counter()
        for i in range(200):
            hook(visit(track_id=i))
        elapsed = time.perf_counter() - start
        assert elapsed < 0.2, f"200 sink calls took {elapsed:.3f} s"
        assert wait_until(lambda: hook.status()["failed"] >= 1, 5)
        status = hook.status()
        assert "refused" in status["last_error"].lower()
        assert status["last_failure_at"] is not None and status["delivered"] == 0
    finally:
        start = time.perf_counter()
        hook.close(timeout=0.3)
        assert time.perf_counter() - start < 2.0
    status = hook.status()
    assert status["pending"] == 0
    assert status["failed"] + status["dropped"] == 200


def test_webhook_queue_is_bounded_and_drops_the_oldest(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    hook = Webhook(fast(receiver.url, queue_size=3, timeout_s=5.0))
    try:
        hook(visit(track_id=0))
        assert wait_until(lambda: receiver.count() == 1, 5)  # the sender is now stuck on it
        for i in range(1, 11):
            hook(visit(track_id=i))
        status = hook.status()
        assert status["dropped"] == 7 and status["pending"] == 4
        receiver.hold.set()
        assert hook.flush(5)
    finally:
        hook.close()
    assert [r.json()["event"]["track_id"] for r in receiver.requests] == [0, 8, 9, 10]
    assert hook.status()["delivered"] == 4


def test_close_is_prompt_while_retrying() -> None:
    url = f"http://127.0.0.1:{free_port()}/down"
    hook = Webhook(fast(url, backoff_initial_s=30.0, backoff_max_s=60.0))
    hook(visit(track_id=1))
    hook(visit(track_id=2))
    assert wait_until(lambda: hook.status()["retries"] == 1, 5)
    start = time.perf_counter()
    hook.close(timeout=0.2)
    assert time.perf_counter() - start < 1.5
    assert not hook._thread.is_alive()
    hook(visit(track_id=3))  # after close: counted, not raised
    status = hook.status()
    assert status["dropped"] == 3 and status["pending"] == 0 and status["delivered"] == 0


# ----------------------------------------------------------------------------------------------
# MQTT against mosquitto
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto_broker(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


class Subscriber:
    """A paho client that records every message under ``topic``."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.seen: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "subscriber did not subscribe"

    def wait_for(
        self, topic: str, predicate: Callable[[Any], bool] = lambda p: True, timeout: float = 5.0
    ) -> mqtt.MQTTMessage:
        """The first message on ``topic`` whose decoded payload satisfies ``predicate``."""
        for m in self.seen:
            if m.topic == topic and predicate(decode(m)):
                return m
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                seen = [(x.topic, x.payload[:60]) for x in self.seen]
                raise AssertionError(f"no matching message on {topic}; got {seen}") from None
            self.seen.append(m)
            if m.topic == topic and predicate(decode(m)):
                return m

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def decode(message: mqtt.MQTTMessage) -> Any:
    try:
        return json.loads(message.payload)
    except ValueError:
        return message.payload.decode()


def test_mqtt_events_state_presence_and_availability(broker: Broker) -> None:
    prefix = "mf-test-1"
    sub = Subscriber(broker, f"{prefix}/#")
    pub = MqttPublisher(MqttSettings(host=broker.host, port=broker.port, topic_prefix=prefix))
    try:
        assert pub.wait_connected(5), pub.status()
        assert sub.wait_for(f"{prefix}/available").payload == b"online"
        cam = "front/door +#1"
        pub(visit("arrived", camera=cam, track_id=7))
        pub(visit("arrived", camera=cam, track_id=8, subject_id=None, name=None))
        pub.publish_state(cam, {"state": "running", "frames_read": 12, "lag_s": 0.2})
        base = f"{prefix}/front_door___1"
        event = decode(sub.wait_for(f"{base}/events"))
        assert event["type"] == "visit.arrived" and event["name"] == "Alice"
        assert event["camera"] == cam and event["track_id"] == 7
        assert {k: event[k] for k in visit().to_dict()} == visit(
            "arrived", camera=cam, track_id=7
        ).to_dict()
        assert decode(sub.wait_for(f"{base}/arrived"))["id"] == event["id"]
        unknown = sub.wait_for(f"{base}/events", lambda p: p["track_id"] == 8)
        assert decode(unknown)["subject_id"] is None
        person = sub.wait_for(f"{base}/person/alice")
        assert decode(person)["present"] is True and decode(person)["name"] == "Alice"
        state = sub.wait_for(f"{base}/state")
        assert decode(state)["frames_read"] == 12 and decode(state)["camera"] == cam
        pub(visit("left", camera=cam, track_id=7))
        assert decode(sub.wait_for(f"{base}/left"))["kind"] == "left"
        gone = decode(sub.wait_for(f"{base}/person/alice", lambda p: not p["present"]))
        assert gone["event"]["kind"] == "left"
        assert not any(
            m.topic.startswith(f"{base}/person/") and "None" in m.topic for m in sub.seen
        )  # unknown people have no person topic
        assert wait_until(lambda: pub.status()["published"] >= 9, 5), pub.status()
        status = pub.status()
        assert status["connected"] and status["failed"] == 0
        # per camera: this camera's nine messages (the availability topic is nobody's)
        assert wait_until(lambda: pub.status(cam)["published"] == 9, 5), pub.status(cam)
        assert pub.status()["published"] >= 10 and pub.status("another")["published"] == 0
    finally:
        pub.close()
    assert sub.wait_for(f"{prefix}/available", lambda p: p == "offline").payload == b"offline"
    assert not pub.status()["connected"]
    sub.close()


def test_mqtt_retained_topics_reach_a_late_subscriber(broker: Broker) -> None:
    prefix = "mf-test-2"
    with MqttPublisher(
        MqttSettings(host=broker.host, port=broker.port, topic_prefix=prefix)
    ) as pub:
        assert pub.wait_connected(5)
        pub(visit("arrived", camera="hall", subject_id="bob 2", name="Bob"))
        pub(visit("arrived", camera="hall", track_id=2))
        pub.publish_state("hall", {"state": "running"})
        assert wait_until(lambda: pub.status()["published"] >= 8, 5), pub.status()
        late = Subscriber(broker, f"{prefix}/#")
        try:
            for topic, expected in (
                (f"{prefix}/available", "online"),
                (f"{prefix}/hall/state", None),
                (f"{prefix}/hall/person/bob_2", None),
                (f"{prefix}/hall/person/alice", None),
            ):
                m = late.wait_for(topic)
                assert m.retain, topic
                if expected:
                    assert decode(m) == expected
            assert decode(late.wait_for(f"{prefix}/hall/state"))["state"] == "running"
            time.sleep(0.2)
            while not late.messages.empty():
                late.seen.append(late.messages.get())
            assert not any(m.topic.endswith(("/events", "/arrived")) for m in late.seen)
        finally:
            late.close()
    late = Subscriber(broker, f"{prefix}/available")
    try:
        assert late.wait_for(f"{prefix}/available").payload == b"offline"
    finally:
        late.close()


def test_mqtt_survives_the_broker_going_down(tmp_path: Path) -> None:
    prefix = "mf-test-3"
    with mosquitto_broker(tmp_path) as broker:
        pub = MqttPublisher(
            MqttSettings(
                host=broker.host,
                port=broker.port,
                topic_prefix=prefix,
                reconnect_min_s=1,
                reconnect_max_s=1,
            )
        )
        try:
            assert pub.wait_connected(5)
            broker.stop()
            assert wait_until(lambda: not pub.status()["connected"], 5)
            start = time.perf_counter()
            pub(visit("arrived", camera="gate", subject_id="carol", name="Carol"))
            pub.publish_state("gate", {"state": "reconnecting"})
            assert time.perf_counter() - start < 0.1
            status = pub.status()
            assert status["queued"] >= 1 and status["last_error"]
            broker.start()
            assert pub.wait_connected(10), pub.status()
            late = Subscriber(broker, f"{prefix}/#")
            try:  # the broker lost everything; what was queued while down arrives now
                assert late.wait_for(f"{prefix}/available").payload == b"online"
                assert decode(late.wait_for(f"{prefix}/gate/person/carol"))["present"]
                assert decode(late.wait_for(f"{prefix}/gate/state"))["state"] == "reconnecting"
                pub(visit("left", camera="gate", subject_id="carol", name="Carol"))
                assert decode(late.wait_for(f"{prefix}/gate/left"))["name"] == "Carol"
            finally:
                late.close()
            assert pub.status()["connects"] == 2 and pub.status()["disconnects"] == 1
        finally:
            pub.close()


def test_mqtt_qos0_while_down_is_counted_not_raised(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the publisher keeps retrying in the background
    pub = MqttPublisher(MqttSettings(host="127.0.0.1", port=port, qos=0))
    try:
        pub(visit())
        status = pub.status()
        assert not status["connected"] and status["failed"] >= 2
        assert wait_until(lambda: str(port) in (pub.status()["last_error"] or ""), 5), (
            pub.status()
        )  # the connection failure, with the broker's address
    finally:
        start = time.perf_counter()
        pub.close()
        assert time.perf_counter() - start < 3.0
