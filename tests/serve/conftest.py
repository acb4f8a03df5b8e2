"""Fixtures for the service tests (helpers live in ``serve_fakes.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import FAKE_CAMERAS, FakePipeline, Harness, loop_guard


@pytest.fixture
def settings(tmp_path: Path) -> ServeSettings:
    return ServeSettings(db=str(tmp_path / "gallery.db"), max_upload_mb=1.0, workers=2)


@contextmanager
def started_harness(settings: ServeSettings, **app_options: Any) -> Iterator[Harness]:
    """A started app with the fake pipeline and a key of each role; on exit, checks that no
    SQL ran on the event loop."""
    pipeline = FakePipeline()
    app = create_app(settings, pipeline=pipeline, **app_options)
    with TestClient(app) as client, loop_guard(app) as guard:
        admin = settings.key_file.read_text().strip()
        keys = {"admin": admin}
        for role in ("enrol", "recognise"):
            r = client.post(
                "/v1/keys", json={"name": f"{role} key", "role": role}, headers={"X-API-Key": admin}
            )
            assert r.status_code == 201, r.text
            keys[role] = r.json()["secret"]
        yield Harness(client, settings, pipeline, keys, guard)
        # Every test on this harness also checks that no SQL ran on the event loop.
        assert guard.violations == [], "\n".join(guard.violations)


@pytest.fixture
def harness(settings: ServeSettings) -> Iterator[Harness]:
    with started_harness(settings) as h:
        yield h


@pytest.fixture
def camera_harness(settings: ServeSettings) -> Iterator[Harness]:
    """A harness whose cameras run the fake camera worker, and that keeps face crops."""
    with started_harness(
        settings.model_copy(update={"store_photos": True}), camera_options=FAKE_CAMERAS
    ) as h:
        yield h
