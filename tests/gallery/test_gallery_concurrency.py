"""Concurrency: identify calls run together (no gallery-wide lock), readers hold SQL connections
of their own, a transaction keeps one connection for its thread, and changes of faces stay
consistent with the searches running beside them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from gallery_helpers import People, StoreSpec, make_store

from marginface.errors import StorageError
from marginface.gallery import index as index_module
from marginface.gallery.db import Database
from marginface.gallery.index import ExactIndex, FaissBinaryIndex, FaissIndex
from marginface.gallery.locks import ReadWriteLock


def run_together(*targets: Callable[[], object], timeout: float = 60) -> list[object]:
    """Run each target in a thread of its own; return their results (re-raising a failure)."""
    results: list[object] = [None] * len(targets)
    errors: list[BaseException] = []

    def call(i: int, target: Callable[[], object]) -> None:
        try:
            results[i] = target()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    if errors:
        raise errors[0]
    return results


# -- the gallery -----------------------------------------------------------------------------------
def test_two_identify_calls_overlap(store: StoreSpec, people: People) -> None:
    """Each call waits inside the index search until the other is inside too: with a lock
    around search (as the gallery had) the first would wait alone and the barrier break."""
    g = store.open()
    ids = [g.subjects.create(f"person {i}", embeddings=people.sample(i, 2)).id for i in range(3)]
    barrier = threading.Barrier(2, timeout=10)
    search = g.index.search

    def meeting_search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        barrier.wait()
        return search(queries, k)

    g.index.search = meeting_search
    probes = [people.sample(0), people.sample(1)]
    answers = run_together(*(lambda p=p: g.identify(p)[0].subject_id for p in probes))
    assert answers == ids[:2]


def test_searches_stay_right_while_faces_change(store: StoreSpec, people: People) -> None:
    """Searches on one handle while this handle and another (as a second process would) add and
    delete subjects: every answer about the stable subjects is right, and afterwards the index
    holds exactly the faces in SQL."""
    a = store.open()
    b = store.open() if store.index != "milvus" else a  # Milvus is itself shared
    stable = [a.subjects.create(f"stable {i}", embeddings=people.sample(i, 2)).id for i in range(4)]
    probes = np.vstack([people.sample(i) for i in range(4)])
    done = threading.Event()

    def search() -> int:
        rounds = 0
        while not done.is_set() or rounds == 0:
            assert [r.subject_id for r in a.identify(probes)] == stable
            rounds += 1
        return rounds

    def change(g) -> Callable[[], None]:
        def run() -> None:
            for i in range(6):
                s = g.subjects.create("visitor", embeddings=people.sample(10 + i, 2))
                g.subjects.add_faces(s.id, people.sample(10 + i, 1))
                g.subjects.delete_face(g.subjects.faces(s.id)[0].id)
                g.subjects.delete(s.id)

        return run

    def changes() -> None:
        try:
            run_together(change(a), change(b))
        finally:
            done.set()

    rounds = run_together(search, search, changes)
    assert rounds[0] and rounds[1]
    assert a.identify(probes)[0].subject_id == stable[0]  # the last search reconciles
    assert sorted(a.index.ids().tolist()) == sorted(
        r[0] for r in a._db.query("SELECT id FROM faces")
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_services_starting_together_create_one_admin_key(backend: str, request, tmp_path) -> None:
    """Count, then create: one serialised transaction, so only one of three handles (as three
    processes starting at once) creates the first admin key."""
    spec = make_store(backend, "exact", tmp_path, request)
    try:
        handles = [spec.open() for _ in range(3)]
        barrier = threading.Barrier(3, timeout=10)

        def start(g) -> object:
            barrier.wait()
            return g.keys.create_first_admin()

        made = [m for m in run_together(*(lambda g=g: start(g) for g in handles)) if m]
        assert len(made) == 1 and handles[0].keys.count("admin") == 1
        record, secret = made[0]
        assert handles[1].keys.authenticate(secret).id == record.id
        assert handles[2].keys.create_first_admin() is None
    finally:
        spec.close_all()


class _MeetingFaiss:
    """A FAISS index whose searches wait for each other at a barrier."""

    def __init__(self, inner: object, barrier: threading.Barrier) -> None:
        self._inner, self._barrier = inner, barrier

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def search(self, *args: object, **kwargs: object) -> object:
        self._barrier.wait()
        return self._inner.search(*args, **kwargs)


@pytest.mark.parametrize("kind", ["exact", "faiss-binary", "faiss-flat", "faiss-hnsw"])
def test_index_searches_run_together(kind: str, people: People, monkeypatch) -> None:
    """Two searches are inside one index at once (its lock is shared by readers); HNSW with a
    tombstone, whose selector the searches share."""
    index = {
        "exact": lambda: ExactIndex(people.dim),
        "faiss-binary": lambda: FaissBinaryIndex(people.dim),
        "faiss-flat": lambda: FaissIndex(people.dim, kind="flat"),
        "faiss-hnsw": lambda: FaissIndex(people.dim, kind="hnsw"),
    }[kind]()
    index.add(np.arange(40), np.vstack([people.sample(i % 20) for i in range(40)]))
    index.remove([39])
    barrier = threading.Barrier(2, timeout=10)
    if isinstance(index, FaissIndex):
        index._index = _MeetingFaiss(index._index, barrier)
    else:  # the numpy indexes make their empty result inside the lock
        empty = index_module._empty_result

        def meeting_empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
            barrier.wait()
            return empty(nq, k)

        monkeypatch.setattr(index_module, "_empty_result", meeting_empty)
    first, second = run_together(
        lambda: index.search(people.sample(3), 2), lambda: index.search(people.sample(4), 2)
    )
    assert first[1][0, 0] in (3, 23) and second[1][0, 0] in (4, 24)


# -- the SQL store ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    return make_store(request.param, "exact", tmp_path, request).url


def test_readers_hold_connections_of_their_own(db_url: str) -> None:
    """Two scans are inside their result sets at once (one shared connection cannot do that)."""
    db = Database(db_url)
    barrier = threading.Barrier(2, timeout=10)

    def scan() -> int:
        n = 0
        for rows in db.iterate("SELECT key FROM meta"):
            barrier.wait()
            n += len(rows)
        return n

    try:
        assert run_together(scan, scan) == [1, 1]  # the schema_version row
    finally:
        db.close()


def test_a_transaction_keeps_its_connection(db_url: str) -> None:
    """Inside a transaction a thread reads its own uncommitted writes; other threads read
    beside it and see them only once it commits."""
    db = Database(db_url)
    inside, finish = threading.Event(), threading.Event()

    def write() -> None:
        with db.transaction():
            db.execute("INSERT INTO meta (key, value) VALUES ('probe', 'x')")
            assert db.query_one("SELECT value FROM meta WHERE key = 'probe'") == ("x",)
            inside.set()
            assert finish.wait(10)

    def read() -> tuple | None:
        assert inside.wait(10)
        try:
            return db.query_one("SELECT value FROM meta WHERE key = 'probe'")
        finally:
            finish.set()

    try:
        assert run_together(write, read)[1] is None
        assert db.query_one("SELECT value FROM meta WHERE key = 'probe'") == ("x",)
    finally:
        db.close()


def test_a_closed_database_is_a_storage_error(db_url: str) -> None:
    db = Database(db_url)
    db.close()
    with pytest.raises(StorageError):
        db.query("SELECT 1")


def test_a_pool_with_no_connection_to_give_is_a_storage_error(request, tmp_path) -> None:
    url = make_store("postgresql", "exact", tmp_path, request).url
    db = Database(url, pool_size=1, pool_timeout=0.5)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            holding.set()
            assert release.wait(10)

    def wait_for_one() -> None:
        assert holding.wait(10)
        try:
            with pytest.raises(StorageError, match="couldn't get a connection"):
                db.query("SELECT 1")
        finally:
            release.set()

    try:
        run_together(hold, wait_for_one)
        assert db.query("SELECT 1") == [(1,)]  # the connection came back
    finally:
        db.close()


# -- the readers-writer lock -----------------------------------------------------------------------
def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    barrier = threading.Barrier(3, timeout=10)

    def read() -> None:
        with lock.read():
            barrier.wait()

    run_together(read, read, read)


def test_a_writer_runs_alone_and_before_later_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    reading, writer_waits = threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.read():
            reading.set()
            deadline = time.monotonic() + 10
            while lock._writers_waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            writer_waits.set()  # from now on a new reader queues behind the writer
            time.sleep(0.05)
            order.append("reader 1 leaves")

    def writer() -> None:
        assert reading.wait(10)
        with lock.write():
            order.append("writer")
            with lock.read(), lock.write():  # the writer may take either side again
                pass

    def late_reader() -> None:
        assert writer_waits.wait(10)
        with lock.read():
            order.append("reader 2")

    run_together(first_reader, writer, late_reader)
    assert order == ["reader 1 leaves", "writer", "reader 2"]
