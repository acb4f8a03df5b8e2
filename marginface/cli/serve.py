"""CLI commands for ``marginface.serve``: ``marginface serve``."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from marginface.errors import ConfigError


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` unless ``host:port`` can be listened on now.

    ``serve`` calls this before loading the model (seconds) and printing the URL, so that a
    second service on a busy port fails at once with one line, instead of announcing a URL
    that belongs to the first one. It binds as uvicorn will (``asyncio``'s ``create_server``:
    every address ``host`` resolves to, ``SO_REUSEADDR``, IPv6 sockets v6-only), so a port
    that uvicorn can take, such as one whose previous service left connections in TIME_WAIT,
    is not refused. Every socket is closed before returning; nothing stays bound. (Another
    process may still take the port before uvicorn binds it; uvicorn then reports that.)
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        message = f"cannot listen on {host}:{port}: unknown host ({exc.strerror})"
        raise ConfigError(message) from None
    # asyncio's default: SO_REUSEADDR on POSIX only (on Windows it would let a bind steal a port)
    reuse_address = os.name == "posix" and sys.platform != "cygwin"
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:  # e.g. IPv6 disabled: asyncio skips such addresses as well
            continue
        with sock:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"port {port} on {host} is already in use (another marginface serve?): "
                        "stop that service, or choose another port with --port"
                    ) from None
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    """Add this concept's commands to the root app."""

    @app.command("serve")
    def serve(
        host: Annotated[
            str | None,
            typer.Option(help="Interface to bind. Default 127.0.0.1 (this machine only)."),
        ] = None,
        port: Annotated[int | None, typer.Option(help="TCP port. Default 8000.")] = None,
        db: Annotated[
            str | None,
            typer.Option(
                help="Gallery: SQLite file, sqlite:///PATH or postgresql://... "
                "Default: the gallery the other commands use."
            ),
        ] = None,
        index: Annotated[
            str | None, typer.Option(help="Vector index: exact, faiss or milvus.")
        ] = None,
        index_url: Annotated[
            str | None, typer.Option(help="Milvus URI (Milvus Lite file or http://host:19530).")
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(help="Embedding model: built-in name (default, sface) or a model path."),
        ] = None,
        detector: Annotated[str | None, typer.Option(help="Face detector (yunet).")] = None,
        precision: Annotated[
            str | None,
            typer.Option(help="fp32, or bf16 for a model given as PyTorch weights."),
        ] = None,
        fpir: Annotated[
            str | None,
            typer.Option(
                help="Identification's operating point: target false positive identification "
                "rate (share of strangers identified as someone), default 1e-2."
            ),
        ] = None,
        far: Annotated[
            str | None,
            typer.Option(
                help="Verification's target false-accept rate whose calibrated threshold is "
                "used, e.g. 1e-3."
            ),
        ] = None,
        threshold: Annotated[
            float | None, typer.Option(help="Explicit cosine threshold (overrides the model card).")
        ] = None,
        max_upload_mb: Annotated[
            float | None,
            typer.Option(help="Largest request body in MB (bigger ones get HTTP 413)."),
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help="Photos processed in parallel (pipeline threads).")
        ] = None,
        store_photos: Annotated[
            bool | None,
            typer.Option(
                "--store-photos/--no-store-photos",
                help="Keep the aligned face crop of each enrolled photo.",
            ),
        ] = None,
        events: Annotated[
            bool | None,
            typer.Option("--events/--no-events", help="Log every identification as an event."),
        ] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                help="Folder for the admin key file (default: beside the SQLite gallery)."
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(
                help="YAML settings file (same keys as MARGINFACE_* variables, lower case)."
            ),
        ] = None,
        log_level: Annotated[
            str | None, typer.Option(help="critical, error, warning, info or debug.")
        ] = None,
        node: Annotated[
            str | None,
            typer.Option(
                help="This service's name in the camera cluster (services sharing one "
                "PostgreSQL gallery spread its cameras over themselves); unique. Default: the "
                "host name and the port."
            ),
        ] = None,
    ) -> None:
        """Start the REST service and web page; print the URL and, at first start, the
        admin API key."""
        import uvicorn  # heavy: uvicorn

        # heavy: fastapi
        from marginface.serve import bootstrap_admin_key, create_app, load_settings

        settings = load_settings(
            config,
            host=host,
            port=port,
            db=db,
            index=index,
            index_url=index_url,
            model=model,
            detector=detector,
            precision=precision,
            fpir=fpir,
            far=far,
            threshold=threshold,
            max_upload_mb=max_upload_mb,
            workers=workers,
            store_photos=store_photos,
            events=events,
            data_dir=data_dir,
            log_level=log_level,
            node=node,
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        check_port_free(settings.host, settings.port)  # before seconds of model loading
        # CLI: keeps marginface --help quick; marginface.serve.service imports fastapi (heavy)
        from marginface.decision import require_impostors
        from marginface.serve.auth import admin_key_notice  # heavy: fastapi
        from marginface.serve.service import (
            build_pipeline,
            cluster_node,
            identification_policy,
            open_gallery,
        )
        from marginface.urls import redact_url

        if settings.sqlite_path is not None:
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        typer.echo(f"loading model {settings.model!r} and detector {settings.detector!r} ...")
        pipeline = build_pipeline(settings)
        policy = identification_policy(settings)
        policy.verification_threshold(pipeline.embedder.card)
        if policy.threshold is None:  # identification derives its threshold from the card
            require_impostors(pipeline.embedder.card)
        gallery = open_gallery(settings, pipeline, policy)
        try:
            secret = bootstrap_admin_key(gallery, settings.key_file)
            # join the camera cluster now: a second live service of this name stops here
            cluster = cluster_node(settings, gallery)
            cluster.start()
        except BaseException:
            gallery.close()
            raise

        typer.echo(f"marginface service: {settings.url}  (API docs: {settings.url}docs)")
        typer.echo(f"gallery: {redact_url(settings.gallery_url)}")  # a password stays unshown
        typer.echo(
            f"node: {cluster.name} at {cluster.address} ("
            + (
                "SQLite: one node runs the cameras)"
                if cluster.exclusive
                else f"camera cluster, leases of {cluster.ttl_s:g} s)"
            )
        )
        if secret is not None:
            typer.secho("Admin API key (shown once; paste it into the web page):", bold=True)
            typer.echo(f"    {secret}")
            typer.echo(f"It is also stored, readable by you only, in {settings.key_file}")
        else:
            typer.echo(admin_key_notice(gallery, settings.key_file))
        if settings.host not in ("127.0.0.1", "localhost", "::1"):
            typer.secho(
                f"warning: listening on {settings.host}, reachable from other machines; put it "
                "behind TLS and a firewall",
                fg=typer.colors.YELLOW,
                err=True,
            )

        app = create_app(settings, pipeline=pipeline, gallery=gallery, node=cluster)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=True,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
