"""The service's cameras without the service: the manager's supervision (a crashing worker is
restarted with backoff while other cameras work), prompt shutdown, the recorder's writes,
retention and state publishing; and once, a real video through the real pipeline."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marginface.errors import DataError
from marginface.gallery import Gallery
from marginface.streams.manager import SLOW_AFTER, CameraManager, check_camera_url
from marginface.streams.recorder import VisitRecorder, logged_visit, past_visits
from marginface.streams.sources import SourcePolicy
from marginface.streams.visits import Evidence, VisitEvent
from tests.serve.serve_fakes import (
    DIM,
    QUICK,
    FakeCameraWorker,
    FakeEmbedder,
    FakePipeline,
    camera_frame,
    wait_for,
)
from tests.streams.servers import free_port, make_video

QUICK_RESTARTS = {"restart_initial_s": 0.05, "restart_max_s": 0.2, "state_every_s": 0.1}


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    card = FakeEmbedder.card
    with Gallery.open(tmp_path / "g.db", model_name=card.name, dim=DIM, card=card) as g:
        yield g


class FlakyWorkers:
    """A worker factory whose workers of camera ``bad`` crash ``crashes`` times."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.calls = 0

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> FakeCameraWorker:
        if name == "bad":
            self.calls += 1
            if self.calls <= self.crashes:
                raise RuntimeError(f"boom {self.calls}")
        return FakeCameraWorker(name, *args, **kwargs)


def pushed_and_processed(manager: CameraManager, camera_id: str, frame: bytes) -> bool:
    before = manager.status(camera_id)["frames_processed"]
    manager.push(camera_id, frame)
    time.sleep(0.05)
    return manager.status(camera_id)["frames_processed"] > before


def test_a_crashing_worker_is_restarted_and_the_others_keep_working(gallery: Gallery) -> None:
    flaky = FlakyWorkers(crashes=3)
    manager = CameraManager(gallery, FakePipeline(), worker_factory=flaky, **QUICK_RESTARTS)
    manager.start()
    try:
        good = manager.create("good", "push:", QUICK)["id"]
        bad = manager.create("bad", "push:", QUICK)["id"]
        failed = wait_for(
            lambda: manager.status(bad)["state"] == "failed" and manager.status(bad),
            what="the crash to show",
        )
        assert failed["last_error"].startswith("RuntimeError: boom")
        wait_for(
            lambda: pushed_and_processed(manager, good, camera_frame((4, 60))),
            what="the good camera processing",
        )
        wait_for(
            lambda: manager.status(bad)["state"] in ("connecting", "running"), what="the restart"
        )
        status = manager.status(bad)
        assert status["restarts"] == 3 and flaky.calls == 4
        wait_for(
            lambda: pushed_and_processed(manager, bad, camera_frame((4, 60))),
            what="the restarted camera processing",
        )
    finally:
        manager.close()


def test_close_stops_every_camera_promptly(gallery: Gallery) -> None:
    manager = CameraManager(
        gallery, FakePipeline(), worker_factory=FakeCameraWorker, **QUICK_RESTARTS
    )
    manager.start()
    for i in range(4):
        manager.create(f"c{i}", "push:", QUICK)
    threads = [r.thread for r in manager._runners.values()]
    assert len(threads) == 4 and all(t.is_alive() for t in threads)
    started = time.monotonic()
    manager.close()
    assert time.monotonic() - started < 3.0
    assert not any(t.is_alive() for t in threads)


def test_url_rules_without_connecting(tmp_path: Path) -> None:
    for good in ("push:", "rtsp://u:p@10.0.0.1:554/s?transport=udp", "http://cam/mjpg"):
        assert check_camera_url(f"  {good} ") == good
    (tmp_path / "door.mp4").write_bytes(b"x")
    policy = SourcePolicy.service(media_roots=[tmp_path], allowed_devices=["webcam:0", "2"])
    for good in (
        "webcam:0",
        "/dev/video2",
        "0",
        f"file://{tmp_path}/door.mp4",
        f"{tmp_path}/door.mp4",
        f"{tmp_path}/sub/../door.mp4",
    ):
        assert check_camera_url(f"  {good} ", policy) == good
    for bad, words in (
        ("ftp://x/y", "scheme"),
        ("rtsp://x/y?transport=quic", "transport"),
        ("http://", "host"),
        ("", "empty"),
        ("webcam:1", "not allowed"),
        (f"{tmp_path}/missing.mp4", "not found"),
    ):
        with pytest.raises(DataError, match=words):
            check_camera_url(bad, policy)
    # By default (the service's settings) no file and no webcam: only streams and push cameras.
    for local in ("webcam:0", "/dev/video0", "0", f"{tmp_path}/door.mp4"):
        with pytest.raises(DataError, match="not allowed"):
            check_camera_url(local)


