"""The API docs, served offline: Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

FastAPI's own docs pages load their JavaScript and CSS from a CDN, so on a machine without
internet (where a face-recognition service often runs) ``/docs`` is a blank page, and where
there is internet every visit tells a third party that the service exists. Here the pages load
the Swagger UI and ReDoc bundles that the ``fastapi-offline`` package ships (served from
``/docs/assets``), and each page carries a Content-Security-Policy that allows its own scripts
and nothing from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = [
    "ASSETS_URL",
    "DOCS_URL",
    "REDOC_URL",
    "docs_csp",
    "inline_script_hashes",
    "install_docs",
]

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"

#: The package (and folder in it) whose Swagger UI and ReDoc bundles are served.
_ASSET_PACKAGE = ("fastapi_offline", "static")

#: Swagger UI settings on top of FastAPI's defaults: no spec validator badge (it would call
#: validator.swagger.io). ``persistAuthorization`` stays off: it would keep the API key typed
#: into "Authorize" in localStorage, where the web page keeps it only for the tab's session.
_SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


class _DocAssets(StaticFiles):
    """The bundles, revalidated by ETag on each visit instead of the ``no-store`` that the
    security headers give API answers: they hold nothing secret, and are megabytes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = "no-cache"
        return response


def inline_script_hashes(html: str) -> str:
    """The CSP sources (``'sha256-...'``, space-separated) that allow exactly the inline
    ``<script>`` blocks of ``html``: pages keep their scripts inline and allow nothing else."""
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    )


def docs_csp(html: str) -> str:
    """A Content-Security-Policy for a docs page: scripts from this server plus the page's own
    inline ``<script>`` blocks (by hash), the inline styles both UIs set, images from this
    server or ``data:``/``blob:`` URIs, ReDoc's search worker (a ``blob:``), and requests to
    this server only (the OpenAPI schema and Swagger's "Try it out")."""
    return (
        "default-src 'none'; "
        f"script-src 'self' {inline_script_hashes(html)}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; "
        "font-src 'self' data:; "
        "worker-src blob:; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": docs_csp(html), "Cache-Control": "no-store"},
    )


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from bundled assets (no CDN).

    The app must be created with ``docs_url=None, redoc_url=None``, or FastAPI's CDN pages
    would answer first; an app without an OpenAPI schema gets no docs pages.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    if app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    app.mount(ASSETS_URL, _DocAssets(packages=[_ASSET_PACKAGE]), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=app.title + " API - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={**_SWAGGER_PARAMETERS, **(app.swagger_ui_parameters or {})},
        )
        return _page(bytes(page.body).decode())

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=app.title + " API - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return _page(bytes(page.body).decode())
