"""Helpers for the service tests: a fast fake face pipeline, photos and a test harness.

The fake pipeline treats every saturated coloured square in a photo as a face; the square's
hue is the person and its size varies the embedding a little, so photos behave like real
ones (same person: high cosine, other people: low) at a fraction of the cost.
"""

from __future__ import annotations

import asyncio
import functools
import io
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from marginface.card import Calibration, ModelCard
from marginface.serve import ServeSettings
from tests.impostor_tables import log_linear_tail

DIM = 32
N_PEOPLE = 18  # hue buckets of 10 (OpenCV hue range 0..180)
THRESHOLD = 0.5


@dataclass
class FakeFace:
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray
    image_shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)


class FakeEmbedder:
    name = "fake-colour"
    embedding_dim = DIM
    card = ModelCard(
        name="fake-colour",
        architecture="onnx",
        embedding_dim=DIM,
        format="onnx",
        weights="none.onnx",
        calibration=Calibration(thresholds={"1e-3": THRESHOLD}),
        impostors=log_linear_tail(THRESHOLD),
    )


class FakePipeline:
    """Coloured squares are faces; hue bucket = identity."""

    selection = "all"

    def __init__(self, delay: float = 0.0) -> None:
        self.embedder = FakeEmbedder()
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def embed_image(self, image: object) -> list[FakeFace]:
        import cv2

        from marginface.align import read_image

        with self._lock:
            self.calls += 1
        rgb = read_image(image)  # type: ignore[arg-type]
        if self.delay:
            time.sleep(self.delay)
        sat = rgb.max(axis=2).astype(int) - rgb.min(axis=2).astype(int)
        mask = (sat > 60).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        faces = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < 100:
                continue
            colour = rgb[y + h // 2, x + w // 2].astype(np.uint8).reshape(1, 1, 3)
            hue = int(cv2.cvtColor(colour, cv2.COLOR_RGB2HSV)[0, 0, 0])
            person = round(hue / 10) % N_PEOPLE
            emb = np.zeros(DIM, np.float32)
            emb[person] = 1.0
            emb[N_PEOPLE + (w // 10) % (DIM - N_PEOPLE)] = 0.5
            emb /= np.linalg.norm(emb)
            box = np.array([x, y, x + w, y + h], np.float32)
            cx, cy = x + w / 2, y + h / 2
            landmarks = np.array(
                [
                    [cx - w / 4, cy - h / 6],
                    [cx + w / 4, cy - h / 6],
                    [cx, cy],
                    [cx - w / 5, cy + h / 4],
                    [cx + w / 5, cy + h / 4],
                ],
                np.float32,
            )
            crop = np.zeros((112, 112, 3), np.uint8)
            faces.append(FakeFace(box, 0.99, landmarks, crop, emb, (rgb.shape[0], rgb.shape[1])))
        return faces


def hue_rgb(person: int) -> tuple[int, int, int]:
    """The RGB colour of ``person`` (0..17)."""
    import cv2

    hsv = np.array([[[person * 10, 230, 220]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])  # type: ignore


def make_photo(
    *faces: tuple[int, int], size: tuple[int, int] = (240, 200), fmt: str = "PNG"
) -> bytes:
    """A photo with one square per ``(person, side)``, laid out left to right."""
    w, h = size
    img = Image.new("RGB", (w, h), (128, 128, 128))
    x = 10
    for person, side in faces:
        img.paste(hue_rgb(person), (x, 20, x + side, 20 + side))
        x += side + 15
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(app: Any, port: int, **config: Any) -> Iterator[str]:
    """``app`` under a real uvicorn server on the loopback, in a thread; yields its URL and
    stops it on exit."""
    import uvicorn

    options = {"log_level": "warning", "access_log": False, **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


#: The gallery's parts (``gallery.subjects`` ...), whose methods are guarded as the gallery's.
GALLERY_PARTS = ("subjects", "events", "keys", "cameras", "visitors")


class LoopGuard:
    """A gallery proxy that records every method called on a thread running an event loop,
    the methods of the gallery's parts (``gallery.subjects.get(...)`` ...) included.

    SQL blocks: called from ``async def`` code it would stall every request the service is
    serving. Sync routes and dependencies run in FastAPI's threadpool and photo work on the
    service's executor, neither of which runs a loop, so in a correct service ``violations``
    stays empty.
    """

    def __init__(
        self, gallery: Any, *, name: str = "gallery", violations: list[str] | None = None
    ) -> None:
        self.wrapped = gallery
        self.name = name
        self.violations: list[str] = [] if violations is None else violations

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if not callable(value):
            if self.name == "gallery" and name in GALLERY_PARTS:
                return LoopGuard(value, name=f"gallery.{name}", violations=self.violations)
            return value

        @functools.wraps(value)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop in this thread: a worker thread, or the test itself
            else:
                callers = traceback.extract_stack(limit=4)[-2::-1]
                where = " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in callers)
                self.violations.append(f"{self.name}.{name}() ran on the event loop, in {where}")
            return value(*args, **kwargs)

        return guarded


@contextmanager
def loop_guard(app: Any) -> Iterator[LoopGuard]:
    """Guard the started ``app``'s gallery (as the routes and the recogniser see it) with a
    :class:`LoopGuard` until the block ends; startup and shutdown are not guarded."""
    service = app.state.service
    gallery = service.gallery
    guard = LoopGuard(gallery)
    service.gallery = service.recognizer.gallery = guard
    try:
        yield guard
    finally:
        service.gallery = service.recognizer.gallery = gallery


@dataclass
class Harness:
    client: TestClient
    settings: ServeSettings
    pipeline: FakePipeline
    keys: dict[str, str]  # role -> secret
    guard: LoopGuard | None = None

    def headers(self, role: str | None) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]} if role else {}

    def enrol(self, name: str, *photos: bytes, role: str = "admin") -> dict:
        files = [("photos", (f"p{i}.png", p, "image/png")) for i, p in enumerate(photos)]
        r = self.client.post(
            "/v1/enroll", data={"name": name}, files=files, headers=self.headers(role)
        )
        assert r.status_code == 201, r.text
        return r.json()


# -- cameras ----------------------------------------------------------------------------------
class FakeCameraWorker:
    """Stands in for ``marginface.streams.camera.CameraWorker`` with the fake pipeline: each
    coloured square is a face and its colour (person) is its track; a person missing from a
    processed frame ends the track. Decisions are the real ``VisitTracker``'s, so events, the
    recorder and the review queue are the real ones, at a fraction of a real camera's cost."""

    def __init__(
        self,
        name: str,
        pipeline: FakePipeline,
        gallery: Any,
        settings: Any,
        *,
        sinks: Any = (),
        policy: Any = None,
    ) -> None:
        from marginface.streams.visits import VisitSettings, VisitTracker

        visits = getattr(settings, "visits", None) or VisitSettings(min_faces=2, max_faces=3)
        self.name = name
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.visits = VisitTracker(gallery, name, visits, policy=policy)
        self.processed = 0
        self.arrived = 0
        self._open: dict[int, int] = {}  # person -> track id
        self._next_track = 1
        self._latest: np.ndarray | None = None
        self._last: tuple[float, float] | None = None  # (frame t, monotonic) of the latest
        self.names_drawn: bool | None = None  # what the latest snapshot was asked to draw
        self._lock = threading.Lock()

    def _emit(self, events: list[Any]) -> None:
        for event in events:
            if event.kind == "arrived":
                self.arrived += 1
            for sink in self.sinks:
                sink(event)

    def process(self, frame: Any) -> None:
        from marginface.align.quality import FaceQuality

        faces = self.pipeline.embed_image(frame.image)
        seen = set()
        annotated = frame.image.copy()
        for face in faces:
            person = int(np.argmax(face.embedding[:N_PEOPLE]))
            seen.add(person)
            track = self._open.get(person)
            if track is None:
                track = self._open[person] = self._next_track
                self._next_track += 1
            x1, y1, x2, _ = (int(v) for v in face.box)
            quality = FaceQuality(
                size=float(x2 - x1), detection_score=0.99, sharpness=500.0, yaw=0.0, pitch=0.5
            )
            crop = np.full((112, 112, 3), hue_rgb(person), np.uint8)
            self._emit(
                self.visits.observe(
                    track, frame.t, quality, face.embedding, crop=crop, wall=frame.wall
                )
            )
            annotated[y1 : y1 + 2, x1:x2] = 255
        for person in [p for p in self._open if p not in seen]:
            self._emit(self.visits.end(self._open.pop(person)))
        self._emit(self.visits.flush(frame.t))
        self._last = (frame.t, time.monotonic())
        with self._lock:
            self.processed += 1
            self._latest = annotated

    def finish(self) -> None:
        for person in list(self._open):
            self._emit(self.visits.end(self._open.pop(person), "closed"))
        self._emit(self.visits.close())

    def run(self, source: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            frame = source.read(timeout=0.05)
            if frame is None:
                if source.status().state in ("ended", "failed", "stopped"):
                    self.finish()
                    return
                if self._last is not None:  # no frame: time still passes (left events)
                    self._emit(self.visits.flush(self._last[0] + time.monotonic() - self._last[1]))
                continue
            self.process(frame)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "frames_processed": self.processed,
                "tracks_open": len(self._open),
                "visits": self.arrived,
                "processing_fps": 0.0,
            }

    def latest_annotated(self, *, names: bool = True) -> np.ndarray | None:
        with self._lock:
            self.names_drawn = names
            return self._latest


#: create_app's camera_options for tests: the fake worker, quick restarts and state updates.
FAKE_CAMERAS: dict[str, Any] = {
    "worker_factory": FakeCameraWorker,
    "restart_initial_s": 0.05,
    "restart_max_s": 0.2,
    "state_every_s": 0.2,
}


def camera_frame(*faces: tuple[int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG frame for a push camera, one square per ``(person, side)``."""
    return make_photo(*faces, size=size, fmt="JPEG")


#: Camera settings for quick tests: frames due every 20 ms, a decision after two faces.
QUICK: dict[str, Any] = {"fps": 50, "visits": {"min_faces": 2, "max_faces": 3}}


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def add_camera(h: Harness, name: str = "door", url: str = "push:", **body: Any) -> dict:
    r = h.client.post(
        "/v1/cameras", json={"name": name, "url": url, **body}, headers=h.headers("admin")
    )
    assert r.status_code == 201, r.text
    return r.json()


def camera(h: Harness, camera_id: str) -> dict:
    r = h.client.get(f"/v1/cameras/{camera_id}", headers=h.headers("recognise"))
    assert r.status_code == 200, r.text
    return r.json()


def push(h: Harness, camera_id: str, data: bytes, role: str = "enrol", **kw: Any) -> Any:
    headers = {**h.headers(role), "Content-Type": "image/jpeg"}
    return h.client.post(f"/v1/cameras/{camera_id}/frames", content=data, headers=headers, **kw)


def push_until_processed(h: Harness, camera_id: str, data: bytes) -> None:
    """Push one frame and wait until the worker has processed it (a live source keeps only
    the latest frame: frames pushed faster than processed are dropped)."""
    before = camera(h, camera_id)["status"]["frames_processed"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # A frame pushed sooner than 1/fps after the previous one is not due: push again.
        assert push(h, camera_id, data).status_code == 202
        for _ in range(15):
            if camera(h, camera_id)["status"]["frames_processed"] > before:
                return
            time.sleep(0.02)
    raise AssertionError("the pushed frame was never processed")


def seed_visitor(h: Harness, person: int, *, crops: bool = True) -> dict[str, Any]:
    """A pending visitor straight into the gallery (what the recorder writes for a stranger's
    visit): two faces of the fake pipeline's ``person``."""
    gallery = h.client.app.state.service.cameras.gallery
    emb = np.zeros((2, DIM), np.float32)
    emb[:, person] = 1.0
    emb[1, 20] = 0.3
    crop = np.full((112, 112, 3), hue_rgb(person), np.uint8)
    now = datetime.now(UTC)
    sighting = gallery.visitors.record(
        "door",
        now - timedelta(seconds=5),
        now,
        emb,
        [0.9, 0.8],
        [crop, crop] if crops else None,
    )
    return gallery.visitors.get(sighting.visitor_id).to_dict()
