"""``/v1/cameras`` and ``/v1/visits``: roles on every route, configuration and its validation,
passwords never shown, start/stop and status, a push camera end to end (visits, snapshot,
attendance, metrics), restarts with the service, and one camera's failure beside another's work.

Cameras run the fake camera worker (``serve_fakes.FakeCameraWorker``: the fake pipeline's
coloured squares are faces, decided by the real ``VisitTracker`` and recorded by the real
recorder); the sources are the real ones (``push:``, and RTSP for the unreachable camera).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings
from tests.serve.conftest import started_harness
from tests.serve.serve_fakes import (
    FAKE_CAMERAS,
    QUICK,
    Harness,
    add_camera,
    camera,
    camera_frame,
    free_port,
    make_photo,
    push,
    push_until_processed,
    wait_for,
)
from tests.streams.servers import LOCAL_SOURCES, huge_jpeg

SECRET = "pa55-w0rd-xyz"


# -- roles ------------------------------------------------------------------------------------
ROUTES: list[tuple[str, str, str, int]] = [
    # (method, path template, least role, status when allowed)
    ("POST", "/v1/cameras", "admin", 201),
    ("GET", "/v1/cameras", "recognise", 200),
    ("GET", "/v1/cameras/{camera_id}", "recognise", 200),
    ("PATCH", "/v1/cameras/{camera_id}", "admin", 200),
    ("DELETE", "/v1/cameras/{camera_id}", "admin", 204),
    ("POST", "/v1/cameras/{camera_id}/start", "admin", 200),
    ("POST", "/v1/cameras/{camera_id}/stop", "admin", 200),
    ("POST", "/v1/cameras/{camera_id}/frames", "enrol", 202),
    ("GET", "/v1/cameras/{camera_id}/snapshot.jpg", "recognise", 200),
    ("GET", "/v1/cameras/{camera_id}/visits", "recognise", 200),
    ("GET", "/v1/visits", "recognise", 200),
    ("GET", "/v1/visits/{event_id}/face.jpg", "enrol", 200),
]
RANK = {"recognise": 0, "enrol": 1, "admin": 2}


def test_route_table_covers_every_camera_route(camera_harness: Harness) -> None:
    paths = camera_harness.client.get("/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path)
        for path, ops in paths.items()
        if path.startswith(("/v1/cameras", "/v1/visits"))
        for method in ops
    }
    assert routes == {(m, p) for m, p, *_ in ROUTES}


def test_roles_on_every_camera_route(camera_harness: Harness) -> None:
    h = camera_harness
    frame = camera_frame((4, 60))
    for n, (method, template, least, ok) in enumerate(ROUTES):
        for caller in (None, "wrong", "recognise", "enrol", "admin"):
            cam = add_camera(h, f"cam {n} {caller}")
            if template.endswith("snapshot.jpg"):
                push_until_processed(h, cam["id"], frame)
            event_id = 0
            if "{event_id}" in template:

                def face_kept(cid: str = cam["id"]) -> int:
                    push_until_processed(h, cid, frame)
                    visits = h.client.get(
                        f"/v1/cameras/{cid}/visits", headers=h.headers("admin")
                    ).json()
                    return next((v["id"] for v in visits["visits"] if v["face"]), 0)

                event_id = wait_for(face_kept, what="a visit with a face")
            kw: dict[str, Any] = {}
            if method == "POST" and template == "/v1/cameras":
                kw["json"] = {"name": f"new {n} {caller}", "url": "push:"}
            elif method == "PATCH":
                kw["json"] = {"settings": {"fps": 2}}
            elif template.endswith("/frames"):
                kw = {"content": frame, "headers": {"Content-Type": "image/jpeg"}}
            headers = dict(kw.pop("headers", {}))
            if caller == "wrong":
                headers["X-API-Key"] = "mfk_000000000000_not-a-real-key"
            elif caller:
                headers.update(h.headers(caller))
            url = template.format(camera_id=cam["id"], event_id=event_id)
            r = h.client.request(method, url, headers=headers, **kw)
            if caller in (None, "wrong"):
                expected = 401
            elif RANK[caller] < RANK[least]:
                expected = 403
            else:
                expected = ok
            assert r.status_code == expected, (method, template, caller, r.text)
            if expected >= 400:
                assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
            for listed in h.client.get("/v1/cameras", headers=h.headers("admin")).json()["cameras"]:
                h.client.delete(f"/v1/cameras/{listed['id']}", headers=h.headers("admin"))


# -- configuration ----------------------------------------------------------------------------
def test_crud_validation_and_redaction(camera_harness: Harness) -> None:
    h = camera_harness
    c, admin = h.client, h.headers("admin")
    url = f"rtsp://viewer:{SECRET}@127.0.0.1:{free_port()}/stream?transport=tcp"
    created = add_camera(h, "Gate", url, settings={"fps": 2}, enabled=False)
    assert created["url"] == url.replace(f":{SECRET}@", ":***@")
    assert SECRET not in str(created) and "***" in created["url"]
    assert created["settings"] == {"fps": 2} and created["enabled"] is False
    assert created["status"]["state"] == "stopped" and created["push"] is False

    listed = c.get("/v1/cameras", headers=h.headers("recognise")).json()
    assert listed["total"] == 1 and listed["cameras"][0]["id"] == created["id"]

    r = c.patch(f"/v1/cameras/{created['id']}", json={"name": "Gate 2"}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "Gate 2"
    assert SECRET not in r.text

    # Validation: each refusal is a 422 that names the problem; nothing is stored.
    for body, words in [
        ({"name": "x", "url": "ftp://example.com/cam"}, "scheme"),
        ({"name": "x", "url": "rtsp://h/x?transport=sctp"}, "transport"),
        ({"name": "x", "url": "rtsp:///nohost"}, "host"),
        ({"name": "x", "url": "push:", "settings": {"fps": -1}}, "fps"),
        ({"name": "x", "url": "push:", "settings": {"fps": "fast"}}, "fps"),
        ({"name": "x", "url": "push:", "settings": {"colour": "red"}}, "colour"),
        ({"name": "x", "url": "push:", "settings": {"visits": {"min_faces": 0}}}, "min_faces"),
        ({"name": "", "url": "push:"}, "name"),
        ({"name": "x", "url": ""}, "url"),
        ({"name": "x", "url": "push:", "password": "x"}, "password"),
    ]:
        r = c.post("/v1/cameras", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["error"]["message"], (body, r.text)
    r = c.patch(f"/v1/cameras/{created['id']}", json={"url": "gopher://x"}, headers=admin)
    assert r.status_code == 422
    r = c.patch(f"/v1/cameras/{created['id']}", json={"settings": {"fps": 0}}, headers=admin)
    assert r.status_code == 422 and "fps" in r.json()["error"]["message"]

    # Conflicts and unknown ids.
    add_camera(h, "Hall")
    r = c.post("/v1/cameras", json={"name": "Hall", "url": "push:"}, headers=admin)
    assert r.status_code == 409
    r = c.patch(f"/v1/cameras/{created['id']}", json={"name": "Hall"}, headers=admin)
    assert r.status_code == 409
    for method in ("GET", "PATCH", "DELETE"):
        r = c.request(method, "/v1/cameras/nope", json={}, headers=admin)
        assert r.status_code == 404 and r.json()["error"]["code"] == "camera_not_found"
    # The API finds cameras by id only (names may hold any character).
    assert c.get("/v1/cameras/Hall", headers=admin).status_code == 404

    assert c.delete(f"/v1/cameras/{created['id']}", headers=admin).status_code == 204
    assert c.get(f"/v1/cameras/{created['id']}", headers=admin).status_code == 404
    assert c.get("/v1/cameras", headers=admin).json()["total"] == 1


def test_start_stop_and_status(camera_harness: Harness) -> None:
    h = camera_harness
    admin = h.headers("admin")
    cam = add_camera(h, "door", "push:", enabled=False)
    cid = cam["id"]
    assert cam["status"]["state"] == "stopped" and not cam["status"]["running"]
    assert push(h, cid, camera_frame((4, 60))).status_code == 409  # not running

    r = h.client.post(f"/v1/cameras/{cid}/start", headers=admin)
    assert r.status_code == 200 and r.json()["enabled"] is True
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")
    push_until_processed(h, cid, camera_frame((4, 60)))
    status = camera(h, cid)["status"]
    assert status["state"] == "running" and status["frames_read"] >= 1
    assert status["width"] == 320 and status["height"] == 240
    assert {n["kind"] for n in status["notifications"]} == {"gallery"}

    r = h.client.post(f"/v1/cameras/{cid}/stop", headers=admin)
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert r.json()["status"]["state"] == "stopped"
    assert push(h, cid, camera_frame((4, 60))).status_code == 409
    assert h.client.post("/v1/cameras/nope/start", headers=admin).status_code == 404


def test_push_frames_bad_input(camera_harness: Harness) -> None:
    h = camera_harness
    cam = add_camera(h, "door")
    cid = cam["id"]
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")
    r = push(h, cid, b"\xff\xd8 not a jpeg")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_frame"
    assert push(h, cid, b"").status_code == 422
    assert camera(h, cid)["status"]["frames_corrupt"] == 1
    r = h.client.post(
        f"/v1/cameras/{cid}/frames",
        content=b"{}",
        headers={**h.headers("enrol"), "Content-Type": "application/json"},
    )
    assert r.status_code == 415
    # A multipart form with the frame in `frame` works too.
    r = h.client.post(
        f"/v1/cameras/{cid}/frames",
        headers=h.headers("enrol"),
        files={"frame": ("f.jpg", camera_frame((4, 60)), "image/jpeg")},
    )
    assert r.status_code == 202 and r.json()["accepted"] is True
    r = h.client.post(
        f"/v1/cameras/{cid}/frames",
        headers=h.headers("enrol"),
        files={"other": ("f.jpg", camera_frame((4, 60)), "image/jpeg")},
    )
    assert r.status_code == 422
    assert push(h, "nope", camera_frame((4, 60))).status_code == 404
    # Frames go to push cameras only.
    other = add_camera(h, "rtsp cam", f"rtsp://127.0.0.1:{free_port()}/x", enabled=False)
    r = push(h, other["id"], camera_frame((4, 60)))
    assert r.status_code == 409 and "push" in r.json()["error"]["message"]
    # Still alive and well.
    push_until_processed(h, cid, camera_frame((4, 60)))


def test_push_camera_end_to_end(camera_harness: Harness) -> None:
    h = camera_harness
    ada = h.enrol("Ada", make_photo((3, 60)), make_photo((3, 90)))["subject"]
    cam = add_camera(h, "front door", settings=QUICK)
    cid = cam["id"]
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")

    r = h.client.get(f"/v1/cameras/{cid}/snapshot.jpg", headers=h.headers("recognise"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_frame"

    for side in (60, 70, 80):
        push_until_processed(h, cid, camera_frame((3, side)))
    r = h.client.get(f"/v1/cameras/{cid}/snapshot.jpg", headers=h.headers("recognise"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    assert camera(h, cid)["status"]["tracks_open"] == 1
    push_until_processed(h, cid, camera_frame())  # Ada has gone

    def both() -> list[dict]:
        r = h.client.get(f"/v1/cameras/{cid}/visits", headers=h.headers("admin"))
        assert r.status_code == 200
        visits = r.json()["visits"]
        return visits if len(visits) == 2 else []

    left, arrived = wait_for(both, what="arrived and left")
    assert (arrived["kind"], left["kind"]) == ("arrived", "left")
    for visit in (arrived, left):
        assert visit["subject_id"] == ada["id"] and visit["name"] == "Ada"
        assert visit["camera"] == "front door" and visit["visitor_id"] is None
    assert left["dwell_s"] >= 0 and left["first_seen"] <= left["last_seen"]
    # each visit's best face, kept in memory for the page's recent visits
    assert arrived["face"] and left["face"]
    r = h.client.get(f"/v1/visits/{arrived['id']}/face.jpg", headers=h.headers("admin"))
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    r = h.client.get("/v1/visits/999999/face.jpg", headers=h.headers("admin"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "face_not_found"
    all_visits = h.client.get("/v1/visits", headers=h.headers("admin")).json()["visits"]
    assert [v["id"] for v in all_visits] == [left["id"], arrived["id"]]
    assert camera(h, cid)["status"]["visits"] == 1

    # Attendance comes from the visits; the events carry the visit's details.
    rows = h.client.get("/v1/attendance", headers=h.headers("admin")).json()["rows"]
    assert [(r["name"], r["sources"]) for r in rows] == [("Ada", ["front door"])]
    events = h.client.get(
        "/v1/events", params={"source": "front door"}, headers=h.headers("admin")
    ).json()["events"]
    assert {e["decision"] for e in events} == {"arrived", "left"}
    assert all(e["details"]["kind"] == "visit" for e in events)

    # The same numbers in /metrics.
    text = h.client.get("/metrics", headers=h.headers("recognise")).text
    for line in (
        'marginface_camera_visits_total{camera="front door"} 1.0',
        'marginface_camera_state{camera="front door",state="running"} 1.0',
        'marginface_camera_tracks_open{camera="front door"} 0.0',
        "marginface_cameras 1.0",
    ):
        assert line in text, line
    for name in (
        "frames_read_total",
        "frames_dropped_total",
        "frames_corrupt_total",
        "lag_seconds",
        "read_fps",
        "process_fps",
        "reconnects_total",
    ):
        assert f"marginface_camera_{name}" in text, name


def test_unreachable_camera_reconnects_while_another_works(camera_harness: Harness) -> None:
    h = camera_harness
    url = f"rtsp://cam:{SECRET}@127.0.0.1:{free_port()}/live"
    bad = add_camera(h, "unreachable", url)
    good = add_camera(h, "door", settings=QUICK)

    def reconnecting() -> dict | None:
        status = camera(h, bad["id"])["status"]
        return status if status["state"] == "reconnecting" and status["last_error"] else None

    status = wait_for(reconnecting, timeout=15, what="reconnecting with an error")
    assert SECRET not in str(camera(h, bad["id"]))
    wait_for(lambda: camera(h, good["id"])["status"]["running"], what="the push camera")
    for side in (60, 70):
        push_until_processed(h, good["id"], camera_frame((5, side)))
    assert camera(h, good["id"])["status"]["state"] == "running"
    text = h.client.get("/metrics", headers=h.headers("recognise")).text
    assert 'marginface_camera_state{camera="unreachable",state="reconnecting"} 1.0' in text
    assert status["reconnects"] >= 0


def test_cameras_restart_with_the_service(settings: ServeSettings) -> None:
    with started_harness(settings, camera_options=FAKE_CAMERAS) as h:
        running = add_camera(h, "door")["id"]
        stopped = add_camera(h, "hall", enabled=False)["id"]
        wait_for(lambda: camera(h, running)["status"]["running"], what="the camera to run")
    with started_harness(settings, camera_options=FAKE_CAMERAS) as h:
        wait_for(lambda: camera(h, running)["status"]["running"], what="the camera again")
        assert camera(h, stopped)["status"]["state"] == "stopped"
        push_until_processed(h, running, camera_frame((4, 60)))


def test_camera_workers_off(settings: ServeSettings) -> None:
    off = settings.model_copy(update={"cameras": False})
    with started_harness(off, camera_options=FAKE_CAMERAS) as h:
        cam = add_camera(h, "door")
        assert cam["status"]["state"] == "stopped" and not cam["status"]["running"]
        assert "off" in cam["status"]["last_error"]
        r = h.client.post(f"/v1/cameras/{cam['id']}/start", headers=h.headers("admin"))
        assert r.status_code == 200 and r.json()["status"]["state"] == "stopped"
        assert push(h, cam["id"], camera_frame((4, 60))).status_code == 409


def test_camera_limit(settings: ServeSettings) -> None:
    with started_harness(
        settings.model_copy(update={"max_cameras": 1}), camera_options=FAKE_CAMERAS
    ) as h:
        add_camera(h, "one")
        r = h.client.post(
            "/v1/cameras", json={"name": "two", "url": "push:"}, headers=h.headers("admin")
        )
        assert r.status_code == 409 and "at most 1" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/cameras", "/v1/visits"])
def test_service_without_cameras_serves(harness: Harness, path: str) -> None:
    """The default app (real camera workers, none configured) lists nothing."""
    r = harness.client.get(path, headers=harness.headers("recognise"))
    assert r.status_code == 200
    assert r.json().get("total", 0) == 0


def test_camera_starts_with_a_client_of_its_own(settings: ServeSettings) -> None:
    """Closing the app stops every camera promptly."""
    from marginface.serve import create_app
    from tests.serve.serve_fakes import FakePipeline

    app = create_app(settings, pipeline=FakePipeline(), camera_options=FAKE_CAMERAS)
    with TestClient(app) as client:
        admin = settings.key_file.read_text().strip()
        for i in range(3):
            r = client.post(
                "/v1/cameras", json={"name": f"c{i}", "url": "push:"}, headers={"X-API-Key": admin}
            )
            assert r.status_code == 201
        started = time.monotonic()
    assert time.monotonic() - started < 5.0


# -- what a camera may read (issue #25) --------------------------------------------------------


def test_local_files_and_devices_are_not_cameras(camera_harness: Harness) -> None:
    """``POST /v1/cameras`` took ``/etc/passwd`` (FFmpeg rendered it as video in the snapshot)
    and its errors told a missing file from an existing one."""
    h = camera_harness
    admin = h.headers("admin")
    cam = add_camera(h, "door")
    for url in LOCAL_SOURCES:
        r = h.client.post("/v1/cameras", json={"name": "x", "url": url}, headers=admin)
        assert r.status_code == 422, (url, r.text)
        message = r.json()["error"]["message"]
        assert "not allowed" in message and "not found" not in message, message
        r = h.client.patch(f"/v1/cameras/{cam['id']}", json={"url": url}, headers=admin)
        assert r.status_code == 422 and "not allowed" in r.json()["error"]["message"]
    assert h.client.get("/v1/cameras", headers=admin).json()["total"] == 1
    # a camera stored before (or by another process) fails with the same words at run time
    gallery = h.client.app.state.service.cameras.gallery
    legacy = gallery.cameras.create("legacy", "/etc/passwd")
    h.client.post(f"/v1/cameras/{legacy.id}/start", headers=admin)
    status = wait_for(
        lambda: (s := camera(h, legacy.id)["status"])["state"] == "failed" and s,
        what="the legacy camera's refusal",
    )
    assert "not allowed" in status["last_error"] and status["frames_read"] == 0


def test_media_roots_and_allowed_devices(settings: ServeSettings, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "door.mp4").write_bytes(b"not read at creation")
    roots = settings.model_copy(update={"media_roots": [media], "allowed_devices": ["/dev/video3"]})
    with started_harness(roots, camera_options=FAKE_CAMERAS) as h:
        admin = h.headers("admin")
        for url in (str(media / "door.mp4"), f"file://{media}/door.mp4", "webcam:3"):
            r = h.client.post(
                "/v1/cameras", json={"name": url, "url": url, "enabled": False}, headers=admin
            )
            assert r.status_code == 201, (url, r.text)
        for url in (str(media / ".." / "gallery.db"), "webcam:0"):
            r = h.client.post("/v1/cameras", json={"name": "x", "url": url}, headers=admin)
            assert r.status_code == 422 and "not allowed" in r.json()["error"]["message"]
        r = h.client.post(
            "/v1/cameras", json={"name": "x", "url": str(media / "gone.mp4")}, headers=admin
        )
        assert r.status_code == 422 and "not found" in r.json()["error"]["message"]


def test_per_camera_source_options(settings: ServeSettings, tmp_path: Path) -> None:
    """``settings.source``: typed and strict in the schema, each option only for the sources
    it suits, a looping file still only under the media roots."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "door.mp4").write_bytes(b"not read at creation")
    roots = settings.model_copy(update={"media_roots": [media]})
    with started_harness(roots, camera_options=FAKE_CAMERAS) as h:
        admin = h.headers("admin")
        schema = h.client.get("/openapi.json").json()["components"]["schemas"]
        source = schema["CameraSourceBody"]["properties"]
        assert set(source) == {
            "transport",
            "open_timeout",
            "read_timeout",
            "backoff_initial",
            "backoff_max",
            "loop",
        }
        assert schema["CameraSourceBody"]["additionalProperties"] is False

        def create(name: str, url: str, src: dict[str, Any]) -> Any:
            body = {"name": name, "url": url, "settings": {"source": src}, "enabled": False}
            return h.client.post("/v1/cameras", json=body, headers=admin)

        ok = create("loop", str(media / "door.mp4"), {"loop": True, "read_timeout": 3.0})
        assert ok.status_code == 201, ok.text
        assert ok.json()["settings"] == {"source": {"loop": True, "read_timeout": 3.0}}
        rtsp = create("rtsp", "rtsp://10.0.0.9/s", {"transport": "udp", "open_timeout": 2.0})
        assert rtsp.status_code == 201, rtsp.text
        for name, url, src, why in (
            ("a", "push:", {"transport": "udp"}, "transport is for rtsp"),
            ("b", "rtsp://10.0.0.9/s", {"loop": True}, "loop is for video files"),
            ("c", "push:", {"backoff_initial": 5.0, "backoff_max": 1.0}, "backoff_max"),
            ("d", str(tmp_path / "door.mp4"), {"loop": True}, "not allowed"),
        ):
            r = create(name, url, src)
            assert r.status_code == 422 and why in r.json()["error"]["message"], (name, r.text)
        for bad in ({"loop": "yes"}, {"transport": "quic"}, {"ffmpeg": {"f": "x"}}):
            assert create("e", "push:", bad).status_code == 422
        cam = rtsp.json()["id"]
        patched = h.client.patch(
            f"/v1/cameras/{cam}", json={"url": "push:"}, headers=admin
        )  # the stored transport no longer suits the URL
        assert patched.status_code == 422 and "transport" in patched.json()["error"]["message"]


