"""A thin SQL layer over SQLite (``sqlite3``) and PostgreSQL (``psycopg`` 3): one schema, one code.

Statements are written once with ``?`` placeholders; the PostgreSQL driver gets ``%s``. Every
write happens inside :meth:`Database.transaction`, which commits or rolls back as a whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from marginface.errors import ConflictError, GalleryError, NotFoundError, StorageError

__all__ = ["SCHEMA_VERSION", "Database", "driver_error", "normalise_url"]

SCHEMA_VERSION = 1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS state (
        id INTEGER PRIMARY KEY,
        generation BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS subjects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at {float} NOT NULL,
        updated_at {float} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS subjects_name ON subjects (name)",
    """CREATE TABLE IF NOT EXISTS faces (
        id {autoinc},
        subject_id TEXT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        embedding {blob} NOT NULL,
        created_at {float} NOT NULL,
        source_hash TEXT,
        crop {blob})""",
    "CREATE INDEX IF NOT EXISTS faces_subject ON faces (subject_id)",
    """CREATE TABLE IF NOT EXISTS events (
        id {autoinc},
        ts {float} NOT NULL,
        source TEXT NOT NULL,
        subject_id TEXT,
        subject_name TEXT,
        score {float},
        decision TEXT NOT NULL,
        details TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    "CREATE INDEX IF NOT EXISTS events_subject ON events (subject_id, ts)",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        created_at {float} NOT NULL,
        last_used_at {float})""",
]

#: Advisory lock keys (PostgreSQL) of what :meth:`Database.lock_writes` serialises.
_WRITE_LOCKS = {"schema": 715517, "api_keys": 715518}

_TYPES = {
    "sqlite": {"autoinc": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "float": "REAL"},
    "postgresql": {"autoinc": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA",
                   "float": "DOUBLE PRECISION"},
}


def driver_error(exc: BaseException) -> GalleryError | None:
    """The package's error for a database driver's exception (None when it is not one).

    Values the database refuses (a number beyond 64 bits, a NUL character in PostgreSQL text)
    are the caller's :class:`GalleryError`; a broken constraint, such as a face added to a
    subject deleted in the meantime, is a :class:`ConflictError`; anything else the driver
    raises means the database is unusable right now: :class:`StorageError`.
    """
    if isinstance(exc, OverflowError):
        return GalleryError(f"a number is outside the database's 64-bit range ({exc})")
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(f"the gallery refused the write: {exc}")
    if isinstance(exc, sqlite3.Error):
        return StorageError(f"gallery database error: {exc}")
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.IntegrityError):
            return ConflictError(f"the gallery refused the write: {message}")
        if isinstance(exc, psycopg.DataError):
            return GalleryError(f"the gallery database refused a value: {message}")
        return StorageError(f"gallery database error: {message}")
    return None


def normalise_url(url: str | Path) -> tuple[str, str]:
    """Return ``(dialect, target)``: a SQLite file path or a PostgreSQL conninfo URL."""
    text = str(url).strip()
    if not text:
        raise GalleryError("empty gallery URL")
    if re.match(r"^postgres(ql)?(\+\w+)?://", text):
        return "postgresql", re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", text)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]
        if not text.startswith("/") and re.match(r"^[A-Za-z]:", text) is None:
            text = text  # relative path
    elif text.startswith("sqlite://"):
        raise GalleryError(f"unsupported SQLite URL {url!r}: use sqlite:///path/to/gallery.db")
    elif "://" in text:
        raise GalleryError(
            f"unsupported gallery URL {url!r}: use a file path, sqlite:///path or postgresql://..."
        )
    return "sqlite", str(Path(text).expanduser())


class Database:
    """One connection to the gallery's SQL store, safe to share between threads.

    ``create=False`` refuses a SQLite file that does not exist yet (:class:`NotFoundError`)
    instead of creating it and its folders: read-only commands must not turn a mistyped path
    into an empty gallery.
    """

    def __init__(self, url: str | Path, *, create: bool = True) -> None:
        self.dialect, self.target = normalise_url(url)
        self.lock = threading.RLock()
        self._in_tx = False
        if self.dialect == "sqlite":
            path = Path(self.target)
            if path.is_dir():
                raise GalleryError(f"gallery path {path} is a folder, expected a database file")
            new = not path.exists()
            if new and not create:
                raise NotFoundError(
                    f"no gallery at {path}: check the path (--db or $MARGINFACE_GALLERY_URL); "
                    "enrolling someone creates a new gallery")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn: Any = sqlite3.connect(
                    str(path), isolation_level=None, check_same_thread=False, timeout=30.0
                )
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute("PRAGMA secure_delete=ON")  # erased rows are zeroed
                self._conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.DatabaseError as exc:
                raise GalleryError(f"{path}: not a usable SQLite gallery ({exc})") from None
            if new:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)  # biometric data: owner only
        else:
            try:
                import psycopg
            except ImportError:  # pragma: no cover - depends on the installation
                raise GalleryError(
                    "PostgreSQL galleries need psycopg: pip install 'marginface[postgres]'"
                ) from None
            try:
                self._conn = psycopg.connect(self.target, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise GalleryError(f"cannot connect to PostgreSQL gallery: {exc}") from None
        self._create_schema()

    # -- statements ---------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return the driver's cursor."""
        with self.lock:
            try:
                return self._conn.execute(self._sql(sql), tuple(params))
            except Exception as exc:
                mapped = driver_error(exc)
                if mapped is None:
                    raise
                raise mapped from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a query; return all rows."""
        with self.lock:
            return list(self.execute(sql, params).fetchall())

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """Run a query; return the first row or None."""
        with self.lock:
            return self.execute(sql, params).fetchone()

    def iterate(self, sql: str, params: Sequence[Any] = (), size: int = 10000) -> Iterator[list]:
        """Yield the rows of a query in batches (for large scans)."""
        with self.lock:
            if self.dialect == "postgresql":
                with self._conn.cursor(name=None) as cur:
                    cur.execute(self._sql(sql), tuple(params))
                    while rows := cur.fetchmany(size):
                        yield rows
            else:
                cur = self._conn.execute(sql, tuple(params))
                while rows := cur.fetchmany(size):
                    yield rows

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        with self.lock:
            if self.dialect == "postgresql":
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
            else:
                self._conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction: everything inside commits together or not at all."""
        with self.lock:
            if self._in_tx:  # nested: join the outer transaction
                yield self
                return
            self._in_tx = True
            try:
                if self.dialect == "postgresql":
                    with self._conn.transaction():
                        yield self
                else:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
            finally:
                self._in_tx = False

    def lock_writes(self, table: str) -> None:
        """Inside a transaction: serialise it with every other transaction that locks ``table``
        (read-check-write rules such as "keep one admin key"). SQLite's ``BEGIN IMMEDIATE``
        already holds the database's single write lock; PostgreSQL takes an advisory lock."""
        if not self._in_tx:
            raise RuntimeError("lock_writes() needs an open transaction")
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCKS[table],))

    def _create_schema(self) -> None:
        types = _TYPES[self.dialect]
        with self.transaction():
            if self.dialect == "postgresql":  # several processes may start at once
                self.lock_writes("schema")
            for stmt in _SCHEMA:
                self.execute(stmt.format(**types))
            if self.query_one("SELECT generation FROM state WHERE id = 1") is None:
                self.execute("INSERT INTO state (id, generation) VALUES (1, 0)")
            row = self.query_one("SELECT value FROM meta WHERE key = 'schema_version'")
            if row is None:
                self.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise GalleryError(
                    f"gallery schema version {row[0]} is newer than this marginface supports "
                    f"({SCHEMA_VERSION}); upgrade marginface"
                )

    def close(self) -> None:
        """Close the connection."""
        with self.lock, contextlib.suppress(Exception):
            self._conn.close()
