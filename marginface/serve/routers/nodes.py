"""The nodes of the camera cluster: ``GET /v1/nodes``.

Every service sharing the gallery is a node (``marginface serve --node NAME``); this lists the
live ones and those lost (no heartbeat within their lease TTL: killed, switched off, cut off
from the database) or left (stopped), with what each holds and publishes: its address, last
heartbeat, cameras, capacity, frames/s and CPU. Reading it needs any key (recognise role), as
reading the cameras does; nodes are configured where they run (settings), not through the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from marginface.gallery import NodeRecord
from marginface.serve.auth import RecogniseKey
from marginface.serve.deps import ServiceDep
from marginface.serve.params import AUTH_ERRORS
from marginface.serve.schemas import NodeListOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["nodes"], responses=AUTH_ERRORS)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _node_out(node: NodeRecord, names: dict[str, str], this: str) -> dict[str, Any]:
    info = node.info
    cores, max_cameras = info.get("cores"), info.get("max_cameras")
    return {
        "name": node.name,
        "address": node.address,
        "state": node.state,
        "this": node.name == this,
        "started_at": node.started_at,
        "last_heartbeat": node.heartbeat_at,
        "heartbeat_age_s": round(node.age_s, 3),
        "lease_ttl_s": node.ttl_s,
        "cameras": sorted(names.get(cid, cid) for cid in node.cameras),
        "cameras_held": len(node.cameras),
        "capacity": node.capacity if node.state == "live" else 0,
        "max_cameras": max_cameras if isinstance(max_cameras, int) else None,
        "fps": _number(info.get("fps")),
        "cpu": _number(info.get("cpu")),
        "cpu_per_camera": _number(info.get("cpu_per_camera")),
        "cores": cores if isinstance(cores, int) else None,
        "version": info.get("version") if isinstance(info.get("version"), str) else None,
    }


@router.get("/nodes", response_model=NodeListOut, summary="The nodes of the camera cluster")
def list_nodes(service: ServiceDep, _key: RecogniseKey) -> Any:
    """Every node sharing this gallery, by name: `live`, `lost` (no heartbeat within its lease
    TTL; its cameras went to the others) or `left`, with its address, last heartbeat, the
    cameras it holds, its capacity, frames/s and CPU. `mode`: `cluster` (PostgreSQL: the
    cameras spread over the live nodes) or `single` (SQLite: one node runs them all)."""
    this = service.node.name
    names = {camera.id: camera.name for camera in service.gallery.cameras.list()}
    nodes = [_node_out(n, names, this) for n in service.gallery.cluster.nodes()]
    return {"nodes": nodes, "this": this, "mode": "single" if service.node.exclusive else "cluster"}
