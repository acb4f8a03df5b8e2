"""The service's cameras: one worker thread per running camera, supervised.

:class:`CameraManager` owns the cameras of one service. The cameras themselves (name, URL,
settings, enabled) are stored in the gallery, so they restart with the service: :meth:`start`
runs every enabled camera. Each running camera is a daemon thread that opens its source
(:func:`marginface.streams.sources.open_source`) and runs a
:class:`~marginface.streams.camera.CameraWorker` on it until told to stop; every visit event goes
to the :class:`~marginface.streams.recorder.VisitRecorder` (the gallery) first, then to the
notifiers (webhooks, MQTT).

Faults stay with their camera: a worker that crashes is logged, its status shows the error
(``failed``), and it is restarted with exponential backoff; an unreachable or dropped stream is
the source's to reconnect (``reconnecting``, with the error). Nothing one camera does reaches
another camera or the service.

A housekeeping thread publishes each camera's state to MQTT every few seconds (retained) and to
the other notifiers when it changes, and purges stream data (stranger faces and crops, visit
events) older than ``retention_days`` once an hour.

The streams extra (PyAV, supervision) is imported only when a camera runs or is validated, so a
service without it still starts and serves; its cameras then show ``failed`` with the install
hint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from marginface.config import format_validation_error
from marginface.decision import IdentificationPolicy
from marginface.errors import ConfigError, ConflictError, DataError, NotFoundError
from marginface.extras import install_hint, missing_extra_message
from marginface.gallery import Gallery, redact_url
from marginface.gallery.events import LEFT, VISIT_DECISIONS
from marginface.imaging import encode_jpeg
from marginface.streams.recorder import VisitRecorder
from marginface.streams.visits import VisitEvent

__all__ = ["CAMERA_STATES", "CameraManager", "check_camera_url"]

log = logging.getLogger(__name__)

#: The logged events of a camera visit (its decisions and its end).
VISIT_EVENTS = (*VISIT_DECISIONS, LEFT)

#: What a camera's ``state`` can be: ``stopped`` (not running: disabled, or workers are off),
#: ``starting``, the source's ``connecting`` / ``running`` / ``reconnecting``, ``ended`` (a
#: file played to its end), ``failed`` (the worker crashed or cannot start; it is restarted
#: with backoff, see ``last_error``).
CAMERA_STATES = ("stopped", "starting", "connecting", "running", "reconnecting", "ended", "failed")

Sink = Callable[[VisitEvent], None]


def _streams_missing(exc: ImportError) -> ConfigError:
    hint = missing_extra_message(exc) or (
        f"camera streams need the streams extra ({exc}): {install_hint('streams')}"
    )
    return ConfigError(hint)


def _camera_module() -> Any:
    try:
        from marginface.streams import camera  # PyAV, supervision: only when cameras run
    except ImportError as exc:
        raise _streams_missing(exc) from None
    return camera


def _sources_module() -> Any:
    try:
        from marginface.streams import sources  # PyAV: only when cameras run
    except ImportError as exc:
        raise _streams_missing(exc) from None
    return sources


def check_camera_url(url: str) -> str:
    """``url`` stripped, when it names a source a camera can read: a video file path or
    ``file://``, a webcam (``0``, ``/dev/videoN``, ``webcam:N``), ``rtsp://`` / ``rtsps://``
    (``?transport=tcp|udp``), ``http(s)://`` (MJPEG) or ``push:`` (JPEG frames POSTed to the
    service). The rules are :func:`~marginface.streams.sources.open_source`'s; nothing is
    opened or connected. Raises :class:`DataError` with the reason."""
    text = (url or "").strip()
    if not text:
        raise DataError("the camera URL is empty")
    sources = _sources_module()
    try:
        kind, location = sources._parse(text)
        if kind == "rtsp":
            sources._rtsp_transport(location, None)
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    if kind in ("rtsp", "mjpeg"):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise DataError(f"the camera URL {redact_url(text)!r} is malformed") from None
        if not parts.hostname:
            raise DataError(f"the camera URL {redact_url(text)!r} has no host")
    return text


def is_push_url(url: str) -> bool:
    """Whether the camera's frames are POSTed to the service (``push:``)."""
    return url.strip().lower() in ("push", "push:")


def _camera_settings(settings: dict[str, Any] | None) -> Any:
    """``settings`` as a validated ``CameraSettings`` (DataError naming each bad key)."""
    module = _camera_module()
    try:
        return module.CameraSettings.model_validate(dict(settings or {}))
    except ValidationError as exc:
        raise DataError(f"camera settings: {format_validation_error(exc)}") from None


def _scrub(text: str | None, url: str) -> str | None:
    """``text`` without the camera URL's password (errors are shown to every API key)."""
    if not text:
        return text
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(url, redact_url(url)).replace(password, "***")
    return text


