"""API keys of the service: stored as SHA-256 hashes only, checked in constant time, and the rules
that read then write (the first admin key, the last admin key) in serialised transactions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from typing import Any

from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery.db import Database
from marginface.gallery.types import ROLES, ApiKey, utc_from_ts
from marginface.gallery.validate import clean_name

__all__ = ["KeyStore"]

#: Every secret reads ``mfk_<key id>_<random>``.
_KEY_PREFIX = "mfk"
_KEY_COLS = "id, name, role, created_at, last_used_at"


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _key(row: Sequence[Any]) -> ApiKey:
    """The record of a row of :data:`_KEY_COLS`."""
    return ApiKey(
        id=row[0],
        name=row[1],
        role=row[2],
        created_at=utc_from_ts(row[3]),
        last_used_at=utc_from_ts(row[4]) if row[4] is not None else None,
    )


class KeyStore:
    """The service's API keys, kept with one gallery: ``gallery.keys``. A key's secret is
    shown once, when it is created; only its SHA-256 is stored."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str, role: str) -> tuple[ApiKey, str]:
        """Create a key; return its record and the secret key text, which is never stored
        (only its SHA-256) and cannot be shown again."""
        with self._db.transaction():
            return self._insert(name, role)

    def create_first_admin(self, name: str = "first admin") -> tuple[ApiKey, str] | None:
        """Create an admin key when the gallery has none; return it as :meth:`create` does, or
        None when an admin key exists. The count and the insert are one transaction,
        serialised across processes, so services starting together create one key."""
        with self._db.transaction():
            self._db.lock_writes("api_keys")
            return None if self.count("admin") else self._insert(name, "admin")

    def _insert(self, name: str, role: str) -> tuple[ApiKey, str]:
        """Inside a transaction: a new key; its record and its secret."""
        if role not in ROLES:
            raise GalleryError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        name = clean_name(name, what="key name", max_length=100)
        key_id = secrets.token_hex(6)
        secret = f"{_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        self._db.execute(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, name, role, _hash_key(secret), now),
        )
        return _key((key_id, name, role, now, None)), secret

    def authenticate(self, secret: str | None, *, touch: bool = True) -> ApiKey | None:
        """The key record for a presented secret, or None when it is wrong or revoked
        (compared in constant time). ``touch`` records the use (``last_used_at``)."""
        if not secret or not secret.startswith(f"{_KEY_PREFIX}_"):
            return None
        parts = secret.split("_", 2)
        if len(parts) != 3:
            return None
        row = self._db.query_one(
            f"SELECT {_KEY_COLS}, key_hash FROM api_keys WHERE id = ?", (parts[1],)
        )
        if row is None or not hmac.compare_digest(row[5], _hash_key(secret)):
            return None
        if not touch:
            return _key(row)
        now = time.time()
        with self._db.transaction():
            self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, row[0]))
        return _key((*row[:4], now))

    def delete(self, key_id: str, *, allow_last_admin: bool = False) -> ApiKey:
        """Revoke a key and return its record (:class:`NotFoundError` when unknown).

        The last admin key is kept (:class:`ConflictError`) unless ``allow_last_admin``: without
        one nobody could manage the gallery through the service. The check and the delete are one
        transaction, serialised across processes (SQLite's write lock, a PostgreSQL advisory
        lock), so two concurrent revocations cannot both pass it.
        """
        with self._db.transaction():
            self._db.lock_writes("api_keys")
            row = self._db.query_one(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = ?", (key_id,))
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            if row[2] == "admin" and not allow_last_admin and self.count("admin") <= 1:
                raise ConflictError("the last admin key cannot be revoked")
            self._db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        return _key(row)

    def count(self, role: str | None = None) -> int:
        """Number of keys (of one role)."""
        if role is None:
            return int(self._db.scalar("SELECT COUNT(*) FROM api_keys"))
        return int(self._db.scalar("SELECT COUNT(*) FROM api_keys WHERE role = ?", (role,)))

    # Last in the class: below this method, `list` in an annotation would name it (mypy).
    def list(self) -> list[ApiKey]:
        """Every key's public record, oldest first."""
        return [
            _key(r) for r in self._db.query(f"SELECT {_KEY_COLS} FROM api_keys ORDER BY created_at")
        ]
