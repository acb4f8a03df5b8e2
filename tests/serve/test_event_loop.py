"""Blocking SQL never runs on the event loop.

The ``harness`` fixture wraps the gallery of every app it starts in a ``LoopGuard`` and fails a
test whose requests called the gallery from a thread running the loop (an ``async def`` route or
dependency calling SQL directly). These tests show that the guard sees such calls, and that a
slow gallery call in an async route leaves the service answering other requests.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings, create_app
from marginface.serve.deps import ServiceDep
from tests.serve.serve_fakes import FakePipeline, Harness, loop_guard, make_photo


def test_the_guard_sees_sql_called_on_the_event_loop(tmp_path: Path) -> None:
    app = create_app(ServeSettings(db=str(tmp_path / "g.db")), pipeline=FakePipeline())

    async def on_the_loop(service: ServiceDep) -> Any:
        return service.gallery.subjects.count()  # the mistake the guard is there to catch

    def in_a_thread(service: ServiceDep) -> Any:
        return service.gallery.subjects.count()

    app.add_api_route("/on-the-loop", on_the_loop)
    app.add_api_route("/in-a-thread", in_a_thread)
    with TestClient(app) as client, loop_guard(app) as guard:
        assert client.get("/in-a-thread").json() == 0
        assert client.get("/healthz").status_code == 200
        assert guard.violations == []
        assert client.get("/on-the-loop").json() == 0
        (violation,) = guard.violations
        assert "gallery.subjects.count()" in violation and "on_the_loop" in violation


@pytest.mark.parametrize("route", ["add_faces", "verify"])
def test_a_slow_gallery_call_does_not_stall_other_requests(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """While an async route waits for the gallery (here: whether the subject exists), the
    service still answers ``/healthz``. Were the call made on the event loop, ``/healthz``
    could only be answered after it returned."""
    assert harness.guard is not None
    sid = harness.enrol("Ada", make_photo((3, 60)))["subject"]["id"]
    subjects = harness.guard.wrapped.subjects
    exists = subjects.exists
    inside, release = threading.Event(), threading.Event()

    def slow_exists(subject_id: str) -> bool:
        inside.set()
        try:
            release.wait(timeout=10)  # bounded: a stalled loop fails the test, never hangs it
            return exists(subject_id)
        finally:
            inside.clear()

    monkeypatch.setattr(subjects, "exists", slow_exists)
    photo = ("p.png", make_photo((3, 80)), "image/png")
    request: dict[str, Any]
    if route == "add_faces":
        request = {"url": f"/v1/subjects/{sid}/faces", "files": [("photos", photo)]}
    else:
        request = {"url": "/v1/verify", "files": {"photo": photo}, "data": {"subject_id": sid}}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(harness.client.post, **request, headers=harness.headers("admin"))
        assert inside.wait(timeout=10), "the route never asked the gallery"
        health = harness.client.get("/healthz")
        answered_while_waiting = inside.is_set()
        release.set()
        answer = slow.result(timeout=30)
    assert health.status_code == 200
    assert answered_while_waiting, "/healthz waited for the gallery call of another request"
    assert answer.status_code in (200, 201), answer.text
