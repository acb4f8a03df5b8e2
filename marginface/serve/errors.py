"""Every error the service returns is JSON: ``{"error": {"code": ..., "message": ...}}``.

User errors (:class:`marginface.errors.MarginfaceError` subclasses) map to 4xx codes; anything
unexpected becomes a 500 whose message reveals nothing internal (the traceback goes to the log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from marginface.errors import (
    ConfigError,
    DataError,
    GalleryError,
    ImageError,
    MarginfaceError,
    ModelError,
    NoFaceError,
    NotFoundError,
)
from marginface.serve.middleware import error_body

__all__ = ["ApiError", "install_error_handlers"]

log = logging.getLogger("marginface.serve")

#: (status, code) per user-error class; the most specific class wins.
_ERROR_MAP: tuple[tuple[type[MarginfaceError], int, str], ...] = (
    (NoFaceError, 422, "no_face"),
    (ImageError, 400, "invalid_image"),
    (GalleryError, 409, "gallery_error"),
    (DataError, 400, "invalid_data"),
    (ModelError, 500, "model_error"),
    (ConfigError, 500, "config_error"),
)

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
    if isinstance(exc, NotFoundError):
        # Something vanished between a route's existence check and its write (a concurrent
        # delete): still a 404 to the caller.
        return 404, "not_found"
    for cls, status, code in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, code
    return 400, "error"


def _validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        details.append({"field": loc, "problem": str(err.get("msg", "invalid"))})
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

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
        return JSONResponse(
            error_body(code, message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "the server failed to handle this request; see its log"),
            status_code=500,
        )
