"""``marginface keys create | list | revoke``: API keys managed with local access to the gallery
database (how a lost admin key is replaced), through typer's CliRunner and the real entry point."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from marginface.cli import COMMAND_MODULES, ExitCode, main
from marginface.cli import keys as keys_cli
from marginface.errors import ConflictError, NotFoundError
from marginface.gallery import Gallery


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    keys_cli.register(app)
    return app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An existing, empty gallery (the service or ``enroll`` creates one)."""
    path = tmp_path / "gallery.db"
    Gallery.open(path).close()
    return path


def _keys(db: Path) -> dict[str, str]:
    with Gallery.open(db, create=False) as g:
        return {k.id: k.role for k in g.keys.list()}


def test_keys_is_a_registered_command_group_and_unknown_roles_are_refused(app, db):
    assert "keys" in COMMAND_MODULES
    with pytest.raises(SystemExit) as exit_info:
        main(["keys", "create", "--role", "root", "--db", str(db)])
    assert exit_info.value.code == 2


def test_create_prints_a_working_key_once(app, db):
    """The lost-admin recovery: a new admin key from local access alone, the secret alone on
    stdout (so that ``KEY=$(marginface keys create ...)`` works)."""
    res = CliRunner().invoke(
        app, ["keys", "create", "--role", "admin", "--name", "ops", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    secret = res.stdout.strip()
    assert "\n" not in secret and "shown only this once" in res.stderr
    with Gallery.open(db, create=False) as g:
        key = g.keys.authenticate(secret)
    assert key is not None and key.role == "admin" and key.name == "ops"

    res = CliRunner().invoke(
        app, ["keys", "create", "--role", "recognise", "--json", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert made["key"]["role"] == "recognise" and made["secret"].startswith("mfk_")
    assert made["key"]["name"] == "recognise key (marginface keys create)"
    assert _keys(db) == {key.id: "admin", made["key"]["id"]: "recognise"}

    with pytest.raises(SystemExit) as exit_info:  # the gallery's rule: one error line
        main(["keys", "create", "--role", "root", "--db", str(db)])
    assert exit_info.value.code == 2
    assert len(_keys(db)) == 2  # nothing created


def test_list_shows_ids_names_roles_and_use(app, db):
    with Gallery.open(db, create=False) as g:
        admin, secret = g.keys.create("first admin", "admin")
        door, _ = g.keys.create("door", "recognise")
        g.keys.authenticate(secret)  # marks the admin key used
    res = CliRunner().invoke(app, ["keys", "list", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {admin.id, door.id}
    assert rows[door.id]["name"] == "door" and rows[door.id]["role"] == "recognise"
    assert rows[admin.id]["last_used_at"] is not None and rows[door.id]["last_used_at"] is None
    assert "secret" not in rows[admin.id] and "key_hash" not in rows[admin.id]
    res = CliRunner().invoke(app, ["keys", "list", "--db", str(db)])
    assert res.exit_code == 0 and "door" in res.output and "never" in res.output


def test_revoke_keeps_the_last_admin_unless_forced(app, db, capsys, monkeypatch):
    with Gallery.open(db, create=False) as g:
        admin, _ = g.keys.create("first admin", "admin")
        door, _ = g.keys.create("door", "recognise")

    # the last admin key: refused with a message that says why and what to do, exit code 2
    with pytest.raises(SystemExit) as exc:
        main(["keys", "revoke", admin.id, "--yes", "--db", str(db)])
    assert exc.value.code == ExitCode.USER_ERROR
    err = capsys.readouterr().err
    assert "last admin key" in err and "--force" in err and "keys create --role admin" in err
    res = CliRunner().invoke(app, ["keys", "revoke", admin.id, "--yes", "--db", str(db)])
    assert isinstance(res.exception, ConflictError)
    assert admin.id in _keys(db)

    # confirmation is asked unless --yes; declining changes nothing and exits 130
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    with pytest.raises(SystemExit) as exc:
        main(["keys", "revoke", door.id, "--db", str(db)])
    assert exc.value.code == ExitCode.ABORTED
    assert door.id in _keys(db)
    res = CliRunner().invoke(app, ["keys", "revoke", door.id, "--db", str(db)], input="y\n")
    assert res.exit_code == 0 and f"revoked recognise key {door.id}" in res.stdout
    assert _keys(db) == {admin.id: "admin"}

    res = CliRunner().invoke(app, ["keys", "revoke", door.id, "--yes", "--db", str(db)])
    assert isinstance(res.exception, NotFoundError)  # already gone

    # --force revokes it, and warns that no admin key is left
    res = CliRunner().invoke(
        app, ["keys", "revoke", admin.id, "--force", "--yes", "--json", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["revoked"]["id"] == admin.id and out["admin_keys_left"] == 0
    assert _keys(db) == {}


def test_revoke_one_of_two_admin_keys_needs_no_force(app, db):
    with Gallery.open(db, create=False) as g:
        old, _ = g.keys.create("lost", "admin")
        g.keys.create("new", "admin")
    res = CliRunner().invoke(app, ["keys", "revoke", old.id, "--yes", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert old.id not in _keys(db) and "warning" not in res.output


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "create", "--role", "admin"],
        ["keys", "list"],
        ["keys", "revoke", "0123456789ab", "--yes"],
    ],
    ids=lambda c: c[1],
)
def test_keys_refuse_a_gallery_that_does_not_exist(app, tmp_path, command):
    """A mistyped --db must not become a new gallery holding a key no service reads."""
    missing = tmp_path / "typo" / "gallery.db"
    res = CliRunner().invoke(app, [*command, "--db", str(missing)])
    assert isinstance(res.exception, NotFoundError), res.output
    assert not missing.parent.exists()


@pytest.mark.parametrize("argv", [["--bogus"], ["keys", "create"], ["gallery", "list", "--nope"]])
def test_usage_errors_are_one_message_not_a_traceback(argv, capsys):
    """A mistyped option or a missing argument gets click's usage message and exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("Usage" in err or "Error" in err)
