"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary folder.

Used by the gallery and service test-suites (and usable by anyone testing against a real
server)::

    with TemporaryPostgres() as pg:
        url = pg.create_database("t1")     # postgresql://postgres@127.0.0.1:PORT/t1

When the process runs as root, the server runs as the ``postgres`` OS user through ``runuser``
(PostgreSQL refuses to run as root). Set ``MARGINFACE_PG_BIN`` to the folder holding
``initdb``/``pg_ctl`` when they are not in a usual place.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from marginface.errors import GalleryError

__all__ = ["TemporaryPostgres", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    candidates = []
    env = os.environ.get("MARGINFACE_PG_BIN")
    if env:
        candidates.append(Path(env))
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(re.sub(r"\D", "", p) or 0),
            reverse=True,
        )
    ]
    candidates.append(Path("/usr/local/bin"))
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(Path(which).resolve().parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryPostgres:
    """Start a private PostgreSQL server on a free localhost port; stop and erase it on exit."""

    def __init__(self, bin_dir: str | Path | None = None, user: str = "postgres") -> None:
        found = Path(bin_dir) if bin_dir else find_pg_bin()
        if found is None:
            raise GalleryError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found; install "
                "the postgresql package or set MARGINFACE_PG_BIN"
            )
        self.bin_dir = found
        self.os_user = user
        self.port = 0
        self.root: Path | None = None

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = ""
            if self.root is not None and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise GalleryError(
                f"{Path(args[0]).name} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()} {log}"
            )

    def start(self) -> TemporaryPostgres:
        """initdb + start; returns self."""
        self.root = Path(tempfile.mkdtemp(prefix="marginface-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, self.os_user, self.os_user)
        data = self.root / "data"
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        for _attempt in range(3):
            self.port = _free_port()
            try:
                self._pg_start()
                return self
            except GalleryError:
                continue
        raise GalleryError("could not start the temporary PostgreSQL server")

    def _pg_start(self) -> None:
        assert self.root is not None
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def halt(self) -> None:
        """Stop the server as an administrator would (``pg_ctl stop -m fast``: clients are
        disconnected, committed data kept); :meth:`resume` starts it again on the same port."""
        assert self.root is not None
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"
        )

    def resume(self) -> None:
        """Start the server :meth:`halt` stopped, on the same port with the same data."""
        self._pg_start()

    @property
    def url(self) -> str:
        """URL of the default ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """Create a fresh database; return its URL."""
        return create_database(self.url, name)

    def stop(self) -> None:
        """Stop the server and erase its folder."""
        if self.root is None:
            return
        with contextlib.suppress(GalleryError, subprocess.SubprocessError):
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` (dropping an old one) on the server of ``server_url``; return
    the new database's URL."""
    import psycopg  # optional: the `postgres` extra

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise GalleryError(f"invalid database name {name!r}")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/{name}"
