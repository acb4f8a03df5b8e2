"""The running service's state: gallery, recogniser, pipeline threads and metrics.

One :class:`Service` per app instance lives on ``app.state.service``; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from threadpoolctl import threadpool_info, threadpool_limits

from marginface.decision import IdentificationPolicy
from marginface.embed import FacePipeline, Pipeline
from marginface.errors import ConfigError, GalleryError, StorageError
from marginface.extras import missing_extra_message
from marginface.gallery import Gallery, Recognizer
from marginface.serve.metrics import ServiceMetrics
from marginface.serve.settings import ServeSettings
from marginface.streams.cluster import ClusterNode
from marginface.streams.manager import CameraManager
from marginface.streams.notifier import Notifier

__all__ = ["Service", "build_pipeline", "cluster_node", "identification_policy", "open_gallery"]

log = logging.getLogger("marginface.serve")

T = TypeVar("T")

#: Seconds between two ``last_used_at`` updates of one API key (saves a write per request).
_KEY_TOUCH_INTERVAL = 60.0


def build_pipeline(settings: ServeSettings) -> Pipeline:
    """The face pipeline the settings name, answering every face in a photo."""
    return Pipeline.from_names(
        settings.model, settings.detector, selection="all", precision=settings.precision
    )


def identification_policy(settings: ServeSettings) -> IdentificationPolicy:
    """How the service's searches decide, from its settings: the one policy the gallery, the
    recogniser and the cameras are handed."""
    return IdentificationPolicy(
        fpir=settings.fpir, threshold=settings.threshold, k=settings.top_k, far=settings.far
    )


def open_gallery(
    settings: ServeSettings, pipeline: FacePipeline, policy: IdentificationPolicy | None = None
) -> Gallery:
    """Open the gallery the settings name, for the pipeline's model (mixing is refused),
    deciding as ``policy`` says (default: :func:`identification_policy` of the settings)."""
    embedder = pipeline.embedder
    options = {"uri": settings.index_url} if settings.index_url else None
    return Gallery.open(
        settings.gallery_url,
        model_name=embedder.name,
        dim=embedder.embedding_dim,
        index=settings.index,
        card=embedder.card,
        policy=policy if policy is not None else identification_policy(settings),
        index_options=options,
    )


def cluster_node(settings: ServeSettings, gallery: Gallery) -> ClusterNode:
    """This service's node of the camera cluster, as the settings describe it (not registered
    yet: :meth:`ClusterNode.register`)."""
    return ClusterNode(
        gallery,
        settings.node_name,
        address=settings.advertised_address,
        ttl_s=settings.lease_ttl_s,
        heartbeat_s=settings.heartbeat_s,
        max_cameras=settings.max_cameras,
        cpu_budget=settings.cpu_budget,
        cameras=settings.cameras,
        rebalance_s=settings.rebalance_s,
        move_wait_s=settings.move_wait_s,
    )


def _limit_blas(threads: int | None) -> Any:
    """Limit numpy's BLAS pool to ``threads`` until ``restore_original_limits()`` is called.

    BLAS thread counts are per process, so the limit lasts as long as the service. OpenBLAS
    may ignore the call outside the main thread (uvicorn starts the app in it); that is
    logged, and ``OPENBLAS_NUM_THREADS`` set before start does the same.
    """
    if threads is None:
        return None

    limits = threadpool_limits(limits=threads, user_api="blas")
    counts = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    if counts and counts != {threads}:
        log.warning(
            "numpy's BLAS kept %s threads (asked for %d from thread %s); set "
            "OPENBLAS_NUM_THREADS=%d before starting the service",
            sorted(counts),
            threads,
            threading.current_thread().name,
            threads,
        )
    return limits


def _notifiers(settings: ServeSettings) -> list[Notifier]:
    """The webhooks and the MQTT publisher the settings name. None of them waits for its
    receiver; an MQTT publisher without paho-mqtt installed is left out with an error logged,
    so that the service still serves."""
    from marginface.streams.notify import MqttPublisher, Webhook

    notifiers: list[Notifier] = [Webhook(hook) for hook in settings.webhooks]
    if settings.mqtt is not None:
        try:
            notifiers.append(MqttPublisher(settings.mqtt))
        except ImportError as exc:
            log.error("MQTT is configured but cannot run: %s", missing_extra_message(exc) or exc)
    return notifiers


class Service:
    """Everything one app instance serves with; opened at startup, closed at shutdown."""

    def __init__(
        self,
        settings: ServeSettings,
        pipeline: FacePipeline,
        gallery: Gallery | None = None,
        *,
        camera_options: dict[str, Any] | None = None,
        node: ClusterNode | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.started = time.monotonic()
        #: how every search of the service decides: one policy, built here once
        self.policy = identification_policy(settings)
        if gallery is None:
            gallery = open_gallery(settings, pipeline, self.policy)
        self.gallery = gallery
        try:
            self.recognizer = Recognizer(
                gallery,
                pipeline,
                multiple_faces=settings.multiple_faces,
                near_duplicate=settings.near_duplicate,
                store_crops=settings.store_photos,
                policy=self.policy,
            )
            self.threshold = self.recognizer.threshold()
            self.operating_point = self.recognizer.operating_point()
        except GalleryError as exc:
            gallery.close()
            raise ConfigError(str(exc)) from None
        self._blas_limits = _limit_blas(settings.blas_threads)
        self.cameras = CameraManager(
            gallery,
            pipeline,
            notifiers=_notifiers(settings),
            policy=self.policy,
            source_policy=settings.source_policy,
            store_crops=settings.review_crops,
            retention_days=settings.retention_days,
            run_workers=settings.cameras,
            max_cameras=settings.max_cameras,
            **(camera_options or {}),
        )
        #: this service as a node of the camera cluster (registered by ``start_cameras``
        #: unless the CLI registered it before)
        try:
            self.node = node if node is not None else cluster_node(settings, gallery)
        except ConfigError:
            gallery.close()
            raise
        self.metrics = ServiceMetrics(self._sizes, self._camera_statuses, self._node_status)
        self.executor = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="marginface-pipeline"
        )
        self._key_touched: dict[str, float] = {}
        self._health_pool = ThreadPoolExecutor(1, thread_name_prefix="marginface-health")
        self._health: tuple[Future[tuple[int, int]] | None, float] = (None, 0.0)
        self._health_lock = threading.Lock()

    def health(self, timeout: float = 1.0) -> tuple[int, int]:
        """The gallery's subjects and faces, or :class:`StorageError` at once when the gallery
        does not answer: this node's heartbeat has not renewed its leases in time, or a count
        takes longer than ``timeout`` seconds (one check runs at a time; while one has been
        waiting longer than that, the answer is immediate). A load balancer's health check
        gets its answer promptly even while the database is away."""
        stale = self.node.stale()
        if stale is not None:
            raise StorageError(stale)
        with self._health_lock:
            future, began = self._health
            if future is None or future.done():
                began = time.monotonic()
                future = self._health_pool.submit(
                    lambda: (self.gallery.subjects.count(), self.gallery.subjects.count_faces())
                )
                self._health = (future, began)
        try:
            return future.result(max(0.0, began + timeout - time.monotonic()))
        except FutureTimeout:
            raise StorageError(
                f"the gallery's database does not answer (for {timeout:g} s)"
            ) from None

    def _sizes(self) -> tuple[int, int] | None:
        try:
            return self.gallery.subjects.count(), self.gallery.subjects.count_faces()
        except Exception:  # a scrape must not fail because the store is briefly unavailable
            log.warning("cannot read the gallery size for /metrics", exc_info=True)
            return None

    def _camera_statuses(self) -> list[tuple[str, dict[str, Any]]] | None:
        try:
            return self.cameras.statuses()
        except Exception:  # a scrape must not fail because the store is briefly unavailable
            log.warning("cannot read the cameras' status for /metrics", exc_info=True)
            return None

    def _node_status(self) -> dict[str, Any]:
        """This node's figures for ``/metrics`` (read without the database)."""
        node = self.node
        return {
            "node": node.name,
            "held": len(node.held()),
            "capacity": node.capacity(),
            "beats": node.beats,
            "beat_failures": node.beat_failures,
            "statements": node.statements,
            "loop_cpu_s": node.loop_cpu_s,
            "lost": node.lost,
            "moves": node.moves,
        }

    def start_cameras(self) -> None:
        """Join the camera cluster (register, unless the CLI did) and run the cameras this
        node takes (they restart with the service)."""
        self.node.start()
        self.node.attach(self.cameras)
        self.cameras.start()

    async def run(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run photo work (decode, detect, embed, search) on the pipeline threads, timed as
        ``operation`` in the metrics.

        The pool bounds how many photos are processed at once (``settings.workers``) and how
        many copies of the per-thread networks exist.
        """

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.metrics.photo_seconds.labels(operation).observe(time.perf_counter() - start)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, timed)

    def should_touch(self, key_id: str) -> bool:
        """Whether this key's ``last_used_at`` is due for an update."""
        now = time.monotonic()
        last = self._key_touched.get(key_id)
        if last is not None and now - last < _KEY_TOUCH_INTERVAL:
            return False
        self._key_touched[key_id] = now
        return True

    def close(self) -> None:
        """Stop the cameras and the pipeline threads, and close the gallery."""
        try:
            self.node.close()  # the cameras' workers, then the node's leases
            if self.node.manager is None:  # never attached: the cameras were not started
                self.cameras.close()
        except Exception:
            log.exception("stopping the cameras failed")
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        self.gallery.close()
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None
