"""``gallery.cameras``: cameras kept with the gallery (CameraStore) and their reading
positions, the schema step that added them (and the visitors), and attendance computed from
camera visits (``arrived``/``left`` events)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gallery_helpers import DIM, MODEL, People, make_store, raw

from marginface.card import ModelCard
from marginface.decision import IdentificationPolicy
from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery import Camera, Gallery, redact_url, schema
from marginface.gallery.db import Database
from tests.impostor_tables import log_linear_tail

BACKENDS = ["sqlite", pytest.param("postgresql", id="postgresql")]
DAY = datetime(2024, 3, 5, tzinfo=UTC)


def card() -> ModelCard:
    return ModelCard(
        name=MODEL, architecture="mbf", embedding_dim=DIM, impostors=log_linear_tail(0.45)
    )


@pytest.fixture
def gallery(tmp_path) -> Iterator[Gallery]:
    with Gallery.open(tmp_path / "g.db", card=card()) as g:
        yield g


# -- cameras ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_camera_crud(backend: str, tmp_path, request: pytest.FixtureRequest) -> None:
    url = make_store(backend, "exact", tmp_path, request).url
    with Gallery.open(url, card=card()) as g:
        door = g.cameras.create(
            " Front door ",
            "rtsp://admin:s3cret@10.0.0.5:554/stream1",
            {"fps": 5, "visits": {"min_faces": 2}},
        )
        assert isinstance(door, Camera) and len(door.id) == 16
        assert (door.name, door.enabled, door.settings) == (
            "Front door",
            True,
            {"fps": 5, "visits": {"min_faces": 2}},
        )
        lab = g.cameras.create("lab", "/videos/lab.mp4", {}, enabled=False)
        assert [c.name for c in g.cameras.list()] == ["Front door", "lab"]
        assert g.cameras.get(door.id) == door == g.cameras.get("Front door")
        with pytest.raises(ConflictError, match="a camera named 'Front door' exists"):
            g.cameras.create("Front door", "rtsp://other/stream", {})
        with pytest.raises(ConflictError, match="'lab' exists"):
            g.cameras.update(door.id, name="lab")
        changed = g.cameras.update(lab.id, enabled=True, settings={"fps": 2})
        assert (changed.enabled, changed.settings, changed.url) == (
            True,
            {"fps": 2},
            "/videos/lab.mp4",
        )
        assert changed.updated_at >= lab.updated_at
        renamed = g.cameras.update("lab", name="Lab 2", url="http://cam/mjpeg")
        assert (renamed.id, renamed.name, renamed.url) == (lab.id, "Lab 2", "http://cam/mjpeg")
        assert g.cameras.delete(lab.id).name == "Lab 2"
        for call in (
            lambda: g.cameras.get(lab.id),
            lambda: g.cameras.delete("nope"),
            lambda: g.cameras.update("nope", enabled=False),
        ):
            with pytest.raises(NotFoundError, match="unknown camera"):
                call()
    with Gallery.open(url, create=False) as g:  # kept with the gallery
        assert [c.name for c in g.cameras.list()] == ["Front door"]


def test_camera_input_is_checked(gallery: Gallery) -> None:
    for name, url, settings in [
        ("", "rtsp://h/s", {}),
        ("a\nb", "rtsp://h/s", {}),
        ("x" * 101, "rtsp://h/s", {}),
        ("ok", "", {}),
        ("ok", "rtsp://h/s s", {}),
        ("ok", "rtsp://h/s", {"f": float("nan")}),
        ("ok", "rtsp://h/s", [1]),
    ]:
        with pytest.raises(GalleryError):
            gallery.cameras.create(name, url, settings)  # type: ignore[arg-type]
    assert gallery.cameras.list() == []


def test_camera_urls_are_redacted(gallery: Gallery) -> None:
    cam = gallery.cameras.create("gate", "rtsp://admin:p%40ss:w0rd@10.0.0.5:554/live?transport=tcp")
    shown = cam.to_dict()
    assert shown["url"] == "rtsp://admin:***@10.0.0.5:554/live?transport=tcp"
    assert "w0rd" not in str(shown) and "p%40ss" not in str(shown)
    assert cam.to_dict(redact=False)["url"] == cam.url  # for the worker that connects
    assert shown["created_at"].startswith("20") and shown["settings"] == {}
    assert (
        redact_url("http://cam/snap.jpg?user=bob&password=x1&res=hd")
        == "http://cam/snap.jpg?user=bob&password=***&res=hd"
    )
    # a user name without a password is usually a token: hidden too (tests/test_urls.py)
    assert redact_url("rtsp://viewer@cam/stream") == "rtsp://***@cam/stream"
    assert redact_url("/videos/door.mp4") == "/videos/door.mp4"
    assert redact_url("webcam:0") == "webcam:0"


def test_a_file_cameras_reading_position(gallery: Gallery) -> None:
    cam = gallery.cameras.create("hall", "/videos/hall.mp4")
    assert gallery.cameras.position(cam.id) is None
    gallery.cameras.set_position(cam.id, 12.5)
    assert gallery.cameras.position(cam.id) == 12.5
    gallery.cameras.set_position(cam.id, None)
    assert gallery.cameras.position(cam.id) is None
    gallery.cameras.set_position(cam.id, 3.0)
    gallery.cameras.update(cam.id, url="/videos/other.mp4")  # another file: from its start
    assert gallery.cameras.position(cam.id) is None
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(GalleryError, match="reading position"):
            gallery.cameras.set_position(cam.id, bad)
    with pytest.raises(NotFoundError):
        gallery.cameras.set_position("nope", 1.0)
    gallery.cameras.set_position(cam.id, 4.0)
    gallery.cameras.delete(cam.id)
    assert gallery.cameras.position(cam.id) is None and gallery.cameras.count() == 0


# -- the schema step ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_3_gallery_gains_cameras_and_visitors(
    backend: str, tmp_path, request: pytest.FixtureRequest, monkeypatch
) -> None:
    url = make_store(backend, "exact", tmp_path, request).url
    people = People(3)
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in schema.MIGRATIONS if m.version <= 3))
    with Gallery.open(url, MODEL, DIM, policy=IdentificationPolicy(threshold=0.5)) as g:
        ada = g.subjects.create("Ada", embeddings=people.sample(0, 2))
    # an event as version 3 wrote it (today's code writes columns that version lacks)
    raw(
        url,
        "INSERT INTO events (ts, source, subject_id, subject_name, score, decision, details) "
        "VALUES (?, 'door', ?, 'Ada', 0.9, 'match', '{}')",
        ((DAY + timedelta(hours=8)).timestamp(), ada.id),
    )
    assert raw(url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
    monkeypatch.undo()
    with Gallery.open(url, card=card(), create=False) as g:
        assert raw(url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("5",)]
        assert [
            int(v) for (v,) in raw(url, "SELECT version FROM schema_migrations ORDER BY version")
        ] == [1, 2, 3, 4, 5]
        # what version 3 held is intact and still works
        assert g.identify(people.sample(0))[0].subject_id == ada.id
        assert [e.decision for e in g.events.list()] == ["match"]
        # the new tables take writes
        assert g.cameras.create("door", "rtsp://h/s").name == "door"
        sighting = g.visitors.record(
            "door", DAY, DAY + timedelta(seconds=3), people.sample(2, 2), [0.5, 0.7], threshold=0.5
        )
        assert sighting.new and g.visitors.count() == 1
        g.subjects.delete(ada.id)
    Database(url).close()  # opening again changes nothing
    assert raw(url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("5",)]


# -- attendance from camera visits --------------------------------------------------------------
def visit(
    g: Gallery, camera: str, subject_id: str | None, start: datetime, minutes: float, track: int
) -> None:
    """A camera visit as the streams layer logs it: ``arrived`` at the first sighting,
    ``left`` at the last."""
    details: dict[str, Any] = {
        "camera": camera,
        "track_id": track,
        "visit_id": f"{camera}-{track}",
        "kind": "visit",
    }
    score = 0.8 if subject_id else 0.2
    g.events.log(
        camera, subject_id=subject_id, score=score, decision="arrived", time=start, details=details
    )
    g.events.log(
        camera,
        subject_id=subject_id,
        score=score,
        decision="left",
        time=start + timedelta(minutes=minutes),
        details={**details, "dwell_s": 60},
    )


def test_attendance_from_visits(gallery: Gallery) -> None:
    people = People(3)
    ada = gallery.subjects.create("Ada", embeddings=people.sample(0, 2)).id
    bob = gallery.subjects.create("Bob", embeddings=people.sample(1, 2)).id
    at = DAY.replace(hour=8)
    visit(gallery, "front", ada, at, 1, 1)  # arrives at 8:00
    visit(gallery, "lab", ada, at + timedelta(hours=2), 30, 2)  # in the lab 10:00-10:30
    visit(gallery, "back", ada, at + timedelta(hours=9), 2, 3)  # leaves by the back, 17:02
    visit(gallery, "front", bob, at + timedelta(hours=1), 5, 4)
    visit(gallery, "front", None, at, 1, 5)  # a stranger never counts
    gallery.events.log(
        "kiosk", subject_id=bob, score=0.9, decision="match", time=at + timedelta(hours=3)
    )  # a photo: counts one
    rows = {r.name: r for r in gallery.events.attendance("2024-03-05", tz=UTC)}
    assert set(rows) == {"Ada", "Bob"}
    a = rows["Ada"]
    assert (a.first_seen, a.last_seen) == (at, at + timedelta(hours=9, minutes=2))
    assert a.count == 3 and a.sources == ["front", "lab", "back"]
    assert (rows["Bob"].count, rows["Bob"].sources) == (2, ["front", "kiosk"])
    # per camera, and per camera group
    (lab,) = gallery.events.attendance("2024-03-05", tz=UTC, sources="lab")
    assert (lab.name, lab.first_seen, lab.last_seen, lab.count) == (
        "Ada",
        at + timedelta(hours=2),
        at + timedelta(hours=2, minutes=30),
        1,
    )
    doors = {
        r.name: r
        for r in gallery.events.attendance("2024-03-05", tz=UTC, sources=["front", "back"])
    }
    assert doors["Ada"].count == 2 and doors["Ada"].sources == ["front", "back"]
    assert doors["Ada"].last_seen == at + timedelta(hours=9, minutes=2)
    assert (doors["Bob"].count, doors["Bob"].sources) == (1, ["front"])
    assert gallery.events.attendance("2024-03-05", tz=UTC, sources=["garage"]) == []
    with pytest.raises(GalleryError, match="names no source"):
        gallery.events.attendance("2024-03-05", tz=UTC, sources=[])
    text = gallery.events.attendance_csv("2024-03-05", tz=UTC, sources=["front", "back"])
    assert text.splitlines()[0] == "date,subject_id,name,first_seen,last_seen,count,sources"
    assert "front;back" in text and "kiosk" not in text
    # another day in another zone: the visit at 17:02 UTC is 2024-03-06 in Tokyo
    tokyo = gallery.events.attendance("2024-03-06", tz=ZoneInfo("Asia/Tokyo"))
    assert {r.name: r.count for r in tokyo} == {"Ada": 1}
    assert len(gallery.events.list(decision="left")) == 5


def test_attendance_follows_a_visits_latest_decision(gallery: Gallery) -> None:
    """A visit announced as Ada and corrected to Bob counts for Bob only; one corrected to
    nobody counts for no one; an unknown visit identified later counts from its first
    sighting. Each visit counts once, whatever its number of events."""
    people = People(3)
    ada = gallery.subjects.create("Ada", embeddings=people.sample(0, 2)).id
    bob = gallery.subjects.create("Bob", embeddings=people.sample(1, 2)).id
    at = DAY.replace(hour=8)

    def log(uid: str, decision: str, subject: str | None, minutes: float) -> None:
        details = {"kind": "visit", "camera": "door", "visit_uid": uid, "visit_id": 1}
        when = at + timedelta(minutes=minutes)
        gallery.events.log(
            "door", subject_id=subject, score=0.7, decision=decision, time=when, details=details
        )

    log("v1", "arrived", ada, 0)  # corrected to Bob: Ada was never there
    log("v1", "corrected", bob, 0)
    log("v1", "left", bob, 5)
    log("v2", "arrived", ada, 60)  # corrected to nobody: a stranger taken for Ada
    log("v2", "corrected", None, 60)
    log("v2", "left", None, 62)
    log("v3", "arrived", None, 120)  # identified later: Ada, from the first sighting
    log("v3", "identified", ada, 120)
    log("v3", "left", ada, 130)
    rows = {r.name: r for r in gallery.events.attendance("2024-03-05", tz=UTC)}
    assert set(rows) == {"Ada", "Bob"}
    assert (rows["Bob"].first_seen, rows["Bob"].last_seen, rows["Bob"].count) == (
        at,
        at + timedelta(minutes=5),
        1,
    )
    assert (rows["Ada"].first_seen, rows["Ada"].last_seen, rows["Ada"].count) == (
        at + timedelta(minutes=120),
        at + timedelta(minutes=130),
        1,
    )
