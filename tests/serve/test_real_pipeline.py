"""The service with the real pipeline (YuNet detection + SFace embeddings) on real photos."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from marginface.serve import ServeSettings, create_app

SFACE_THRESHOLD = 0.363  # OpenCV Zoo's SFace cosine threshold, used while the card has none


@pytest.fixture(scope="module")
def real_pipeline() -> Any:
    from marginface.embed import Pipeline

    return Pipeline.from_names("default", "yunet", selection="all")


@pytest.fixture
def client(tmp_path: Path, real_pipeline: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    card = real_pipeline.embedder.card
    calibrated = card.calibration is not None and bool(card.calibration.thresholds)
    settings = ServeSettings(
        db=str(tmp_path / "g.db"), threshold=None if calibrated else SFACE_THRESHOLD
    )
    with TestClient(create_app(settings, pipeline=real_pipeline)) as c:
        yield c, {"X-API-Key": settings.key_file.read_text().strip()}


def _photo(shared_data: Path, person: str, n: int) -> Path:
    return shared_data / "celeba-dev" / person / f"{person}_{n:04d}.jpg"


def _side_by_side(*paths: Path) -> bytes:
    images = [Image.open(p).convert("RGB") for p in paths]
    h = max(i.height for i in images)
    canvas = Image.new("RGB", (sum(i.width for i in images), h), (40, 40, 40))
    x = 0
    for i in images:
        canvas.paste(i, (x, 0))
        x += i.width
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _off_centre(big: Path, small: Path, scale: float = 0.55) -> bytes:
    """One photo of two people: ``big`` at the left edge, ``small`` shrunk by ``scale`` in the
    middle, so that the largest face is not the one nearest the centre."""
    a, b = (Image.open(p).convert("RGB") for p in (big, small))
    b = b.resize((round(b.width * scale), round(b.height * scale)))
    width, height = 2 * a.width + b.width + 20, max(a.height, b.height)
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    canvas.paste(a, (0, 0))
    canvas.paste(b, ((width - b.width) // 2, (height - b.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _upload(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/jpeg")


def test_enrol_and_identify_real_people(client, shared_data: Path) -> None:
    c, key = client
    ids = {}
    for person in ("celeb_7205", "celeb_7206"):
        files = [("photos", _upload(_photo(shared_data, person, n))) for n in (1, 2, 3)]
        r = c.post("/v1/enroll", data={"name": person}, files=files, headers=key)
        assert r.status_code == 201, r.text
        assert r.json()["enrolled"] >= 2
        ids[person] = r.json()["subject"]["id"]

    group = _side_by_side(
        _photo(shared_data, "celeb_7205", 6),
        _photo(shared_data, "celeb_7211", 1),
        _photo(shared_data, "celeb_7206", 6),
    )
    r = c.post(
        "/v1/identify",
        files={"photo": ("group.jpg", group, "image/jpeg")},
        data={"source": "lobby"},
        headers=key,
    )
    assert r.status_code == 200, r.text
    faces = sorted(r.json()["faces"], key=lambda f: f["box"][0])
    assert len(faces) == 3
    answers = [f["match"]["subject_id"] if f["match"] else None for f in faces]
    assert answers == [ids["celeb_7205"], None, ids["celeb_7206"]]
    assert faces[0]["score"] > faces[1]["score"]
    events = c.get("/v1/events", params={"source": "lobby"}, headers=key).json()["events"]
    assert sorted(e["decision"] for e in events) == ["match", "match", "unknown"]


def test_verify_real_photos(client, shared_data: Path) -> None:
    c, key = client
    a1, a2 = _photo(shared_data, "celeb_7205", 1), _photo(shared_data, "celeb_7205", 4)
    b1 = _photo(shared_data, "celeb_7220", 1)
    same = c.post(
        "/v1/verify", files={"photo": _upload(a1), "photo_b": _upload(a2)}, headers=key
    ).json()
    other = c.post(
        "/v1/verify", files={"photo": _upload(a1), "photo_b": _upload(b1)}, headers=key
    ).json()
    assert same["same"] is True and other["same"] is False
    assert same["score"] > other["score"]


def test_photo_without_a_face(client) -> None:
    c, key = client
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    r = c.post(
        "/v1/identify", files={"photo": ("noise.png", buf.getvalue(), "image/png")}, headers=key
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    r = c.post(
        "/v1/enroll",
        data={"name": "Noise"},
        files=[("photos", ("noise.png", buf.getvalue(), "image/png"))],
        headers=key,
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["status"] == "no_face"
    assert c.get("/healthz").json()["subjects"] == 0


def test_multiple_faces_policy_on_real_photos(client, shared_data: Path) -> None:
    c, key = client
    two = _off_centre(_photo(shared_data, "celeb_7205", 6), _photo(shared_data, "celeb_7206", 6))
    files = [("photos", ("two.jpg", two, "image/jpeg"))]

    def enrol(name: str, **fields: str) -> Any:
        return c.post("/v1/enroll", data={"name": name, **fields}, files=files, headers=key)

    def named(person: str) -> str | None:
        photo = {"photo": _upload(_photo(shared_data, person, 1))}
        match = c.post("/v1/identify", files=photo, headers=key).json()["faces"][0]["match"]
        return match["name"] if match else None

    r = enrol("Two")  # the default policy: reject
    assert r.status_code == 422 and r.json()["error"]["details"][0]["status"] == "multiple_faces"
    r = enrol("Central", multiple_faces="central")
    assert r.status_code == 201, r.text
    assert (named("celeb_7206"), named("celeb_7205")) == ("Central", None)
    # the same photo again: held back as Central's, until forced
    r = enrol("Largest", multiple_faces="largest")
    assert r.status_code == 409 and r.json()["error"]["code"] == "identity_conflict"
    (held,) = r.json()["error"]["details"]
    assert held["status"] == "duplicate_photo" and held["conflict"]["name"] == "Central"
    r = enrol("Largest", multiple_faces="largest", force="true")
    assert r.status_code == 201 and r.json()["photos"][0]["forced"] is True
    assert (named("celeb_7206"), named("celeb_7205")) == ("Central", "Largest")