def test_pushed_frames_pass_the_decompression_bomb_guard(
    camera_harness: Harness, tmp_path: Path
) -> None:
    """``/v1/identify`` refused a 10100x10100 JPEG that a push camera accepted and decoded."""
    h = camera_harness
    cid = add_camera(h, "door")["id"]
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")
    huge = huge_jpeg(tmp_path / "huge.jpg").read_bytes()
    r = push(h, cid, huge)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_frame"
    assert "decompression-bomb guard" in r.json()["error"]["message"]
    r = h.client.post(
        "/v1/identify",
        files={"photo": ("huge.jpg", huge, "image/jpeg")},
        headers=h.headers("recognise"),
    )
    assert r.status_code == 400 and "decompression-bomb guard" in r.json()["error"]["message"]
    status = camera(h, cid)["status"]
    assert status["frames_corrupt"] == 1 and status["frames_read"] == 0


def test_pushed_frames_skipped_are_counted_as_dropped(camera_harness: Harness) -> None:
    """391 of 400 pushed frames were skipped while ``frames_dropped`` stayed 0."""
    h = camera_harness
    cid = add_camera(h, "door", settings={"fps": 0.05})["id"]  # one frame per 20 s is due
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")
    for _ in range(10):
        assert push(h, cid, camera_frame((4, 60))).status_code == 202
    status = camera(h, cid)["status"]
    assert status["frames_read"] == 10
    # every frame pushed was processed, is being processed, waits, or was dropped
    assert 0 <= status["frames_read"] - status["frames_dropped"] - status["frames_processed"] <= 2
    assert status["frames_dropped"] >= 8


