"""A camera cluster on one machine: three ``marginface serve`` processes (real pipeline) sharing
one real PostgreSQL gallery, six cameras playing the ``door`` scene as live cameras (looping
files), a webhook receiver in this test.

What must hold every time (timings are ``bench/cluster.py``'s):

* each camera is held by exactly one node, and runs there only;
* a node killed (SIGKILL): its cameras run on the others within the lease TTL + 5 s; the
  visits it announced are in the gallery; no two nodes ever wrote events for one camera in
  overlapping time (each event carries its node, its lease's epoch and the database's time of
  writing); started again, it gets cameras back (rebalancing);
* the database stopped for longer than the TTL: every node stops its cameras before their
  leases can expire (so before any node can take them over), and the cameras run again, each
  on one node, once it is back;
* the webhook receiver got every event the gallery holds (at least once, by its event id), and
  the gallery holds each visit once.

The lease TTL is 3 s here (a setting); one PostgreSQL server for the module, stopped and
started again by the second test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from marginface.gallery import Gallery, Recognizer
from tests.gallery.postgres_server import TemporaryPostgres, create_database
from tests.streams.servers import WebhookReceiver, free_port, require_ffmpeg

pytestmark = pytest.mark.slow

TTL = 3.0
NODES = ("n1", "n2", "n3")
CAMERAS = 6


@dataclass
class Node:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Cluster:
    pg: TemporaryPostgres
    url: str
    key: str
    env: dict[str, str]
    receiver: WebhookReceiver
    nodes: dict[str, Node] = field(default_factory=dict)
    _gallery: Gallery | None = None

    # -- processes --------------------------------------------------------------------------
    def start(self, name: str) -> None:
        node = self.nodes[name]
        out = node.log.open("ab")
        node.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "marginface",
                "serve",
                "--db",
                self.url,
                "--node",
                name,
                "--port",
                str(node.port),
            ],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def wait_up(self, name: str, timeout: float = 120.0) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert node.proc is not None and node.proc.poll() is None, node.tail()
            try:
                if httpx.get(f"{node.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"node {name} did not start: {node.tail()}")

    def kill(self, name: str) -> None:
        proc = self.nodes[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]

    # -- views --------------------------------------------------------------------------------
    def get(self, node: Node, path: str) -> Any:
        r = httpx.get(f"{node.url}{path}", headers={"X-API-Key": self.key}, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def health(self, node: Node) -> dict[str, Any]:
        """``/healthz`` (no key: it answers while the database is down, then with 503)."""
        r = httpx.get(f"{node.url}/healthz", timeout=5)
        body = r.json()
        return body if r.status_code == 200 else body["error"]["details"]

    def gallery(self) -> Gallery:
        """The test's own handle on the gallery (its pool reconnects after an outage)."""
        if self._gallery is None:
            self._gallery = Gallery.open(self.url, create=False)
        return self._gallery

    def placement(self) -> tuple[dict[str, str], dict[str, int]]:
        """(camera id -> the node holding it, from the gallery; node -> cameras it runs, from
        the node itself)."""
        leases = self.gallery().cluster.leases()
        held = {lease.camera_id: lease.node for lease in leases if lease.held}
        running = {n.name: self.health(n)["cameras_running"] for n in self.live()}
        return held, running

    def settled(self) -> tuple[dict[str, str], dict[str, int]] | None:
        """The placement once every camera is held by a live node that runs it, and every
        node runs exactly the cameras it holds (None before)."""
        held, running = self.placement()
        counts = Counter(held.values())
        ok = len(held) == CAMERAS and all(
            node in running and running[node] == n for node, n in counts.items()
        )
        return (held, running) if ok and sum(running.values()) == CAMERAS else None

    def processing(self, camera_id: str, node: Node) -> bool:
        """Whether ``node`` runs the camera and has processed frames of it."""
        cam = self.get(node, f"/v1/cameras/{camera_id}")
        return cam["node"] == node.name and cam["status"]["frames_processed"] > 0


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def visit_events(g: Gallery) -> list[Any]:
    return [e for e in g.events.list(limit=None) if (e.details or {}).get("kind") == "visit"]


def assert_no_overlap(g: Gallery) -> dict[str, dict[int, tuple[str, float, float]]]:
    """Every camera's events: each epoch written by one node, and the epochs' writing times
    (the database's clock) one after the other, never overlapping. Returns camera -> epoch ->
    (node, first, last write)."""
    spans: dict[str, dict[int, list[Any]]] = defaultdict(dict)
    for e in visit_events(g):
        d = e.details
        assert d.get("node") and d.get("epoch") is not None and e.logged_at is not None, d
        spans[e.source].setdefault(int(d["epoch"]), []).append(e)
    out: dict[str, dict[int, tuple[str, float, float]]] = {}
    for camera, epochs in spans.items():
        out[camera] = {}
        for epoch, events in epochs.items():
            writers = {e.details["node"] for e in events}
            assert len(writers) == 1, (camera, epoch, writers)
            times = [e.logged_at.timestamp() for e in events]
            out[camera][epoch] = (writers.pop(), min(times), max(times))
        ordered = sorted(out[camera].items())
        for (_, (_, _, end)), (_, (_, start, _)) in itertools.pairwise(ordered):
            assert end < start, (camera, ordered)  # the later epoch wrote after the earlier
    return out


