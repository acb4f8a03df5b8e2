"""Who may call what: every route × every role, API-key storage and the first admin key."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import (
    DIM,
    FAKE_CAMERAS,
    QUICK,
    FakePipeline,
    Harness,
    camera_frame,
    make_photo,
    seed_visitor,
    wait_for,
)

ROLES = ("recognise", "enrol", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


def _fresh_subject(h: Harness) -> tuple[str, int]:
    """A new subject with one face, straight into the gallery; returns (subject id, face id)."""
    gallery = h.client.app.state.service.gallery
    emb = np.zeros((1, DIM), np.float32)
    emb[0, 17] = 1.0
    subject = gallery.subjects.create("Table Person", embeddings=emb, crops=[make_photo()])
    return subject.id, gallery.subjects.faces(subject.id)[0].id


def _photo(person: int = 3, side: int = 60) -> tuple[str, bytes, str]:
    return ("photo.png", make_photo((person, side)), "image/png")


Request = Callable[[Harness], dict[str, Any]]


def _req(method: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"method": method, "url": url, **kw}


def _subject_req(method: str, suffix: str = "", **kw: Any) -> Request:
    def build(h: Harness) -> dict[str, Any]:
        sid, fid = _fresh_subject(h)
        return _req(method, f"/v1/subjects/{sid}{suffix.format(face_id=fid)}", **kw)

    return build


def _new_key_req(h: Harness) -> dict[str, Any]:
    record, _ = h.client.app.state.service.gallery.keys.create("doomed", "recognise")
    return _req("DELETE", f"/v1/keys/{record.id}")


def _verify_req(h: Harness) -> dict[str, Any]:
    sid, _ = _fresh_subject(h)
    return _req("POST", "/v1/verify", files={"photo": _photo()}, data={"subject_id": sid})


#: (method, route template, least role allowed, status when allowed, request builder)
ROUTE_TABLE: list[tuple[str, str, str, int, Request]] = [
    ("GET", "/v1/me", "recognise", 200, lambda h: _req("GET", "/v1/me")),
    (
        "POST",
        "/v1/identify",
        "recognise",
        200,
        lambda h: _req("POST", "/v1/identify", files={"photo": _photo()}),
    ),
    ("POST", "/v1/verify", "recognise", 200, _verify_req),
    ("GET", "/metrics", "recognise", 200, lambda h: _req("GET", "/metrics")),
    (
        "POST",
        "/v1/subjects",
        "enrol",
        201,
        lambda h: _req("POST", "/v1/subjects", json={"name": "New"}),
    ),
    ("GET", "/v1/subjects", "enrol", 200, lambda h: _req("GET", "/v1/subjects")),
    ("GET", "/v1/subjects/{subject_id}", "enrol", 200, _subject_req("GET")),
    (
        "PATCH",
        "/v1/subjects/{subject_id}",
        "enrol",
        200,
        _subject_req("PATCH", json={"name": "Renamed"}),
    ),
    (
        "POST",
        "/v1/enroll",
        "enrol",
        201,
        # forced: the same photo is sent once per role (another subject has it by then)
        lambda h: _req(
            "POST",
            "/v1/enroll",
            data={"name": "Enrolled", "force": "true"},
            files=[("photos", _photo(5))],
        ),
    ),
    (
        "POST",
        "/v1/subjects/{subject_id}/faces",
        "enrol",
        201,
        # a photo of the table's person (17); forced, as every fresh subject is that person
        _subject_req("POST", "/faces", files=[("photos", _photo(17))], data={"force": "true"}),
    ),
    ("DELETE", "/v1/subjects/{subject_id}", "admin", 204, _subject_req("DELETE")),
    (
        "DELETE",
        "/v1/subjects/{subject_id}/faces/{face_id}",
        "admin",
        204,
        _subject_req("DELETE", "/faces/{face_id}"),
    ),
    (
        "GET",
        "/v1/subjects/{subject_id}/faces/{face_id}/crop",
        "admin",
        200,
        _subject_req("GET", "/faces/{face_id}/crop"),
    ),
    ("GET", "/v1/events", "admin", 200, lambda h: _req("GET", "/v1/events")),
    ("GET", "/v1/attendance", "admin", 200, lambda h: _req("GET", "/v1/attendance")),
    ("GET", "/v1/keys", "admin", 200, lambda h: _req("GET", "/v1/keys")),
    (
        "POST",
        "/v1/keys",
        "admin",
        201,
        lambda h: _req("POST", "/v1/keys", json={"name": "cam", "role": "recognise"}),
    ),
    ("DELETE", "/v1/keys/{key_id}", "admin", 204, _new_key_req),
]

_CAMERAS = itertools.count()


def _camera_req(method: str, suffix: str = "", *, frame: bool = False, **kw: Any) -> Request:
    """A request on a new push camera (running; with a processed frame when ``frame``)."""

    def build(h: Harness) -> dict[str, Any]:
        cameras = h.client.app.state.service.cameras
        cam = cameras.create(f"table camera {next(_CAMERAS)}", "push:", QUICK)
        wait_for(lambda: cameras.status(cam["id"])["running"], what="the camera to run")
        if frame:

            def processed() -> bool:
                cameras.push(cam["id"], camera_frame((4, 60)))
                time.sleep(0.05)
                return cameras.status(cam["id"])["frames_processed"] > 0

            wait_for(processed, what="a processed frame")
        return _req(method, f"/v1/cameras/{cam['id']}{suffix}", **kw)

    return build


def _visitor_req(method: str, suffix: str = "", **kw: Any) -> Request:
    def build(h: Harness) -> dict[str, Any]:
        visitor = seed_visitor(h, next(_CAMERAS) % 18)
        path = suffix.format(face_id=visitor["faces"][0]["id"])
        return _req(method, f"/v1/unknowns/{visitor['id']}{path}", **kw)

    return build


def _split_req(h: Harness) -> dict[str, Any]:
    visitor = seed_visitor(h, next(_CAMERAS) % 18)
    faces = [visitor["faces"][0]["id"]]
    return _req("POST", f"/v1/unknowns/{visitor['id']}/split", json={"faces": faces})


def _visit_face_req(h: Harness) -> dict[str, Any]:
    """A request for the face of a push camera's visit (frames pushed until one is decided)."""
    cameras = h.client.app.state.service.cameras
    cam = cameras.create(f"table camera {next(_CAMERAS)}", "push:", QUICK)
    wait_for(lambda: cameras.status(cam["id"])["running"], what="the camera to run")

    def decided() -> bool:
        cameras.push(cam["id"], camera_frame((4, 60)))
        time.sleep(0.05)
        return any(v["face"] for v in cameras.recent_visits(cam["id"]))

    wait_for(decided, what="a visit with a face")
    visit = next(v for v in cameras.recent_visits(cam["id"]) if v["face"])
    return _req("GET", f"/v1/visits/{visit['id']}/face.jpg")


