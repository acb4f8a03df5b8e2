"""The camera cluster's shared state: nodes, camera leases and delivery marks.

Every ``marginface serve`` sharing a gallery is a *node*: it registers under a unique name and
heartbeats. Each camera has one *lease* row: the node holding it, until when, and a fencing
*epoch* that grows with every new holder. The rules, all measured with the **database's clock**
(:meth:`Database.now`), never a node's own:

* a lease is held while ``expires_at > now``; its holder renews it with every heartbeat
  (``now + ttl``), and only an unexpired lease can be renewed;
* a free or expired lease of an enabled camera can be claimed; a claim bumps the epoch. On
  PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED``: two nodes claiming at once
  take different cameras, never one twice;
* a write made under a lease (a visit event, a stranger's sighting, a file's position) checks,
  in its own transaction, that the lease is still its writer's at that epoch and unexpired
  (:func:`check_lease`, the row locked ``FOR SHARE``): a node that lost a camera (paused,
  cut off, slow) cannot write for it any more, and a claim cannot happen in the middle of
  such a write;
* a node gives a camera up (:meth:`ClusterStore.release`), to nobody or straight to another
  live node (a new epoch); a node that stops gives all of its cameras up and is ``left``.

The gallery takes plain values and decides nothing about *which* node should run what: the
streams layer (``marginface.streams.cluster``) does, from the heartbeat's snapshot.

*Delivery marks*: per notifier (``sink``) and camera, the newest event id delivered; the node
taking a camera over sends again what came after, so that notifications are delivered at least
once across a node's death.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from marginface.errors import ConflictError, GalleryError
from marginface.gallery.db import Database
from marginface.gallery.types import (
    CameraLease,
    ClaimResult,
    Heartbeat,
    LeaseRef,
    NodeRecord,
    utc_from_ts,
)
from marginface.gallery.validate import clean_name

__all__ = [
    "MAX_NODE_NAME_LENGTH",
    "ClusterStore",
    "NodeNameTakenError",
    "NodeReplacedError",
    "StaleLeaseError",
    "check_lease",
    "node_name",
]

#: A node's name: the rules of every name in the gallery, at most this long.
MAX_NODE_NAME_LENGTH = 100
#: Largest ``info`` a node publishes (its cameras' status included).
_MAX_INFO_BYTES = 256 * 1024

_LEASE_COLS = (
    "l.camera_id, c.name, c.enabled, c.updated_at, l.node, l.epoch, l.expires_at, "
    "l.acquired_at, l.previous_node, l.previous_epoch, l.previous_expires_at"
)
_LEASE_FROM = "camera_leases l JOIN cameras c ON c.id = l.camera_id"
_NODE_COLS = "name, instance, address, state, ttl_s, capacity, started_at, heartbeat_at, info"
#: A claimable lease: an enabled camera nobody holds now.
_FREE = "c.enabled = 1 AND (l.node IS NULL OR l.expires_at IS NULL OR l.expires_at <= ?)"


class StaleLeaseError(ConflictError):
    """A write under a camera's lease that its writer no longer holds (another node took the
    camera, or the lease expired): refused, nothing written."""


class NodeNameTakenError(ConflictError):
    """Another live process is registered under this node name. ``holder`` is its record
    (address, heartbeat age), for the message and for a caller that waits for a dead one to
    expire."""

    def __init__(self, message: str, holder: NodeRecord) -> None:
        super().__init__(message)
        self.holder = holder


class NodeReplacedError(ConflictError):
    """A node's heartbeat found its name registered by another process: this one was taken
    for dead (it did not heartbeat for longer than its TTL) and must run no camera."""


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _when(value: Any) -> Any:
    return None if value is None else utc_from_ts(float(value))


def _lease(row: Sequence[Any], now: float) -> CameraLease:
    node, expires = row[4], _float(row[6])
    return CameraLease(
        camera_id=row[0],
        camera=row[1],
        enabled=bool(row[2]),
        updated_at=utc_from_ts(float(row[3])),
        node=node,
        epoch=int(row[5]),
        expires_at=_when(expires),
        acquired_at=_when(row[7]),
        previous_node=row[8],
        previous_epoch=None if row[9] is None else int(row[9]),
        previous_expires_at=_when(row[10]),
        held=node is not None and expires is not None and expires > now,
    )


def _node(row: Sequence[Any], now: float, cameras: list[str]) -> NodeRecord:
    heartbeat, ttl = float(row[7]), float(row[4])
    state = row[3]
    if state == "live" and heartbeat + ttl <= now:
        state = "lost"
    try:
        info = json.loads(row[8] or "{}")
    except ValueError:
        info = {}
    return NodeRecord(
        name=row[0],
        instance=row[1],
        address=row[2],
        state=state,
        ttl_s=ttl,
        capacity=int(row[5]),
        started_at=utc_from_ts(float(row[6])),
        heartbeat_at=utc_from_ts(heartbeat),
        info=info if isinstance(info, dict) else {},
        cameras=cameras,
        age_s=max(0.0, now - heartbeat),
    )


def _info_json(info: Mapping[str, Any] | None) -> str:
    text = json.dumps(dict(info or {}), separators=(",", ":"), default=str, allow_nan=False)
    if len(text.encode()) > _MAX_INFO_BYTES:
        raise GalleryError(f"a node's info is larger than {_MAX_INFO_BYTES} bytes")
    return text


def _ttl(ttl_s: float) -> float:
    ttl = float(ttl_s)
    if not 0.5 <= ttl <= 3600.0:
        raise GalleryError("a lease TTL is between 0.5 and 3600 seconds")
    return ttl


def node_name(name: str) -> str:
    """A node name as stored (the gallery's rules for names); GalleryError naming the
    problem."""
    return clean_name(name, what="node name", max_length=MAX_NODE_NAME_LENGTH)


def check_lease(db: Database, lease: LeaseRef | None) -> None:
    """Inside a write transaction: refuse it (:class:`StaleLeaseError`) unless ``lease``'s
    node still holds the camera at that epoch, unexpired by the database's clock. The lease
    row stays locked (``FOR SHARE``) until the transaction ends, so no claim can take the
    camera in between. None: a write made under no lease (``marginface watch``), not
    checked."""
    if lease is None:
        return
    lock = " FOR SHARE" if db.dialect == "postgresql" else ""
    row = db.query_one(
        f"SELECT node, epoch, expires_at FROM camera_leases WHERE camera_id = ?{lock}",
        (lease.camera_id,),
    )
    now = db.now()
    if row is None:
        raise StaleLeaseError(f"camera {lease.camera_id} has no lease (it was deleted)")
    node, epoch, expires = row[0], int(row[1]), _float(row[2])
    if node == lease.node and epoch == int(lease.epoch) and expires is not None and expires > now:
        return
    if node == lease.node and epoch == int(lease.epoch):
        why = "its lease expired"
    elif node is None:
        why = "it was given up"
    else:
        why = f"node {node!r} holds it now (epoch {epoch})"
    raise StaleLeaseError(
        f"camera {lease.camera_id}: the write of node {lease.node!r} under epoch {lease.epoch} "
        f"is refused: {why}"
    )


class ClusterStore:
    """Nodes, camera leases and delivery marks of one gallery: ``gallery.cluster``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reading ---------------------------------------------------------------------------------
    def _held_by(self, now: float) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for node, camera_id in self._db.query(
            "SELECT node, camera_id FROM camera_leases WHERE node IS NOT NULL AND expires_at > ? "
            "ORDER BY camera_id",
            (now,),
        ):
            held.setdefault(node, []).append(camera_id)
        return held

    def _nodes(self, now: float, *, live_only: bool) -> list[NodeRecord]:
        held = self._held_by(now)
        sql = f"SELECT {_NODE_COLS} FROM nodes"
        params: tuple[Any, ...] = ()
        if live_only:
            sql += " WHERE state = 'live' AND heartbeat_at + ttl_s > ?"
            params = (now,)
        rows = self._db.query(sql + " ORDER BY name", params)
        return [_node(r, now, held.get(r[0], [])) for r in rows]

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, by name: ``live``, ``lost`` (no heartbeat within its TTL)
        or ``left``, with the cameras each holds."""
        now = self._db.now()
        return self._nodes(now, live_only=False)

    def leases(self) -> list[CameraLease]:
        """Every camera's lease (who holds it, its epoch, until when), by camera name."""
        now = self._db.now()
        rows = self._db.query(f"SELECT {_LEASE_COLS} FROM {_LEASE_FROM} ORDER BY c.name, c.id")
        return [_lease(r, now) for r in rows]

    # -- registration ----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        instance: str,
        *,
        address: str = "",
        ttl_s: float = 15.0,
        capacity: int = 0,
        info: Mapping[str, Any] | None = None,
        gone: str | None = None,
    ) -> NodeRecord:
        """Register the process ``instance`` (any unique text) as node ``name`` (the rules of
        names), live from now for ``ttl_s`` seconds of the database's clock unless it
        heartbeats (:meth:`heartbeat`). A name held by another live instance is
        :class:`NodeNameTakenError` (its ``holder`` says since when; a crashed predecessor's
        registration expires after its TTL). The cameras a previous instance of this name held
        are freed: nobody runs them. ``gone``: an instance its caller knows to be dead (a
        process of this machine that no longer exists), whose registration is taken over at
        once."""
        name, ttl, text = node_name(name), _ttl(ttl_s), _info_json(info)
        address = str(address or "")[:2000]
        with self._db.transaction():
            self._db.lock_writes("nodes")
            now = self._db.now()
            row = self._db.query_one(f"SELECT {_NODE_COLS} FROM nodes WHERE name = ?", (name,))
            if row is not None:
                holder = _node(row, now, self._held_by(now).get(name, []))
                taken = holder.instance not in (instance, gone)
                if taken and holder.state == "live":
                    where = holder.address or "no address"
                    raise NodeNameTakenError(
                        f"node name {name!r} is taken by a live process ({where}, last "
                        f"heartbeat {holder.age_s:.1f} s ago)",
                        holder,
                    )
                self._db.execute(
                    "UPDATE nodes SET instance = ?, address = ?, state = 'live', ttl_s = ?, "
                    "capacity = ?, started_at = ?, heartbeat_at = ?, info = ? WHERE name = ?",
                    (instance, address, ttl, int(capacity), now, now, text, name),
                )
            else:
                self._db.execute(
                    f"INSERT INTO nodes ({_NODE_COLS}) VALUES (?, ?, ?, 'live', ?, ?, ?, ?, ?)",
                    (name, instance, address, ttl, int(capacity), now, now, text),
                )
            # a predecessor of this name is gone: nobody runs what it held, free it
            self._free_all(name, now)
            return next(n for n in self._nodes(now, live_only=False) if n.name == name)

    def _free_all(self, name: str, now: float) -> int:
        return self._db.execute(
            "UPDATE camera_leases SET previous_node = node, previous_epoch = epoch, "
            "previous_expires_at = CASE WHEN expires_at < ? THEN expires_at ELSE ? END, "
            "node = NULL, expires_at = ? WHERE node = ?",
            (now, now, now, name),
        )

    def _require_instance(self, name: str, instance: str, now: float) -> None:
        row = self._db.query_one("SELECT instance FROM nodes WHERE name = ?", (name,))
        if row is not None and row[0] != instance:
            raise NodeReplacedError(
                f"node name {name!r} was registered by another process: this one did not "
                "heartbeat in time and was taken for dead; it runs no camera any more"
            )

    def heartbeat(
        self,
        name: str,
        instance: str,
        *,
        address: str | None = None,
        ttl_s: float = 15.0,
        capacity: int = 0,
        info: Mapping[str, Any] | None = None,
    ) -> Heartbeat:
        """One heartbeat of a registered node, in ONE transaction: the node is live for
        ``ttl_s`` more seconds, every lease it holds unexpired is renewed for as long (an
        expired one is not: another node may have it), and the snapshot the node decides by
        is returned: its leases, the live nodes, the free cameras and when the next lease
        expires. :class:`NodeReplacedError` when another process registered this name (this
        one was taken for dead). ``info`` (JSON-ready, at most 256 KiB) is what the node
        publishes: frames/s, CPU, its cameras' status."""
        ttl, text = _ttl(ttl_s), _info_json(info)
        with self._db.transaction():
            now = self._db.now()
            changed = self._db.execute(
                "UPDATE nodes SET heartbeat_at = ?, ttl_s = ?, capacity = ?, info = ?, "
                "address = COALESCE(?, address), state = 'live' WHERE name = ? AND instance = ?",
                (now, ttl, int(capacity), text, address, name, instance),
            )
            if changed == 0:
                self._require_instance(name, instance, now)
                # the row went (purged while this node was away): register again
                self._db.execute(
                    f"INSERT INTO nodes ({_NODE_COLS}) VALUES (?, ?, ?, 'live', ?, ?, ?, ?, ?)",
                    (name, instance, address or "", ttl, int(capacity), now, now, text),
                )
            self._db.execute(
                "UPDATE camera_leases SET expires_at = ? WHERE node = ? AND expires_at > ?",
                (now + ttl, name, now),
            )
            mine = [
                _lease(r, now)
                for r in self._db.query(
                    f"SELECT {_LEASE_COLS} FROM {_LEASE_FROM} "
                    "WHERE l.node = ? AND l.expires_at > ? ORDER BY l.camera_id",
                    (name, now),
                )
            ]
            free = [
                _lease(r, now)
                for r in self._db.query(
                    f"SELECT {_LEASE_COLS} FROM {_LEASE_FROM} WHERE {_FREE} ORDER BY l.camera_id",
                    (now,),
                )
            ]
            nodes = self._nodes(now, live_only=True)
            nxt = self._db.scalar(
                "SELECT MIN(expires_at) FROM camera_leases WHERE node IS NOT NULL AND node <> ? "
                "AND expires_at > ?",
                (name, now),
            )
        return Heartbeat(
            now=now,
            leases=mine,
            nodes=nodes,
            free=free,
            next_expiry_s=None if nxt is None else float(nxt) - now,
        )

    def leave(self, name: str, instance: str) -> int:
        """Node ``name`` stops: its cameras are freed and it is ``left``; returns how many
        cameras it gave up (0 when another process holds the name now)."""
        with self._db.transaction():
            now = self._db.now()
            row = self._db.query_one("SELECT instance FROM nodes WHERE name = ?", (name,))
            if row is None or row[0] != instance:
                return 0  # another process has the name now: what it holds is its own
            freed = self._free_all(name, now)
            self._db.execute(
                "UPDATE nodes SET state = 'left', heartbeat_at = ?, info = ? WHERE name = ?",
                (now, "{}", name),
            )
        return freed

    def purge(self, older_than_s: float) -> int:
        """Forget the nodes lost or left at least ``older_than_s`` seconds ago (0: every node
        not live now; SQLite's clock counts milliseconds, so "more than 0 s ago" would spare a
        node that left in the same millisecond)."""
        with self._db.transaction():
            now = self._db.now()
            return self._db.execute(
                "DELETE FROM nodes WHERE heartbeat_at <= ? AND (state <> 'live' OR "
                "heartbeat_at + ttl_s <= ?)",
                (now - float(older_than_s), now),
            )

    # -- leases ----------------------------------------------------------------------------------
    def claim(
        self,
        name: str,
        instance: str,
        *,
        count: int = 1,
        camera_ids: Iterable[str] | None = None,
        exclusive: bool = False,
    ) -> ClaimResult:
        """Take up to ``count`` free cameras (enabled, held by nobody or by an expired lease;
        of ``camera_ids`` when given), the longest free first, for node ``name`` (registered
        as ``instance``): each lease gets a new epoch and runs for the node's TTL. Locked
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: nodes claiming together never take one
        camera twice. ``exclusive``: take nothing while another node holds a camera (a
        SQLite gallery: one node runs the cameras), saying which in ``blocked_by``."""
        wanted = None if camera_ids is None else list(dict.fromkeys(camera_ids))
        if count <= 0 or wanted == []:
            return ClaimResult([])
        with self._db.transaction():
            now = self._db.now()
            row = self._db.query_one(
                "SELECT instance, ttl_s FROM nodes WHERE name = ? AND state = 'live'", (name,)
            )
            if row is None or row[0] != instance:
                self._require_instance(name, instance, now)
                raise GalleryError(f"node {name!r} is not registered: it cannot take cameras")
            ttl = float(row[1])
            if exclusive:
                other = self._db.query_one(
                    "SELECT node FROM camera_leases WHERE node IS NOT NULL AND node <> ? "
                    "AND expires_at > ? ORDER BY node LIMIT 1",
                    (name, now),
                )
                if other is not None:
                    return ClaimResult([], blocked_by=other[0])
            sql = f"SELECT l.camera_id FROM {_LEASE_FROM} WHERE {_FREE}"
            params: list[Any] = [now]
            if wanted is not None:
                sql += f" AND l.camera_id IN ({','.join('?' * len(wanted))})"
                params += wanted
            sql += " ORDER BY COALESCE(l.expires_at, c.created_at), l.camera_id LIMIT ?"
            params.append(int(count))
            if self._db.dialect == "postgresql":
                sql += " FOR UPDATE OF l SKIP LOCKED"
            taken = [r[0] for r in self._db.query(sql, params)]
            for camera_id in taken:
                self._db.execute(
                    "UPDATE camera_leases SET "
                    "previous_node = CASE WHEN node IS NULL THEN previous_node ELSE node END, "
                    "previous_epoch = CASE WHEN node IS NULL THEN previous_epoch ELSE epoch END, "
                    "previous_expires_at = CASE WHEN node IS NULL THEN previous_expires_at "
                    "ELSE expires_at END, "
                    "node = ?, epoch = epoch + 1, expires_at = ?, acquired_at = ? "
                    "WHERE camera_id = ?",
                    (name, now + ttl, now, camera_id),
                )
            leases = self._leases_of(taken, now)
        return ClaimResult(leases)

    def _leases_of(self, camera_ids: Sequence[str], now: float) -> list[CameraLease]:
        out: list[CameraLease] = []
        for rows in self._db.query_in(
            f"SELECT {_LEASE_COLS} FROM {_LEASE_FROM} WHERE l.camera_id IN ({{marks}})",
            camera_ids,
        ):
            out += [_lease(r, now) for r in rows]
        return sorted(out, key=lambda lease: lease.camera_id)

    def release(self, lease: LeaseRef, *, to: str | None = None) -> CameraLease | None:
        """Give a held camera up: to node ``to`` when it is live (a new epoch, its TTL), else
        to nobody (free to claim). None when ``lease`` is not held any more."""
        with self._db.transaction():
            now = self._db.now()
            lock = " FOR UPDATE" if self._db.dialect == "postgresql" else ""
            row = self._db.query_one(
                f"SELECT node, epoch, expires_at FROM camera_leases WHERE camera_id = ?{lock}",
                (lease.camera_id,),
            )
            if (
                row is None
                or row[0] != lease.node
                or int(row[1]) != int(lease.epoch)
                or _float(row[2]) is None
                or float(row[2]) <= now
            ):
                return None  # not this node's any more: nothing to give up
            target = None
            if to is not None and to != lease.node:
                target = self._db.query_one(
                    "SELECT ttl_s FROM nodes WHERE name = ? AND state = 'live' "
                    "AND heartbeat_at + ttl_s > ?",
                    (to, now),
                )
            if target is not None:  # straight to the other node, under a new epoch
                self._db.execute(
                    "UPDATE camera_leases SET previous_node = node, previous_epoch = epoch, "
                    "previous_expires_at = ?, node = ?, epoch = epoch + 1, expires_at = ?, "
                    "acquired_at = ? WHERE camera_id = ?",
                    (now, to, now + float(target[0]), now, lease.camera_id),
                )
            else:
                self._db.execute(
                    "UPDATE camera_leases SET previous_node = node, previous_epoch = epoch, "
                    "previous_expires_at = ?, node = NULL, expires_at = ? WHERE camera_id = ?",
                    (now, now, lease.camera_id),
                )
            (out,) = self._leases_of([lease.camera_id], now)
        return out

    # -- delivery marks --------------------------------------------------------------------------
    def marks(self, sink: str, camera_ids: Sequence[str]) -> dict[str, int]:
        """The newest event id of each camera that the notifier ``sink`` delivered (or gave up
        on); a camera without a mark gets one at its newest event (a notifier new to a camera
        sends from now on)."""
        if not camera_ids:
            return {}
        with self._db.transaction():
            now = self._db.now()
            found = {
                r[0]: int(r[1])
                for r in self._db.query(
                    "SELECT camera_id, event_id FROM delivery_marks WHERE sink = ?", (sink,)
                )
                if r[0] in set(camera_ids)
            }
            for camera_id in camera_ids:
                if camera_id in found:
                    continue
                newest = self._db.scalar(
                    "SELECT COALESCE(MAX(e.id), 0) FROM events e JOIN cameras c "
                    "ON e.source = c.name WHERE c.id = ?",
                    (camera_id,),
                )
                if self._db.query_one("SELECT 1 FROM cameras WHERE id = ?", (camera_id,)):
                    self._db.execute(
                        "INSERT INTO delivery_marks (sink, camera_id, event_id, updated_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (sink, camera_id) DO NOTHING",
                        (sink, camera_id, int(newest), now),
                    )
                    found[camera_id] = int(newest)
        return found

    def advance_marks(self, sink: str, marks: Mapping[str, int]) -> None:
        """Move ``sink``'s marks forward to these event ids (never back)."""
        if not marks:
            return
        larger = "GREATEST" if self._db.dialect == "postgresql" else "MAX"
        with self._db.transaction():
            now = self._db.now()
            for camera_id, event_id in sorted(marks.items()):
                if self._db.query_one("SELECT 1 FROM cameras WHERE id = ?", (camera_id,)) is None:
                    continue  # deleted meanwhile
                self._db.execute(
                    "INSERT INTO delivery_marks (sink, camera_id, event_id, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (sink, camera_id) DO UPDATE SET "
                    f"event_id = {larger}(delivery_marks.event_id, excluded.event_id), "
                    "updated_at = excluded.updated_at",
                    (sink, camera_id, int(event_id), now),
                )