@pytest.fixture(scope="module")
def cluster(
    scene_videos, stream_people, default_pipeline, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    door, _ = scene_videos["door"]
    video = tmp / "media" / "door.mp4"  # the door scene at 8 frames/s: a quarter of the decoding
    video.parent.mkdir()
    subprocess.run(
        [
            *(require_ffmpeg(), "-v", "error", "-y", "-i", str(door), "-r", "8", "-c:v"),
            *("libx264", "-preset", "ultrafast", "-g", "8", "-pix_fmt", "yuv420p", str(video)),
        ],
        check=True,
        timeout=120,
    )
    pg = TemporaryPostgres().start()
    receiver = WebhookReceiver()
    c = Cluster(pg, "", "", {}, receiver)
    try:
        url = create_database(pg.url, "cluster")
        with Gallery.open(url, card=default_pipeline.embedder.card) as g:
            rec = Recognizer(g, default_pipeline)
            for person in stream_people.enrolled:
                rec.enroll(person.identity, list(person.enrol_photos))
            _, key = g.keys.create("cluster test", "admin")
        env = {
            **os.environ,
            "MARGINFACE_DATA_DIR": str(tmp),
            "MARGINFACE_MEDIA_ROOTS": json.dumps([str(video.parent)]),
            "MARGINFACE_LEASE_TTL_S": str(TTL),
            "MARGINFACE_REBALANCE_S": "1",
            "MARGINFACE_MOVE_WAIT_S": "4",
            "MARGINFACE_WEBHOOKS": json.dumps(
                [{"url": receiver.url, "backoff_initial_s": 0.1, "backoff_max_s": 1.0}]
            ),
        }
        c.url, c.key, c.env = url, key, env
        for name in NODES:
            c.nodes[name] = Node(name, free_port(), tmp / f"{name}.log")
            c.start(name)
        for name in NODES:
            c.wait_up(name)
        first = c.nodes[NODES[0]]
        for i in range(CAMERAS):
            r = httpx.post(
                f"{first.url}/v1/cameras",
                headers={"X-API-Key": key},
                json={
                    "name": f"cam{i}",
                    "url": str(video),
                    "settings": {"fps": 2, "source": {"loop": True}},
                },
                timeout=10,
            )
            assert r.status_code == 201, r.text
        yield c
    finally:
        for node in c.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
        receiver.close()
        if c._gallery is not None:
            c._gallery.close()
        pg.stop()


def test_failover_after_a_node_is_killed_and_rebalancing_when_it_returns(cluster: Cluster) -> None:
    c = cluster
    # each camera held by exactly one node, run there only, spread over the three
    held, running = wait_for(c.settled, 60, "every camera to run on one node")
    assert sorted(running) == list(NODES)
    wait_for(lambda: max(Counter(c.placement()[0].values()).values()) == 2, 30, "2 per node")
    nodes = c.get(c.nodes["n1"], "/v1/nodes")
    assert nodes["mode"] == "cluster" and {n["name"]: n["state"] for n in nodes["nodes"]} == {
        name: "live" for name in NODES
    }
    listed = c.get(c.nodes["n2"], "/v1/cameras")["cameras"]  # any node answers for all
    assert all(cam["node"] in NODES and cam["epoch"] >= 1 for cam in listed)
    # the live view of a camera another node runs: forwarded there
    elsewhere = next(cam for cam in listed if cam["node"] != "n2")
    shot = wait_for(
        lambda: (
            (
                r := httpx.get(
                    f"{c.nodes['n2'].url}/v1/cameras/{elsewhere['id']}/snapshot.jpg",
                    headers={"X-API-Key": c.key},
                    timeout=10,
                )
            ).status_code
            == 200
            and r
        ),
        20,
        "a frame of a camera another node runs",
    )
    assert shot.headers["content-type"] == "image/jpeg"
    assert shot.headers["x-marginface-node"] == elsewhere["node"]

    # SIGKILL a node that announced visits: its cameras run on the others within TTL + 5 s
    def announcer() -> str | None:
        held, _ = c.placement()
        for event in reversed(c.receiver.events()):
            if event["node"] in held.values():
                return str(event["node"])
        return None

    victim = c.nodes[wait_for(announcer, 90, "a node to announce a visit")]
    held, _ = c.placement()
    theirs = sorted(cid for cid, node in held.items() if node == victim.name)
    epochs = {lease.camera_id: lease.epoch for lease in c.gallery().cluster.leases()}
    killed_at = time.time()
    c.kill(victim.name)
    survivors = [n for n in c.live() if n.name != victim.name]
    moved: dict[str, float] = {}

    def taken_over() -> bool:
        for cid in theirs:
            if cid not in moved and any(c.processing(cid, n) for n in survivors):
                moved[cid] = time.time() - killed_at
        return len(moved) == len(theirs)

    wait_for(taken_over, TTL + 20, "the killed node's cameras to run elsewhere", every=0.1)
    assert max(moved.values()) <= TTL + 5.0, moved
    g = c.gallery()
    for lease in g.cluster.leases():
        if lease.camera_id in theirs:
            assert lease.node != victim.name and lease.epoch > epochs[lease.camera_id]
            assert lease.previous_node == victim.name
    wait_for(c.settled, 30, "every camera on one live node")

    # what the killed node announced is in the gallery; no two nodes wrote one camera at once
    announced = {e["event_id"] for e in c.receiver.events(before=killed_at)}
    g = c.gallery()
    stored = {e.details["event_id"] for e in visit_events(g)}
    spans = assert_no_overlap(g)
    assert announced and announced <= stored, announced - stored
    assert any(e["node"] == victim.name for e in c.receiver.events(before=killed_at))
    assert any(node == victim.name for cam in spans.values() for node, _, _ in cam.values())

    # started again (same name): it gets cameras back, moved between visits one at a time
    c.start(victim.name)
    c.wait_up(victim.name)

    def rebalanced() -> bool:
        settled = c.settled()
        return settled is not None and settled[1].get(victim.name, 0) >= 1

    wait_for(rebalanced, 60, "cameras to move to the node that came back")
    assert_no_overlap(c.gallery())


def test_a_database_outage_stops_every_node_before_its_leases_can_expire(
    cluster: Cluster,
) -> None:
    c = cluster
    wait_for(c.settled, 60, "every camera to run on one node")
    stopped: dict[str, float] = {}
    nodes = c.live()

    def watch(node: Node) -> None:  # each node polled on its own: an answer may take 1 s
        deadline = time.monotonic() + TTL + 10
        while time.monotonic() < deadline:
            try:
                if c.health(node)["cameras_running"] == 0:
                    stopped[node.name] = time.time()  # at most this late
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)

    c.pg.halt()
    down_at = time.time()
    try:
        watchers = [threading.Thread(target=watch, args=(n,)) for n in nodes]
        for t in watchers:
            t.start()
        for t in watchers:
            t.join()
        assert sorted(stopped) == sorted(n.name for n in nodes), stopped
        time.sleep(max(0.0, down_at + TTL + 1.5 - time.time()))  # longer than the TTL
    finally:
        c.pg.resume()
    wait_for(c.settled, 60, "the cameras to run again, each on one node")
    g = c.gallery()
    for lease in g.cluster.leases():
        # the holder before the outage stopped the camera before its lease could expire,
        # and the lease was taken again (a new epoch) only after it had expired
        before = lease.previous_node
        assert before in stopped, (lease, stopped)
        expired = lease.previous_expires_at.timestamp()
        assert stopped[before] < expired, (lease.camera, before, stopped[before], expired)
        assert lease.acquired_at.timestamp() >= expired
    assert_no_overlap(g)


