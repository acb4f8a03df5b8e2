"""The camera cluster's state in the gallery: nodes, camera leases with fencing epochs and
delivery marks, on SQLite and on a real PostgreSQL server. Every rule is measured with the
database's clock: a node whose own clock is wrong can neither keep nor steal a camera."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
from gallery_helpers import DIM, People, make_store

from marginface.errors import GalleryError
from marginface.gallery import (
    Gallery,
    NodeNameTakenError,
    NodeReplacedError,
    StaleLeaseError,
)

BACKENDS = ["sqlite", "postgresql"]
TTL = 0.6  # seconds: short, so that expiry is quick to wait for


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest, tmp_path):
    s = make_store(request.param, "exact", tmp_path, request)
    yield s
    s.close_all()


def _cameras(g: Gallery, n: int) -> list[str]:
    return [g.cameras.create(f"cam {i}", "push:").id for i in range(n)]


def _register(g: Gallery, *names: str, ttl: float = TTL) -> None:
    for name in names:
        g.cluster.register(
            name, f"{name}-instance", address=f"http://{name}", ttl_s=ttl, capacity=8
        )


def test_a_camera_is_held_by_one_node_and_its_epoch_grows_with_each_holder(spec) -> None:
    g = spec.open()
    (cam,) = _cameras(g, 1)
    _register(g, "a", "b")
    first = g.cluster.claim("a", "a-instance", count=5).leases
    assert [(lease.camera_id, lease.node, lease.epoch) for lease in first] == [(cam, "a", 1)]
    assert g.cluster.claim("b", "b-instance", count=5).leases == []  # held: nothing to take
    hb = g.cluster.heartbeat("b", "b-instance", ttl_s=TTL, capacity=8)
    assert hb.leases == [] and hb.free == [] and 0 < hb.next_expiry_s <= TTL
    assert {n.name: n.cameras for n in hb.nodes} == {"a": [cam], "b": []}
    # a's lease expires (it did not heartbeat): b takes the camera under a new epoch
    time.sleep(TTL + 0.1)
    g.cluster.heartbeat("b", "b-instance", ttl_s=TTL, capacity=8)
    (taken,) = g.cluster.claim("b", "b-instance", count=5).leases
    assert (taken.node, taken.epoch, taken.previous_node, taken.previous_epoch) == ("b", 2, "a", 1)
    assert taken.previous_expires_at is not None and taken.acquired_at > taken.previous_expires_at
    # a, back, cannot renew what it lost
    hb = g.cluster.heartbeat("a", "a-instance", ttl_s=TTL, capacity=8)
    assert hb.leases == []


def test_writes_under_a_lost_lease_are_refused(spec) -> None:
    people = People(2)
    g = spec.open()
    (cam,) = _cameras(g, 1)
    _register(g, "a", "b")
    (lease,) = g.cluster.claim("a", "a-instance").leases
    old = lease.ref
    event = g.events.log("cam 0", subject_id=None, score=0.1, decision="arrived", lease=old)
    assert event.logged_at is not None
    g.cameras.set_position(cam, 3.0, lease=old)
    time.sleep(TTL + 0.1)
    # expired, nobody holds it yet: refused all the same (its holder must have stopped)
    with pytest.raises(StaleLeaseError, match="its lease expired"):
        g.events.log("cam 0", subject_id=None, score=0.1, decision="left", lease=old)
    g.cluster.heartbeat("b", "b-instance", ttl_s=TTL, capacity=8)
    (new,) = g.cluster.claim("b", "b-instance").leases
    before = g.visitors.count(None)
    with pytest.raises(StaleLeaseError, match="node 'b' holds it now"):
        g.events.log("cam 0", subject_id=None, score=0.1, decision="left", lease=old)
    with pytest.raises(StaleLeaseError):
        g.cameras.set_position(cam, 9.0, lease=old)
    with pytest.raises(StaleLeaseError):
        g.visitors.record(
            "cam 0", 0.0, 1.0, people.sample(0, 2), [0.5, 0.5], threshold=0.5, lease=old
        )
    assert g.visitors.count(None) == before and g.cameras.position(cam) == 3.0
    assert [e.decision for e in g.events.list(source="cam 0")] == ["arrived"]
    # the new holder writes
    g.events.log("cam 0", subject_id=None, score=0.1, decision="left", lease=new.ref)
    g.visitors.record(
        "cam 0", 0.0, 1.0, people.sample(0, 2), [0.5, 0.5], threshold=0.5, lease=new.ref
    )
    g.cameras.set_position(cam, 9.0, lease=new.ref)
    assert g.cameras.position(cam) == 9.0
    # a write under no lease (marginface watch) is not checked
    g.events.log("cam 0", subject_id=None, score=0.1, decision="match")


def test_the_holder_renews_and_keeps_its_cameras(spec) -> None:
    g = spec.open()
    cams = _cameras(g, 2)
    _register(g, "a", "b")
    g.cluster.claim("a", "a-instance", count=2)
    for _ in range(4):  # longer than a TTL in all, renewed all along
        time.sleep(TTL / 3)
        hb = g.cluster.heartbeat("a", "a-instance", ttl_s=TTL, capacity=8)
        assert sorted(lease.camera_id for lease in hb.leases) == sorted(cams)
    assert g.cluster.claim("b", "b-instance", count=2).leases == []


def test_a_node_whose_clock_is_wrong_steals_nothing(spec, monkeypatch) -> None:
    """Lease expiry is the database's clock (``now()``): a node whose clock runs an hour
    ahead sees a held camera as held."""
    g = spec.open()
    _cameras(g, 1)
    _register(g, "a", "b", ttl=30.0)
    g.cluster.claim("a", "a-instance")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600.0)
    assert g.cluster.claim("b", "b-instance").leases == []
    assert g.cluster.heartbeat("b", "b-instance", ttl_s=30.0, capacity=8).free == []


def test_two_processes_of_one_name(spec) -> None:
    g = spec.open()
    (cam,) = _cameras(g, 1)
    g.cluster.register("a", "first", address="http://one", ttl_s=TTL, capacity=8)
    g.cluster.claim("a", "first")
    with pytest.raises(NodeNameTakenError, match="taken by a live process") as caught:
        g.cluster.register("a", "second", address="http://two", ttl_s=TTL, capacity=8)
    assert caught.value.holder.address == "http://one"
    # the first one is gone (no heartbeat): the name is free again, and what it held too
    time.sleep(TTL + 0.1)
    g.cluster.register("a", "second", address="http://two", ttl_s=TTL, capacity=8)
    (lease,) = g.cluster.leases()
    assert (lease.node, lease.previous_node) == (None, "a")
    with pytest.raises(NodeReplacedError, match="taken for dead"):
        g.cluster.heartbeat("a", "first", ttl_s=TTL, capacity=8)
    with pytest.raises(NodeReplacedError):
        g.cluster.claim("a", "first")
    assert g.cluster.leave("a", "first") == 0  # not its name any more: nothing given up
    (taken,) = g.cluster.claim("a", "second").leases
    assert (taken.camera_id, taken.epoch) == (cam, 2)
    with pytest.raises(GalleryError, match="node name"):
        g.cluster.register("\u202ebad", "x")


def test_release_hand_over_and_leave(spec) -> None:
    g = spec.open()
    cams = _cameras(g, 3)
    _register(g, "a", "b", ttl=30.0)
    leases = g.cluster.claim("a", "a-instance", count=3).leases
    moved = g.cluster.release(leases[0].ref, to="b")
    assert moved is not None and (moved.node, moved.epoch, moved.held) == ("b", 2, True)
    assert g.cluster.release(leases[0].ref) is None  # not a's any more
    freed = g.cluster.release(leases[1].ref, to="nobody-live")
    assert freed is not None and (freed.node, freed.held) == (None, False)
    assert g.cluster.leave("a", "a-instance") == 1
    first, second, third = (lease.camera_id for lease in leases)
    states = {n.name: (n.state, n.cameras) for n in g.cluster.nodes()}
    assert states == {"a": ("left", []), "b": ("live", [first])}
    hb = g.cluster.heartbeat("b", "b-instance", ttl_s=30.0, capacity=8)
    assert [lease.camera_id for lease in hb.leases] == [first]
    assert sorted(lease.camera_id for lease in hb.free) == sorted([second, third])
    # a disabled camera is not claimable; a deleted one has no lease
    g.cameras.update(second, enabled=False)
    g.cameras.delete(third)
    assert g.cluster.claim("b", "b-instance", count=5).leases == []
    assert sorted(lease.camera_id for lease in g.cluster.leases()) == sorted([first, second])
    assert set(cams) == {first, second, third}
    assert g.cluster.purge(0.0) == 1  # a left: forgotten


def test_one_node_runs_the_cameras_of_an_exclusive_gallery(spec) -> None:
    g = spec.open()
    _cameras(g, 2)
    _register(g, "a", "b", ttl=30.0)
    assert len(g.cluster.claim("a", "a-instance", count=1, exclusive=True).leases) == 1
    refused = g.cluster.claim("b", "b-instance", count=1, exclusive=True)
    assert refused.leases == [] and refused.blocked_by == "a"
    assert len(g.cluster.claim("a", "a-instance", count=1, exclusive=True).leases) == 1


def test_delivery_marks_start_at_the_newest_event_and_never_go_back(spec) -> None:
    g = spec.open()
    old, new = _cameras(g, 2)
    for _ in range(3):
        g.events.log("cam 0", subject_id=None, score=0.1, decision="arrived")
    newest = g.events.list(source="cam 0", limit=1)[0].id
    assert g.cluster.marks("webhook:x", [old, new]) == {old: newest, new: 0}
    g.cluster.advance_marks("webhook:x", {new: 7})
    g.cluster.advance_marks("webhook:x", {new: 5, old: newest + 1})
    assert g.cluster.marks("webhook:x", [old, new]) == {old: newest + 1, new: 7}
    assert g.cluster.marks("mqtt:y", [new]) == {new: 0}  # each notifier its own
    assert [e.id for e in g.events.list(source="cam 0", after_id=newest - 2)] == [
        newest,
        newest - 1,
    ]


def test_concurrent_claims_take_each_camera_once(request, tmp_path) -> None:
    """Eight nodes, each its own connections, claim twelve cameras at once, again and again
    (``FOR UPDATE SKIP LOCKED``): every camera is held by one node, each epoch once."""
    spec = make_store("postgresql", "exact", tmp_path, request)
    setup = spec.open()
    cams = _cameras(setup, 12)
    names = [f"n{i}" for i in range(8)]
    _register(setup, *names, ttl=30.0)
    handles = [Gallery.open(spec.url, "fake-model", DIM) for _ in names]
    barrier = threading.Barrier(len(names), timeout=30)
    taken: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []

    def claim(g: Gallery, name: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                for lease in g.cluster.claim(name, f"{name}-instance", count=2).leases:
                    taken.append((lease.camera_id, name, lease.epoch))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=claim, args=(g, n)) for g, n in zip(handles, names, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for g in handles:
        g.close()
    assert errors == []
    assert sorted(c for c, _, _ in taken) == sorted(cams)  # each once, none left
    assert Counter(e for _, _, e in taken) == {1: 12}
    held = {lease.camera_id: lease.node for lease in setup.cluster.leases()}
    assert held == {c: n for c, n, _ in taken}
    assert np.all([lease.held for lease in setup.cluster.leases()])
    spec.close_all()