# -- who sees what (issue #25; docs/streams.md, "Who sees what") -------------------------------
HIDDEN_FROM = {"recognise": ("subject_id", "name", "visitor_id"), "enrol": ("subject_id", "name")}


def test_who_sees_what_of_the_visits(camera_harness: Harness) -> None:
    """The recognise role got 403 on /v1/events and /v1/attendance but read names, subject
    ids, cameras and times from /v1/visits, names in the snapshot, and strangers' faces from
    /v1/visits/{id}/face.jpg. Every cell of the matrix, for every role."""
    h = camera_harness
    ada = h.enrol("Ada", make_photo((3, 60)), make_photo((3, 90)))["subject"]
    cid = add_camera(h, "door", settings=QUICK)["id"]
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")
    for side in (60, 70, 80):  # Ada and a stranger, side by side
        push_until_processed(h, cid, camera_frame((3, side), (9, side)))
    push_until_processed(h, cid, camera_frame())

    def visits(role: str, path: str = "/v1/visits") -> list[dict]:
        r = h.client.get(path, headers=h.headers(role))
        assert r.status_code == 200, r.text
        return r.json()["visits"]

    full = wait_for(lambda: len(v := visits("admin")) == 4 and v, what="four visit events")
    named = [v for v in full if v["subject_id"] == ada["id"]]
    stranger = [v for v in full if v["subject_id"] is None]
    assert len(named) == 2 and len(stranger) == 2 and all(v["known"] for v in named)
    assert all(v["name"] == "Ada" and v["face"] for v in named)
    assert all(v["face"] for v in stranger), full
    wanted = {v["id"] for v in full}

    for role in ("recognise", "enrol"):
        for path in ("/v1/visits", f"/v1/cameras/{cid}/visits"):
            seen = {v["id"]: v for v in visits(role, path)}
            assert set(seen) == wanted
            for original in full:
                shown = seen[original["id"]]
                # the decision, the camera and the times: for every key
                for field in ("kind", "known", "camera", "time", "dwell_s", "score"):
                    assert shown[field] == original[field], (role, field)
                for field in HIDDEN_FROM[role]:
                    assert shown[field] is None, (role, field)
                stranger_face = role == "enrol" and not original["known"]
                assert shown["face"] is stranger_face, (role, original["kind"])
            if role == "enrol":  # the reviewers follow a stranger's visit to the queue
                left = next(v for v in stranger if v["kind"] == "left")
                assert left["visitor_id"] and seen[left["id"]]["visitor_id"] == left["visitor_id"]

    # The faces: a stranger's for the reviewers, an enrolled person's for admin keys.
    face_of = {"named": named[0]["id"], "stranger": stranger[0]["id"]}
    expected = {
        ("recognise", "named"): 403,
        ("recognise", "stranger"): 403,
        ("enrol", "named"): 403,
        ("enrol", "stranger"): 200,
        ("admin", "named"): 200,
        ("admin", "stranger"): 200,
    }
    for (role, whose), status in expected.items():
        r = h.client.get(f"/v1/visits/{face_of[whose]}/face.jpg", headers=h.headers(role))
        assert r.status_code == status, (role, whose, r.text)

    # The live view: names drawn for admin keys only.
    worker = h.client.app.state.service.cameras._runner(cid).worker
    for role, names in (("recognise", False), ("enrol", False), ("admin", True)):
        r = h.client.get(f"/v1/cameras/{cid}/snapshot.jpg", headers=h.headers(role))
        assert r.status_code == 200 and worker.names_drawn is names, role

    # The attendance log itself, as before: admin keys only.
    for role, status in (("recognise", 403), ("enrol", 403), ("admin", 200)):
        for path in ("/v1/events", "/v1/attendance"):
            assert h.client.get(path, headers=h.headers(role)).status_code == status
