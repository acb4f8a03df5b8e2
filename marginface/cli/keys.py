"""CLI commands for the service's API keys: ``marginface keys create | list | revoke``.

The keys live in the gallery database, beside the subjects and embeddings they protect. Whoever
can open that database locally (the SQLite file, or the PostgreSQL credentials) can already
read and change everything a key grants, so local access is the proof of authority: these
commands ask for no key. That is how an administrator who lost the admin key gets a new one.

Like the other commands except ``enroll``, they refuse a gallery that does not exist: a
mistyped ``--db`` must not become a new, empty gallery holding a key nobody's service reads.
"""

from __future__ import annotations

import typer

from marginface.cli.gallery_access import DB_OPTION, JSON_OPTION, console, emit_json, open_gallery
from marginface.errors import ConflictError, NotFoundError

_LAST_ADMIN = (
    "key {key_id} is the last admin key: without one nobody can manage keys or subjects "
    "through the service. Create another first (marginface keys create --role admin), or "
    "pass --force to revoke it anyway"
)


def keys_create(
    # A plain string: the gallery refuses an unknown role (marginface.gallery.ROLES is the one
    # list), and --help stays quick without importing the gallery.
    role: str = typer.Option(
        ...,
        "--role",
        help="admin (everything, keys included), enrol (subjects and faces, and recognition) "
        "or recognise (identify and verify only)",
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        show_default=False,
        help='a label to tell keys apart in keys list (default: "ROLE key (marginface keys '
        'create)")',
    ),
    db: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API key for the service and print it once.

    No key is needed: local access to the gallery database is the proof of
    authority, since that database holds everything a key protects.
    This is how to replace a lost admin key.
    Only a hash of the key is stored; it cannot be shown again.
    The gallery must exist (marginface serve or enroll creates it).
    """
    if name is None:  # every key has a name; this one says where the key came from
        name = f"{role} key (marginface keys create)"
    with open_gallery(db) as g:
        record, secret = g.keys.create(name, role.lower())
    if as_json:
        emit_json({"key": record, "secret": secret})
        return
    typer.echo(
        f"created {record.role} key {record.name!r} with id {record.id}; the key is shown "
        "only this once (the gallery keeps only its hash):",
        err=True,
    )
    typer.echo(secret)


def keys_list(db: str | None = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List the service's API keys: id, name, role, created and last used.

    Only hashes of the keys are stored, so the keys cannot be shown."""
    with open_gallery(db) as g:
        keys = g.keys.list()
    if as_json:
        emit_json(keys)
        return
    from rich.table import Table  # CLI: keeps marginface --help quick

    table = Table(title=f"{len(keys)} API key(s)")
    for col in ("id", "name", "role", "created", "last used"):
        table.add_column(col, no_wrap=col == "id")
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.role,
            k.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            k.last_used_at.astimezone().strftime("%Y-%m-%d %H:%M")
            if k.last_used_at is not None
            else "never",
        )
    console().print(table)


def keys_revoke(
    key_id: str = typer.Argument(..., help="the key's id, as keys list shows it"),
    force: bool = typer.Option(
        False,
        "--force",
        help="allow revoking the last admin key (the service then has none until keys create "
        "--role admin, or its next start, makes one)",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    db: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke an API key: requests presenting it are refused from now on.

    The last admin key is kept unless --force: without one, nobody could
    manage the service. Asks for confirmation unless --yes.
    """
    with open_gallery(db) as g:
        key = next((k for k in g.keys.list() if k.id == key_id), None)
        if key is None:
            raise NotFoundError(
                f"no API key with id {key_id!r} (marginface keys list shows the ids)"
            )
        if not yes:
            label = f" {key.name!r}" if key.name else ""
            if not typer.confirm(
                f"Revoke {key.role} key {key.id}{label}? Clients using it are refused from then on",
                default=False,
                err=True,
            ):
                raise typer.Abort()
        try:
            revoked = g.keys.delete(key_id, allow_last_admin=force)
        except ConflictError:  # the gallery keeps the last admin key unless forced
            raise ConflictError(_LAST_ADMIN.format(key_id=key_id)) from None
        admins_left = g.keys.count("admin")
    if as_json:
        emit_json({"revoked": revoked, "admin_keys_left": admins_left})
        return
    typer.echo(f"revoked {revoked.role} key {revoked.id}")
    if admins_left == 0:
        typer.secho(
            "warning: no admin key is left; marginface keys create --role admin makes "
            "one (the service also makes one at its next start and prints it)",
            fg=typer.colors.YELLOW,
            err=True,
        )


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""
    group = typer.Typer(
        help="Manage the service's API keys. Local access to the gallery database is the "
        "proof of authority: no key is needed, so a lost admin key can be replaced.",
        no_args_is_help=True,
    )
    group.command("create")(keys_create)
    group.command("list")(keys_list)
    group.command("revoke")(keys_revoke)
    app.add_typer(group, name="keys")