ROUTE_TABLE += [
    (
        "POST",
        "/v1/cameras",
        "admin",
        201,
        lambda h: _req(
            "POST", "/v1/cameras", json={"name": f"cam {next(_CAMERAS)}", "url": "push:"}
        ),
    ),
    ("GET", "/v1/cameras", "recognise", 200, lambda h: _req("GET", "/v1/cameras")),
    ("GET", "/v1/cameras/{camera_id}", "recognise", 200, _camera_req("GET")),
    (
        "PATCH",
        "/v1/cameras/{camera_id}",
        "admin",
        200,
        _camera_req("PATCH", json={"settings": {"fps": 2}}),
    ),
    ("DELETE", "/v1/cameras/{camera_id}", "admin", 204, _camera_req("DELETE")),
    ("POST", "/v1/cameras/{camera_id}/start", "admin", 200, _camera_req("POST", "/start")),
    ("POST", "/v1/cameras/{camera_id}/stop", "admin", 200, _camera_req("POST", "/stop")),
    (
        "POST",
        "/v1/cameras/{camera_id}/frames",
        "enrol",
        202,
        _camera_req(
            "POST", "/frames", content=camera_frame((4, 60)), headers={"Content-Type": "image/jpeg"}
        ),
    ),
    (
        "GET",
        "/v1/cameras/{camera_id}/snapshot.jpg",
        "recognise",
        200,
        _camera_req("GET", "/snapshot.jpg", frame=True),
    ),
    ("GET", "/v1/cameras/{camera_id}/visits", "recognise", 200, _camera_req("GET", "/visits")),
    ("GET", "/v1/visits", "recognise", 200, lambda h: _req("GET", "/v1/visits")),
    ("GET", "/v1/visits/{event_id}/face.jpg", "enrol", 200, _visit_face_req),
    ("GET", "/v1/unknowns", "recognise", 200, lambda h: _req("GET", "/v1/unknowns")),
    ("GET", "/v1/unknowns/{visitor_id}", "recognise", 200, _visitor_req("GET")),
    (
        "GET",
        "/v1/unknowns/{visitor_id}/faces/{face_id}.png",
        "enrol",
        200,
        _visitor_req("GET", "/faces/{face_id}.png"),
    ),
    (
        "POST",
        "/v1/unknowns/{visitor_id}/assign",
        "enrol",
        200,
        _visitor_req("POST", "/assign", json={"name": "Reviewed", "force": True}),
    ),
    ("POST", "/v1/unknowns/{visitor_id}/dismiss", "enrol", 200, _visitor_req("POST", "/dismiss")),
    ("POST", "/v1/unknowns/{visitor_id}/split", "enrol", 200, _split_req),
    ("GET", "/v1/nodes", "recognise", 200, lambda h: _req("GET", "/v1/nodes")),
]

