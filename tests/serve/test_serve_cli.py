"""``marginface serve`` on a port it cannot have: refused at once, before the model loads and
before a URL is printed; the check itself binds like uvicorn and leaves nothing bound."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from marginface.cli import ExitCode, main
from marginface.cli.serve import check_port_free
from marginface.errors import ConfigError


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket, as a running service holds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_second_service_on_a_busy_port_fails_before_loading_the_model(
    busy_port, tmp_path, monkeypatch, capsys
):
    from marginface.serve import service

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a port that cannot be bound")

    monkeypatch.setattr(service, "build_pipeline", no_model)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", str(busy_port), "--db", str(tmp_path / "gallery.db")])
    assert exc.value.code == ExitCode.USER_ERROR
    captured = capsys.readouterr()
    assert "http://" not in captured.out  # no URL announced for the other service's port
    assert captured.err.count("\n") == 1
    assert f"port {busy_port} on 127.0.0.1 is already in use" in captured.err
    assert "--port" in captured.err
    assert not (tmp_path / "gallery.db").exists()


def test_busy_port_refused_for_every_address_of_the_host(busy_port):
    """uvicorn (asyncio) binds every address ``localhost`` resolves to, 127.0.0.1 included."""
    with pytest.raises(ConfigError, match=rf"port {busy_port} on localhost is already in use"):
        check_port_free("localhost", busy_port)


def test_check_leaves_no_socket_behind():
    port = _free_port()
    fds = len(os.listdir("/proc/self/fd"))
    check_port_free("127.0.0.1", port)
    assert len(os.listdir("/proc/self/fd")) == fds
    with socket.socket() as sock:  # without SO_REUSEADDR: fails if anything kept the port
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_port_left_in_time_wait_is_not_refused():
    """A restarted service's port often has connections in TIME_WAIT: uvicorn binds it anyway
    (SO_REUSEADDR), so the check must not refuse it."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    with socket.socket() as plain:
        try:
            plain.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
        else:
            pytest.skip("no TIME_WAIT left on this port; nothing to check")
    check_port_free("127.0.0.1", port)  # no ConfigError


def test_unusable_host_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"cannot listen on no-such-host\.invalid:8000"):
        check_port_free("no-such-host.invalid", 8000)