def _now() -> datetime:
    return datetime.now(UTC)


def _round(value: Any, digits: int = 2) -> Any:
    return round(float(value), digits) if isinstance(value, int | float) else value


class _Runner:
    """One running camera: its thread, its source and worker, and what went wrong."""

    def __init__(self, manager: CameraManager, camera: Any) -> None:
        self.manager = manager
        self.camera = camera
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.source: Any = None
        self.worker: Any = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self.started_at = time.time()
        self.thread = threading.Thread(
            target=self._run, name=f"marginface-camera-{camera.id}", daemon=True
        )

    def _set(self, **values: Any) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(self, name, value)

    def _run(self) -> None:
        m = self.manager
        backoff = m.restart_initial_s
        while not self.stop.is_set():
            source = None
            began = time.monotonic()
            try:
                settings = _camera_settings(self.camera.settings)
                source = m.open_source(self.camera.url, fps=getattr(settings, "fps", None))
                worker = m.worker_factory(
                    self.camera.name,
                    m.pipeline,
                    m.gallery,
                    settings,
                    sinks=m.sinks,
                    policy=m.policy,
                )
                self._set(source=source, worker=worker, state="running")
                worker.run(source, self.stop)
                if self.stop.is_set():
                    break
                status = _status_dict(source)
                if status.get("state") == "ended":
                    self._set(state="ended")
                    log.info("camera %r: the source ended", self.camera.name)
                    return
                raise RuntimeError(
                    f"the camera worker stopped (source {status.get('state', '?')}: "
                    f"{status.get('last_error') or 'no error'})"
                )
            except Exception as exc:
                message = (
                    f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, ConfigError | DataError)
                    else str(exc)
                )
                log.error(
                    "camera %r failed: %s; restarting in %.0f s",
                    self.camera.name,
                    message,
                    backoff,
                    exc_info=not isinstance(exc, ConfigError | DataError),
                )
                self._set(state="failed", last_error=message, restarts=self.restarts + 1)
                if time.monotonic() - began > 60.0:  # it had run a while: start over quickly
                    backoff = m.restart_initial_s
                if self.stop.wait(backoff):
                    break
                backoff = min(backoff * 2.0, m.restart_max_s)
            finally:
                if source is not None:
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
        src = _status_dict(source)
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

    ``notifiers`` are sinks of every camera (webhooks, MQTT) with ``status()``,
    ``publish_state(camera, status)`` and ``close()``; the manager closes them. ``policy`` is
    how the cameras identify visits (default: the gallery's). ``open_source`` and
    ``worker_factory`` stand in for :func:`~marginface.streams.sources.open_source` and
    :class:`~marginface.streams.camera.CameraWorker` (tests).
    """

    def __init__(
        self,
        gallery: Gallery,
        pipeline: Any,
        *,
        notifiers: Sequence[Any] = (),
        store_crops: bool = False,
        policy: IdentificationPolicy | None = None,
        retention_days: float | None = 30.0,
        run_workers: bool = True,
        max_cameras: int = 32,
        state_every_s: float = 5.0,
        purge_every_s: float = 3600.0,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 60.0,
        open_source: Callable[..., Any] | None = None,
        worker_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.gallery = gallery
        self.pipeline = pipeline
        self.notifiers = list(notifiers)
        self.store_crops = store_crops
        self.recorder = VisitRecorder(gallery, store_crops=store_crops)
        self.sinks: list[Sink] = [self.recorder, *self.notifiers]
        self.policy = policy
        self.retention_days = retention_days
        self.run_workers = run_workers
        self.max_cameras = max_cameras
        self.state_every_s = state_every_s
        self.purge_every_s = purge_every_s
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self._open_source = open_source
        self._worker_factory = worker_factory
        self._runners: dict[str, _Runner] = {}
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._published: dict[str, str] = {}
        self.last_purge: dict[str, Any] | None = None

    # -- the factories ------------------------------------------------------------------------
    def open_source(self, url: str, **options: Any) -> Any:
        if self._open_source is not None:
            return self._open_source(url, **options)
        return _sources_module().open_source(url, **options)

    def worker_factory(self, *args: Any, **kwargs: Any) -> Any:
        if self._worker_factory is not None:
            return self._worker_factory(*args, **kwargs)
        return _camera_module().CameraWorker(*args, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Run every enabled camera (when workers are on) and the housekeeping thread."""
        if self.run_workers:
            for camera in self.gallery.list_cameras():
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

    def _launch(self, camera: Any) -> None:
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
    def require(self, camera_id: str) -> Any:
        """The camera with this id (NotFoundError when none)."""
        camera = self.gallery.get_camera(camera_id)
        if camera.id != camera_id:  # the gallery also finds cameras by name; the API by id
            raise NotFoundError(f"unknown camera {camera_id!r}")
        return camera

    def validate(self, url: str | None, settings: dict[str, Any] | None) -> None:
        """Refuse (DataError) a URL no source can read and settings ``CameraSettings``
        refuses; ConfigError when the streams extra is missing."""
        if url is not None:
            check_camera_url(url)
        if settings is not None:
            _camera_settings(settings)

    def create(
        self, name: str, url: str, settings: dict[str, Any] | None = None, enabled: bool = True
    ) -> dict[str, Any]:
        """Store a new camera (running it at once when ``enabled``); its view."""
        url = check_camera_url(url)
        self.validate(None, settings or {})
        if len(self.gallery.list_cameras()) >= self.max_cameras:
            raise ConflictError(f"this service watches at most {self.max_cameras} cameras")
        camera = self.gallery.create_camera(name, url, settings or {}, enabled=enabled)
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
            url = check_camera_url(url)
        self.validate(None, settings)
        camera = self.gallery.update_camera(
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
        self.gallery.delete_camera(camera.id)
        self._published.pop(camera.name, None)

    def start_camera(self, camera_id: str) -> dict[str, Any]:
        """Run the camera (and remember that it runs: ``enabled``)."""
        camera = self.require(camera_id)
        if not camera.enabled:
            camera = self.gallery.update_camera(camera.id, enabled=True)
        if self.run_workers:
            with self._lock:
                runner = self._runners.get(camera.id)
            if runner is not None and not runner.thread.is_alive():
                self._halt(camera.id)  # ended (a file): play it again
            self._launch(camera)
        return self.view(camera)

    def stop_camera(self, camera_id: str) -> dict[str, Any]:
        """Stop the camera (and remember that it is stopped)."""
        camera = self.require(camera_id)
        if camera.enabled:
            camera = self.gallery.update_camera(camera.id, enabled=False)
        self._halt(camera.id)
        return self.view(camera)

    def get(self, camera_id: str) -> dict[str, Any]:
        """The camera's view: its record (URL redacted) and ``status``."""
        return self.view(self.require(camera_id))

    def list_cameras(self) -> list[dict[str, Any]]:
        """Every camera's view, by name."""
        return [self.view(camera) for camera in self.gallery.list_cameras()]

    def view(self, camera: Any) -> dict[str, Any]:
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

    def _status(self, camera: Any) -> dict[str, Any]:
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
            "last_error": _scrub(raw["last_error"], camera.url),
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
            "notifications": self.notification_status(),
        }
        return out

    def notification_status(self) -> list[dict[str, Any]]:
        """Each notifier's delivery status (``kind``: webhook or mqtt)."""
        out = []
        for notifier in [self.recorder, *self.notifiers]:
            status = _status_dict(notifier)
            kind = type(notifier).__name__
            kind = {"Webhook": "webhook", "MqttPublisher": "mqtt", "VisitRecorder": "gallery"}.get(
                kind, kind.lower()
            )
            out.append({"kind": kind, **status})
        return out

    def statuses(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, status) of every camera (for ``/metrics``)."""
        return [(camera.name, self._status(camera)) for camera in self.gallery.list_cameras()]

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

    def snapshot(self, camera_id: str) -> bytes:
        """The latest processed frame as JPEG, with each face's box and name drawn.
        NotFoundError when the camera has processed no frame yet."""
        camera = self.require(camera_id)
        runner = self._runner(camera.id)
        worker = None
        if runner is not None:
            with runner.lock:
                worker = runner.worker
        image = worker.latest_annotated() if worker is not None else None
        if image is None:
            raise NotFoundError(f"camera {camera.name!r} has no frame yet")
        if isinstance(image, bytes | bytearray):
            return bytes(image)
        return encode_jpeg(image, 85)

    def recent_visits(self, camera_id: str | None = None, limit: int = 50) -> list[dict]:
        """The newest visit events (``arrived``, ``identified``, ``corrected``, ``left``) of one
        camera or of all, newest first, from the gallery (so they survive restarts)."""
        source = self.require(camera_id).name if camera_id is not None else None
        out: list[dict[str, Any]] = []
        offset, page = 0, max(50, limit * 2)
        while len(out) < limit:
            events = self.gallery.events(source=source, limit=page, offset=offset)
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

    def visit_face(self, event_id: int) -> bytes:
        """The JPEG thumbnail of a recent visit event's best face (kept in memory for the
        latest visits only). NotFoundError when there is none."""
        jpeg = self.recorder.thumbnail(event_id)
        if jpeg is None:
            raise NotFoundError(
                f"no face kept for visit event {event_id} (thumbnails are kept "
                "in memory for the latest visits only)"
            )
        return jpeg

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
                if not (changed or type(notifier).__name__ == "MqttPublisher"):
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
