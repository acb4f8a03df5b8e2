"""The service's cameras: one worker thread per running camera, supervised.

:class:`CameraManager` owns the cameras of one service. The cameras themselves (name, URL,
settings, enabled) are stored in the gallery, so they restart with the service: :meth:`start`
runs every enabled camera. Each running camera is a daemon thread that opens its source
(:func:`marginface.streams.sources.open_source`, under the service's
:class:`~marginface.streams.sources.SourcePolicy`: network streams and push cameras, files only
under ``media_roots``, webcams only among ``allowed_devices``) and runs a
:class:`~marginface.streams.camera.CameraWorker` on it until told to stop; every visit event goes
to the :class:`~marginface.streams.recorder.VisitRecorder` (the gallery) first, then to the
notifiers (webhooks, MQTT: :class:`~marginface.streams.notifier.Notifier`).

Faults stay with their camera: a worker that crashes is logged, its status shows the error
(``failed``), and it is restarted with exponential backoff; a camera that keeps failing the
same way (a file that is not a video, a URL that is not allowed) is retried slowly
(``restart_slow_s``) and logged once per change of state, not at every retry; an unreachable or
dropped stream is the source's to reconnect (``reconnecting``, with the error). Nothing one
camera does reaches another camera or the service.

A video file is read once: the camera remembers where its reading stopped (the gallery's
:meth:`~marginface.gallery.cameras.CameraStore.position`, saved after every recorded visit event,
every few seconds and when it stops) and a restart goes on from there, so a service restarted
three times does not record the file's visits four times.

A housekeeping thread publishes each camera's state to MQTT every few seconds (retained) and to
the other notifiers when it changes, saves the files' positions, and purges stream data
(stranger faces and crops, visit events) older than ``retention_days`` once an hour.

PyAV and ``trackers`` (the streams extra) are imported only when a camera runs, so a service
without them still starts and serves; its cameras then show ``failed`` with the install hint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from marginface.config import format_validation_error
from marginface.decision import IdentificationPolicy
from marginface.errors import ConfigError, ConflictError, DataError, NotFoundError
from marginface.extras import install_hint, missing_extra_message
from marginface.gallery import Camera, Gallery
from marginface.gallery.events import LEFT, VISIT_DECISIONS
from marginface.imaging import encode_jpeg
from marginface.streams.camera import CameraSettings, CameraWorker
from marginface.streams.notifier import Notifier
from marginface.streams.recorder import VisitRecorder
from marginface.streams.sources import (
    Source,
    SourcePolicy,
    open_source,
    parse_source,
    source_kind,
)
from marginface.streams.visits import VisitEvent
from marginface.urls import scrub

if TYPE_CHECKING:
    import numpy as np

    from marginface.embed import FacePipeline

__all__ = ["CAMERA_STATES", "CameraManager", "check_camera_url", "is_push_url"]

log = logging.getLogger(__name__)

#: The logged events of a camera visit (its decisions and its end).
VISIT_EVENTS = (*VISIT_DECISIONS, LEFT)

#: What a camera's ``state`` can be: ``stopped`` (not running: disabled, or workers are off),
#: ``starting``, the source's ``connecting`` / ``running`` / ``reconnecting``, ``ended`` (a
#: file played to its end), ``failed`` (the worker crashed or cannot start; it is restarted
#: with backoff, see ``last_error``).
CAMERA_STATES = ("stopped", "starting", "connecting", "running", "reconnecting", "ended", "failed")

Sink = Callable[[VisitEvent], None]
#: The same failure this many times in a row: retried every ``restart_slow_s`` from then on.
SLOW_AFTER = 5
#: A file resumes this long after its last processed frame (more than the 1 ms tolerance on
#: frame times, less than the 17 ms between the frames of a 60 frames/s video).
_AFTER_S = 0.005


class Worker(Protocol):
    """What the manager needs of a camera worker (:class:`CameraWorker`, or a stand-in)."""

    def run(self, source: Source, stop: threading.Event) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def latest_annotated(self, *, names: bool = True) -> np.ndarray | bytes | None: ...


#: Makes a camera's worker: ``(name, pipeline, gallery, settings, sinks=, policy=)``.
WorkerFactory = Callable[..., Worker]
#: Opens a camera's source: ``(url, fps=, policy=, **SourceOptions)``.
SourceOpener = Callable[..., Source]


class _SourceStoppedError(Exception):
    """The source stopped delivering frames for good (a file that cannot be decoded, a source
    that failed): a state to report, not a crash with a traceback."""


def _streams_missing(exc: ImportError) -> ConfigError:
    hint = missing_extra_message(exc) or (
        f"camera streams need the streams extra ({exc}): {install_hint('streams')}"
    )
    return ConfigError(hint)


def check_camera_url(url: str, policy: SourcePolicy | None = None) -> str:
    """``url`` stripped, when it names a source a camera of the service may read: a network
    stream (``rtsp://`` / ``rtsps://`` with ``?transport=tcp|udp``, ``http(s)://`` MJPEG),
    ``push:`` (JPEG frames POSTed to the service), and what ``policy`` allows beyond them
    (default: the service's defaults, no file and no webcam). The rules are
    :func:`~marginface.streams.sources.parse_source`'s; nothing is opened or connected.
    Raises :class:`DataError` with the reason."""
    text = (url or "").strip()
    if not text:
        raise DataError("the camera URL is empty")
    try:
        parse_source(text, policy=policy or SourcePolicy.service())
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return text


def is_push_url(url: str) -> bool:
    """Whether the camera's frames are POSTed to the service (``push:``)."""
    return url.strip().lower() in ("push", "push:")


def _camera_settings(settings: dict[str, Any] | None) -> CameraSettings:
    """``settings`` as a validated ``CameraSettings`` (DataError naming each bad key)."""
    try:
        return CameraSettings.model_validate(dict(settings or {}))
    except ValidationError as exc:
        raise DataError(f"camera settings: {format_validation_error(exc)}") from None


def _now() -> datetime:
    return datetime.now(UTC)


def _round(value: Any, digits: int = 2) -> Any:
    return round(float(value), digits) if isinstance(value, int | float) else value


class _Runner:
    """One running camera: its thread, its source and worker, and what went wrong."""

    def __init__(self, manager: CameraManager, camera: Camera) -> None:
        self.manager = manager
        self.camera = camera
        self.is_file = source_kind(camera.url) == "file"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.source: Source | None = None
        self.worker: Worker | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self.saved_position: float | None = None
        self.failing = False  # failed since it last delivered frames (logged once)
        self.started_at = time.time()
        self.sinks: list[Sink] = [manager.recorder, *manager.notifiers]
        if self.is_file:
            self.sinks.append(self._recorded)
        self.thread = threading.Thread(
            target=self._run, name=f"marginface-camera-{camera.id}", daemon=True
        )

    def _set(self, **values: Any) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(self, name, value)

    def note_recovery(self) -> None:
        """Log once that a camera which failed delivers frames again (the other half of
        "one log line per change of state")."""
        with self.lock:
            source, failing = self.source, self.failing
        if failing and source is not None and source.status().frames_delivered > 0:
            self._set(failing=False)
            log.info("camera %r: running again", self.camera.name)

    def _recorded(self, event: VisitEvent) -> None:
        """A sink after the recorder: a visit of a file camera was recorded, so its reading
        goes on after the frame that made it (a restart does not record it again)."""
        self.save_position()

    def save_position(self) -> None:
        """Store how far a file camera has read (when it moved), for a restart."""
        with self.lock:
            source = self.source
        if not self.is_file or source is None:
            return
        position = source.status().position_s
        if position is None or position == self.saved_position:
            return
        try:
            self.manager.gallery.cameras.set_position(self.camera.id, position)
        except NotFoundError:  # deleted meanwhile
            return
        self.saved_position = position

    def _open(self, settings: CameraSettings) -> Source:
        m = self.manager
        options: dict[str, Any] = {}
        if self.is_file:
            position = m.gallery.cameras.position(self.camera.id)
            if position is not None:
                self.saved_position = position
                options["start_s"] = position + _AFTER_S  # after the last frame processed
        return m.open_source(self.camera.url, fps=settings.fps, policy=m.source_policy, **options)

    def _run(self) -> None:
        m = self.manager
        backoff = m.restart_initial_s
        failure: str | None = None  # the latest failure, while it repeats
        repeats = 0
        while not self.stop.is_set():
            source = None
            began = time.monotonic()
            try:
                settings = _camera_settings(self.camera.settings)
                source = self._open(settings)
                worker = m.worker_factory(
                    self.camera.name,
                    m.pipeline,
                    m.gallery,
                    settings,
                    sinks=self.sinks,
                    policy=m.policy,
                )
                self._set(source=source, worker=worker, state="running")
                worker.run(source, self.stop)
                if self.stop.is_set():
                    break
                status = source.status()
                if status.state == "ended":
                    self._set(state="ended")
                    log.info("camera %r: the source ended", self.camera.name)
                    return
                raise _SourceStoppedError(
                    status.last_error or f"the source stopped ({status.state}) with no error"
                )
            except Exception as exc:
                known = isinstance(exc, ConfigError | DataError | _SourceStoppedError)
                if isinstance(exc, ImportError):
                    exc, known = _streams_missing(exc), True
                message = str(exc) if known else f"{type(exc).__name__}: {exc}"
                message = scrub(message, self.camera.url) or message
                worked = source is not None and source.status().frames_delivered > 0
                if worked or time.monotonic() - began > 60.0:  # it had run: start over quickly
                    backoff, repeats, failure = m.restart_initial_s, 0, None
                repeats = repeats + 1 if message == failure else 1
                if repeats >= SLOW_AFTER:
                    backoff = max(backoff, m.restart_slow_s)
                if message != failure:  # one line per change, not one per retry
                    log.error(
                        "camera %r failed: %s; retrying in %.0f s",
                        self.camera.name,
                        message,
                        backoff,
                        exc_info=not known,
                    )
                elif repeats == SLOW_AFTER:
                    log.warning(
                        "camera %r failed the same way %d times: retrying every %.0f s",
                        self.camera.name,
                        repeats,
                        backoff,
                    )
                failure = message
                self._set(
                    state="failed", last_error=message, restarts=self.restarts + 1, failing=True
                )
                if self.stop.wait(backoff):
                    break
                if repeats < SLOW_AFTER:
                    backoff = min(backoff * 2.0, m.restart_max_s)
            finally:
                if source is not None:
                    try:
                        self.save_position()
                    except Exception:
                        log.warning(
                            "camera %r: saving its position failed", self.camera.name, exc_info=True
                        )
                    try:
                        source.close()
                    except Exception:
                        log.warning(
                            "camera %r: closing its source failed", self.camera.name, exc_info=True
                        )
        with self.lock:
            if self.state != "ended":
                self.state = "stopped"

    def status(self) -> dict[str, Any]:
        with self.lock:
            state, error, source, worker = self.state, self.last_error, self.source, self.worker
            restarts = self.restarts
        out: dict[str, Any] = {"restarts": restarts, "last_error": error}
        src = source.status().to_dict() if source is not None else {}
        wrk = _status_dict(worker)
        if state == "running" and src.get("state") not in (None, "ended"):
            state = src["state"]  # connecting, reconnecting...; "ended" once the worker is done
        if state in ("running", "connecting", "reconnecting") and not self.thread.is_alive():
            state = "stopped"
        out["state"] = state
        if state != "failed" and src.get("last_error"):
            out["last_error"] = src["last_error"]
        out["source"] = src
        out["worker"] = wrk
        return out


def _status_dict(obj: Any) -> dict[str, Any]:
    """``obj.status()`` as a dict (``to_dict()`` of a dataclass), {} when there is none."""
    if obj is None or not hasattr(obj, "status"):
        return {}
    try:
        status = obj.status()
    except Exception as exc:  # a status read must never fail the caller
        return {"status_error": str(exc)}
    if hasattr(status, "to_dict"):
        status = status.to_dict()
    return dict(status) if isinstance(status, dict) else {}


class CameraManager:
    """The cameras of one service: stored in the gallery, run in worker threads.

    ``notifiers`` (webhooks, MQTT) are sinks of every camera after the gallery's recorder;
    the manager closes them. ``policy`` is how the cameras identify visits (default: the
    gallery's); ``source_policy`` says which sources a camera may read (default: network
    streams and push cameras only, :meth:`SourcePolicy.service`). A camera that fails is
    restarted after ``restart_initial_s`` doubling to ``restart_max_s``; one failing the same
    way :data:`SLOW_AFTER` times in a row, every ``restart_slow_s``. ``open_source`` and
    ``worker_factory`` stand in for :func:`~marginface.streams.sources.open_source` and
    :class:`~marginface.streams.camera.CameraWorker` (tests).
    """

    def __init__(
        self,
        gallery: Gallery,
        pipeline: FacePipeline,
        *,
        notifiers: Sequence[Notifier] = (),
        policy: IdentificationPolicy | None = None,
        source_policy: SourcePolicy | None = None,
        store_crops: bool = False,
        retention_days: float | None = 30.0,
        run_workers: bool = True,
        max_cameras: int = 32,
        state_every_s: float = 5.0,
        purge_every_s: float = 3600.0,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 60.0,
        restart_slow_s: float = 600.0,
        open_source: SourceOpener | None = None,
        worker_factory: WorkerFactory | None = None,
    ) -> None:
        self.gallery = gallery
        self.pipeline = pipeline
        self.notifiers: list[Notifier] = list(notifiers)
        self.source_policy = source_policy if source_policy is not None else SourcePolicy.service()
        self.store_crops = store_crops
        self.recorder = VisitRecorder(gallery, store_crops=store_crops)
        self.policy = policy
        self.retention_days = retention_days
        self.run_workers = run_workers
        self.max_cameras = max_cameras
        self.state_every_s = state_every_s
        self.purge_every_s = purge_every_s
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.restart_slow_s = restart_slow_s
        self._open_source = open_source
        self._worker_factory = worker_factory
        self._runners: dict[str, _Runner] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._published: dict[str, str] = {}
        self.last_purge: dict[str, Any] | None = None

    # -- the factories ------------------------------------------------------------------------
    def open_source(self, url: str, **options: Any) -> Source:
        if self._open_source is not None:
            return self._open_source(url, **options)
        return open_source(url, **options)

    def worker_factory(self, *args: Any, **kwargs: Any) -> Worker:
        if self._worker_factory is not None:
            return self._worker_factory(*args, **kwargs)
        return CameraWorker(*args, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Run every enabled camera (when workers are on) and the housekeeping thread."""
        if self.run_workers:
            for camera in self.gallery.cameras.list():
                if camera.enabled:
                    self._launch(camera)
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="marginface-cameras", daemon=True
        )
        self._housekeeper.start()
        log.info("cameras: %d running", len(self._runners))

    def close(self, timeout: float = 10.0) -> None:
        """Stop every camera (each worker is told at once, then awaited together), the
        housekeeping, and the notifiers."""
        self._closed.set()
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            runner.stop.set()
        deadline = time.monotonic() + timeout
        for runner in runners:
            runner.thread.join(max(0.0, deadline - time.monotonic()))
            if runner.thread.is_alive():
                log.warning("camera %r did not stop within %.0f s", runner.camera.name, timeout)
        if self._housekeeper is not None:
            self._housekeeper.join(max(0.1, deadline - time.monotonic()))
        for notifier in self.notifiers:
            try:
                notifier.close()
            except Exception:
                log.warning("closing a notifier failed", exc_info=True)

    def _launch(self, camera: Camera) -> None:
        with self._lock:
            if self._closed.is_set() or camera.id in self._runners:
                return
            runner = _Runner(self, camera)
            self._runners[camera.id] = runner
        runner.thread.start()

    def _halt(self, camera_id: str, wait: float = 10.0) -> None:
        with self._lock:
            runner = self._runners.pop(camera_id, None)
        if runner is not None:
            runner.stop.set()
            runner.thread.join(wait)

    # -- cameras ------------------------------------------------------------------------------
    def require(self, camera_id: str) -> Camera:
        """The camera with this id (NotFoundError when none)."""
        camera = self.gallery.cameras.get(camera_id)
        if camera.id != camera_id:  # the gallery also finds cameras by name; the API by id
            raise NotFoundError(f"unknown camera {camera_id!r}")
        return camera

    def validate(self, url: str | None, settings: dict[str, Any] | None) -> None:
        """Refuse (DataError) a URL no source may read here (:func:`check_camera_url` with
        this manager's policy) and settings ``CameraSettings`` refuses."""
        if url is not None:
            check_camera_url(url, self.source_policy)
        if settings is not None:
            _camera_settings(settings)

    def create(
        self, name: str, url: str, settings: dict[str, Any] | None = None, enabled: bool = True
    ) -> dict[str, Any]:
        """Store a new camera (running it at once when ``enabled``); its view."""
        url = check_camera_url(url, self.source_policy)
        self.validate(None, settings or {})
        if len(self.gallery.cameras.list()) >= self.max_cameras:
            raise ConflictError(f"this service watches at most {self.max_cameras} cameras")
        camera = self.gallery.cameras.create(name, url, settings or {}, enabled=enabled)
        if camera.enabled and self.run_workers:
            self._launch(camera)
        return self.view(camera)

    def update(
        self,
        camera_id: str,
        *,
        name: str | None = None,
        url: str | None = None,
        settings: dict[str, Any] | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Change a camera; a running camera restarts with the change."""
        self.require(camera_id)
        if url is not None:
            url = check_camera_url(url, self.source_policy)
        self.validate(None, settings)
        camera = self.gallery.cameras.update(
            camera_id, name=name, url=url, settings=settings, enabled=enabled
        )
        self._halt(camera.id)
        if camera.enabled and self.run_workers:
            self._launch(camera)
        return self.view(camera)

    def delete(self, camera_id: str) -> None:
        """Stop the camera and forget it (its visits stay in the events)."""
        camera = self.require(camera_id)
        self._halt(camera.id)
        self.gallery.cameras.delete(camera.id)
        self._published.pop(camera.name, None)
        for counted in (self.recorder, *self.notifiers):
            forget = getattr(counted, "forget", None)
            if forget is not None:
                forget(camera.name)

    def start_camera(self, camera_id: str) -> dict[str, Any]:
        """Run the camera (and remember that it runs: ``enabled``). A video file goes on where
        its reading stopped: a file read to its end stays ``ended``."""
        camera = self.require(camera_id)
        if not camera.enabled:
            camera = self.gallery.cameras.update(camera.id, enabled=True)
        if self.run_workers:
            with self._lock:
                runner = self._runners.get(camera.id)
            if runner is not None and not runner.thread.is_alive():
                self._halt(camera.id)  # ended or failed: try again
            self._launch(camera)
        return self.view(camera)

    def stop_camera(self, camera_id: str) -> dict[str, Any]:
        """Stop the camera (and remember that it is stopped)."""
        camera = self.require(camera_id)
        if camera.enabled:
            camera = self.gallery.cameras.update(camera.id, enabled=False)
        self._halt(camera.id)
        return self.view(camera)

    def get(self, camera_id: str) -> dict[str, Any]:
        """The camera's view: its record (URL redacted) and ``status``."""
        return self.view(self.require(camera_id))

    def list_cameras(self) -> list[dict[str, Any]]:
        """Every camera's view, by name."""
        return [self.view(camera) for camera in self.gallery.cameras.list()]

    def view(self, camera: Camera) -> dict[str, Any]:
        out = camera.to_dict(redact=True)
        out["push"] = is_push_url(camera.url)
        out["status"] = self._status(camera)
        return out

    # -- status -------------------------------------------------------------------------------
    def status(self, camera_id: str) -> dict[str, Any]:
        """What the camera is doing: ``state`` (:data:`CAMERA_STATES`), frames/s read and
        processed, lag, frames read / processed / dropped / corrupt, reconnections, restarts,
        last error, tracks open, visits, and the notifiers' delivery status."""
        return self._status(self.require(camera_id))

    def _runner(self, camera_id: str) -> _Runner | None:
        with self._lock:
            return self._runners.get(camera_id)

    def _status(self, camera: Camera) -> dict[str, Any]:
        runner = self._runner(camera.id)
        if runner is None:
            raw: dict[str, Any] = {
                "state": "stopped",
                "last_error": None,
                "restarts": 0,
                "source": {},
                "worker": {},
            }
            if camera.enabled and not self.run_workers:
                raw["last_error"] = "camera workers are off in this service (cameras: false)"
        else:
            raw = runner.status()
        src, wrk = raw.pop("source"), raw.pop("worker")
        out = {
            "state": raw["state"],
            "running": runner is not None and raw["state"] not in ("stopped", "ended"),
            "last_error": scrub(raw["last_error"], camera.url),
            "restarts": raw["restarts"],
            "read_fps": _round(src.get("read_fps")),
            "process_fps": _round(wrk.get("processing_fps")),
            "lag_s": _round(src.get("lag_s"), 3),
            "frames_read": src.get("frames_read") or 0,
            "frames_processed": wrk.get("frames_processed") or 0,
            "ms_per_frame": _round(wrk.get("ms_per_frame"), 1),
            "frame_errors": wrk.get("frame_errors") or 0,
            "frames_dropped": src.get("frames_dropped") or 0,
            "frames_corrupt": src.get("frames_corrupt") or 0,
            "reconnects": src.get("reconnects") or 0,
            "tracks_open": wrk.get("tracks_open") or 0,
            "visits": wrk.get("visits") or 0,
            "width": src.get("width"),
            "height": src.get("height"),
            "stream_fps": _round(src.get("stream_fps")),
            "notifications": self.notification_status(camera.name),
        }
        return out

    def notification_status(self, camera: str | None = None) -> list[dict[str, Any]]:
        """The delivery status of the visits written to the gallery (``kind`` ``gallery``)
        and of each notifier (``webhook``, ``mqtt``): the counts of ``camera``'s events and
        messages, or of every camera's (None)."""
        out = []
        sinks: list[Notifier | VisitRecorder] = [self.recorder, *self.notifiers]
        for notifier in sinks:
            kind = "gallery" if notifier is self.recorder else getattr(notifier, "kind", None)
            try:
                status = dict(notifier.status(camera))
            except Exception as exc:  # a status read must never fail the caller
                status = {"status_error": str(exc)}
            for key in ("last_error", "url", "broker"):
                if isinstance(status.get(key), str):
                    status[key] = scrub(status[key], *self._urls())
            out.append({"kind": kind or type(notifier).__name__.lower(), **status})
        return out

    def _urls(self) -> list[str]:
        return [camera.url for camera in self.gallery.cameras.list()]

    def statuses(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, status) of every camera (for ``/metrics``)."""
        return [(camera.name, self._status(camera)) for camera in self.gallery.cameras.list()]

    # -- frames -------------------------------------------------------------------------------
    def push(self, camera_id: str, data: bytes) -> dict[str, Any]:
        """Hand a JPEG frame to a running push camera. NotFoundError for an unknown camera,
        ConflictError when it is not a push camera or not running, ImageError for bytes that
        are not an image."""
        camera = self.require(camera_id)
        if not is_push_url(camera.url):
            raise ConflictError(
                f"camera {camera.name!r} is not a push camera: frames are "
                "pushed only to a camera whose URL is 'push:'"
            )
        runner = self._runner(camera.id)
        source = None
        if runner is not None:
            with runner.lock:
                source = runner.source if runner.state == "running" else None
        if source is None:
            raise ConflictError(f"camera {camera.name!r} is not running; start it first")
        source.push(data)
        return self._status(camera)

    def snapshot(self, camera_id: str, *, names: bool = True) -> bytes:
        """The latest processed frame as JPEG, with each face's box and its name drawn
        (``names=False``: ``known`` or ``unknown`` instead of the name, for keys that may not
        learn who was seen). NotFoundError when the camera has processed no frame yet."""
        camera = self.require(camera_id)
        runner = self._runner(camera.id)
        worker = None
        if runner is not None:
            with runner.lock:
                worker = runner.worker
        image = worker.latest_annotated(names=names) if worker is not None else None
        if image is None:
            raise NotFoundError(f"camera {camera.name!r} has no frame yet")
        if isinstance(image, bytes | bytearray):
            return bytes(image)
        return encode_jpeg(image, 85)

    def recent_visits(self, camera_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest visit events (``arrived``, ``identified``, ``corrected``, ``left``) of one
        camera or of all, newest first, from the gallery (so they survive restarts)."""
        source = self.require(camera_id).name if camera_id is not None else None
        out: list[dict[str, Any]] = []
        offset, page = 0, max(50, limit * 2)
        while len(out) < limit:
            events = self.gallery.events.list(source=source, limit=page, offset=offset)
            for event in events:
                details = event.details or {}
                if details.get("kind") != "visit" or event.decision not in VISIT_EVENTS:
                    continue
                out.append(_visit_out(event, self.recorder.thumbnail(event.id) is not None))
                if len(out) >= limit:
                    break
            if len(events) < page or offset > 20 * page:
                break
            offset += page
        return out

    def visit_face(self, event_id: int) -> tuple[bytes, bool]:
        """The JPEG thumbnail of a recent visit event's best face (kept in memory for the
        latest visits only), and whether the visit was of a named person (who may see it is
        the caller's to decide). NotFoundError when there is none."""
        jpeg = self.recorder.thumbnail(event_id)
        try:
            event = self.gallery.events.get(event_id) if jpeg is not None else None
        except NotFoundError:  # purged meanwhile
            event = None
        if jpeg is None or event is None:
            raise NotFoundError(
                f"no face kept for visit event {event_id} (thumbnails are kept "
                "in memory for the latest visits only)"
            )
        return jpeg, event.subject_id is not None

    # -- housekeeping -------------------------------------------------------------------------
    def purge(self) -> dict[str, Any] | None:
        """Delete stream data older than ``retention_days`` now (None: kept for ever)."""
        if not self.retention_days:
            return None
        older_than = _now() - timedelta(days=float(self.retention_days))
        result = self.gallery.purge_stream_data(older_than)
        self.last_purge = {
            "at": _now().isoformat(),
            "older_than": older_than.isoformat(),
            "result": result if isinstance(result, dict | int) else None,
        }
        return self.last_purge

    def _housekeeping(self) -> None:
        next_purge = time.monotonic() + min(60.0, self.purge_every_s)
        while not self._closed.wait(self.state_every_s):
            try:
                self.publish_states()
            except Exception:
                log.warning("publishing camera states failed", exc_info=True)
            with self._lock:
                runners = list(self._runners.values())
            for runner in runners:
                try:
                    runner.note_recovery()
                    runner.save_position()
                except Exception:
                    log.warning("saving %r's position failed", runner.camera.name, exc_info=True)
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_every_s
                try:
                    self.purge()
                except Exception:
                    log.warning("purging old stream data failed", exc_info=True)

    def publish_states(self) -> None:
        """Each camera's status to the notifiers: to MQTT every call (a retained topic), to
        the others when the camera's state changed."""
        if not self.notifiers:
            return
        for name, status in self.statuses():
            status = {k: v for k, v in status.items() if k != "notifications"}
            changed = self._published.get(name) != status["state"]
            self._published[name] = status["state"]
            for notifier in self.notifiers:
                if not (changed or getattr(notifier, "retains_state", False)):
                    continue
                try:
                    notifier.publish_state(name, status)
                except Exception:
                    log.warning("publishing %r's state failed", name, exc_info=True)


def _visit_out(event: Any, face: bool) -> dict[str, Any]:
    d = event.details or {}
    return {
        "id": event.id,
        "time": event.time,
        "camera": event.source,
        "kind": event.decision,
        "subject_id": event.subject_id,
        "name": event.subject_name,
        "score": event.score,
        "track_id": d.get("track_id"),
        "visit_id": d.get("visit_id"),
        "first_seen": d.get("first_seen"),
        "last_seen": d.get("last_seen"),
        "dwell_s": d.get("dwell_s"),
        "faces": d.get("faces"),
        "visitor_id": d.get("visitor_id"),
        "face": face,
    }
