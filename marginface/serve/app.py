"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

import marginface
from marginface.decision import OperatingPoint
from marginface.embed import FacePipeline
from marginface.errors import StorageError
from marginface.gallery import Gallery
from marginface.serve.auth import CurrentKey, bootstrap_admin_key
from marginface.serve.deps import ServiceDep
from marginface.serve.docs import inline_script_hashes, install_docs
from marginface.serve.errors import ApiError, install_error_handlers
from marginface.serve.metrics import CONTENT_TYPE
from marginface.serve.middleware import (
    BodyLimitMiddleware,
    MetricsMiddleware,
    SecurityHeadersMiddleware,
)
from marginface.serve.routers import (
    cameras,
    events,
    faces,
    keys,
    nodes,
    recognition,
    subjects,
    unknowns,
)
from marginface.serve.schemas import ErrorOut, HealthOut
from marginface.serve.service import Service, build_pipeline
from marginface.serve.settings import ServeSettings, load_settings
from marginface.streams.cluster import ClusterNode

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("marginface.serve")


def _web_page() -> tuple[str, str]:
    """The page's HTML and a Content-Security-Policy allowing exactly its inline script."""
    html = resources.files("marginface.serve").joinpath("static/index.html").read_text("utf-8")
    csp = (
        "default-src 'none'; "
        f"script-src {inline_script_hashes(html)}; "
        "style-src 'unsafe-inline'; "
        "img-src 'self' blob: data:; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    return html, csp


def _describe(point: OperatingPoint) -> str:
    if point.source == "threshold":
        return f"the explicit threshold {point.threshold:.3f}"
    if point.gallery_subjects == 0:
        return f"target FPIR {point.target_fpir:g} (no subjects enrolled yet)"
    return (
        f"target FPIR {point.target_fpir:g} (threshold {point.threshold:.3f} for "
        f"{point.gallery_subjects} subjects)"
    )


def create_app(
    settings: ServeSettings | None = None,
    *,
    pipeline: FacePipeline | None = None,
    pipeline_factory: Callable[[ServeSettings], FacePipeline] | None = None,
    gallery: Gallery | None = None,
    camera_options: dict[str, Any] | None = None,
    node: ClusterNode | None = None,
) -> FastAPI:
    """Build the service's FastAPI app.

    Nothing is opened here: at startup the app loads the face pipeline (``pipeline``, else
    ``pipeline_factory(settings)``, else the model and detector the settings name), opens the
    gallery (or uses ``gallery``, which the app then owns and closes at shutdown), and creates
    the first admin key when there is none (written to ``settings.key_file`` with mode 0600,
    never logged), then starts every enabled camera (when ``settings.cameras``).
    ``camera_options`` are passed to :class:`marginface.streams.manager.CameraManager`
    (tests replace its source and worker factories). ``node``: this service's node of the
    camera cluster, registered already (the CLI registers it before loading anything else, so
    that a second service of one name stops at once); default: made from the settings and
    registered at startup.
    """
    settings = settings or load_settings()
    factory = pipeline_factory or build_pipeline
    page_html, page_csp = _web_page()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        service = Service(
            settings,
            pipeline if pipeline is not None else factory(settings),
            gallery=gallery,
            camera_options=camera_options,
            node=node,
        )
        try:
            if bootstrap_admin_key(service.gallery, settings.key_file) is not None:
                log.warning("no admin key existed: a new one was written to %s", settings.key_file)
            service.start_cameras()
            app.state.service = service
            log.info(
                "marginface ready in %.1f s: model %s, gallery %s (%d subjects); identification "
                "at %s, verification threshold %.3f",
                time.perf_counter() - started,
                service.gallery.model_name,
                service.gallery.backend,
                service.gallery.subjects.count(),
                _describe(service.operating_point),
                service.threshold,
            )
            yield
        finally:
            app.state.service = None
            service.close()

    app = FastAPI(
        title="marginface",
        version=marginface.__version__,
        description=(
            "Enrol people from a few photos and recognise them, with no retraining.\n\n"
            "Every `/v1` route needs an API key, sent as `X-API-Key: <key>` or "
            "`Authorization: Bearer <key>`. Roles: `admin` (everything, API keys, deletions, "
            "events, camera configuration), `enrol` (subjects and faces, reviewing strangers, "
            "pushing camera frames, plus recognition), `recognise` (identify and verify, read "
            "cameras, their snapshots and visits, and the strangers' queue). Errors are JSON: "
            '`{"error": {"code": ..., "message": ...}}`.'
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses={422: {"model": ErrorOut}, 500: {"model": ErrorOut}},
    )
    app.state.service = None
    app.state.settings = settings
    install_error_handlers(app)
    install_docs(app)

    app.include_router(subjects.router)
    app.include_router(faces.router)
    app.include_router(recognition.router)
    app.include_router(events.router)
    app.include_router(keys.router)
    app.include_router(cameras.router)
    app.include_router(unknowns.router)
    app.include_router(nodes.router)

    @app.get(
        "/healthz",
        response_model=HealthOut,
        tags=["system"],
        summary="Liveness",
        responses={
            503: {
                "model": ErrorOut,
                "description": "The gallery's database does not answer (details: this node's "
                "name and the cameras it still runs: none once its leases could expire).",
            }
        },
    )
    def healthz(service: ServiceDep) -> Any:
        """Whether the service is up (no key needed): 503 while its gallery does not answer,
        so that a load balancer sends requests elsewhere. Reveals counts, nothing personal."""
        try:
            subjects, faces = service.health()
        except StorageError as exc:
            node = {"node": service.node.name, "cameras_running": len(service.cameras.running())}
            raise ApiError(503, "storage_unavailable", str(exc), details=node) from None
        node = {"node": service.node.name, "cameras_running": len(service.cameras.running())}
        return {
            "status": "ok",
            "version": marginface.__version__,
            "model": service.gallery.model_name,
            "subjects": subjects,
            "faces": faces,
            "uptime_s": round(time.monotonic() - service.started, 1),
            **node,
        }

    @app.get(
        "/metrics",
        tags=["system"],
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE: {}}},
            401: {"model": ErrorOut, "description": "Missing or wrong API key."},
        },
        summary="Prometheus metrics",
    )
    def metrics(service: ServiceDep, _key: CurrentKey) -> Response:
        """Request counts and latencies, recognition counts and gallery size, in the
        Prometheus text format (any valid key; scrapers send it as a bearer token)."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def web_page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            page_html,
            headers={
                "Content-Security-Policy": page_csp,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    # Outermost first: metrics see every request, including those refused for their size.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)
    return app


def app_from_env() -> FastAPI:
    """An app built from ``MARGINFACE_*`` environment variables and ``MARGINFACE_CONFIG``
    (for ``uvicorn --factory marginface.serve.app:app_from_env``)."""
    return create_app(load_settings())
