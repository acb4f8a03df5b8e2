"""A thin SQL layer over SQLite (``sqlite3``) and PostgreSQL (``psycopg`` 3): one schema, one code.

Statements are written once with ``?`` placeholders; the PostgreSQL driver gets ``%s``. Every
write happens inside :meth:`Database.transaction`, which commits or rolls back as a whole.

Connections: PostgreSQL through a ``psycopg_pool`` pool, SQLite through a small pool of its own
(one connection per thread using the file at that moment, kept for the next). A statement
outside a transaction borrows a connection for its own duration, so concurrent readers never
wait for each other (SQLite's WAL lets readers run beside the writer). A transaction binds one
connection to its thread until it ends: every statement the thread runs inside it goes there.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from marginface.errors import ConflictError, GalleryError, NotFoundError, StorageError
from marginface.extras import install_hint
from marginface.gallery import schema
from marginface.gallery.schema import SCHEMA_VERSION
from marginface.urls import redact_url

__all__ = ["SCHEMA_VERSION", "Database", "driver_error", "normalise_url", "require_existing"]

#: Advisory lock keys (PostgreSQL) of what :meth:`Database.lock_writes` serialises.
_WRITE_LOCKS = {"schema": 715517, "api_keys": 715518, "faces": 715519, "nodes": 715520}

#: The database's clock as epoch seconds: what leases and write times are measured with (never
#: a node's own clock, which may be wrong). PostgreSQL's ``now()`` is the start of the
#: transaction, the same for all of its statements.
_NOW_SQL = {
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "SELECT CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)",
}

_TABLE_EXISTS = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    "postgresql": "SELECT 1 WHERE to_regclass(?) IS NOT NULL",
}


def driver_error(exc: BaseException) -> GalleryError | None:
    """The package's error for a database driver's exception (None when it is not one).

    Values the database refuses (a number beyond 64 bits, a NUL character in PostgreSQL text)
    are the caller's :class:`GalleryError`; a broken constraint, such as a face added to a
    subject deleted in the meantime, is a :class:`ConflictError`; anything else the driver
    raises means the database is unusable right now: :class:`StorageError` (so is a
    PostgreSQL pool that gives no connection in time: ``psycopg_pool.PoolTimeout`` is a
    ``psycopg.OperationalError``).
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


def require_existing(url: str | Path) -> None:
    """:class:`NotFoundError` unless the gallery at ``url`` exists (a SQLite file; a PostgreSQL
    database is created by its administrator, so it is left to the connection to say). No
    connection is opened: read-only commands check this before loading any model."""
    dialect, target = normalise_url(url)
    if dialect == "sqlite" and not Path(target).exists():
        raise NotFoundError(
            f"no gallery at {target}: check the path (--db or $MARGINFACE_GALLERY_URL); "
            "enrolling someone creates a new gallery"
        )


def normalise_url(url: str | Path) -> tuple[str, str]:
    """Return ``(dialect, target)``: a SQLite file path or a PostgreSQL conninfo URL."""
    text = str(url).strip()
    if not text:
        raise GalleryError("empty gallery URL")
    if re.match(r"^postgres(ql)?(\+\w+)?://", text):
        return "postgresql", re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", text)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
        if not text.startswith("/") and re.match(r"^[A-Za-z]:", text) is None:
            text = text  # relative path
    elif text.startswith("sqlite://"):
        raise GalleryError(
            f"unsupported SQLite URL {redact_url(text)!r}: use sqlite:///path/to/gallery.db"
        )
    elif "://" in text:
        raise GalleryError(
            f"unsupported gallery URL {redact_url(text)!r}: use a file path, sqlite:///path or "
            "postgresql://..."
        )
    return "sqlite", str(Path(text).expanduser())


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",  # erased rows are zeroed
    "PRAGMA busy_timeout=30000",
)