CALLERS = (None, "wrong", *ROLES)


@pytest.fixture(scope="module")
def table_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("roles")
    settings = ServeSettings(db=str(tmp / "gallery.db"), store_photos=True, max_cameras=1000)
    app = create_app(settings, pipeline=FakePipeline(), camera_options=FAKE_CAMERAS)
    with TestClient(app) as client:
        admin = settings.key_file.read_text().strip()
        keys = {"admin": admin, "wrong": "mfk_000000000000_not-a-real-key"}
        gallery = client.app.state.service.gallery
        for role in ("enrol", "recognise"):
            keys[role] = gallery.keys.create(role, role)[1]
        yield Harness(client, settings, FakePipeline(), keys)


def test_table_covers_every_protected_route(table_harness: Harness) -> None:
    schema = table_harness.client.get("/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1") or path == "/metrics"
        for method in operations
    }
    assert routes == {(m, p) for m, p, *_ in ROUTE_TABLE}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("method", "path", "least", "ok", "build"),
    ROUTE_TABLE,
    ids=[f"{m} {p}" for m, p, *_ in ROUTE_TABLE],
)
def test_route_permissions(
    table_harness: Harness,
    caller: str | None,
    method: str,
    path: str,
    least: str,
    ok: int,
    build: Request,
) -> None:
    h = table_harness
    request = build(h)
    headers = {"X-API-Key": h.keys[caller]} if caller else {}
    headers.update(request.pop("headers", {}))
    response = h.client.request(headers=headers, **request)
    if caller in (None, "wrong"):
        expected = 401
    elif RANK[caller] < RANK[least]:
        expected = 403
    else:
        expected = ok
    assert response.status_code == expected, response.text
    if expected >= 400:
        error = response.json()["error"]
        assert error["code"] == ("unauthorized" if expected == 401 else "forbidden")
        assert error["message"]
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_bearer_token_is_accepted(harness: Harness) -> None:
    r = harness.client.get("/v1/me", headers={"Authorization": f"Bearer {harness.keys['enrol']}"})
    assert r.status_code == 200
    assert r.json()["role"] == "enrol"
    assert "secret" not in r.json()


@pytest.mark.parametrize("path", ["/healthz", "/", "/docs", "/openapi.json"])
def test_public_pages_need_no_key(harness: Harness, path: str) -> None:
    r = harness.client.get(path)
    assert r.status_code == 200


def test_api_key_never_in_query_string(harness: Harness) -> None:
    r = harness.client.get("/v1/me", params={"api_key": harness.keys["admin"]})
    assert r.status_code == 401


