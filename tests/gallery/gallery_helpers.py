"""Synthetic identities and a fake face pipeline for the gallery tests."""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from marginface.decision import IdentificationPolicy
from marginface.errors import ImageError
from marginface.gallery import Gallery

DIM = 32
MODEL = "fake-model"
_db_counter = itertools.count()


# -- synthetic identities ------------------------------------------------------------------------
def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class People:
    """Random identities: each has a centre; its photos are noisy copies (cosine ~0.8)."""

    def __init__(self, n: int, dim: int = DIM, seed: int = 0, noise: float = 0.35) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = unit(self.rng.normal(size=(n, dim)))
        self.noise = noise
        self.dim = dim

    def sample(self, person: int, n: int = 1) -> np.ndarray:
        e = self.centres[person] + self.noise * self.rng.normal(size=(n, self.dim)) / np.sqrt(
            self.dim
        )
        return unit(e)

    def stranger(self, n: int = 1) -> np.ndarray:
        return unit(self.rng.normal(size=(n, self.dim)))


def enrol_people(gallery: Gallery, people: People, n: int, per: int = 3) -> list[str]:
    """Enrol people 0 .. n-1 (``per`` faces each, metadata ``{"idx": i}``); their ids."""
    return [
        gallery.subjects.create(f"person {i}", {"idx": i}, embeddings=people.sample(i, per)).id
        for i in range(n)
    ]


# -- a fake face pipeline ------------------------------------------------------------------------
@dataclass
class FakeFace:
    """Stands in for ``marginface.embed.Face``."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop: np.ndarray
    embedding: np.ndarray
    image_shape: tuple[int, int] = (200, 400)  # (H, W): the faces lie side by side


@dataclass
class FakeEmbedder:
    name: str = MODEL
    embedding_dim: int = DIM
    card: Any = None


class FakePipeline:
    """``embed_image(photo_bytes)`` answers from a table: bytes -> list of embeddings.

    Photos are byte strings registered with :meth:`photo`; unknown bytes are "not an image".
    """

    def __init__(self, name: str = MODEL, dim: int = DIM) -> None:
        self.embedder = FakeEmbedder(name, dim)
        self.selection = "all"
        self._table: dict[bytes, list[FakeFace]] = {}
        self.calls = 0

    def photo(self, key: str, embeddings: np.ndarray | list[np.ndarray]) -> bytes:
        """Register a photo showing one face per embedding (the first one largest)."""
        data = f"fake-photo:{key}".encode()
        faces = []
        for i, e in enumerate(np.atleast_2d(np.asarray(embeddings, dtype=np.float32))):
            size = 100.0 - 20 * i
            x = 10.0 + 150 * i
            faces.append(
                FakeFace(
                    box=np.array([x, 10, x + size, 10 + size], np.float32),
                    score=0.9,
                    landmarks=np.zeros((5, 2), np.float32),
                    crop=np.full((112, 112, 3), 100 + i, np.uint8),
                    embedding=unit(e),
                )
            )
        self._table[data] = faces
        return data

    def embed_image(self, image: Any) -> list[FakeFace]:
        self.calls += 1
        if isinstance(image, bytes) and image in self._table:
            return list(self._table[image])
        raise ImageError("photo: not an image (format not recognised)")


# -- stores ------------------------------------------------------------------------------------
@dataclass
class StoreSpec:
    """How to (re)open one test gallery: same SQL store and index each time."""

    backend: str
    index: str
    url: str
    index_options: dict[str, Any] = field(default_factory=dict)
    opened: list[Gallery] = field(default_factory=list)

    def open(self, model: str = MODEL, dim: int = DIM, **kwargs: Any) -> Gallery:
        """The store, deciding at the explicit threshold 0.5 unless ``policy`` says otherwise."""
        kwargs.setdefault("policy", IdentificationPolicy(threshold=0.5))
        g = Gallery.open(
            self.url, model, dim, index=self.index, index_options=dict(self.index_options), **kwargs
        )
        self.opened.append(g)
        return g

    def close_all(self) -> None:
        for g in self.opened:
            g.close()


STORES = [
    pytest.param(("sqlite", "exact"), id="sqlite-exact"),
    pytest.param(("sqlite", "faiss"), id="sqlite-faiss"),
    pytest.param(("postgresql", "exact"), id="postgresql-exact"),
    pytest.param(("postgresql", "faiss"), id="postgresql-faiss"),
    pytest.param(("sqlite", "milvus"), id="sqlite-milvus"),
]


def make_store(
    backend: str, index: str, tmp_path: Path, request: pytest.FixtureRequest
) -> StoreSpec:
    """A fresh empty store of the given kind."""
    if backend == "postgresql":
        from tests.gallery.postgres_server import create_database

        server = request.getfixturevalue("pg_server_url")
        url = create_database(server, f"mf_test_{os.getpid()}_{next(_db_counter)}")
    else:
        url = str(tmp_path / "gallery.db")
    options: dict[str, Any] = {}
    if index == "faiss":
        # IVF trained as soon as 16 faces exist; probing every list keeps the answers exact
        options = {"kind": "ivf", "train_min": 16, "nlist": 4, "nprobe": 4}
    elif index == "milvus":
        options = {
            "uri": request.getfixturevalue("milvus_uri"),
            "collection": f"t_{uuid.uuid4().hex[:12]}",
        }
    return StoreSpec(backend, index, url, options)


def raw(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on its own connection, bypassing marginface (committed at once)."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(url, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
