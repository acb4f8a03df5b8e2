"""Gallery fixtures: real stores (SQLite, PostgreSQL, Milvus Lite) and a fake face pipeline."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gallery_helpers import STORES, FakePipeline, People, StoreSpec, make_store


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A real PostgreSQL server: ``$MARGINFACE_TEST_PG_URL`` or a private one started here."""
    env = os.environ.get("MARGINFACE_TEST_PG_URL", "").strip()
    if env:
        yield env
        return
    from tests.gallery.postgres_server import TemporaryPostgres

    with TemporaryPostgres() as pg:
        yield pg.url


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite file for the session; each test uses its own collection."""
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """Every supported store, one at a time."""
    backend, index = request.param
    spec = make_store(backend, index, tmp_path, request)
    yield spec
    spec.close_all()


@pytest.fixture
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """The embedded default: SQLite + exact index."""
    spec = make_store("sqlite", "exact", tmp_path, request)
    yield spec
    spec.close_all()


@pytest.fixture
def people() -> People:
    return People(20)


@pytest.fixture
def fake_pipeline() -> FakePipeline:
    return FakePipeline()
