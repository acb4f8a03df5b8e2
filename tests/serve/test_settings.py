"""Service settings: defaults, YAML file, ``MARGINFACE_*`` variables and explicit values."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from marginface.errors import ConfigError
from marginface.serve import ServeSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MARGINFACE_CONFIG",
        "MARGINFACE_PORT",
        "MARGINFACE_HOST",
        "MARGINFACE_DB",
        "MARGINFACE_FAR",
        "MARGINFACE_GALLERY_URL",
        "MARGINFACE_EVENTS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = load_settings()
    assert s.host == "127.0.0.1"
    assert s.store_photos is False
    assert s.events is True
    assert s.model == "default" and s.detector == "yunet" and s.index == "exact"
    assert s.gallery_url == str(tmp_path / "marginface" / "gallery.db")
    assert s.key_file == tmp_path / "marginface" / "gallery.admin-key"
    assert s.max_upload_bytes == 20 * 1024 * 1024
    assert s.url == "http://127.0.0.1:8000/"


def test_precedence_file_env_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"port: 9001\nfar: 1e-4\nmax_upload_mb: 5\nevents: false\ndb: {tmp_path / 'g.db'}\n"
    )
    s = load_settings(config)
    assert (s.port, s.far, s.max_upload_mb, s.events) == (9001, "1e-4", 5.0, False)
    assert s.key_file == tmp_path / "g.admin-key"
    monkeypatch.setenv("MARGINFACE_PORT", "9002")
    assert load_settings(config).port == 9002
    assert load_settings(config, port=9003).port == 9003
    assert load_settings(config, port=None).port == 9002
    monkeypatch.setenv("MARGINFACE_CONFIG", str(config))
    assert load_settings().far == "1e-4"


def test_postgres_url_keeps_key_in_data_dir(tmp_path: Path) -> None:
    s = ServeSettings(db="postgresql://u@127.0.0.1:5432/faces", data_dir=tmp_path)
    assert s.sqlite_path is None
    assert s.gallery_url == "postgresql://u@127.0.0.1:5432/faces"
    assert s.key_file == tmp_path / "gallery.admin-key"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("prot: 3\n", "unknown key 'prot'"),
        ("port: 70000\n", "port"),
        ("index: annoy\n", "index"),
        ("max_upload_mb: 0\n", "max_upload_mb"),
        ("threshold: 2\n", "threshold"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARGINFACE_PORT", "eighty")
    with pytest.raises(ConfigError, match="port"):
        load_settings()


def test_service_limits_blas_threads_while_it_runs(tmp_path: Path) -> None:
    """numpy's BLAS runs one thread while the service runs (idle OpenBLAS threads spin and
    slowed identification by 1.75x) and gets its pool back when the service closes."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from marginface.serve.service import Service
    from tests.serve.serve_fakes import FakePipeline

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy has no BLAS that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        settings = ServeSettings(db=str(tmp_path / "g.db"))
        assert settings.blas_threads == 1
        service = Service(settings, FakePipeline())  # uvicorn starts the app in the main thread
        try:
            assert set(blas_threads()) == {1}
        finally:
            service.close()
        assert blas_threads() == before
        untouched = Service(
            ServeSettings(db=str(tmp_path / "h.db"), blas_threads=None), FakePipeline()
        )
        try:
            assert blas_threads() == before
        finally:
            untouched.close()


def test_cluster_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's name and address: defaults, the environment, and the values refused."""
    s = ServeSettings(port=8123)
    assert s.node_name == f"{socket.gethostname()}-8123"
    assert s.advertised_address == "http://127.0.0.1:8123"
    assert ServeSettings(host="0.0.0.0", port=9).advertised_address == (
        f"http://{socket.gethostname()}:9"
    )
    monkeypatch.setenv("MARGINFACE_NODE", "cams-1")
    monkeypatch.setenv("MARGINFACE_LEASE_TTL_S", "5")
    s = load_settings(node_address="https://cams-1.lan:8443/")
    assert (s.node_name, s.lease_ttl_s, s.advertised_address) == (
        "cams-1",
        5.0,
        "https://cams-1.lan:8443",
    )
    monkeypatch.delenv("MARGINFACE_NODE")
    with pytest.raises(ConfigError, match=r"node: .*node name"):
        load_settings(node="cams\u202e1")
    with pytest.raises(ConfigError, match=r"node_address: .*credentials"):
        load_settings(node_address="http://user:secret@cams-1.lan")
    with pytest.raises(ConfigError, match="lease_ttl_s"):
        load_settings(lease_ttl_s=0.1)
