"""Versioned schema migrations: a gallery written by marginface 0.1 (schema version 1) is upgraded
in place at open, in one transaction, once however many processes open it together; a failed
upgrade changes nothing; a newer gallery is refused."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from gallery_helpers import DIM, MODEL, People, make_store, raw

from marginface.decision import IdentificationPolicy
from marginface.errors import GalleryError, StorageError
from marginface.gallery import Gallery, schema
from marginface.gallery.db import Database

BACKENDS = ["sqlite", "postgresql"]
DAY = datetime(2024, 3, 5, 8, 0, tzinfo=UTC).timestamp()
SECRET = "mfk_0123456789ab_" + "s" * 43  # the shape gallery.keys.create gives


# -- a gallery as marginface 0.1 wrote it ----------------------------------------------------------


def write_release_1(url: str, people: People) -> dict[str, Any]:
    """A version-1 gallery: the schema of marginface 0.1 and rows of every kind, in the forms
    that release stored them (float32 little-endian embeddings, epoch seconds, JSON text,
    SHA-256 key hashes). Returns what was written."""
    dialect = "postgresql" if url.startswith("postgresql://") else "sqlite"
    for statement in schema.BASE_SCHEMA:
        raw(url, schema.render(statement, dialect))
    for key, value in (("schema_version", "1"), ("model", MODEL), ("dim", str(DIM))):
        raw(url, "INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
    raw(url, "INSERT INTO state (id, generation) VALUES (1, 5)")
    subjects = {
        "a1b2c3d4e5f60718": ("Ada Lovelace", '{"badge": 7}', 0),
        "0f1e2d3c4b5a6978": ("Zoë", "{}", 1),
    }
    faces: dict[int, str] = {}
    for sid, (name, meta, person) in subjects.items():
        raw(
            url,
            "INSERT INTO subjects (id, name, metadata, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sid, name, meta, DAY, DAY),
        )
        for j, vec in enumerate(people.sample(person, 2)):
            crop = b"\x89PNG fake crop" if j == 0 else None
            ((fid,),) = raw(
                url,
                "INSERT INTO faces (subject_id, model, dim, embedding, created_at, "
                "source_hash, crop) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (sid, MODEL, DIM, vec.astype("<f4").tobytes(), DAY, f"hash{j}", crop),
            )
            faces[int(fid)] = sid
    ada = "a1b2c3d4e5f60718"
    for offset, (source, sid, name, score, decision) in enumerate(
        [
            ("front-door", ada, "Ada Lovelace", 0.81, "match"),
            ("lab", ada, "Ada Lovelace", 0.77, "match"),
            ("front-door", None, None, 0.2, "unknown"),
        ]
    ):
        raw(
            url,
            "INSERT INTO events (ts, source, subject_id, subject_name, score, decision, "
            "details) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (DAY + 3600 * offset, source, sid, name, score, decision, '{"faces": 1}'),
        )
    raw(
        url,
        "INSERT INTO api_keys (id, name, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        ("0123456789ab", "ops laptop", "admin", hashlib.sha256(SECRET.encode()).hexdigest(), DAY),
    )
    return {"subjects": subjects, "faces": faces}


@pytest.fixture(params=BACKENDS)
def release_1(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict[str, Any], People]:
    """The URL of a fresh version-1 gallery (SQLite file or PostgreSQL database), what it
    holds, and the identities its faces come from."""
    url = make_store(request.param, "exact", tmp_path, request).url
    people = People(4)
    return url, write_release_1(url, people), people


def version(url: str) -> int:
    return int(raw(url, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0])


def history(url: str) -> list[tuple[int, str]]:
    return [
        (int(v), n)
        for v, n in raw(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    ]


def has_table(url: str, name: str) -> bool:
    if url.startswith("postgresql://"):
        return raw(url, "SELECT to_regclass(?) IS NOT NULL", (name,))[0][0]
    return bool(raw(url, "SELECT 1 FROM sqlite_master WHERE name = ?", (name,)))


# -- tests -----------------------------------------------------------------------------------------
def test_the_release_1_schema_is_frozen() -> None:
    """Version 1 is what marginface 0.1 wrote: a schema change is a new migration, never an
    edit of the base schema (which old databases would then not have)."""
    text = "\n".join(schema.BASE_SCHEMA).encode()
    assert hashlib.sha256(text).hexdigest()[:16] == "6972d8a2f5a87182"
    assert [m.version for m in schema.MIGRATIONS] == list(range(2, schema.SCHEMA_VERSION + 1))


def test_a_release_1_gallery_is_upgraded_in_place(release_1) -> None:
    url, written, people = release_1
    assert version(url) == 1 and not has_table(url, "schema_migrations")
    g = Gallery.open(url, MODEL, DIM, policy=IdentificationPolicy(threshold=0.5), create=False)
    try:
        assert version(url) == schema.SCHEMA_VERSION == 5
        assert history(url) == [
            (1, "base schema (marginface 0.1)"),
            *((m.version, m.name) for m in schema.MIGRATIONS),
        ]
        # subjects and faces survive, with everything they held
        subjects = {s.id: s for s in g.subjects.list()}
        assert {sid: s.name for sid, s in subjects.items()} == {
            sid: name for sid, (name, _, _) in written["subjects"].items()
        }
        assert subjects["a1b2c3d4e5f60718"].metadata == {"badge": 7}
        assert subjects["a1b2c3d4e5f60718"].created_at.timestamp() == DAY
        assert g.subjects.count_faces() == len(written["faces"]) == len(g.index) == 4
        for fid, sid in written["faces"].items():
            assert g.subjects.get_face(fid).subject_id == sid
        first = min(written["faces"])
        assert g.subjects.face_crop(first) == b"\x89PNG fake crop"
        assert g.subjects.get_face(first).source_hash == "hash0"
        # the stored embeddings still identify their people
        answers = g.identify(np.vstack([people.sample(0), people.sample(1)]))
        assert [a.name for a in answers] == ["Ada Lovelace", "Zoë"]
        # events and attendance
        assert [(e.source, e.decision, e.details) for e in g.events.list()] == [
            ("front-door", "unknown", {"faces": 1}),
            ("lab", "match", {"faces": 1}),
            ("front-door", "match", {"faces": 1}),
        ]
        (row,) = g.events.attendance("2024-03-05", tz=UTC)
        assert (row.name, row.count, row.sources) == ("Ada Lovelace", 2, ["front-door", "lab"])
        # the API key still authenticates
        key = g.keys.authenticate(SECRET)
        assert key is not None and (key.name, key.role) == ("ops laptop", "admin")
        # and the upgraded gallery takes new writes (the id sequences went on)
        s = g.subjects.create("after the upgrade", embeddings=people.sample(2, 2))
        assert min(f.id for f in g.subjects.faces(s.id)) > max(written["faces"])
        g.events.log("door", subject_id=s.id, score=0.9, decision="match")
    finally:
        g.close()
    Gallery.open(url, create=False).close()  # opening again changes nothing
    assert version(url) == 5 and [v for v, _ in history(url)] == [1, 2, 3, 4, 5]


def test_a_newer_gallery_is_refused(release_1) -> None:
    url, _, _ = release_1
    raw(url, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(
        GalleryError,
        match=r"schema version 99 is newer than this marginface "
        r"supports \(5\); upgrade marginface",
    ):
        Gallery.open(url, create=False)
    assert version(url) == 99 and not has_table(url, "schema_migrations")


def test_a_failed_upgrade_changes_nothing(release_1, monkeypatch) -> None:
    url, _, _ = release_1
    broken = schema.Migration(6, "broken", ("CREATE TABLE half_done (x INTEGER)", "NOT SQL"))
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    with pytest.raises(StorageError):
        Database(url)
    # steps 2 to 6 were one transaction with the failure: none of it happened
    assert version(url) == 1
    assert not has_table(url, "schema_migrations") and not has_table(url, "half_done")
    monkeypatch.undo()
    Database(url).close()
    assert version(url) == 5


def test_processes_opening_together_upgrade_once(release_1) -> None:
    """Four handles (each with its own connections, as processes have) open the old gallery at
    the same moment: one upgrades it, the others wait and find it upgraded."""
    url, _, _ = release_1
    barrier = threading.Barrier(4, timeout=30)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait()
            Database(url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert version(url) == 5 and [v for v, _ in history(url)] == [1, 2, 3, 4, 5]


def test_a_new_gallery_is_built_through_the_migrations(tmp_path) -> None:
    url = str(tmp_path / "new.db")
    Database(url).close()
    assert version(url) == schema.SCHEMA_VERSION
    assert [v for v, _ in history(url)] == list(range(1, schema.SCHEMA_VERSION + 1))


def test_cameras_of_schema_4_get_their_leases(release_1) -> None:
    """A gallery of schema 4 with cameras (a single service ran them) upgrades to the cluster's
    schema: each camera gets a free lease (epoch 0) that a node claims, events keep their rows
    (without a logged_at) and new events get one."""
    url, _, _ = release_1
    steps = [m for m in schema.MIGRATIONS if m.version <= 4]
    db = Database(url)  # today's schema; rebuild it at version 4 below
    db.close()
    for table in ("delivery_marks", "camera_leases", "nodes"):
        raw(url, f"DROP TABLE {table}")
    raw(url, "ALTER TABLE events DROP COLUMN logged_at")
    raw(url, "DELETE FROM schema_migrations WHERE version = 5")
    raw(url, "UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    assert version(url) == 4 and steps[-1].version == 4
    for name in ("door", "lab"):
        raw(
            url,
            "INSERT INTO cameras (id, name, url, settings, enabled, created_at, updated_at) "
            "VALUES (?, ?, 'push:', '{}', 1, ?, ?)",
            (f"id-{name}", name, DAY, DAY),
        )
    g = Gallery.open(url, MODEL, DIM, policy=IdentificationPolicy(threshold=0.5), create=False)
    try:
        assert version(url) == 5
        leases = {lease.camera: (lease.node, lease.epoch) for lease in g.cluster.leases()}
        assert leases == {"door": (None, 0), "lab": (None, 0)}
        assert all(e.logged_at is None for e in g.events.list())
        g.cluster.register("n1", "i1", ttl_s=30.0, capacity=4)
        assert len(g.cluster.claim("n1", "i1", count=4).leases) == 2
        event = g.events.log("door", subject_id=None, score=0.2, decision="arrived")
        assert event.logged_at is not None
    finally:
        g.close()
