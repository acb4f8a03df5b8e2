"""The REST API's behaviour with the fast fake pipeline: subjects, faces, recognition, events,
attendance, metrics, the web page, and every kind of bad input."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.serve.serve_fakes import Harness, make_photo


def _files(*photos: bytes, field: str = "photos") -> list:
    return [(field, (f"p{i}.png", p, "image/png")) for i, p in enumerate(photos)]


def _identify(h: Harness, photo: bytes, source: str | None = None, role: str = "recognise"):
    data = {"source": source} if source else {}
    return h.client.post(
        "/v1/identify",
        files={"photo": ("q.png", photo, "image/png")},
        data=data,
        headers=h.headers(role),
    )


def _count(h: Harness) -> tuple[int, int]:
    g = h.client.app.state.service.gallery
    return g.subjects.count(), g.subjects.count_faces()


# -- subjects and faces -------------------------------------------------------------------------
def test_subject_lifecycle(harness: Harness) -> None:
    c, enrol, admin = harness.client, harness.headers("enrol"), harness.headers("admin")
    r = c.post(
        "/v1/subjects", json={"name": "Grace Hopper", "metadata": {"staff": 7}}, headers=enrol
    )
    assert r.status_code == 201
    sid = r.json()["id"]
    assert r.json()["n_faces"] == 0 and r.json()["metadata"] == {"staff": 7}

    r = c.post(
        f"/v1/subjects/{sid}/faces",
        files=_files(make_photo((2, 60)), make_photo((2, 90))),
        headers=enrol,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["enrolled"] == 2 and body["created"] is False
    assert [p["status"] for p in body["photos"]] == ["enrolled", "enrolled"]

    detail = c.get(f"/v1/subjects/{sid}", headers=enrol).json()
    assert detail["n_faces"] == 2 and len(detail["faces"]) == 2
    assert "embedding" not in str(detail)

    r = c.patch(f"/v1/subjects/{sid}", json={"name": "Rear Admiral Hopper"}, headers=enrol)
    assert r.status_code == 200 and r.json()["metadata"] == {"staff": 7}
    match = _identify(harness, make_photo((2, 70))).json()["faces"][0]["match"]
    assert match["name"] == "Rear Admiral Hopper"

    listed = c.get("/v1/subjects", params={"name": "hopper"}, headers=enrol).json()
    assert listed["total"] == 1 and listed["subjects"][0]["id"] == sid

    face_id = detail["faces"][0]["id"]
    assert c.delete(f"/v1/subjects/{sid}/faces/{face_id}", headers=admin).status_code == 204
    assert c.get(f"/v1/subjects/{sid}", headers=enrol).json()["n_faces"] == 1

    assert c.delete(f"/v1/subjects/{sid}", headers=admin).status_code == 204
    assert c.get(f"/v1/subjects/{sid}", headers=enrol).status_code == 404
    face = _identify(harness, make_photo((2, 70))).json()["faces"][0]
    assert face["match"] is None
    assert _count(harness) == (0, 0)


def test_enrol_reports_each_photo(harness: Harness) -> None:
    photos = [
        make_photo((6, 60)),
        make_photo((6, 60)),
        make_photo(),
        make_photo((6, 50), (8, 50)),
        b"not an image",
    ]
    r = harness.client.post(
        "/v1/enroll",
        data={"name": "Mixed", "metadata": '{"team": "ops"}'},
        files=_files(*photos),
        headers=harness.headers("enrol"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    statuses = [p["status"] for p in body["photos"]]
    assert statuses == ["enrolled", "near_duplicate", "no_face", "multiple_faces", "unreadable"]
    assert body["enrolled"] == 1 and body["created"] is True
    assert body["subject"]["metadata"] == {"team": "ops"}
    assert _count(harness) == (1, 1)


def test_duplicate_names_get_distinct_ids(harness: Harness) -> None:
    a = harness.enrol("Sam Lee", make_photo((1, 60)))
    b = harness.enrol("Sam Lee", make_photo((12, 60)))
    assert a["subject"]["id"] != b["subject"]["id"]
    names = [
        s["name"]
        for s in harness.client.get("/v1/subjects", headers=harness.headers("admin")).json()[
            "subjects"
        ]
    ]
    assert names == ["Sam Lee", "Sam Lee"]
    faces = _identify(harness, make_photo((1, 80), (12, 80))).json()["faces"]
    assert [f["match"]["subject_id"] for f in faces] == [a["subject"]["id"], b["subject"]["id"]]


# -- recognition --------------------------------------------------------------------------------
def test_identify_answers_every_face(harness: Harness) -> None:
    ada = harness.enrol("Ada", make_photo((3, 60)), make_photo((3, 90)))["subject"]
    harness.enrol("Bob", make_photo((9, 60)))
    r = _identify(harness, make_photo((3, 70), (15, 50), (9, 40)))
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert len(faces) == 3
    by_x = sorted(faces, key=lambda f: f["box"][0])
    assert by_x[0]["match"]["subject_id"] == ada["id"]
    assert by_x[0]["score"] >= by_x[0]["threshold"]
    assert by_x[1]["match"] is None and by_x[1]["score"] < by_x[1]["threshold"]
    assert by_x[2]["match"]["name"] == "Bob"
    assert by_x[0]["box"] == [10.0, 20.0, 80.0, 90.0]
    assert len(by_x[0]["landmarks"]) == 5


def test_verify_photo_against_photo_and_subject(harness: Harness) -> None:
    c, h = harness.client, harness.headers("recognise")
    same = c.post(
        "/v1/verify",
        files={
            "photo": ("a.png", make_photo((4, 60)), "image/png"),
            "photo_b": ("b.png", make_photo((4, 90)), "image/png"),
        },
        headers=h,
    ).json()
    assert same["same"] is True and same["score"] >= same["threshold"]
    other = c.post(
        "/v1/verify",
        files={
            "photo": ("a.png", make_photo((4, 60)), "image/png"),
            "photo_b": ("b.png", make_photo((11, 60)), "image/png"),
        },
        headers=h,
    ).json()
    assert other["same"] is False and other["score"] < other["threshold"]

    sid = harness.enrol("Vera", make_photo((7, 60)))["subject"]["id"]
    r = c.post(
        "/v1/verify",
        files={"photo": ("a.png", make_photo((7, 80)), "image/png")},
        data={"subject_id": sid},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["same"] is True and r.json()["subject_id"] == sid
    r = c.post(
        "/v1/verify",
        files={"photo": ("a.png", make_photo((8, 80)), "image/png")},
        data={"subject_id": sid},
        headers=h,
    )
    assert r.json()["same"] is False

    neither = c.post(
        "/v1/verify", files={"photo": ("a.png", make_photo((7, 80)), "image/png")}, headers=h
    )
    assert neither.status_code == 422


# -- events and attendance ----------------------------------------------------------------------
def test_events_and_attendance(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    ada = harness.enrol("Ada", make_photo((3, 60)))["subject"]["id"]
    harness.enrol("Bob", make_photo((9, 60)))
    assert _identify(harness, make_photo((3, 70)), source="front door").status_code == 200
    assert _identify(harness, make_photo((9, 70), (15, 60)), source="lab").status_code == 200
    assert _identify(harness, make_photo((3, 80)), source="lab").status_code == 200
    assert _identify(harness, make_photo((3, 80))).json()["source"] == "api"

    events = c.get("/v1/events", headers=admin).json()["events"]
    assert len(events) == 5
    assert [e["decision"] for e in events].count("unknown") == 1
    lab = c.get("/v1/events", params={"source": "lab"}, headers=admin).json()["events"]
    assert {e["source"] for e in lab} == {"lab"} and len(lab) == 3
    mine = c.get("/v1/events", params={"subject_id": ada}, headers=admin).json()["events"]
    assert len(mine) == 3 and {e["subject_name"] for e in mine} == {"Ada"}
    unknown = c.get("/v1/events", params={"decision": "unknown"}, headers=admin).json()["events"]
    assert len(unknown) == 1 and unknown[0]["subject_id"] is None

    today = datetime.now(UTC).date()
    in_day = c.get(
        "/v1/events", params={"date": today.isoformat(), "tz": "UTC"}, headers=admin
    ).json()["events"]
    assert len(in_day) == 5
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert c.get("/v1/events", params={"since": future}, headers=admin).json()["events"] == []
    r = c.get("/v1/events", params={"format": "csv", "source": "lab"}, headers=admin)
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {row["source"] for row in rows} == {"lab"}

    r = c.get("/v1/attendance", params={"date": today.isoformat(), "tz": "UTC"}, headers=admin)
    body = r.json()
    assert body["date"] == today.isoformat() and body["timezone"] == "UTC"
    by_name = {row["name"]: row for row in body["rows"]}
    assert set(by_name) == {"Ada", "Bob"}
    assert by_name["Ada"]["count"] == 3
    assert by_name["Ada"]["first_seen"] <= by_name["Ada"]["last_seen"]
    assert set(by_name["Ada"]["sources"]) == {"front door", "lab", "api"}
    group = c.get(
        "/v1/attendance",
        params=[("tz", "UTC"), ("source", "front door"), ("source", "api")],
        headers=admin,
    ).json()["rows"]
    assert [(row["name"], row["count"]) for row in group] == [("Ada", 2)]

    r = c.get(
        "/v1/attendance",
        params={"date": today.isoformat(), "tz": "UTC", "format": "csv"},
        headers=admin,
    )
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["name"] for row in rows) == ["Ada", "Bob"]

    yesterday = (today - timedelta(days=1)).isoformat()
    assert (
        c.get("/v1/attendance", params={"date": yesterday, "tz": "UTC"}, headers=admin).json()[
            "rows"
        ]
        == []
    )
    # Erasing a subject erases their events too.
    c.delete(f"/v1/subjects/{ada}", headers=admin)
    assert c.get("/v1/events", params={"subject_id": ada}, headers=admin).json()["events"] == []


def test_events_can_be_switched_off(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from marginface.serve import ServeSettings, create_app
    from tests.serve.serve_fakes import FakePipeline

    settings = ServeSettings(db=str(tmp_path / "g.db"), events=False)
    with TestClient(create_app(settings, pipeline=FakePipeline())) as c:
        key = {"X-API-Key": settings.key_file.read_text().strip()}
        r = c.post(
            "/v1/identify",
            files={"photo": ("q.png", make_photo((3, 60)), "image/png")},
            data={"source": "door"},
            headers=key,
        )
        assert r.status_code == 200 and r.json()["source"] is None
        assert c.get("/v1/events", headers=key).json()["events"] == []


def test_bad_dates_and_time_zones(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    assert c.get("/v1/attendance", params={"date": "2024-13-01"}, headers=admin).status_code == 422
    r = c.get("/v1/attendance", params={"tz": "Mars/Olympus"}, headers=admin)
    assert r.status_code == 422 and "time zone" in r.json()["error"]["message"]
    r = c.get(
        "/v1/attendance",
        params={"date": date(2024, 2, 29).isoformat(), "tz": "Europe/Paris"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Paris"


# -- photos are not stored unless configured ----------------------------------------------------
def test_photos_not_stored_by_default(harness: Harness) -> None:
    body = harness.enrol("Private", make_photo((5, 60)))
    sid, fid = body["subject"]["id"], body["photos"][0]["face_id"]
    faces = harness.client.get(f"/v1/subjects/{sid}", headers=harness.headers("admin")).json()
    assert faces["faces"][0]["has_crop"] is False
    r = harness.client.get(f"/v1/subjects/{sid}/faces/{fid}/crop", headers=harness.headers("admin"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "crop_not_stored"
    db = harness.settings.sqlite_path
    assert not list(db.parent.glob("*.png")) and not (db.parent / "photos").exists()


# -- system -------------------------------------------------------------------------------------
def test_health_metrics_docs_and_page(harness: Harness) -> None:
    c = harness.client
    harness.enrol("Ada", make_photo((3, 60)))
    _identify(harness, make_photo((3, 70)))
    _identify(harness, make_photo((16, 70)))
    health = c.get("/healthz").json()
    assert health["status"] == "ok" and health["subjects"] == 1 and health["faces"] == 1
    assert health["model"] == "fake-colour"

    answer = _identify(harness, make_photo((3, 70)))
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    r = c.get("/metrics", headers={"Authorization": f"Bearer {harness.keys['recognise']}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'marginface_http_requests_total{method="POST",route="/v1/identify",status="200"} 3.0'
        in text
    )
    assert 'marginface_identifications_total{result="match"} 2.0' in text
    assert 'marginface_identifications_total{result="unknown"} 1.0' in text
    assert "marginface_gallery_subjects 1.0" in text
    assert 'marginface_enrolment_photos_total{status="enrolled"} 1.0' in text
    assert 'marginface_photo_processing_seconds_count{operation="identify"} 3.0' in text

    schema = c.get("/openapi.json").json()
    assert "/v1/identify" in schema["paths"] and "/v1/attendance" in schema["paths"]
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
    assert "swagger-ui" in c.get("/docs").text.lower()

    page = c.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    for element in (
        "api-key",
        "enrol-photos",
        "identify-canvas",
        "subjects-table",
        "attendance-table",
    ):
        assert f'id="{element}"' in page.text


# -- bad input ----------------------------------------------------------------------------------
def _error(r) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return body["error"]


@pytest.mark.parametrize("payload", [b"this is not an image", b"", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_not_an_image(harness: Harness, payload: bytes) -> None:
    r = _identify(harness, payload)
    assert r.status_code == 400
    assert _error(r)["code"] == "invalid_image"


def test_no_face(harness: Harness) -> None:
    r = _identify(harness, make_photo())
    assert r.status_code == 422 and _error(r)["code"] == "no_face"
    r = harness.client.post(
        "/v1/verify",
        files={
            "photo": ("a.png", make_photo(), "image/png"),
            "photo_b": ("b.png", make_photo((3, 60)), "image/png"),
        },
        headers=harness.headers("admin"),
    )
    assert r.status_code == 422 and _error(r)["code"] == "no_face"


def test_failed_enrolment_writes_nothing(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    r = c.post(
        "/v1/enroll",
        data={"name": "Nobody"},
        files=_files(make_photo(), b"junk", make_photo((1, 40), (2, 40))),
        headers=enrol,
    )
    assert r.status_code == 422
    error = _error(r)
    assert error["code"] == "no_face_enrolled"
    assert [d["status"] for d in error["details"]] == ["no_face", "unreadable", "multiple_faces"]
    assert _count(harness) == (0, 0)

    sid = harness.enrol("Someone", make_photo((5, 60)))["subject"]["id"]
    # the same photo again (its bytes are stored) and the same face in another file
    again = (make_photo(), make_photo((5, 60)), make_photo((5, 60), fmt="JPEG"))
    r = c.post(f"/v1/subjects/{sid}/faces", files=_files(*again), headers=enrol)
    assert r.status_code == 422 and _error(r)["code"] == "no_face_enrolled"
    statuses = [d["status"] for d in _error(r)["details"]]
    assert statuses == ["no_face", "duplicate_photo", "near_duplicate"]
    assert _count(harness) == (1, 1)


def test_unknown_subject_is_404(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    sid = harness.enrol("Known", make_photo((5, 60)))["subject"]["id"]
    photo = ("p.png", make_photo((5, 70)), "image/png")
    for r in (
        c.get("/v1/subjects/nobody", headers=admin),
        c.patch("/v1/subjects/nobody", json={"name": "x"}, headers=admin),
        c.delete("/v1/subjects/nobody", headers=admin),
        c.post("/v1/subjects/nobody/faces", files=[("photos", photo)], headers=admin),
        c.delete("/v1/subjects/nobody/faces/1", headers=admin),
        c.post("/v1/verify", files={"photo": photo}, data={"subject_id": "nobody"}, headers=admin),
    ):
        assert r.status_code == 404, r.text
        assert _error(r)["code"] == "subject_not_found"
    r = c.delete(f"/v1/subjects/{sid}/faces/999", headers=admin)
    assert r.status_code == 404 and _error(r)["code"] == "face_not_found"
    r = c.get("/v1/nowhere", headers=admin)
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    r = c.put("/v1/identify", headers=admin)
    assert r.status_code == 405 and _error(r)["code"] == "method_not_allowed"
    assert _count(harness) == (1, 1)


def test_oversized_upload_is_413_and_writes_nothing(harness: Harness) -> None:
    big = make_photo((3, 60)) + b"\0" * (harness.settings.max_upload_bytes + 10)
    r = harness.client.post(
        "/v1/enroll", data={"name": "Huge"}, files=_files(big), headers=harness.headers("admin")
    )
    assert r.status_code == 413 and _error(r)["code"] == "payload_too_large"
    assert "1 MB" in _error(r)["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(12):
            yield b"\0" * 100_000

    r = harness.client.post(
        "/v1/subjects",
        content=chunks(),
        headers={**harness.headers("admin"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert _count(harness) == (0, 0)
    assert harness.pipeline.calls == 0


def test_too_many_photos(harness: Harness) -> None:
    n = harness.settings.max_photos + 1
    r = harness.client.post(
        "/v1/enroll",
        data={"name": "Many"},
        files=_files(*[make_photo((3, 20 + i)) for i in range(n)]),
        headers=harness.headers("admin"),
    )
    assert r.status_code == 413 and _error(r)["code"] == "too_many_photos"
    assert _count(harness) == (0, 0)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"name": ', "not valid JSON"),
        (b'{"nom": "x"}', "name"),
        (b'{"name": ""}', "name"),
        (b'{"name": "x", "metadata": [1]}', "metadata"),
        (b'["x"]', "body"),
    ],
)
def test_malformed_json_is_422(harness: Harness, content: bytes, fragment: str) -> None:
    r = harness.client.post(
        "/v1/subjects",
        content=content,
        headers={**harness.headers("admin"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    error = _error(r)
    assert error["code"] == "invalid_request" and fragment in error["message"]
    assert _count(harness) == (0, 0)


def test_missing_fields_and_bad_metadata(harness: Harness) -> None:
    c, admin = harness.client, harness.headers("admin")
    r = c.post("/v1/enroll", data={"name": "No photos"}, headers=admin)
    assert r.status_code == 422 and "photos" in _error(r)["message"]
    r = c.post(
        "/v1/enroll",
        data={"name": "X", "metadata": "{oops"},
        files=_files(make_photo((3, 60))),
        headers=admin,
    )
    assert r.status_code == 422 and "metadata" in _error(r)["message"]
    r = c.post("/v1/identify", headers=admin)
    assert r.status_code == 422 and "photo" in _error(r)["message"]
    r = c.get("/v1/subjects", params={"limit": 0}, headers=admin)
    assert r.status_code == 422
    assert _count(harness) == (0, 0)


def test_enrolment_policy_from_settings(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from marginface.serve import ServeSettings, create_app
    from tests.serve.serve_fakes import FakePipeline

    settings = ServeSettings(db=str(tmp_path / "g.db"), multiple_faces="largest", store_photos=True)
    with TestClient(create_app(settings, pipeline=FakePipeline())) as c:
        key = {"X-API-Key": settings.key_file.read_text().strip()}
        r = c.post(
            "/v1/enroll",
            data={"name": "Tall"},
            files=_files(make_photo((3, 90), (8, 40))),
            headers=key,
        )
        assert r.status_code == 201, r.text
        (photo,) = r.json()["photos"]
        assert photo["status"] == "enrolled" and "largest" in photo["message"]
        sid = r.json()["subject"]["id"]
        crop = c.get(f"/v1/subjects/{sid}/faces/{photo['face_id']}/crop", headers=key)
        assert crop.status_code == 200 and crop.content.startswith(b"\x89PNG")
        faces = c.post(
            "/v1/identify",
            files={"photo": ("q.png", make_photo((8, 60), (3, 60)), "image/png")},
            headers=key,
        ).json()
        names = [
            f["match"]["name"] if f["match"] else None
            for f in sorted(faces["faces"], key=lambda f: f["box"][0])
        ]
        assert names == [None, "Tall"]


def test_decompression_bomb_is_refused(harness: Harness) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, format="PNG")  # 144 megapixels in 140 kB
    assert len(buf.getvalue()) < harness.settings.max_upload_bytes
    r = _identify(harness, buf.getvalue())
    assert r.status_code == 400 and _error(r)["code"] == "invalid_image"


# -- identity integrity at enrolment ------------------------------------------------------------
def test_enrolling_someone_enrolled_is_a_conflict_unless_forced(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    ada = harness.enrol("Ada", make_photo((3, 60)))["subject"]
    twin = _files(make_photo((3, 90)))  # another photo of the same person
    r = c.post("/v1/enroll", data={"name": "Ada twin"}, files=twin, headers=enrol)
    assert r.status_code == 409
    error = _error(r)
    assert error["code"] == "identity_conflict"
    assert "'Ada'" in error["message"] and "force" in error["message"]
    (photo,) = error["details"]
    assert photo["status"] == "matches_other" and photo["forceable"] is True
    conflict = photo["conflict"]
    assert conflict["subject_id"] == ada["id"] and conflict["name"] == "Ada"
    assert conflict["score"] >= conflict["threshold"]
    assert _count(harness) == (1, 1)

    # an enrol key may force it: enrolled, with the warning naming Ada kept
    r = c.post("/v1/enroll", data={"name": "Ada twin", "force": "true"}, files=twin, headers=enrol)
    assert r.status_code == 201, r.text
    (photo,) = r.json()["photos"]
    assert photo["status"] == "enrolled" and photo["forced"] is True
    assert photo["conflict"]["subject_id"] == ada["id"] and "'Ada'" in photo["message"]
    assert _count(harness) == (2, 2)

    # the very same photo for another subject: held back, naming the subject that has it
    r = c.post(
        "/v1/enroll", data={"name": "Copy"}, files=_files(make_photo((3, 60))), headers=enrol
    )
    assert r.status_code == 409
    (photo,) = _error(r)["details"]
    assert photo["status"] == "duplicate_photo" and photo["conflict"]["subject_id"] == ada["id"]
    assert photo["conflict"]["score"] is None
    # added to a subject with no faces yet: the same conflict
    sid = c.post("/v1/subjects", json={"name": "Empty"}, headers=enrol).json()["id"]
    r = c.post(f"/v1/subjects/{sid}/faces", files=_files(make_photo((3, 40))), headers=enrol)
    assert r.status_code == 409 and _error(r)["code"] == "identity_conflict"
    assert _error(r)["message"].endswith("force=true enrols them anyway")
    text = harness.client.get("/metrics", headers=harness.headers("admin")).text
    assert 'marginface_enrolment_photos_total{status="matches_other"} 2.0' in text


def test_mismatched_photo_needs_an_admin_to_force(harness: Harness) -> None:
    c, enrol, admin = harness.client, harness.headers("enrol"), harness.headers("admin")
    ada = harness.enrol("Ada", make_photo((3, 60)))["subject"]["id"]
    url = f"/v1/subjects/{ada}/faces"
    stranger = make_photo((9, 60))
    r = c.post(url, files=_files(stranger), headers=enrol)
    assert r.status_code == 422
    error = _error(r)
    assert error["code"] == "photo_mismatch" and "admin" in error["message"]
    (photo,) = error["details"]
    assert photo["status"] == "mismatch" and photo["conflict"]["subject_id"] == ada
    assert photo["conflict"]["score"] < photo["conflict"]["threshold"]
    assert f"{photo['conflict']['score']:.3f}" in error["message"]

    # an enrol key asking to force it: 403, and nothing is stored (not even the good photo)
    both = _files(stranger, make_photo((3, 90)))
    r = c.post(url, data={"force": "true"}, files=both, headers=enrol)
    assert r.status_code == 403
    error = _error(r)
    assert error["code"] == "admin_required" and "an admin key must force it" in error["message"]
    assert [d["status"] for d in error["details"]] == ["mismatch"]
    assert _count(harness) == (1, 1)
    # without force the good photo is enrolled and the mismatch reported
    r = c.post(url, files=both, headers=enrol)
    assert r.status_code == 201 and r.json()["enrolled"] == 1
    assert [p["status"] for p in r.json()["photos"]] == ["mismatch", "enrolled"]
    # an admin key may force it
    r = c.post(url, data={"force": "true"}, files=_files(stranger), headers=admin)
    assert r.status_code == 201, r.text
    (photo,) = r.json()["photos"]
    assert photo["forced"] is True and photo["conflict"]["subject_id"] == ada
    assert _count(harness) == (1, 3)


@pytest.mark.parametrize(
    ("policy", "person"), [(None, None), ("reject", None), ("largest", 4), ("central", 10)]
)
def test_enrol_multiple_faces_policy(harness: Harness, policy: str | None, person: int | None):
    # 400 x 200: the larger face (person 4) at the left edge, the smaller (person 10) nearer
    # the centre
    photo = make_photo((4, 80), (10, 40), size=(400, 200))
    data = {"name": "Group"} | ({"multiple_faces": policy} if policy else {})
    r = harness.client.post(
        "/v1/enroll", data=data, files=_files(photo), headers=harness.headers("enrol")
    )
    if person is None:  # the service's default: reject
        assert r.status_code == 422
        assert _error(r)["details"][0]["status"] == "multiple_faces"
        return
    assert r.status_code == 201, r.text
    assert "2 faces found" in r.json()["photos"][0]["message"]
    for probe, known in ((4, person == 4), (10, person == 10)):
        face = _identify(harness, make_photo((probe, 60))).json()["faces"][0]
        assert (face["match"] is not None) is known


def test_add_photos_multiple_faces_and_bad_policy(harness: Harness) -> None:
    c, enrol = harness.client, harness.headers("enrol")
    sid = c.post("/v1/subjects", json={"name": "Centre"}, headers=enrol).json()["id"]
    photo = make_photo((4, 80), (10, 40), size=(400, 200))
    r = c.post(
        f"/v1/subjects/{sid}/faces",
        data={"multiple_faces": "central"},
        files=_files(photo),
        headers=enrol,
    )
    assert r.status_code == 201 and "nearest the centre" in r.json()["photos"][0]["message"]
    r = c.post(
        f"/v1/subjects/{sid}/faces",
        data={"multiple_faces": "all"},
        files=_files(photo),
        headers=enrol,
    )
    assert r.status_code == 422 and "multiple_faces" in _error(r)["message"]
    assert harness.pipeline.calls == 1  # the bad policy was refused before any photo work
