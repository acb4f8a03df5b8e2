"""Uploaded photos stay in memory: a route class that parses multipart bodies without spooling.

Starlette's multipart parser keeps each uploaded file in a ``SpooledTemporaryFile`` that rolls
over to a temporary file on disk past 1 MB. Photos of faces are biometric data and the service
promises never to write them anywhere, so routes of this class parse the form themselves with a
parser whose spool never rolls over. Memory stays bounded: :class:`BodyLimitMiddleware` has
already refused any body larger than the upload limit before the form is parsed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

__all__ = ["InMemoryUploadRoute"]


class _InMemoryMultiPartParser(MultiPartParser):
    # Never roll over to disk; the request body's size is bounded before parsing.
    spool_max_size = sys.maxsize


class InMemoryUploadRoute(APIRoute):
    """An ``APIRoute`` whose multipart form (files included) is parsed into memory only."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_then_handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                parser = _InMemoryMultiPartParser(request.headers, request.stream())
                try:
                    form = await parser.parse()
                except MultiPartException as exc:
                    raise HTTPException(status_code=400, detail=exc.message) from None
                # FastAPI reads the form through request.form(), which returns a parsed form
                # as it is; Starlette keeps it in ``_form`` (stable since 0.13, and tested).
                request._form = form
            return await handler(request)

        return parse_then_handle