def _event(kind: str, subject: str | None, *, evidence: int = 0, visit: int = 1) -> VisitEvent:
    now = datetime.now(UTC)
    faces = []
    for i in range(evidence):
        emb = np.zeros(DIM, np.float32)
        emb[14] = 1.0
        emb[20 + i] = 0.2
        faces.append(
            Evidence(
                0.9 - 0.1 * i, emb / np.linalg.norm(emb), np.full((112, 112, 3), 40 * i, np.uint8)
            )
        )
    return VisitEvent(
        kind,
        "door",
        7,
        visit,
        subject,
        "Ada" if subject else None,
        0.8,
        0.5,
        1.0,
        4.5,
        3,
        now - timedelta(seconds=3.5),
        now,
        tuple(faces),
    )


@pytest.mark.parametrize("store_crops", [False, True])
def test_recorder_writes_visits_and_strangers(gallery: Gallery, store_crops: bool) -> None:
    emb = np.zeros((1, DIM), np.float32)
    emb[0, 3] = 1.0
    ada = gallery.subjects.create("Ada", embeddings=emb)
    recorder = VisitRecorder(gallery, store_crops=store_crops)
    for event in (_event("arrived", ada.id), _event("left", ada.id)):
        recorder(event)
    recorder(_event("arrived", None, visit=2))
    recorder(_event("left", None, evidence=3, visit=2))

    events = sorted(gallery.events.list(source="door"), key=lambda e: e.id)
    assert [(e.decision, e.subject_id) for e in events] == [
        ("arrived", ada.id),
        ("left", ada.id),
        ("arrived", None),
        ("left", None),
    ]
    stranger_left = events[3]
    visitor_id = stranger_left.details["visitor_id"]
    assert recorder.visitor_of("door", 2) == visitor_id
    assert stranger_left.details["kind"] == "visit" and stranger_left.details["faces"] == 3
    assert stranger_left.details["dwell_s"] == 3.5
    assert abs((events[1].time - events[0].time).total_seconds() - 3.5) < 0.01  # first, last seen
    visitor = gallery.visitors.get(visitor_id)
    assert visitor.status == "pending" and visitor.cameras == ["door"] and visitor.faces
    assert all(f.has_crop == store_crops for f in visitor.faces)
    assert recorder.status() == {
        "events": 4,
        "strangers": 1,
        "failed": 0,
        "fenced": 0,
        "last_error": None,
    }
    assert [r.subject_id for r in gallery.events.attendance()] == [ada.id]


def test_recorder_never_raises_into_the_camera(gallery: Gallery) -> None:
    recorder = VisitRecorder(gallery)
    gallery.close()
    recorder(_event("arrived", None))
    status = recorder.status()
    assert status["failed"] == 1 and status["last_error"]


class FakeNotifier:
    kind = "fake"
    retains_state = False

    def __init__(self, name: str = "FakeNotifier") -> None:
        self.states: list[tuple[str, str]] = []
        self.published: list[dict] = []
        self.events: list[VisitEvent] = []
        self.closed = False

    def __call__(self, event: VisitEvent) -> None:
        self.events.append(event)

    def publish_state(self, camera: str, status: dict) -> None:
        self.states.append((camera, status["state"]))
        self.published.append(dict(status))

    def status(self, camera: str | None = None) -> dict:
        sent = [e for e in self.events if camera is None or e.camera == camera]
        return {"sent": len(sent), "last_error": None}

    def close(self) -> None:
        self.closed = True


def test_states_published_and_old_data_purged(gallery: Gallery) -> None:
    notifier = FakeNotifier()
    manager = CameraManager(
        gallery,
        FakePipeline(),
        worker_factory=FakeCameraWorker,
        notifiers=[notifier],
        retention_days=30,
        **QUICK_RESTARTS,
    )
    manager.start()
    try:
        cam = manager.create("door", "push:", QUICK)["id"]
        wait_for(
            lambda: (
                ("door", "connecting") in notifier.states or ("door", "running") in notifier.states
            ),
            what="a state published",
        )
        manager.push(cam, camera_frame((4, 60)))
        wait_for(lambda: ("door", "running") in notifier.states, what="running published")
        time.sleep(0.3)
        assert notifier.states.count(("door", "running")) == 1  # only when it changes
        kinds = [n["kind"] for n in manager.status(cam)["notifications"]]
        assert kinds == ["gallery", "fake"]

        old = datetime.now(UTC) - timedelta(days=40)
        gallery.events.log(
            "door", subject_id=None, score=0.1, decision="left", time=old, details={"kind": "visit"}
        )
        gallery.events.log("api", subject_id=None, score=0.1, decision="unknown", time=old)
        purged = manager.purge()
        assert purged is not None and purged["result"]["events"] == 1
        assert [e.source for e in gallery.events.list()] == ["api"]
    finally:
        manager.close()
    assert notifier.closed


