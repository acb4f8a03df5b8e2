"""ASGI middleware: request body size limit, Prometheus request metrics, security headers, and
the two pieces every middleware here is built from (:class:`HttpMiddleware`,
:class:`ResponseStatus`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from marginface.serve.metrics import ServiceMetrics

__all__ = [
    "BodyLimitMiddleware",
    "HttpMiddleware",
    "MetricsMiddleware",
    "ResponseStatus",
    "SecurityHeadersMiddleware",
    "error_body",
]

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def error_body(code: str, message: str, details: object | None = None) -> dict:
    """The JSON body of every error response: ``{"error": {"code", "message"[, "details"]}}``."""
    error: dict = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _too_large(limit: int) -> JSONResponse:
    mb = limit / (1024 * 1024)
    return JSONResponse(
        error_body("payload_too_large", f"the request body exceeds the upload limit of {mb:g} MB"),
        status_code=413,
        headers={"Connection": "close"},
    )


class HttpMiddleware:
    """A pure ASGI middleware for HTTP requests: :meth:`handle` sees every HTTP request; other
    scopes (lifespan, websockets) pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ResponseStatus:
    """An ASGI ``send`` that passes every message on and remembers the response's status.

    ``status`` is None until the response has started (``http.response.start`` was sent).
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse request bodies larger than ``limit`` bytes with HTTP 413, before any work.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is read
    (in memory, never to disk) while counting, and replayed to the application when it fits.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware(HttpMiddleware):
    """Count requests and time them, labelled by route template (not the raw path), in the
    metrics of the app's running service (``app.state.service.metrics``)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = getattr(getattr(scope.get("app"), "state", None), "service", None)
        metrics: ServiceMetrics | None = getattr(service, "metrics", None)
        if metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        response = ResponseStatus(send)
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, response)
        finally:
            metrics.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            status = response.status or 500  # no answer at all counts as a failure
            metrics.observe_request(scope["method"], path, status, time.perf_counter() - start)


class SecurityHeadersMiddleware(HttpMiddleware):
    """API answers carry biometric results: never cached, never sniffed, never framed."""

    _HEADERS = (
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self._HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)
