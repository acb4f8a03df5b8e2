"""The cluster node's rules, in process and quick: the fair share of free cameras, the moves of
rebalancing, a duplicate name, a crashed predecessor, the watchdog that stops a camera before
its lease can expire, and a dead node's cameras taken by the other (the multi-process cluster
on PostgreSQL is ``test_cluster.py``)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from marginface.errors import ConfigError, StorageError
from marginface.gallery import CameraLease, Gallery, LeaseRef, NodeRecord
from marginface.streams.cluster import ClusterNode, claim_share, move_target


def _node(name: str, held: int, capacity: int) -> NodeRecord:
    now = datetime.now(UTC)
    return NodeRecord(
        name, name, "", "live", 15.0, capacity, now, now, {}, [str(i) for i in range(held)], 0.0
    )


def test_free_cameras_go_to_the_least_loaded_nodes() -> None:
    nodes = [_node("a", 2, 8), _node("b", 0, 8), _node("c", 1, 8)]
    shares = {me.name: claim_share(me.name, nodes, len(me.cameras), 8, 3) for me in nodes}
    assert shares == {"a": 0, "b": 2, "c": 1}  # every node computes the same division
    assert claim_share("b", nodes, 0, 1, 3) == 1  # no more than its room
    small = [_node("a", 1, 2), _node("b", 1, 10)]
    assert claim_share("b", small, 1, 10, 4) == 4  # load is held / capacity
    assert claim_share("a", [_node("a", 0, 0)], 0, 0, 5) == 0  # an API-only node


def test_a_busy_node_moves_one_camera_and_never_back() -> None:
    nodes = [_node("a", 4, 8), _node("b", 1, 8), _node("c", 2, 8)]
    assert move_target("a", nodes, 4, 8) == "b"
    assert move_target("b", nodes, 1, 8) is None
    after = [_node("a", 3, 8), _node("b", 2, 8), _node("c", 2, 8)]
    assert move_target("a", after, 3, 8) is None  # 3 vs 2 + 1: no move, no ping-pong
    assert move_target("b", after, 2, 8) is None
    assert move_target("a", [_node("a", 5, 4), _node("b", 4, 8)], 5, 4) == "b"  # over capacity


class FakeManager:
    """What the node drives: which cameras run here, and when they were stopped."""

    def __init__(self) -> None:
        self.runs: dict[str, LeaseRef] = {}
        self.stopped: dict[str, float] = {}
        self.lock = threading.Lock()
        self.node: Any = None

    def ensure_running(self, lease: CameraLease) -> None:
        with self.lock:
            self.runs[lease.camera_id] = lease.ref

    def run_leased(self, camera: Any, lease: LeaseRef) -> None:
        with self.lock:
            self.runs[camera.id] = lease

    def stop_leased(self, camera_id: str, *, wait: float = 0.0) -> bool:
        with self.lock:
            if self.runs.pop(camera_id, None) is not None:
                self.stopped[camera_id] = time.time()
        return True

    def running(self) -> dict[str, LeaseRef | None]:
        with self.lock:
            return dict(self.runs)

    def between_visits(self, camera_id: str) -> bool:
        return True

    def local_statuses(self) -> dict[str, dict[str, Any]]:
        return {}

    def camera_name(self, camera_id: str) -> str:
        return camera_id

    def close(self, timeout: float = 10.0) -> None:
        with self.lock:
            self.runs.clear()


@pytest.fixture
def gallery(tmp_path: Path):
    g = Gallery.open(tmp_path / "gallery.db", "fake", 8)
    yield g
    g.close()


def _start(
    gallery: Gallery, name: str, ttl: float = 1.5, **kw: Any
) -> tuple[ClusterNode, FakeManager]:
    node = ClusterNode(
        gallery, name, ttl_s=ttl, exclusive=False, rebalance_s=0.2, move_wait_s=0.5, **kw
    )
    manager = FakeManager()
    node.start()
    node.attach(manager)  # type: ignore[arg-type]
    return node, manager


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_live_process_of_one_name_refuses(gallery: Gallery) -> None:
    first, _ = _start(gallery, "door-node", ttl=2.0)
    try:
        second = ClusterNode(gallery, "door-node", ttl_s=2.0)
        began = time.monotonic()
        with pytest.raises(ConfigError, match="in use by another running marginface serve"):
            second.register()
        assert time.monotonic() - began < 2.0  # its heartbeat moved on: refused before the TTL
    finally:
        first.close()
    ClusterNode(gallery, "door-node", ttl_s=2.0).register()  # it left: the name is free


def test_a_crashed_predecessor_on_this_machine_is_replaced_at_once(gallery: Gallery) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists
    gallery.cluster.register(
        "door-node", "old", ttl_s=60.0, info={"host": socket.gethostname(), "pid": gone.pid}
    )
    began = time.monotonic()
    node = ClusterNode(gallery, "door-node", ttl_s=60.0)
    node.register()
    assert time.monotonic() - began < 1.0
    assert {n.name: n.instance for n in gallery.cluster.nodes()}["door-node"] == node.instance


@pytest.mark.slow
def test_cameras_spread_and_a_dead_node_s_go_to_the_other(gallery: Gallery) -> None:
    cams = [gallery.cameras.create(f"cam {i}", "push:").id for i in range(4)]
    a, ma = _start(gallery, "a")
    b, mb = _start(gallery, "b")
    try:
        _wait(lambda: len(ma.running()) == 2 and len(mb.running()) == 2, 10, "2 cameras each")
        assert set(ma.running()) | set(mb.running()) == set(cams)
        # a dies: no heartbeat, no goodbye (its threads stop, its leases stay)
        a._closing.set()
        a._wake.set()
        died = time.time()
        _wait(lambda: len(mb.running()) == 4, 1.5 + 3.0, "b to take a's cameras")
        assert time.time() - died < 1.5 + 1.0
        leases = {lease.camera_id: lease for lease in gallery.cluster.leases()}
        assert all(lease.node == "b" for lease in leases.values())
        assert {lease.previous_node for lease in leases.values() if lease.epoch > 1} == {"a"}
    finally:
        b.close()


@pytest.mark.slow
def test_a_node_that_cannot_renew_stops_its_cameras_before_they_expire(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    cams = [gallery.cameras.create(f"cam {i}", "push:").id for i in range(2)]
    node, manager = _start(gallery, "a", ttl=1.5)
    try:
        _wait(lambda: len(manager.running()) == 2, 10, "the cameras to run")

        def cut_off(*args: Any, **kwargs: Any) -> Any:
            raise StorageError("gallery database error: connection refused")

        monkeypatch.setattr(gallery.cluster, "heartbeat", cut_off)
        cut = time.time()
        _wait(lambda: len(manager.stopped) == 2, 3.0, "the cameras to stop")
        # each stopped before its lease, as last renewed, expired (the database's clock)
        expiry = {lease.camera_id: lease.expires_at for lease in gallery.cluster.leases()}
        for cid in cams:
            assert manager.stopped[cid] < expiry[cid].timestamp(), (manager.stopped, expiry)
            assert manager.stopped[cid] < cut + 1.5
        assert node.stale() is not None  # /healthz says so
        assert node.lost == 2
    finally:
        monkeypatch.undo()
        node.close()


@pytest.mark.slow
def test_one_node_runs_the_cameras_of_a_sqlite_gallery(tmp_path: Path) -> None:
    """A SQLite gallery lives on one machine: a second service on it serves the API and runs
    no camera, and says which node does."""
    with Gallery.open(tmp_path / "gallery.db", "fake", 8) as gallery:
        gallery.cameras.create("door", "push:")
        first = ClusterNode(gallery, "first", ttl_s=1.5)
        second = ClusterNode(gallery, "second", ttl_s=1.5)
        assert first.exclusive and second.exclusive
        m1, m2 = FakeManager(), FakeManager()
        for node, manager in ((first, m1), (second, m2)):
            node.start()
            node.attach(manager)  # type: ignore[arg-type]
        try:
            _wait(lambda: len(m1.running()) == 1, 10, "the first node to run the camera")
            gallery.cameras.create("hall", "push:")
            second.take(gallery.cameras.get("hall").id)
            _wait(lambda: len(m1.running()) == 2, 10, "the first node to run both")
            time.sleep(0.5)
            assert m2.running() == {} and second.exclusive_holder() == "first"
        finally:
            second.close()
            first.close()
