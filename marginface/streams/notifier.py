"""What every sink of visit events beyond the gallery shares: the :class:`Notifier` protocol
(webhooks and MQTT, in the manner of Frigate's communicators, which share one interface) and
:class:`CameraCounters`, delivery counters kept per camera as well as in total.

The :class:`~marginface.streams.manager.CameraManager` holds its notifiers as ``Notifier``:
it gives each every event, each camera's state (``publish_state``), reads each camera's own
delivery counters (``status(camera)``) for that camera's status, and closes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from marginface.streams.visits import VisitEvent

__all__ = ["CameraCounters", "Notifier"]


@runtime_checkable
class Notifier(Protocol):
    """A sink that tells something outside marginface about visits and cameras.

    ``kind`` names it in statuses (``"webhook"``, ``"mqtt"``). ``retains_state``: the
    receiver keeps the latest state (an MQTT retained topic), so the state is published every
    few seconds; otherwise only when a camera's state changes. Calls never block a camera and
    never raise into it; delivery problems show in :meth:`status`."""

    kind: str
    retains_state: bool
    #: what the notifier is named by in the gallery's delivery marks (its destination)
    key: str
    #: called with each visit event once it is delivered or given up on (the manager moves
    #: the notifier's delivery mark with it); None: nobody listens
    on_done: Callable[[VisitEvent], None] | None

    def __call__(self, event: VisitEvent) -> None:
        """Send (or queue) one visit event."""

    def publish_state(self, camera: str, status: Mapping[str, Any]) -> None:
        """Send (or queue) a camera's status."""

    def status(self, camera: str | None = None) -> dict[str, Any]:
        """Delivery counters and the last error: of ``camera``'s messages, or of all."""

    def close(self) -> None:
        """Deliver what can be delivered shortly, then stop."""


class CameraCounters:
    """Named counters and a last error, per camera and in total. Thread-safe.

    A camera's status shows what was delivered *for that camera*; the total is the
    notifier's own figure (``status()`` without a camera)."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = tuple(names)
        self._lock = threading.Lock()
        self._total: dict[str, Any] = self._blank()
        self._cameras: dict[str, dict[str, Any]] = {}

    def _blank(self) -> dict[str, Any]:
        return {**dict.fromkeys(self._names, 0), "last_error": None}

    def add(self, camera: str | None, name: str, n: int = 1) -> None:
        """Count ``n`` more ``name`` for ``camera`` (None: the notifier's own, no camera)."""
        with self._lock:
            self._total[name] += n
            if camera is not None:
                self._cameras.setdefault(camera, self._blank())[name] += n

    def fail(self, camera: str | None, name: str, error: str) -> None:
        """Count one ``name`` and remember ``error`` as the last one (of the camera, and of
        all)."""
        with self._lock:
            self._total[name] += 1
            self._total["last_error"] = error
            if camera is not None:
                counts = self._cameras.setdefault(camera, self._blank())
                counts[name] += 1
                counts["last_error"] = error

    def get(self, camera: str | None = None) -> dict[str, Any]:
        """The counters of ``camera`` (zeros when it has none yet), or the totals."""
        with self._lock:
            if camera is None:
                return dict(self._total)
            return dict(self._cameras.get(camera) or self._blank())

    def forget(self, camera: str) -> None:
        """Drop a camera's counters (it was deleted)."""
        with self._lock:
            self._cameras.pop(camera, None)
