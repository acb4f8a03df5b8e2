"""Prometheus metrics of one app instance, in its own registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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


class ServiceMetrics:
    """HTTP and recognition metrics exposed at ``/metrics``."""

    def __init__(self, gallery_sizes: Callable[[], tuple[int, int] | None]) -> None:
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

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
