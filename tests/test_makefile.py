"""The Makefile's apt-get waits, bounded, for a lock another apt or dpkg process holds (issue #25:
`make serve` failed outright while unattended upgrades ran). A stand-in ``apt-get`` on the PATH
plays the other process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKED = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)"


def fake_apt(tmp_path: Path, refusals: int, other_error: bool = False) -> Path:
    """An ``apt-get`` that refuses ``refusals`` times for a held lock, then succeeds (or fails
    for another reason), noting each call's arguments."""
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "apt-get"
    script.parent.mkdir()
    tail = 'echo "E: Unable to locate package nope" >&2; exit 100' if other_error else "exit 0"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f"n=$(wc -l < {calls})\n"
        f'if [ "$n" -le {refusals} ]; then echo "{LOCKED}" >&2; exit 100; fi\n'
        f"{tail}\n"
    )
    script.chmod(0o755)
    return calls


def make_apt(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is missing: apt-get install make")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(
        [make, "-s", "-C", str(ROOT), "apt", "APT_RETRY_S=0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_apt_waits_for_a_held_lock(tmp_path: Path) -> None:
    calls = fake_apt(tmp_path, refusals=3)
    result = make_apt(tmp_path, "APT_ARGS=install -y ffmpeg", "APT_WAIT_S=30")
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 4
    assert all("DPkg::Lock::Timeout=30" in line and "install -y ffmpeg" in line for line in lines)
    assert result.stderr.count("holds the lock; waiting") == 3


def test_apt_gives_up_after_the_bound(tmp_path: Path) -> None:
    fake_apt(tmp_path, refusals=10**6)
    result = make_apt(tmp_path, "APT_ARGS=update", "APT_WAIT_S=0")
    assert result.returncode != 0
    assert LOCKED in result.stderr and "held the lock for 0 s" in result.stderr


def test_apt_fails_at_once_for_anything_else(tmp_path: Path) -> None:
    calls = fake_apt(tmp_path, refusals=0, other_error=True)
    result = make_apt(tmp_path, "APT_ARGS=install -y nope", "APT_WAIT_S=30")
    assert result.returncode != 0 and "Unable to locate package nope" in result.stderr
    assert len(calls.read_text().splitlines()) == 1