class _SqliteConnections:
    """The connections to one SQLite file: one for each thread using it at the moment, kept
    for the next (none is left behind by threads that end, as a thread-local one would be)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            for pragma in _SQLITE_PRAGMAS:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for the ``with`` block (the interface of psycopg_pool's pools)."""
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and not conn.in_transaction
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        """Close the idle connections now, the borrowed ones when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


#: libpq's TCP settings: a server that vanished without closing the connection (a network
#: partition, a machine switched off) fails a statement within about 15 s instead of the
#: system's minutes of retransmissions.
_TCP_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}


def _postgres_pool(target: str, size: int, timeout: float) -> Any:
    """A ``psycopg_pool.ConnectionPool`` of autocommit connections to ``target``."""
    try:  # optional dependencies: the `postgres` extra
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError:  # pragma: no cover - depends on the installation
        raise GalleryError(
            "PostgreSQL galleries need psycopg and psycopg-pool: " + install_hint("postgres")
        ) from None
    try:  # an unreachable server is said plainly now, not as a pool timeout later
        psycopg.connect(target, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise GalleryError(f"cannot connect to PostgreSQL gallery: {exc}") from None
    return ConnectionPool(
        target,
        min_size=1,
        max_size=max(1, int(size)),
        timeout=timeout,
        kwargs={"autocommit": True, "connect_timeout": 10, **_TCP_OPTIONS},
        # a connection the server dropped (a restart) is replaced when it is taken, not
        # discovered by the statement that needed it
        check=ConnectionPool.check_connection,
        open=True,
        num_workers=2,
    )


@contextlib.contextmanager
def _driver_errors() -> Iterator[None]:
    """Raise the package's error (:func:`driver_error`) for a driver's exception."""
    try:
        yield
    except Exception as exc:
        mapped = driver_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


class Database:
    """The gallery's SQL store, shared by the threads of a process.

    ``create=False`` refuses a SQLite file that does not exist yet (:class:`NotFoundError`)
    instead of creating it and its folders: read-only commands must not turn a mistyped path
    into an empty gallery. ``pool_size`` bounds the PostgreSQL connections open at once;
    a statement that waits ``pool_timeout`` seconds for one fails with :class:`StorageError`.
    Opening brings the schema up to :data:`SCHEMA_VERSION` (:meth:`upgrade_schema`).
    """

    def __init__(
        self,
        url: str | Path,
        *,
        create: bool = True,
        pool_size: int = 8,
        pool_timeout: float = 30.0,
    ) -> None:
        self.dialect, self.target = normalise_url(url)
        self._bound = threading.local()  # .conn: the connection of this thread's transaction
        # SQLite has one writer at a time: this process's write transactions queue here
        # instead of polling SQLite's busy handler
        self._writer = threading.Lock() if self.dialect == "sqlite" else None
        if self.dialect == "sqlite":
            self._pool: Any = self._open_sqlite(create)
        else:
            self._pool = _postgres_pool(self.target, pool_size, pool_timeout)
        try:
            self.upgrade_schema()
        except BaseException:
            self.close()
            raise

    def _open_sqlite(self, create: bool) -> _SqliteConnections:
        path = Path(self.target)
        if path.is_dir():
            raise GalleryError(f"gallery path {path} is a folder, expected a database file")
        if not create:
            require_existing(path)
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        pool = _SqliteConnections(path)
        try:
            with pool.connection():
                pass
        except sqlite3.DatabaseError as exc:
            pool.close()
            raise GalleryError(f"{path}: not a usable SQLite gallery ({exc})") from None
        if new:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)  # biometric data: owner only
        return pool

    # -- connections ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """This thread's transaction connection, else one borrowed for the block; the driver's
        errors (the pool's included) become the package's."""
        conn = getattr(self._bound, "conn", None)
        self._bound.statements = getattr(self._bound, "statements", 0) + 1
        with _driver_errors():
            if conn is not None:
                yield conn
            else:
                with self._pool.connection() as borrowed:
                    yield borrowed

    # -- statements -----------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self._connection() as conn:
            return int(conn.execute(self._sql(sql), tuple(params)).rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a query; return all rows."""
        with self._connection() as conn:
            return list(conn.execute(self._sql(sql), tuple(params)).fetchall())

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """Run a query; return the first row or None."""
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a query that returns one row (a count, ``INSERT ... RETURNING id``); return its
        first column."""
        row = self.query_one(sql, params)
        if row is None:
            raise StorageError(f"the gallery database returned no row for: {sql}")
        return row[0]

    def statements(self) -> int:
        """How many statements the calling thread has run on this database (what a thread's
        work costs the server: the cluster node's heartbeats are measured with it)."""
        return int(getattr(self._bound, "statements", 0))

    def now(self) -> float:
        """The database server's clock, epoch seconds (inside a PostgreSQL transaction: its
        start, the same for every statement in it)."""
        return float(self.scalar(_NOW_SQL[self.dialect]))

    def page(self, limit: int | None, offset: int) -> tuple[str, list[Any]]:
        """The ``LIMIT`` / ``OFFSET`` clause of one page of a listing (with its parameters):
        ``limit`` None is every row from ``offset`` on."""
        if limit is not None:
            return " LIMIT ? OFFSET ?", [int(limit), int(offset)]
        if offset:
            return (" LIMIT -1 OFFSET ?" if self.dialect == "sqlite" else " OFFSET ?"), [
                int(offset)
            ]
        return "", []

    def query_in(self, sql: str, values: Sequence[Any], chunk: int = 1000) -> Iterator[list]:
        """Run ``sql``, whose ``{marks}`` stands for an ``IN`` list, for ``values`` a chunk at
        a time; yield each chunk's rows."""
        values = list(values)
        for start in range(0, len(values), chunk):
            part = values[start : start + chunk]
            yield self.query(sql.replace("{marks}", ",".join("?" * len(part))), part)

    def iterate(self, sql: str, params: Sequence[Any] = (), size: int = 10000) -> Iterator[list]:
        """Yield the rows of a query in batches (for large scans)."""
        with self._connection() as conn:
            cur = conn.cursor()
            try:
                cur.execute(self._sql(sql), tuple(params))
                while rows := cur.fetchmany(size):
                    yield rows
            finally:
                cur.close()

    # -- transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction: everything inside commits together or not at all. It holds one
        connection, bound to this thread until it ends; nested, it joins the outer one."""
        if getattr(self._bound, "conn", None) is not None:
            yield self
            return
        with self._writer or contextlib.nullcontext(), self._connection() as conn:
            self._bound.conn = conn
            try:
                if self.dialect == "postgresql":
                    with conn.transaction():
                        yield self
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield self
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        raise
            finally:
                self._bound.conn = None

    def lock_writes(self, table: str) -> None:
        """Inside a transaction: serialise it with every other transaction that locks ``table``
        (read-check-write rules such as "keep one admin key", schema upgrades). SQLite's
        ``BEGIN IMMEDIATE`` already holds the database's single write lock; PostgreSQL takes an
        advisory lock until the transaction ends."""
        if getattr(self._bound, "conn", None) is None:
            raise RuntimeError("lock_writes() needs an open transaction")
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCKS[table],))

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log into the database file, whose freed pages
        ``secure_delete`` has zeroed: erased rows must not linger in the log. Nothing to do
        for PostgreSQL."""
        if self.dialect == "sqlite":
            self.query("PRAGMA wal_checkpoint(PASSIVE)")

    # -- schema ---------------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version recorded in the database (0: it has no tables yet)."""
        if self.query_one(_TABLE_EXISTS[self.dialect], ("meta",)) is None:
            return 0
        row = self.query_one("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row[0]) if row is not None else 0

    def upgrade_schema(self) -> int:
        """Create the schema, or upgrade it in place through :data:`schema.MIGRATIONS`; return
        the version the database had (0: it was new). Runs at open.

        One transaction, serialised across processes: a second process opening the database at
        the same moment waits, then finds it upgraded. :class:`GalleryError` for a database
        newer than this code; a failing step rolls everything back (the old version stays).
        """
        migrations = schema.MIGRATIONS
        newest = migrations[-1].version
        with self.transaction():
            self.lock_writes("schema")
            found = version = self.schema_version()
            if found > newest:
                raise GalleryError(
                    f"gallery schema version {found} is newer than this marginface supports "
                    f"({newest}); upgrade marginface"
                )
            if version == 0:
                for statement in schema.BASE_SCHEMA:
                    self.execute(schema.render(statement, self.dialect))
                if self.query_one("SELECT generation FROM state WHERE id = 1") is None:
                    self.execute("INSERT INTO state (id, generation) VALUES (1, 0)")
                self.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
                version = 1
            for step in migrations:
                if step.version <= version:
                    continue
                for statement in step.statements:
                    self.execute(schema.render(statement, self.dialect))
                self.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (step.version, step.name, time.time()),
                )
                self.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step.version),)
                )
                version = step.version
        return found

    def close(self) -> None:
        """Close the connections (a borrowed one when it comes back)."""
        with contextlib.suppress(Exception):
            self._pool.close()
