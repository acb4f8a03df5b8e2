"""Requests that need a camera's worker, forwarded to the node of the cluster running it.

Behind a load balancer any node may get a camera's live view, a pushed frame, a restart or a
recent visit's face, but only the node holding the camera's lease has its worker (and the
thumbnails it keeps in memory). That node is named in the gallery with its address
(``/v1/nodes``); the request goes there once, with the caller's credentials, and its answer
comes back as it is. A request forwarded already is never forwarded again (409): nodes that
disagree about who holds a camera (a move in progress) cannot bounce it between them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from marginface.serve.errors import ApiError
from marginface.streams.manager import CameraElsewhereError
from marginface.urls import redact_url

__all__ = ["FORWARDED_HEADER", "forward"]

#: Marks a request one node forwarded to another (its value: the forwarding node's name).
FORWARDED_HEADER = "X-Marginface-Forwarded-By"
#: What is passed on of the caller's request.
_PASSED = ("x-api-key", "authorization", "content-type", "accept")
#: The largest answer relayed (a frame, a JSON status).
_MAX_ANSWER = 32 * 1024 * 1024
_TIMEOUT_S = 10.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller's credentials go to the node named, nowhere else


def forward(
    request: Request, elsewhere: CameraElsewhereError, body: bytes | None, this_node: str
) -> Response:
    """Send ``request`` (with ``body``) to the node ``elsewhere`` names and return its answer.
    Blocking: call it from a worker thread. 409 ``camera_elsewhere`` for a request forwarded
    already; 503 ``node_unreachable`` when that node does not answer."""
    if request.headers.get(FORWARDED_HEADER):
        raise ApiError(
            409,
            "camera_elsewhere",
            f"{elsewhere} (this request was forwarded here by node "
            f"{request.headers[FORWARDED_HEADER]!r}; the camera is moving: retry shortly)",
        )
    if not elsewhere.address.startswith(("http://", "https://")):
        raise ApiError(503, "node_unreachable", f"{elsewhere}, which has no address")
    url = elsewhere.address.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    headers = {name: request.headers[name] for name in _PASSED if name in request.headers}
    headers[FORWARDED_HEADER] = this_node
    outgoing = urllib.request.Request(url, data=body, headers=headers, method=request.method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(outgoing, timeout=_TIMEOUT_S) as answer:
            status, kind, data = (
                answer.status,
                answer.headers.get("content-type"),
                answer.read(_MAX_ANSWER),
            )
    except urllib.error.HTTPError as exc:
        status, kind, data = exc.code, exc.headers.get("content-type"), exc.read(_MAX_ANSWER)
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(
            503,
            "node_unreachable",
            f"{elsewhere}, which does not answer at {redact_url(elsewhere.address)} ({reason})",
        ) from None
    return Response(
        data,
        status_code=int(status),
        media_type=kind,
        headers={"X-Marginface-Node": elsewhere.node, "Cache-Control": "no-store"},
    )
