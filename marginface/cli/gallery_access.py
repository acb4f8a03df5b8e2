"""What the gallery-backed command modules share: ``gallery.py`` (enroll, identify, verify,
``gallery ...``) and ``keys.py`` (the service's API keys).

The ``--db`` and ``--json`` options, JSON output in the API's shape, a rich console, and
opening an existing gallery without a model. Command modules do not import each other (an
independence contract in ``.importlinter``); what two of them share lives in a module like this.
The gallery itself is imported inside the functions, so ``marginface --help`` does not load it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from marginface.gallery import Gallery

__all__ = [
    "DB_HELP",
    "DB_OPTION",
    "JSON_OPTION",
    "console",
    "emit_json",
    "open_gallery",
    "progress",
]

DB_HELP = (
    "gallery: a SQLite file, sqlite:///path or postgresql://...; default "
    "$MARGINFACE_GALLERY_URL or ~/.local/share/marginface/gallery.db"
)

DB_OPTION = typer.Option(
    None, "--db", envvar="MARGINFACE_GALLERY_URL", help=DB_HELP, show_default=False
)
JSON_OPTION = typer.Option(False, "--json", help="machine-readable JSON output")


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON, in the shapes the service's API uses."""
    from marginface.gallery import to_jsonable  # CLI: keeps marginface --help quick

    typer.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))


def console() -> Console:
    """A rich console for tables on stdout."""
    from rich.console import Console  # CLI: keeps marginface --help quick

    return Console()


def open_gallery(db: str | None, index: str = "exact") -> Gallery:
    """Open an existing gallery without a model (listing, export, deletion, keys): a missing
    one is :class:`~marginface.errors.NotFoundError`, never created."""
    from marginface.gallery import Gallery  # CLI: keeps marginface --help quick

    return Gallery.open(db, index=index, create=False)


@contextmanager
def progress(what: str) -> Iterator[None]:
    """A slow step shown while it runs: on a terminal, a spinner with ``what`` on stderr and
    then the seconds it took (loading the models and the gallery's index takes seconds, and a
    first run much longer: it was silent for 54 s); nothing when stderr is not a terminal, so
    pipes and scripts read only the results."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console  # CLI: keeps marginface --help quick

    err = Console(stderr=True)
    started = time.monotonic()
    with err.status(f"{what} ..."):
        yield
    err.print(f"{what}: {time.monotonic() - started:.1f} s", style="dim", highlight=False)
