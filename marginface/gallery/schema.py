"""The gallery's SQL schema and its numbered migrations.

Version 1 is the schema marginface 0.1 wrote; it is history and never changes. Every later
change is a :class:`Migration` appended to :data:`MIGRATIONS`, numbered from 2 up. Opening a
database (:class:`~marginface.gallery.db.Database`) builds a new one from version 1 through every
migration, and brings an older one up to :data:`SCHEMA_VERSION` the same way: in ONE
transaction, serialised with every other process opening it at that moment (SQLite's write
lock, a PostgreSQL advisory lock), so a failed upgrade leaves the database as it was. A database
newer than this code is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BASE_SCHEMA", "MIGRATIONS", "SCHEMA_VERSION", "Migration", "render"]

#: Column types that differ between the dialects, named by the ``{placeholders}`` of the DDL.
_TYPES = {
    "sqlite": {"autoinc": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "float": "REAL"},
    "postgresql": {
        "autoinc": "BIGSERIAL PRIMARY KEY",
        "blob": "BYTEA",
        "float": "DOUBLE PRECISION",
    },
}

#: Version 1, as marginface 0.1 created it. Frozen: change the schema with a migration.
BASE_SCHEMA: tuple[str, ...] = (
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
)


@dataclass(frozen=True)
class Migration:
    """The step from ``version - 1`` to ``version``: statements run in order, in the upgrade's
    transaction (DDL with the ``{placeholders}`` of :func:`render`)."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "schema_migrations: the history of the schema's versions",
        (
            """CREATE TABLE schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at {float})""",
            # version 1 predates the history: when it was created is not known
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (1, 'base schema (marginface 0.1)', NULL)",
        ),
    ),
    Migration(
        3,
        "faces_source_hash: find a photo enrolled before without a scan",
        ("CREATE INDEX IF NOT EXISTS faces_source_hash ON faces (source_hash)",),
    ),
    Migration(
        4,
        "camera streams: cameras, visitors (grouped strangers) and their faces",
        (
            """CREATE TABLE cameras (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            url TEXT NOT NULL,
            settings TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            created_at {float} NOT NULL,
            updated_at {float} NOT NULL)""",
            # erasing a subject erases the visitors assigned to it, and their faces; the key is
            # checked at commit: an assignment marks the visitor before it creates the subject
            """CREATE TABLE visitors (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            subject_id TEXT REFERENCES subjects (id) ON DELETE CASCADE
                DEFERRABLE INITIALLY DEFERRED,
            first_seen {float} NOT NULL,
            last_seen {float} NOT NULL,
            sightings INTEGER NOT NULL,
            cameras TEXT NOT NULL,
            dim INTEGER NOT NULL,
            weight {float} NOT NULL,
            embedding {blob} NOT NULL,
            created_at {float} NOT NULL,
            updated_at {float} NOT NULL)""",
            "CREATE INDEX visitors_status ON visitors (status, last_seen)",
            "CREATE INDEX visitors_subject ON visitors (subject_id)",
            """CREATE TABLE visitor_faces (
            id {autoinc},
            visitor_id TEXT NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
            ts {float} NOT NULL,
            camera TEXT NOT NULL,
            quality {float} NOT NULL,
            embedding {blob} NOT NULL,
            crop {blob})""",
            "CREATE INDEX visitor_faces_visitor ON visitor_faces (visitor_id, quality)",
            "CREATE INDEX visitor_faces_ts ON visitor_faces (ts)",
            # attendance per camera (group) and the purge of camera visits read events by source
            "CREATE INDEX IF NOT EXISTS events_source ON events (source, ts)",
        ),
    ),
    Migration(
        5,
        "camera cluster: nodes, camera leases with fencing epochs, delivery marks, "
        "events.logged_at",
        (
            # every `marginface serve` sharing the gallery: its heartbeat (the database's
            # clock), capacity, and what it publishes about itself and its cameras (info)
            """CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            address TEXT NOT NULL,
            state TEXT NOT NULL,
            ttl_s {float} NOT NULL,
            capacity INTEGER NOT NULL,
            started_at {float} NOT NULL,
            heartbeat_at {float} NOT NULL,
            info TEXT NOT NULL)""",
            # one row per camera: the node holding it until expires_at, and the fencing epoch,
            # which grows with every new holder; previous_* say who held it before
            """CREATE TABLE camera_leases (
            camera_id TEXT PRIMARY KEY REFERENCES cameras (id) ON DELETE CASCADE,
            node TEXT,
            epoch BIGINT NOT NULL,
            expires_at {float},
            acquired_at {float},
            previous_node TEXT,
            previous_epoch BIGINT,
            previous_expires_at {float})""",
            "CREATE INDEX camera_leases_node ON camera_leases (node, expires_at)",
            "INSERT INTO camera_leases (camera_id, epoch) SELECT id, 0 FROM cameras",
            # per notifier and camera: the newest event delivered (or given up on), so that
            # the node taking a camera over sends again what its last holder may not have
            """CREATE TABLE delivery_marks (
            sink TEXT NOT NULL,
            camera_id TEXT NOT NULL REFERENCES cameras (id) ON DELETE CASCADE,
            event_id BIGINT NOT NULL,
            updated_at {float} NOT NULL,
            PRIMARY KEY (sink, camera_id))""",
            # when the row was written, by the database's clock (ts is when it happened)
            "ALTER TABLE events ADD COLUMN logged_at {float}",
        ),
    ),
)

#: The newest schema this code reads and writes.
SCHEMA_VERSION = MIGRATIONS[-1].version


def render(statement: str, dialect: str) -> str:
    """A DDL statement with its column types written for ``dialect``."""
    return statement.format(**_TYPES[dialect])