def test_first_start_creates_private_admin_key_once(settings: ServeSettings) -> None:
    assert not settings.key_file.exists()
    app = create_app(settings, pipeline=FakePipeline(), camera_options=FAKE_CAMERAS)
    with TestClient(app) as client:
        key = settings.key_file.read_text().strip()
        mode = stat.S_IMODE(os.stat(settings.key_file).st_mode)
        assert mode == 0o600
        assert settings.key_file.parent == settings.sqlite_path.parent
        assert client.get("/v1/me", headers={"X-API-Key": key}).json()["role"] == "admin"
        stored = client.app.state.service.gallery.keys.list()
        assert [k.role for k in stored] == ["admin"]
    # The database holds only a hash of the key.
    assert key.encode() not in settings.sqlite_path.read_bytes()
    # A second start neither creates another key nor rewrites the file.
    before = settings.key_file.stat().st_mtime_ns
    app = create_app(settings, pipeline=FakePipeline(), camera_options=FAKE_CAMERAS)
    with TestClient(app) as client:
        assert len(client.app.state.service.gallery.keys.list()) == 1
        assert client.get("/v1/me", headers={"X-API-Key": key}).status_code == 200
    assert settings.key_file.stat().st_mtime_ns == before


def test_key_management(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    r = c.post("/v1/keys", json={"name": "door 3", "role": "recognise"}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    secret, key_id = created["secret"], created["key"]["id"]
    assert c.get("/v1/me", headers={"X-API-Key": secret}).json()["name"] == "door 3"
    listed = c.get("/v1/keys", headers=admin).json()
    assert key_id in {k["id"] for k in listed}
    assert secret not in str(listed)
    assert c.delete(f"/v1/keys/{key_id}", headers=admin).status_code == 204
    assert c.get("/v1/me", headers={"X-API-Key": secret}).status_code == 401
    assert c.delete(f"/v1/keys/{key_id}", headers=admin).status_code == 404
    bad = c.post("/v1/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert bad.status_code == 422


def test_last_admin_key_cannot_be_revoked(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    me = c.get("/v1/me", headers=admin).json()
    r = c.delete(f"/v1/keys/{me['id']}", headers=admin)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "last_admin_key"
    assert c.get("/v1/me", headers=admin).status_code == 200


def test_keys_and_embeddings_stay_out_of_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = harness.client
    harness.enrol("Logged", make_photo((4, 60)))
    c.post("/v1/identify", files={"photo": _photo(4, 70)}, headers=harness.headers("recognise"))
    c.get("/v1/me", headers={"X-API-Key": "mfk_abc_wrong"})
    c.post(
        "/v1/identify",
        files={"photo": ("x.png", b"junk", "image/png")},
        headers=harness.headers("admin"),
    )
    text = caplog.text
    for secret in harness.keys.values():
        assert secret not in text
    assert "mfk_abc_wrong" not in text
    assert "embedding" not in text.lower()


def test_start_up_tells_the_truth_about_admin_keys(tmp_path: Path) -> None:
    """After the first admin key was revoked, start-up still pointed to the key file, which
    held the revoked key (issue #25)."""
    from marginface.gallery import Gallery
    from marginface.serve.auth import admin_key_notice, bootstrap_admin_key

    key_file = tmp_path / "gallery.admin-key"
    with Gallery.open(tmp_path / "gallery.db", model_name="m", dim=4) as gallery:
        first = bootstrap_admin_key(gallery, key_file)
        assert first is not None
        assert admin_key_notice(gallery, key_file) == f"admin key: in {key_file}"
        gallery.keys.create("second admin", "admin")
        first_id = next(k.id for k in gallery.keys.list() if k.name == "first admin")
        gallery.keys.delete(first_id)
        notice = admin_key_notice(gallery, key_file)
        assert f"the admin key in {key_file} was revoked" in notice
        assert "1 admin key(s) exist" in notice and "marginface keys create --role admin" in notice
        assert first not in notice
        _, enrol = gallery.keys.create("a reviewer", "enrol")
        key_file.write_text(enrol + "\n")
        assert "is a 'enrol' key, not an admin's" in admin_key_notice(gallery, key_file)
        key_file.unlink()
        assert "there is no such file" in admin_key_notice(gallery, key_file)
