"""``gallery.keys``: the service's API keys (KeyStore), on every store."""

from __future__ import annotations

import pytest

from marginface.errors import ConflictError, GalleryError, NotFoundError


def test_api_keys_are_stored_hashed(store):
    g = store.open()
    rec, secret = g.keys.create("ops laptop", "admin")
    assert g.keys.authenticate(secret).role == "admin"
    assert g.keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert g.keys.authenticate("nonsense") is None and g.keys.authenticate(None) is None
    rows = g._db.query("SELECT id, name, role, key_hash FROM api_keys")
    assert rows and all(
        secret not in str(r) and secret.split("_", 2)[2] not in str(r) for r in rows
    )
    if store.backend == "sqlite":
        g._db.query("PRAGMA wal_checkpoint(FULL)")
        from pathlib import Path

        raw = Path(store.url).read_bytes()
        assert secret.split("_", 2)[2].encode() not in raw
    _, enrol_secret = g.keys.create("kiosk", "enrol")
    assert g.keys.count() == 2 and g.keys.count("enrol") == 1
    assert {k.name for k in g.keys.list()} == {"ops laptop", "kiosk"}
    with pytest.raises(ConflictError, match="last admin key"):
        g.keys.delete(rec.id)
    assert g.keys.authenticate(secret).role == "admin"
    assert g.keys.delete(rec.id, allow_last_admin=True).id == rec.id
    assert g.keys.authenticate(secret) is None
    assert g.keys.authenticate(enrol_secret).role == "enrol"
    with pytest.raises(NotFoundError):
        g.keys.delete(rec.id)
    with pytest.raises(GalleryError, match="unknown role"):
        g.keys.create("x", "root")


def test_the_first_admin_key_is_made_once_and_uses_are_recorded(store):
    g = store.open()
    _, enrol = g.keys.create("kiosk", "enrol")
    made = g.keys.create_first_admin()
    assert made is not None
    record, secret = made
    assert (record.name, record.role) == ("first admin", "admin")
    assert g.keys.create_first_admin("another") is None
    assert g.keys.count("admin") == 1 and g.keys.count() == 2
    assert {k.name for k in g.keys.list()} == {"kiosk", "first admin"}
    assert g.keys.authenticate(secret, touch=False).last_used_at is None
    used = g.keys.authenticate(secret)
    assert used.last_used_at is not None
    assert g.keys.authenticate(enrol, touch=False).last_used_at is None