def test_notifications_at_least_once_and_each_visit_once_in_the_gallery(cluster: Cluster) -> None:
    c = cluster
    g = c.gallery()
    events = visit_events(g)
    ids = [e.details["event_id"] for e in events]
    assert len(ids) == len(set(ids))  # each event stored once
    arrivals = Counter(e.details["visit_uid"] for e in events if e.decision == "arrived")
    assert arrivals and set(arrivals.values()) == {1}  # each visit announced once

    def delivered() -> set[str]:
        return set(ids) - {e["event_id"] for e in c.receiver.events()}

    wait_for(lambda: not delivered(), 20, "every stored event at the receiver")
    for e in c.receiver.events():
        assert e["header_id"] == e["event_id"]


def test_a_second_node_of_a_name_in_use_refuses_to_start(cluster: Cluster) -> None:
    c = cluster
    taken = c.live()[0].name
    began = time.monotonic()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "marginface", "serve", "--db", c.url),
            *("--node", taken, "--port", str(free_port())),
        ],
        env=c.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, (run.stdout[-2000:], run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()  # the log's lines, then the error: one line
    assert not any("Traceback" in line for line in lines), run.stderr[-3000:]
    error = lines[-1]
    assert error.startswith(f"error: node name {taken!r} is in use by another running "), error
    assert "--node or MARGINFACE_NODE" in error
    assert time.monotonic() - began < 60
    # the node of that name still runs its cameras
    assert c.health(c.nodes[taken])["cameras_running"] >= 1