def test_a_real_video_through_the_real_pipeline(
    scene_videos: Any, enrolled_gallery: Gallery, default_pipeline: Any
) -> None:
    """A file camera: the real source, worker and recorder; one visit, the right name."""
    path, expected = scene_videos["single"]
    policy = SourcePolicy.service(media_roots=[path.parent])
    manager = CameraManager(enrolled_gallery, default_pipeline, source_policy=policy)
    manager.start()
    try:
        cam = manager.create("door", str(path))["id"]
        wait_for(
            lambda: manager.status(cam)["state"] == "ended", timeout=60, what="the video to end"
        )
        visits = manager.recent_visits(cam)
        assert [(v["kind"], v["name"]) for v in visits] == [
            ("left", expected[0]["identity"]),
            ("arrived", expected[0]["identity"]),
        ]
        assert manager.status(cam)["frames_processed"] >= 30
        assert manager.snapshot(cam)[:2] == b"\xff\xd8"
    finally:
        manager.close()
    assert threading.active_count() < 50


class FrameLog:
    """A worker factory whose workers note the presentation time of every frame they get and
    record a visit (through the camera's sinks) at frame ``event_at``; a worker sets ``paused``
    after ``pause_after`` frames and waits there for the camera to stop."""

    def __init__(self, gallery: Gallery, *, event_at: int = 0, pause_after: int = 0) -> None:
        self.gallery = gallery
        self.event_at = event_at
        self.pause_after = pause_after
        self.times: list[float] = []
        self.position_after_event: float | None = None
        self.paused = threading.Event()

    def __call__(self, name: str, *args: Any, sinks: Any = (), **kwargs: Any) -> Any:
        log = self

        class Worker:
            def run(self, source: Any, stop: threading.Event) -> None:
                while not stop.is_set():
                    frame = source.read(timeout=0.1)
                    if frame is None:
                        if source.status().state in ("ended", "failed", "stopped"):
                            return
                        continue
                    log.times.append(frame.t)
                    if len(log.times) == log.event_at:
                        for sink in sinks:
                            sink(_event("arrived", None))
                        cam = log.gallery.cameras.get(name)
                        log.position_after_event = log.gallery.cameras.position(cam.id)
                    if len(log.times) == log.pause_after:
                        log.paused.set()
                        stop.wait(30)

            def status(self) -> dict[str, Any]:
                return {"frames_processed": len(log.times)}

            def latest_annotated(self, *, names: bool = True) -> None:
                return None

        return Worker()


def test_a_file_camera_goes_on_where_it_stopped(gallery: Gallery, tmp_path: Path) -> None:
    """Issue #25: a file camera replayed its whole file at every restart of the service (after
    three restarts, attendance count 3 and 25 arrivals from one file)."""
    clip = make_video(tmp_path / "door.mp4", seconds=4)
    policy = SourcePolicy.service(media_roots=[tmp_path])

    def manager(log: FrameLog) -> CameraManager:
        m = CameraManager(
            gallery, FakePipeline(), source_policy=policy, worker_factory=log, **QUICK_RESTARTS
        )
        m.start()
        return m

    first = FrameLog(gallery, event_at=3, pause_after=8)
    m = manager(first)
    try:
        cam = m.create("door", str(clip), {"fps": 5})["id"]
        assert first.paused.wait(30), "the worker never reached its pause"
        # the recorded visit moved the position past its frame (and the frames not due after
        # it): a crash now does not process that frame again
        position = first.position_after_event
        assert position is not None and first.times[2] <= position < first.times[3]
        m.stop_camera(cam)  # as the service stopping: where it stopped is kept
        stopped = gallery.cameras.position(cam)
        assert stopped is not None and first.times[-1] <= stopped < first.times[-1] + 0.2
    finally:
        m.close()
    second = FrameLog(gallery)
    m = manager(second)
    try:
        m.start_camera(cam)
        wait_for(lambda: m.status(cam)["state"] == "ended", timeout=30, what="the file's end")
    finally:
        m.close()
    assert second.times and second.times[0] > first.times[-1]  # nothing read twice
    assert second.times[-1] >= 3.7  # to the end of the 4 s file
    third = FrameLog(gallery)
    m = manager(third)  # a restart after the end: nothing to replay
    try:
        wait_for(lambda: m.status(cam)["state"] == "ended", timeout=30, what="ended at once")
    finally:
        m.close()
    assert third.times == []
    assert len([e for e in gallery.events.list(source="door") if e.decision == "arrived"]) == 1
    # another file under the same camera is read from its start
    other = make_video(tmp_path / "other.mp4", seconds=1)
    gallery.cameras.update(cam, url=str(other))
    assert gallery.cameras.position(cam) is None


