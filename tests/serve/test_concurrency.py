"""Parallel enrol and identify requests against a real uvicorn server on the loopback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import FakePipeline, free_port, make_photo, running_server


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, str, FakePipeline]]:
    settings = ServeSettings(db=str(tmp_path / "gallery.db"), port=free_port(), workers=2)
    pipeline = FakePipeline(delay=0.005)
    with running_server(create_app(settings, pipeline=pipeline), settings.port) as url:
        yield url, settings.key_file.read_text().strip(), pipeline


def test_parallel_enrol_and_identify(live_server: tuple[str, str, FakePipeline]) -> None:
    url, key, _ = live_server
    headers = {"X-API-Key": key}

    def enrol(client: httpx.Client, person: int) -> str:
        r = client.post(
            "/v1/enroll",
            data={"name": f"person {person}"},
            files=[
                ("photos", ("a.png", make_photo((person, 50)), "image/png")),
                ("photos", ("b.png", make_photo((person, 80)), "image/png")),
            ],
        )
        assert r.status_code == 201, r.text
        assert r.json()["enrolled"] == 2
        return r.json()["subject"]["id"]

    def identify(client: httpx.Client, person: int) -> str | None:
        r = client.post(
            "/v1/identify",
            data={"source": f"cam{person % 3}"},
            files={"photo": ("q.png", make_photo((person, 65)), "image/png")},
        )
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        return face["match"]["name"] if face["match"] else None

    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        for person in range(4):
            enrol(client, person)

    def enrol_worker(worker: int) -> list[str]:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            return [enrol(client, 4 + 2 * worker + i) for i in range(2)]

    def identify_worker(worker: int) -> list[tuple[int, str | None]]:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            return [(p, identify(client, p)) for p in [worker, (worker + 1) % 4] * 5]

    with ThreadPoolExecutor(8) as pool:
        enrolments = [pool.submit(enrol_worker, w) for w in range(4)]
        identifications = [pool.submit(identify_worker, w) for w in range(4)]
        subject_ids = [sid for f in enrolments for sid in f.result()]
        answers = [a for f in identifications for a in f.result()]

    assert len(set(subject_ids)) == 8
    # People enrolled before the burst are recognised every time, whatever runs beside them.
    assert answers == [(p, f"person {p}") for p, _ in answers] and len(answers) == 40

    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        listed = client.get("/v1/subjects", params={"limit": 100}).json()
        assert listed["total"] == 12
        assert all(s["n_faces"] == 2 for s in listed["subjects"])
        with ThreadPoolExecutor(8) as pool:
            final = list(pool.map(lambda p: identify(client, p), range(12)))
        assert final == [f"person {p}" for p in range(12)]
        events = client.get("/v1/events", params={"limit": 1000}).json()["events"]
        assert len(events) == 52
        assert all(e["decision"] == "match" for e in events)
        health = client.get("/healthz").json()
        assert (health["subjects"], health["faces"]) == (12, 24)
