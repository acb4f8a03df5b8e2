"""Fixtures for the service tests (helpers live in ``serve_fakes.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import FakePipeline, Harness, loop_guard


@pytest.fixture
def settings(tmp_path: Path) -> ServeSettings:
    return ServeSettings(db=str(tmp_path / "gallery.db"), max_upload_mb=1.0, workers=2)


@pytest.fixture
def harness(settings: ServeSettings) -> Iterator[Harness]:
    pipeline = FakePipeline()
    app = create_app(settings, pipeline=pipeline)
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