def test_a_camera_failing_the_same_way_retries_slowly_and_logs_once(
    gallery: Gallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #25: a failed file camera was restarted forever, with a traceback logged every
    minute."""
    notes = tmp_path / "notes.mp4"
    notes.write_text("these are not frames\n" * 50)
    m = CameraManager(
        gallery,
        FakePipeline(),
        source_policy=SourcePolicy.service(media_roots=[tmp_path]),
        worker_factory=FakeCameraWorker,
        restart_initial_s=0.01,
        restart_max_s=0.02,
        restart_slow_s=0.3,
        state_every_s=0.1,
    )
    m.start()
    caplog.set_level("INFO", logger="marginface.streams.manager")
    try:
        cam = m.create("notes", str(notes))["id"]
        status = wait_for(
            lambda: m.status(cam)["restarts"] >= SLOW_AFTER + 2 and m.status(cam),
            timeout=30,
            what="several restarts",
        )
    finally:
        m.close()
    assert status["state"] == "failed" and "notes.mp4" in status["last_error"]
    lines = [r for r in caplog.records if "'notes'" in r.getMessage()]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"], [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in lines)  # a state, not a crash: no traceback
    assert "failed the same way" in lines[1].getMessage()


def test_each_camera_counts_its_own_notifications(gallery: Gallery) -> None:
    notifier = FakeNotifier()
    m = CameraManager(
        gallery,
        FakePipeline(),
        worker_factory=FakeCameraWorker,
        notifiers=[notifier],
        **QUICK_RESTARTS,
    )
    m.start()
    try:
        door = m.create("door", "push:", QUICK)["id"]
        hall = m.create("hall", "push:", QUICK)["id"]
        wait_for(lambda: m.status(door)["running"], what="the camera to run")
        for frame in (camera_frame((4, 60)), camera_frame((4, 70)), camera_frame()):
            wait_for(lambda f=frame: pushed_and_processed(m, door, f), what="a processed frame")
        wait_for(lambda: m.status(door)["notifications"][0]["events"] == 2, what="2 events")
        door_gallery, door_fake = m.status(door)["notifications"]
        hall_gallery, hall_fake = m.status(hall)["notifications"]
    finally:
        m.close()
    assert (door_gallery["events"], door_fake["sent"]) == (2, 2)
    assert (hall_gallery["events"], hall_fake["sent"]) == (0, 0)


def test_a_token_in_a_camera_url_is_never_shown(gallery: Gallery) -> None:
    """Issue #25: a token given as an RTSP user name (rtsp://TOKEN@host/...) was shown to the
    recognise role and in MQTT's retained state."""
    token = "tok3n-0123456789abcdef"
    notifier = FakeNotifier()
    m = CameraManager(gallery, FakePipeline(), notifiers=[notifier], **QUICK_RESTARTS)
    m.start()
    try:
        url = f"rtsp://{token}@127.0.0.1:{free_port()}/live"
        cam = m.create("gate", url)
        assert cam["url"] == url.replace(token, "***")
        wait_for(
            lambda: m.status(cam["id"])["last_error"] and notifier.published,
            timeout=15,
            what="an error and a published state",
        )
        shown = [m.get(cam["id"]), m.list_cameras(), m.statuses(), notifier.published]
    finally:
        m.close()
    assert token not in str(shown)


def test_recorded_visits_read_back_for_a_take_over(gallery: Gallery) -> None:
    """What a node taking a camera over reads from the gallery: the recorded events, as the
    notifiers got them (the same event ids), and the recent visits to continue."""
    emb = np.zeros((1, DIM), np.float32)
    emb[0, 3] = 1.0
    ada = gallery.subjects.create("Ada", embeddings=emb)
    recorder = VisitRecorder(gallery)
    made = [
        dataclasses.replace(_event("arrived", ada.id, visit=1, evidence=1), uid="v1"),
        dataclasses.replace(_event("arrived", None, visit=2, evidence=3), uid="v2"),
        dataclasses.replace(_event("left", None, visit=2, evidence=3), uid="v2"),
    ]
    ids = [recorder.record(e) for e in made]
    for event, record_id in zip(made, ids, strict=True):
        again = logged_visit(gallery.events.get(record_id))
        assert again is not None and again.record_id == record_id
        assert again.to_dict() == event.to_dict()  # its event_id included
    visits = {v.uid: v for v in past_visits(gallery, "door", 60.0)}
    assert set(visits) == {"v1", "v2"}
    assert visits["v1"].subject_id == ada.id and not visits["v1"].ended
    assert visits["v2"].ended and visits["v2"].subject_id is None
    assert len(visits["v2"].faces) == 3  # the stranger's visitor's faces: known again
    assert past_visits(gallery, "door", 0.0) == []  # all older than the window
