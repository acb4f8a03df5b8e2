"""A node of the camera cluster: which cameras this service runs, by lease.

Several ``marginface serve`` sharing one PostgreSQL gallery spread its cameras over themselves
with no coordinator of their own: the gallery's camera leases (:mod:`marginface.gallery.cluster`)
are the only shared state, and every rule is measured with the database's clock. Each service
has one :class:`ClusterNode`:

* **registration**: a unique name (two live processes of one name: the second refuses; a
  crashed predecessor's registration is waited for until it expires);
* **heartbeat** every ``heartbeat_s`` (``ttl_s / 5`` by default): one transaction renews the
  node and every lease it holds for ``ttl_s`` and returns the snapshot it decides by: its
  leases (a camera not renewed is no longer its own: its worker stops at once), the live nodes
  with what each holds and can hold, and the free cameras;
* **claims**: the free and expired leases go to the least-loaded live nodes: every node computes
  the same fair share from the snapshot (filling the node with the lowest load first, load =
  cameras held / capacity) and claims its own share (``FOR UPDATE SKIP LOCKED``); a camera free
  for longer than two heartbeats goes to any node with room. A node also wakes right after the
  next lease of another node expires, so that a dead node's cameras run again within about
  ``ttl_s`` of its last heartbeat;
* **capacity**: ``max_cameras``, and the CPU budget: the node's own CPU use per camera it runs,
  measured over the last minute, times the cameras that fit in ``cpu_budget`` of its cores;
* **rebalancing**: a node holding more than its share (its load above another node's load with
  one camera more, or above its capacity) hands one camera at a time, every ``rebalance_s``, to
  the least-loaded node, choosing one nobody is being followed on (between visits); after
  ``move_wait_s`` without such a moment it moves one all the same (the visits go on there, read
  from the gallery). The worker stops before the lease is handed over (a new epoch);
* **the watchdog**: a lease renewed at (local, monotonic) time ``t`` expires no sooner than
  ``t + ttl_s`` by the database's clock; the node stops the camera's worker at ``t + ttl_s -
  stop_margin_s`` unless renewed meanwhile, whatever its heartbeat is doing (blocked on a dead
  connection, a database down). So a node cut off from PostgreSQL has stopped its cameras
  before any other node can take them, and events it makes after that are neither written nor
  notified; the gallery refuses its writes under the old epoch anyway (fencing).

With a SQLite gallery (one machine) the cameras are run by one node only (``exclusive``): a
second service on the same file serves the API and says which node runs the cameras.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import marginface
from marginface.errors import ConfigError, MarginfaceError
from marginface.gallery import (
    CameraLease,
    Gallery,
    LeaseRef,
    NodeNameTakenError,
    NodeRecord,
    NodeReplacedError,
)
from marginface.streams.manager import CameraManager

__all__ = ["ClusterNode", "claim_share", "default_node_name", "move_target"]

log = logging.getLogger(__name__)

#: The CPU use of the last this many seconds measures what a camera costs.
CPU_WINDOW_S = 60.0
#: ... once the node has run its cameras this long (model loading and start-up excluded).
CPU_SETTLE_S = 20.0
#: At most this many beats a second (wake-ups after claims, expiries, API requests).
_MIN_BEAT_GAP_S = 0.2


def default_node_name(port: int) -> str:
    """The host name and the service's port: one name per service of a machine, the same
    after a restart (which takes its place back)."""
    return f"{socket.gethostname() or 'node'}-{int(port)}"


class _Load:
    """A live node as the balancing rules see it."""

    __slots__ = ("capacity", "held", "name")

    def __init__(self, name: str, held: int, capacity: int) -> None:
        self.name, self.held, self.capacity = name, held, capacity


def _loads(me: str, nodes: Sequence[NodeRecord], held: int, capacity: int) -> list[_Load]:
    out = [_Load(n.name, len(n.cameras), n.capacity) for n in nodes if n.name != me]
    return [*out, _Load(me, held, capacity)]


def claim_share(me: str, nodes: Sequence[NodeRecord], held: int, capacity: int, free: int) -> int:
    """How many of ``free`` cameras node ``me`` (holding ``held``, room for ``capacity``)
    takes: the free cameras given one at a time to the live node of lowest load (held /
    capacity; ties: fewer held, then the name), each node with room. Every node computes the
    same from the same snapshot, so they take different cameras, the least loaded first."""
    loads = [x for x in _loads(me, nodes, held, capacity) if x.capacity > 0]
    take = 0
    for _ in range(max(0, free)):
        room = [x for x in loads if x.held < x.capacity]
        if not room:
            break
        best = min(room, key=lambda x: (x.held / x.capacity, x.held, x.name))
        best.held += 1
        take += best.name == me
    return take


def move_target(me: str, nodes: Sequence[NodeRecord], held: int, capacity: int) -> str | None:
    """The node ``me`` should hand one camera to, or None: the least-loaded other node with
    room, when ``me`` holds more than its capacity, or when its load is above that node's
    load with one camera more (so that a move always lowers the larger load and never calls
    for the move back)."""
    others = [
        x
        for x in _loads(me, nodes, held, capacity)
        if x.name != me and x.capacity > 0 and x.held < x.capacity
    ]
    if not others or held <= 0:
        return None
    best = min(others, key=lambda x: ((x.held + 1) / x.capacity, x.held, x.name))
    if held > capacity:
        return best.name
    if capacity > 0 and held / capacity > (best.held + 1) / best.capacity + 1e-9:
        return best.name
    return None


class ClusterNode:
    """This service as a node of the camera cluster (see the module's docstring).

    ``address`` is where the other nodes reach this one (they forward the requests that need
    a camera's worker: its live view, pushed frames); ``ttl_s`` the lease time, ``heartbeat_s``
    (default ``ttl_s / 5``) how often it renews, ``stop_margin_s`` (default ``min(2, ttl_s /
    3)``) how long before a lease can expire its worker is stopped; ``max_cameras``,
    ``cpu_budget`` (the share of the machine's cores the cameras may take) and ``cameras``
    (False: this node runs none) bound what it takes; ``rebalance_s`` paces moves and
    ``move_wait_s`` bounds the wait for a camera to be between visits. ``exclusive`` (default:
    a SQLite gallery): one node runs every camera.
    """

    def __init__(
        self,
        gallery: Gallery,
        name: str,
        *,
        address: str = "",
        ttl_s: float = 15.0,
        heartbeat_s: float | None = None,
        stop_margin_s: float | None = None,
        max_cameras: int = 32,
        cpu_budget: float = 0.8,
        cameras: bool = True,
        rebalance_s: float = 10.0,
        move_wait_s: float = 60.0,
        exclusive: bool | None = None,
    ) -> None:
        self.gallery = gallery
        self.name = name
        self.address = address
        self.ttl_s = float(ttl_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s else self.ttl_s / 5.0
        self.stop_margin_s = (
            float(stop_margin_s) if stop_margin_s is not None else min(2.0, self.ttl_s / 3.0)
        )
        if not 0 < self.heartbeat_s < self.ttl_s - self.stop_margin_s:
            raise ConfigError(
                f"heartbeat_s ({self.heartbeat_s:g}) must be shorter than lease_ttl_s minus the "
                f"stop margin ({self.ttl_s:g} - {self.stop_margin_s:g} s)"
            )
        self.max_cameras = int(max_cameras)
        self.cpu_budget = float(cpu_budget)
        self.run_cameras = bool(cameras)
        self.rebalance_s = float(rebalance_s)
        self.move_wait_s = float(move_wait_s)
        self.exclusive = gallery.backend == "sqlite" if exclusive is None else bool(exclusive)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.cores = _cores()
        self.manager: CameraManager | None = None
        self.registered = False
        self.replaced = False
        self._lock = threading.Lock()
        self._held: dict[str, LeaseRef] = {}
        self._deadline: dict[str, float] = {}  # camera id -> monotonic time its worker stops by
        self._known: dict[str, float] = {}  # camera id -> when its lease was last seen held
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._watch = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._next_expiry: float | None = None  # monotonic: another node's lease expires
        self._blocked_by: str | None = None
        self._move_wanted_since: float | None = None
        self._next_move = 0.0
        self._cpu: collections.deque[tuple[float, float, int]] = collections.deque()
        self._cpu_since: float | None = None  # when the camera count last changed
        self._capacity = self.max_cameras if self.run_cameras else 0
        self._failing: str | None = None  # the heartbeat's failure, while it repeats
        self._started = time.monotonic()
        self._last_beat: float | None = None  # when the last successful heartbeat was sent
        # what the lease loop costs (the heartbeat thread's own work)
        self.beats = 0
        self.beat_failures = 0
        self.statements = 0
        self.loop_cpu_s = 0.0
        self.lost = 0  # cameras stopped because a lease could not be renewed in time
        self.moves = 0

    # -- registration and lifecycle ---------------------------------------------------------------
    def register(self, *, wait: bool = True) -> NodeRecord:
        """Register this node. A name another live process holds: wait (``wait``) up to that
        registration's TTL for it to expire (a crashed predecessor, restarted at once), and
        refuse (:class:`ConfigError`, one clear line) as soon as its heartbeat moves on (a
        second process of the name)."""
        first: NodeRecord | None = None
        until = 0.0
        gone: str | None = None
        while True:
            try:
                record = self.gallery.cluster.register(
                    self.name,
                    self.instance,
                    address=self.address,
                    ttl_s=self.ttl_s,
                    capacity=self.capacity(),
                    info=self._info(),
                    gone=gone,
                )
                break
            except NodeNameTakenError as exc:
                holder = exc.holder
                if _dead_here(holder) and gone != holder.instance:
                    gone = holder.instance  # a process of this machine that exits no more
                    log.info(
                        "node %r: its previous process (pid %s) is gone: taking its place",
                        self.name,
                        holder.info.get("pid"),
                    )
                    continue
                if first is None:
                    first, until = holder, time.monotonic() + holder.ttl_s + 1.0
                    if wait:
                        log.warning(
                            "node %r: another process holds this name (%s, last heartbeat "
                            "%.1f s ago); waiting up to %.0f s for it to expire",
                            self.name,
                            holder.address or "no address",
                            holder.age_s,
                            holder.ttl_s,
                        )
                alive = holder.heartbeat_at > first.heartbeat_at
                if not wait or alive or time.monotonic() > until:
                    raise ConfigError(_taken_message(self.name, holder)) from None
                time.sleep(min(0.5, max(0.05, holder.ttl_s / 10.0)))
        self.registered = True
        self._last_beat = time.monotonic()
        log.info(
            "node %r registered (%s; leases of %.0f s renewed every %.1f s%s)",
            self.name,
            self.address or "no address",
            self.ttl_s,
            self.heartbeat_s,
            "; SQLite: one node runs the cameras" if self.exclusive else "",
        )
        return record

    def attach(self, manager: CameraManager) -> None:
        """Decide which cameras ``manager`` runs (from the next heartbeat on)."""
        self.manager = manager
        manager.node = self
        self.wake()

    def start(self) -> None:
        """Start heartbeating (and taking cameras once a manager is attached)."""
        if not self.registered:
            self.register()
        if self._threads:
            return
        for target, what in ((self._loop, "heartbeat"), (self._watchdog, "watchdog")):
            thread = threading.Thread(target=target, name=f"marginface-node-{what}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: the cameras' workers (their last events written under their leases), then
        the heartbeat, then give every camera up (another node takes them at once) and leave
        the cluster."""
        self._closing.set()
        self._capacity = 0
        if self.manager is not None:
            self.manager.close(timeout)
        self._wake.set()
        with self._watch:
            self._watch.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        if self.registered and not self.replaced:
            try:
                freed = self.gallery.cluster.leave(self.name, self.instance)
                if freed:
                    log.info("node %r left: %d camera(s) given up", self.name, freed)
            except MarginfaceError as exc:
                log.warning(
                    "node %r: leaving the cluster failed (%s); its leases expire", self.name, exc
                )

    # -- what the manager asks --------------------------------------------------------------------
    def valid(self, lease: LeaseRef) -> bool:
        with self._lock:
            held = self._held.get(lease.camera_id)
            deadline = self._deadline.get(lease.camera_id, 0.0)
        return held == lease and time.monotonic() < deadline

    def wake(self) -> None:
        self._wake.set()

    def take(self, camera_id: str) -> None:
        """A camera was created or enabled through this node: take it at once when it is
        this node's to take (the least-loaded live node with room; on SQLite, the node that
        runs the cameras), else leave it to the node whose it is (its next heartbeat)."""
        manager = self.manager
        if manager is None or not self.run_cameras or self._closing.is_set():
            return
        with self._lock:
            held = len(self._held)
        capacity = self.capacity()
        if held >= capacity:
            return
        try:
            if not self.exclusive:
                nodes = [n for n in self.gallery.cluster.nodes() if n.state == "live"]
                if claim_share(self.name, nodes, held, capacity, 1) != 1:
                    self.wake()
                    return
            sent = time.monotonic()
            result = self.gallery.cluster.claim(
                self.name, self.instance, camera_ids=[camera_id], exclusive=self.exclusive
            )
        except MarginfaceError as exc:
            log.warning("node %r: cannot take camera %s now: %s", self.name, camera_id, exc)
            self.wake()
            return
        self._took(manager, result.leases, sent)
        self.wake()

    def give_up(self, lease: LeaseRef) -> None:
        with self._lock:
            if self._held.get(lease.camera_id) == lease:
                del self._held[lease.camera_id]
                self._deadline.pop(lease.camera_id, None)
                self._known.pop(lease.camera_id, None)
        try:
            self.gallery.cluster.release(lease)
        except MarginfaceError as exc:  # it expires on its own
            log.warning("node %r: giving camera %s up failed: %s", self.name, lease.camera_id, exc)
        self.wake()

    def stale(self) -> str | None:
        """Why this node's session with the gallery is not healthy (its heartbeat has not
        renewed the leases for so long that its cameras stop), or None."""
        if not self.registered or self.replaced:
            return "this node is not registered" if not self.replaced else "node name replaced"
        last = self._last_beat
        if last is not None and time.monotonic() - last > self.ttl_s - self.stop_margin_s:
            return (
                f"this node has not renewed its leases for {time.monotonic() - last:.1f} s: "
                f"{self._failing or 'the gallery does not answer'}"
            )
        return None

    def exclusive_holder(self) -> str | None:
        return self._blocked_by

    def held(self) -> dict[str, LeaseRef]:
        """The leases this node holds now (camera id -> lease)."""
        with self._lock:
            return dict(self._held)

    # -- capacity and what the node publishes -----------------------------------------------------
    def capacity(self) -> int:
        """How many cameras this node takes now: none while closing or without workers;
        else ``max_cameras``, lowered to what fits in ``cpu_budget`` of its cores at the CPU
        its cameras cost (measured over the last minute)."""
        if not self.run_cameras or self._closing.is_set() or self.replaced:
            return 0
        return self._capacity

    def _measure(self, held: int) -> dict[str, Any]:
        """Sample the process's CPU; the CPU per camera and the capacity it allows."""
        now, cpu = time.monotonic(), time.process_time()
        samples = self._cpu
        if samples and samples[-1][2] != held:
            samples.clear()  # the camera count changed: measure afresh
            self._cpu_since = now
        samples.append((now, cpu, held))
        while samples and now - samples[0][0] > CPU_WINDOW_S:
            samples.popleft()
        out: dict[str, Any] = {"cpu": None, "cpu_per_camera": None}
        if len(samples) >= 2 and samples[-1][0] - samples[0][0] > 1.0:
            used = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
            out["cpu"] = round(used, 3)
            settled = self._cpu_since is None or now - self._cpu_since >= CPU_SETTLE_S
            if held > 0 and settled and now - self._started >= CPU_SETTLE_S and used > 0:
                per_camera = used / held
                out["cpu_per_camera"] = round(per_camera, 4)
                fit = math.floor(self.cpu_budget * self.cores / per_camera)
                self._capacity = max(1, min(self.max_cameras, fit))
                return out
        if held == 0:
            self._capacity = self.max_cameras
        return out

    def _info(self, statuses: dict[str, Any] | None = None, held: int = 0) -> dict[str, Any]:
        measured = self._measure(held)
        fps = sum(float(s.get("process_fps") or 0.0) for s in (statuses or {}).values())
        return {
            "version": marginface.__version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cores": self.cores,
            "max_cameras": self.max_cameras if self.run_cameras else 0,
            "cpu_budget": self.cpu_budget,
            "fps": round(fps, 2),
            **measured,
            "lease": {
                "ttl_s": self.ttl_s,
                "heartbeat_s": self.heartbeat_s,
                "beats": self.beats,
                "failures": self.beat_failures,
                "statements": self.statements,
                "cpu_s": round(self.loop_cpu_s, 3),
                "uptime_s": round(time.monotonic() - self._started, 1),
                "lost": self.lost,
                "moves": self.moves,
            },
            "exclusive": self.exclusive,
            "cameras": statuses or {},
        }

    # -- the heartbeat thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        next_beat = 0.0
        last = -math.inf
        while not self._closing.is_set():
            now = time.monotonic()
            due = now >= next_beat or self._wake.is_set()
            if self._next_expiry is not None and now >= self._next_expiry:
                due, self._next_expiry = True, None
            if due and now - last >= _MIN_BEAT_GAP_S:
                self._wake.clear()
                last = now
                cpu, statements = time.thread_time(), self.gallery.statement_count()
                try:
                    self._beat()
                except Exception:  # never let the loop die: the watchdog would stop everything
                    log.exception("node %r: heartbeat failed", self.name)
                self.loop_cpu_s += time.thread_time() - cpu
                self.statements += self.gallery.statement_count() - statements
                next_beat = last + self.heartbeat_s
            if self._wake.is_set():  # asked for a beat sooner than the gap allows
                self._closing.wait(max(0.0, last + _MIN_BEAT_GAP_S - time.monotonic()))
                continue
            wake_at = next_beat
            if self._next_expiry is not None:
                wake_at = min(wake_at, self._next_expiry)
            self._wake.wait(max(0.0, wake_at - time.monotonic()))

    def _beat(self) -> None:
        """One heartbeat: renew, stop what was lost, run what is held, claim, rebalance."""
        manager = self.manager
        statuses = manager.local_statuses() if manager is not None else {}
        with self._lock:
            held = len(self._held)
        sent = time.monotonic()
        try:
            hb = self.gallery.cluster.heartbeat(
                self.name,
                self.instance,
                address=self.address,
                ttl_s=self.ttl_s,
                capacity=self.capacity(),
                info=self._info(statuses, held),
            )
        except NodeReplacedError as exc:
            self._replaced(str(exc))
            return
        except MarginfaceError as exc:
            self.beat_failures += 1
            message = str(exc)
            if message != self._failing:
                log.error(
                    "node %r: cannot renew its leases (%s); its cameras stop within %.1f s "
                    "of the last renewal unless the gallery answers again",
                    self.name,
                    message,
                    self.ttl_s - self.stop_margin_s,
                )
            self._failing = message
            return
        self.beats += 1
        self._last_beat = sent
        if self._failing is not None:
            log.info("node %r: the gallery answers again", self.name)
            self._failing = None
        deadline = sent + self.ttl_s - self.stop_margin_s
        mine = {lease.camera_id: lease for lease in hb.leases}
        with self._lock:
            # not renewed: lost, unless claimed after this heartbeat read the leases
            lost = [
                cid for cid in self._held if cid not in mine and self._known.get(cid, 0.0) < sent
            ]
            for cid in lost:
                del self._held[cid]
                self._deadline.pop(cid, None)
                self._known.pop(cid, None)
            for cid, lease in mine.items():
                self._held[cid] = lease.ref
                self._deadline[cid] = max(deadline, self._deadline.get(cid, 0.0))
                self._known[cid] = time.monotonic()
        with self._watch:
            self._watch.notify_all()
        if hb.next_expiry_s is not None:
            self._next_expiry = time.monotonic() + hb.next_expiry_s + 0.05
        if manager is None:
            return
        for cid in lost:
            self._stop(
                manager, cid, "its lease is not this node's any more (taken over, or deleted)"
            )
        self._run_held(manager, mine)
        if self._closing.is_set() or not self.run_cameras:
            return
        self._claim(manager, hb.nodes, hb.free, hb.now)
        if not self.exclusive and not hb.free:
            self._rebalance(manager, hb.nodes)

    def _replaced(self, message: str) -> None:
        log.error("node %r: %s", self.name, message)
        self.replaced = True
        with self._lock:
            cameras = list(self._held)
            self._held.clear()
            self._deadline.clear()
        if self.manager is not None:
            for cid in cameras:
                self.manager.stop_leased(cid)

    def _stop(self, manager: CameraManager, camera_id: str, why: str) -> None:
        self.lost += 1
        name = manager.camera_name(camera_id)
        log.warning("node %r: camera %r stops here: %s", self.name, name, why)
        manager.stop_leased(camera_id)

    def _run_held(self, manager: CameraManager, mine: dict[str, CameraLease]) -> None:
        running = manager.running()
        for cid, lease in mine.items():
            if not lease.enabled:  # stopped through another node: give it up
                manager.stop_leased(cid, wait=5.0)
                self.give_up(lease.ref)
                continue
            try:
                manager.ensure_running(lease)
            except MarginfaceError as exc:
                log.warning("node %r: cannot run camera %s: %s", self.name, lease.camera, exc)
        held = self.held()
        for cid, ref in running.items():  # running here without a lease: not ours
            if cid not in mine and ref is not None and held.get(cid) != ref:
                manager.stop_leased(cid)

    def _claim(
        self,
        manager: CameraManager,
        nodes: Sequence[NodeRecord],
        free: Sequence[CameraLease],
        now: float,
    ) -> None:
        with self._lock:
            held = len(self._held)
        capacity = self.capacity()
        room = max(0, capacity - held)
        if self.exclusive:  # one node runs the cameras: is it another one?
            others = sorted(n.name for n in nodes if n.name != self.name and n.cameras)
            self._note_blocked(others[0] if others else None)
        if not free or room == 0:
            return
        if self.exclusive:
            count = room
        else:
            count = claim_share(self.name, nodes, held, capacity, len(free))
            orphaned = sum(1 for lease in free if now - _free_since(lease) > 2.0 * self.heartbeat_s)
            count = min(room, max(count, orphaned))
        if count <= 0:
            return
        sent = time.monotonic()
        result = self.gallery.cluster.claim(
            self.name, self.instance, count=count, exclusive=self.exclusive
        )
        if self.exclusive:
            self._note_blocked(result.blocked_by)
        self._took(manager, result.leases, sent)

    def _note_blocked(self, holder: str | None) -> None:
        """Remember (and say once) which other node runs a SQLite gallery's cameras."""
        if holder is not None and holder != self._blocked_by:
            log.warning(
                "node %r: this gallery is SQLite, where one node runs the cameras: node %r "
                "runs them, this one serves the API only (use PostgreSQL to spread cameras "
                "over nodes)",
                self.name,
                holder,
            )
        self._blocked_by = holder

    def _took(self, manager: CameraManager, leases: Sequence[CameraLease], sent: float) -> None:
        """Hold and run the cameras just claimed (``sent``: when the claim was sent)."""
        deadline = sent + self.ttl_s - self.stop_margin_s
        with self._lock:
            for lease in leases:
                self._held[lease.camera_id] = lease.ref
                self._deadline[lease.camera_id] = deadline
                self._known[lease.camera_id] = time.monotonic()
        with self._watch:
            self._watch.notify_all()
        for lease in leases:
            log.info(
                "node %r takes camera %r (epoch %d%s)",
                self.name,
                lease.camera,
                lease.epoch,
                f", from {lease.previous_node}" if lease.previous_node else "",
            )
            try:
                manager.ensure_running(lease)
            except MarginfaceError as exc:
                log.warning("node %r: cannot run camera %s: %s", self.name, lease.camera, exc)

    def _rebalance(self, manager: CameraManager, nodes: Sequence[NodeRecord]) -> None:
        now = time.monotonic()
        if now < self._next_move:
            return
        with self._lock:
            held = dict(self._held)
        target = move_target(self.name, nodes, len(held), self.capacity())
        if target is None:
            self._move_wanted_since = None
            return
        if self._move_wanted_since is None:
            self._move_wanted_since = now
        idle = [cid for cid in sorted(held) if manager.between_visits(cid)]
        waited = now - self._move_wanted_since
        if not idle and waited < self.move_wait_s:
            return  # wait for a moment between visits
        camera_id = idle[0] if idle else sorted(held)[0]
        lease, name = held[camera_id], manager.camera_name(camera_id)
        if not manager.stop_leased(camera_id, wait=min(5.0, self.ttl_s / 3.0)):
            log.warning("node %r: camera %r did not stop in time; not moved", self.name, name)
            return
        with self._lock:
            self._held.pop(camera_id, None)
            self._deadline.pop(camera_id, None)
        moved = self.gallery.cluster.release(lease, to=target)
        self.moves += 1
        self._move_wanted_since = None
        self._next_move = now + self.rebalance_s
        log.info(
            "node %r hands camera %r to node %r%s (rebalancing)",
            self.name,
            name,
            moved.node if moved is not None and moved.node else target,
            "" if idle else f" after waiting {waited:.0f} s for it to be between visits",
        )

    # -- the watchdog -----------------------------------------------------------------------------
    def _watchdog(self) -> None:
        """Stop each camera whose lease may expire before this node renews it (whatever the
        heartbeat is doing)."""
        while not self._closing.is_set():
            with self._lock:
                deadlines = dict(self._deadline)
            now = time.monotonic()
            late = [cid for cid, t in deadlines.items() if t <= now]
            if late:
                with self._lock:
                    for cid in late:
                        if self._deadline.get(cid, math.inf) <= now:
                            self._held.pop(cid, None)
                            self._deadline.pop(cid, None)
                manager = self.manager
                names = [manager.camera_name(cid) if manager else cid for cid in sorted(late)]
                log.error(
                    "node %r: its leases were not renewed in time: camera(s) %s stop before "
                    "their leases can expire (another node may take them)",
                    self.name,
                    ", ".join(names),
                )
                if self.manager is not None:
                    for cid in late:
                        self.lost += 1
                        self.manager.stop_leased(cid)
                continue
            wait = min(deadlines.values(), default=now + 1.0) - now
            with self._watch:
                if not self._closing.is_set():
                    self._watch.wait(min(1.0, max(0.01, wait)))


def _dead_here(holder: NodeRecord) -> bool:
    """Whether ``holder`` was a process of this machine that no longer exists (a crashed
    service restarted at once: nothing can be running its cameras)."""
    pid = holder.info.get("pid")
    if holder.info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's): alive
        return False
    return False


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _free_since(lease: CameraLease) -> float:
    """When a free camera became free: its lease's end, or its last change (never held)."""
    ends = lease.expires_at.timestamp() if lease.expires_at is not None else 0.0
    return max(ends, lease.updated_at.timestamp())


def _taken_message(name: str, holder: NodeRecord) -> str:
    host = holder.info.get("host")
    pid = holder.info.get("pid")
    where = f"pid {pid} on {host}" if host and pid else holder.address or "another process"
    return (
        f"node name {name!r} is in use by another running marginface serve ({where}, "
        f"{holder.address or 'no address'}, last heartbeat {holder.age_s:.1f} s ago): give "
        "this one another name (--node or MARGINFACE_NODE), or stop the other one"
    )
