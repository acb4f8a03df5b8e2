"""A real MQTT broker for tests: Debian's ``mosquitto`` on a free local port.

``with mosquitto_broker(tmp_path) as broker:`` starts ``/usr/sbin/mosquitto`` with a
throw-away configuration (``listener PORT 127.0.0.1``, anonymous clients, no persistence),
waits until the port accepts connections, and kills it afterwards. ``broker.stop()`` and
``broker.start()`` restart it on the same port (for reconnection tests).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"


def mosquitto_path() -> str:
    """The broker binary; fails the test with the Debian package to install when missing."""
    path = MOSQUITTO if Path(MOSQUITTO).is_file() else shutil.which("mosquitto")
    if not path:
        pytest.fail(
            "mosquitto not found (/usr/sbin/mosquitto): install the Debian package "
            "'mosquitto' (apt-get install mosquitto)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process on ``host:port`` (restartable on the same port)."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = mosquitto_path()
        self.port = port or free_port()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "mosquitto.conf"
        self.log = self.directory / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                pytest.fail(f"mosquitto exited with {self.process.returncode}: {err}{log}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self) -> None:
        """Kill the broker (clients see the connection drop) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


@contextmanager
def mosquitto_broker(directory: Path, port: int | None = None) -> Iterator[Broker]:
    """A running broker for the ``with`` block, killed afterwards."""
    broker = Broker(directory, port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
