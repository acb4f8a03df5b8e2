"""Every error the service returns is JSON: ``{"error": {"code": ..., "message": ...}}``.

User errors (:class:`marginface.errors.MarginfaceError` subclasses) map to 4xx codes: invalid
input 422 (400 for an unreadable image), something missing 404, a real conflict with what is
stored 409. A failing database or index is 503. Anything unexpected becomes a 500 whose message
reveals nothing internal (the traceback goes to the log), answered by
:class:`UnexpectedErrorMiddleware` so the client's keep-alive connection stays open.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from marginface.errors import (
    ConfigError,
    ConflictError,
    DataError,
    GalleryError,
    ImageError,
    MarginfaceError,
    ModelError,
    NoFaceError,
    NotFoundError,
    StorageError,
)
from marginface.serve.middleware import HttpMiddleware, ResponseStatus, error_body

__all__ = ["ApiError", "UnexpectedErrorMiddleware", "install_error_handlers"]

log = logging.getLogger("marginface.serve")

#: (status, code) per user-error class; the most specific class wins.
_ERROR_MAP: tuple[tuple[type[MarginfaceError], int, str], ...] = (
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (StorageError, 503, "storage_unavailable"),
    (NoFaceError, 422, "no_face"),
    (ImageError, 400, "invalid_image"),
    (GalleryError, 422, "invalid_request"),
    (DataError, 422, "invalid_request"),
    (ModelError, 500, "model_error"),
    (ConfigError, 500, "config_error"),
)

#: The methods a 405's ``Allow`` may name.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error raised by a route with its HTTP status, code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: object | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def _status_of(exc: MarginfaceError) -> tuple[int, str]:
    for cls, status, code in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, code
    return 422, "invalid_request"


_INTERNAL_ERROR = error_body(
    "internal_error", "the server failed to handle this request; see its log"
)


class UnexpectedErrorMiddleware(HttpMiddleware):
    """Answer an unexpected exception with the JSON 500 and keep the connection.

    Starlette's outermost error middleware re-raises after answering, and uvicorn then closes
    the client's keep-alive connection; caught here, below it, the failure stays one request's
    problem. The traceback is logged.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = ResponseStatus(send)
        try:
            await self.app(scope, receive, response)
        except Exception:
            log.exception("%s %s: unexpected error", scope.get("method"), scope.get("path"))
            if response.status is not None:  # nothing sensible can follow a half-sent answer
                raise
            await JSONResponse(_INTERNAL_ERROR, status_code=500)(scope, receive, send)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path. Starlette names only the first matching
    route's methods in a 405's ``Allow``, while FastAPI declares each method of a path as its own
    route (GET and POST ``/v1/subjects`` are two routes): so ask the router, method by method."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        details.append({"field": loc, "problem": str(err.get("msg", "invalid"))})
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app`` (call it before adding other middleware:
    the unexpected-error middleware must sit innermost)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(MarginfaceError)
    async def _user_error(request: Request, exc: MarginfaceError) -> JSONResponse:
        status, code = _status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(code, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        if any(d["problem"].startswith("JSON decode error") for d in details):
            message = "the request body is not valid JSON"
        else:
            message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
        return JSONResponse(
            error_body("invalid_request", message or "invalid request", details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Reached only for failures outside the middleware below (in outer middleware).
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return JSONResponse(_INTERNAL_ERROR, status_code=500)

    app.add_middleware(UnexpectedErrorMiddleware)
