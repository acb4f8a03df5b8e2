"""Prometheus metrics of one app instance, in its own registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from marginface.streams.manager import CAMERA_STATES

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _GalleryCollector(Collector):
    """Reads gallery sizes at scrape time."""

    def __init__(self, sizes: Callable[[], tuple[int, int] | None]) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sizes = self._sizes()
        if sizes is None:
            return
        subjects, faces = sizes
        yield GaugeMetricFamily(
            "marginface_gallery_subjects", "Subjects enrolled in the gallery.", value=subjects
        )
        yield GaugeMetricFamily(
            "marginface_gallery_faces", "Face embeddings stored in the gallery.", value=faces
        )


#: Per-camera counters: (metric name without _total, status key, help).
_CAMERA_COUNTERS = (
    ("marginface_camera_frames_read", "frames_read", "Frames decoded from the camera."),
    (
        "marginface_camera_frames_processed",
        "frames_processed",
        "Frames processed (faces detected, tracked and decided).",
    ),
    (
        "marginface_camera_frames_dropped",
        "frames_dropped",
        "Frames skipped to stay at the latest frame (processing fell behind).",
    ),
    ("marginface_camera_frames_corrupt", "frames_corrupt", "Frames that could not be decoded."),
    ("marginface_camera_reconnects", "reconnects", "Reconnections to the camera's stream."),
    ("marginface_camera_restarts", "restarts", "Restarts of the camera's worker after a crash."),
    ("marginface_camera_visits", "visits", "Visits decided (arrived events)."),
)
#: Per-camera gauges: (metric name, status key, help).
_CAMERA_GAUGES = (
    ("marginface_camera_read_fps", "read_fps", "Frames per second read from the camera."),
    ("marginface_camera_process_fps", "process_fps", "Frames per second processed."),
    (
        "marginface_camera_lag_seconds",
        "lag_s",
        "Age of the latest frame when it was processed (seconds).",
    ),
    ("marginface_camera_tracks_open", "tracks_open", "Faces being tracked now."),
)


class _CameraCollector(Collector):
    """Reads every camera's status at scrape time (one series per camera, label ``camera``;
    counters restart from zero when the camera's worker restarts)."""

    def __init__(self, statuses: Callable[[], list[tuple[str, dict[str, Any]]] | None]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        statuses = self._statuses()
        if statuses is None:
            return
        yield GaugeMetricFamily("marginface_cameras", "Cameras configured.", value=len(statuses))
        state = GaugeMetricFamily(
            "marginface_camera_state",
            "1 for the camera's current state, else 0.",
            labels=["camera", "state"],
        )
        for name, status in statuses:
            for candidate in CAMERA_STATES:  # each a 0/1 series of marginface_camera_state
                state.add_metric([name, candidate], 1.0 if status.get("state") == candidate else 0)
        yield state
        for metric, key, text in _CAMERA_COUNTERS:
            counter = CounterMetricFamily(metric, text, labels=["camera"])
            for name, status in statuses:
                counter.add_metric([name], float(status.get(key) or 0))
            yield counter
        for metric, key, text in _CAMERA_GAUGES:
            gauge = GaugeMetricFamily(metric, text, labels=["camera"])
            for name, status in statuses:
                value = status.get(key)
                if isinstance(value, int | float):
                    gauge.add_metric([name], float(value))
            yield gauge


#: The node's counters: (metric name without _total, key, help).
_NODE_COUNTERS = (
    ("marginface_node_heartbeats", "beats", "Heartbeats that renewed the node's leases."),
    (
        "marginface_node_heartbeat_failures",
        "beat_failures",
        "Heartbeats that failed (the gallery did not answer).",
    ),
    (
        "marginface_node_lease_statements",
        "statements",
        "SQL statements the node's lease loop ran (heartbeats, claims, moves).",
    ),
    (
        "marginface_node_lease_cpu_seconds",
        "loop_cpu_s",
        "CPU seconds the node's lease loop used.",
    ),
    (
        "marginface_node_cameras_lost",
        "lost",
        "Cameras stopped because their lease was lost or could not be renewed in time.",
    ),
    ("marginface_node_cameras_moved", "moves", "Cameras handed to another node (rebalancing)."),
)


class _NodeCollector(Collector):
    """This service as a node of the camera cluster (label ``node``): what it holds and can
    hold, and what its lease loop costs."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        status = self._status()
        node = str(status["node"])
        for metric, key, text in (
            ("marginface_node_cameras", "held", "Cameras this node holds (runs)."),
            ("marginface_node_capacity", "capacity", "Cameras this node takes at most now."),
        ):
            gauge = GaugeMetricFamily(metric, text, labels=["node"])
            gauge.add_metric([node], float(status[key]))
            yield gauge
        for metric, key, text in _NODE_COUNTERS:
            counter = CounterMetricFamily(metric, text, labels=["node"])
            counter.add_metric([node], float(status[key]))
            yield counter


class ServiceMetrics:
    """HTTP and recognition metrics exposed at ``/metrics``."""

    def __init__(
        self,
        gallery_sizes: Callable[[], tuple[int, int] | None],
        camera_statuses: Callable[[], list[tuple[str, dict[str, Any]]] | None] | None = None,
        node_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "marginface_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "marginface_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "marginface_http_requests_in_flight",
            "HTTP requests being served.",
            registry=self.registry,
        )
        self.faces_detected = Counter(
            "marginface_faces_detected",
            "Faces found in photos sent to identify, verify and enrol.",
            ["operation"],
            registry=self.registry,
        )
        self.identifications = Counter(
            "marginface_identifications",
            "Faces identified, by result (match or unknown).",
            ["result"],
            registry=self.registry,
        )
        self.enrolments = Counter(
            "marginface_enrolment_photos",
            "Photos submitted for enrolment, by outcome.",
            ["status"],
            registry=self.registry,
        )
        self.photo_seconds = Histogram(
            "marginface_photo_processing_seconds",
            "Time spent decoding, detecting, embedding and searching, per request.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_GalleryCollector(gallery_sizes))
        if camera_statuses is not None:
            self.registry.register(_CameraCollector(camera_statuses))
        if node_status is not None:
            self.registry.register(_NodeCollector(node_status))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
