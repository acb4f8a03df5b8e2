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

In a camera cluster (several services sharing one PostgreSQL gallery), which cameras this
manager runs is the cluster node's to say (:class:`~marginface.streams.cluster.ClusterNode`,
attached as :attr:`CameraManager.node`): it runs a camera while it holds the camera's lease
(:meth:`run_leased`, :meth:`stop_leased`), every event is written under that lease and carries
the node and the lease's epoch, an event the gallery refuses (the lease was lost) is neither
kept nor notified, and a camera taken over goes on with the visits its previous holder
recorded (``revisit_s``) and first sends again the notifications that holder may not have
delivered (the notifiers' delivery marks in the gallery). Without a node, every enabled
camera runs here.

PyAV and ``trackers`` (the streams extra) are imported only when a camera runs, so a service
without them still starts and serves; its cameras then show ``failed`` with the install hint.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from pydantic import ValidationError

from marginface.config import format_validation_error
from marginface.decision import IdentificationPolicy
from marginface.errors import ConfigError, ConflictError, DataError, NotFoundError
from marginface.extras import install_hint, missing_extra_message
from marginface.gallery import Camera, CameraLease, Gallery, LeaseRef, NodeRecord, StaleLeaseError
from marginface.gallery.events import LEFT, VISIT_DECISIONS
from marginface.imaging import encode_jpeg
from marginface.streams.camera import CameraSettings, CameraWorker
from marginface.streams.notifier import Notifier
from marginface.streams.recorder import VisitRecorder, logged_visit, past_visits
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

__all__ = [
    "CAMERA_STATES",
    "CameraElsewhereError",
    "CameraManager",
    "CameraNode",
    "CameraState",
    "Placement",
    "check_camera_url",
    "is_push_url",
]

log = logging.getLogger(__name__)

#: The logged events of a camera visit (its decisions and its end).
VISIT_EVENTS = (*VISIT_DECISIONS, LEFT)

#: What a camera's ``state`` can be: ``stopped`` (not running: disabled, or workers are off),
#: ``waiting`` (enabled, held by no node yet: every node is full, or it is changing node),
#: ``starting``, the source's ``connecting`` / ``running`` / ``reconnecting``, ``ended`` (a
#: file played to its end), ``failed`` (the worker crashed or cannot start; it is restarted
#: with backoff, see ``last_error``).
#: (one definition: the API schema and the metrics take it from here)
CameraState = Literal[
    "stopped",
    "waiting",
    "starting",
    "connecting",
    "running",
    "reconnecting",
    "ended",
    "failed",
]
CAMERA_STATES: tuple[str, ...] = get_args(CameraState)
#: Notifications sent again to a notifier after a take-over are at most this old.
REPLAY_WINDOW_S = 3600.0
#: ... and at most this many per camera and notifier.
REPLAY_LIMIT = 1000

Sink = Callable[[VisitEvent], None]
#: The same failure this many times in a row: retried every ``restart_slow_s`` from then on.
SLOW_AFTER = 5
#: A frame pushed to a camera that is starting waits this long for its source to open.
_PUSH_WAIT_S = 2.0
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


class CameraNode(Protocol):
    """What the manager needs of the cluster node that decides which cameras it runs
    (:class:`marginface.streams.cluster.ClusterNode`)."""

    name: str

    def valid(self, lease: LeaseRef) -> bool:
        """Whether this node may still act under ``lease`` (its renewal is recent enough
        that the lease cannot have expired)."""

    def wake(self) -> None:
        """Look for cameras to take soon."""

    def take(self, camera_id: str) -> None:
        """A camera was created or enabled here: take it now when it is this node's to
        take, else leave it to the cluster."""

    def give_up(self, lease: LeaseRef) -> None:
        """Release a camera this node stopped running (disabled)."""

    def exclusive_holder(self) -> str | None:
        """The node that runs every camera of a gallery only one node may run, when it is
        another one (a SQLite gallery); else None."""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a camera runs in the cluster: its lease, and the holder's record (address and the
    status it published)."""

    lease: CameraLease
    holder: NodeRecord | None


class CameraElsewhereError(ConflictError):
    """What was asked needs the camera's worker, which runs on another node of the cluster
    (``node``, reachable at ``address``): the service forwards the request there."""

    def __init__(self, message: str, node: str, address: str) -> None:
        super().__init__(message)
        self.node = node
        self.address = address


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

    def __init__(self, manager: CameraManager, camera: Camera, lease: LeaseRef | None) -> None:
        self.manager = manager
        self.camera = camera
        self.lease = lease
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
        self.replayed = False  # missed notifications were sent again
        self.started_at = time.time()
        self.fenced = 0  # events dropped: this node no longer held the camera
        self.sinks: list[Sink] = [self._deliver]
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

    def _deliver(self, event: VisitEvent) -> None:
        """The camera's one sink: the event, stamped with this node and its lease's epoch,
        is written to the gallery under the lease, then given to every notifier with its
        gallery id. An event the gallery refuses because the lease was lost, or made after
        this node's lease could have expired, goes nowhere: the camera is another node's."""
        m = self.manager
        lease = self.lease
        if lease is not None:
            event = dataclasses.replace(event, node=lease.node, epoch=lease.epoch)
            if m.node is not None and not m.node.valid(lease):
                self._fence(event, "this node's lease on it may have expired")
                return
        try:
            record_id = m.recorder.write(event, lease)
        except StaleLeaseError as exc:
            self._fence(event, str(exc))
            return
        if lease is not None and m.node is not None and not m.node.valid(lease):
            # the write failed or took long (a database going away): the lease may have
            # expired meanwhile, and another node announce this camera's visits now
            self._fence(event, "this node's lease on it may have expired while writing")
            return
        if record_id is not None:
            event = dataclasses.replace(event, record_id=record_id)
            if self.is_file:  # recorded: a restart goes on after the frame that made it
                self.save_position()
        for notifier in m.notifiers:
            try:
                notifier(event)
            except Exception:  # notifiers never raise by contract; a bug must not stop us
                log.exception("camera %r: a notifier failed", self.camera.name)

    def _fence(self, event: VisitEvent, why: str) -> None:
        """Drop ``event`` (not this node's camera any more) and stop the camera here."""
        self.fenced += 1
        self.manager.recorder.fenced(event.camera)
        if self.fenced == 1:
            log.warning(
                "camera %r: no longer held by this node (%s): its %s event is dropped and "
                "the camera stops here",
                self.camera.name,
                why,
                event.kind,
            )
        self.stop.set()

    def save_position(self) -> None:
        """Store how far a file camera has read (when it moved), for a restart."""
        with self.lock:
            source = self.source
        if not self.is_file or source is None:
            return
        position = source.status().position_s
        if position is None or position == self.saved_position:
            return
        m = self.manager
        if self.lease is not None and m.node is not None and not m.node.valid(self.lease):
            return  # not this node's to say any more
        try:
            m.gallery.cameras.set_position(self.camera.id, position, lease=self.lease)
        except (NotFoundError, StaleLeaseError):  # deleted, or taken over, meanwhile
            return
        self.saved_position = position

    def _open(self, settings: CameraSettings) -> Source:
        m = self.manager
        settings.source.check(source_kind(self.camera.url))
        options: dict[str, Any] = settings.source.model_dump(exclude_defaults=True)
        if self.is_file and settings.source.loop:
            options["live"] = True  # played as a live camera: no position to resume from
        elif self.is_file:
            position = m.gallery.cameras.position(self.camera.id)
            if position is not None:
                self.saved_position = position
                options["start_s"] = position + _AFTER_S  # after the last frame processed
        return m.open_source(self.camera.url, fps=settings.fps, policy=m.source_policy, **options)

    def _take_over(self, settings: CameraSettings) -> list[Any]:
        """Before the camera's first frame here: send again what the notifiers may not have
        been given (by this camera's previous holder, or before a restart), and read the
        camera's recent visits, which this worker continues. A database that cannot answer
        now costs only these (logged)."""
        m = self.manager
        if not self.replayed and m.first_run(self.camera.id, self.lease):
            try:
                m.replay(self.camera)
            except Exception as exc:
                log.warning(
                    "camera %r: cannot send missed notifications again: %s", self.camera.name, exc
                )
        self.replayed = True
        try:
            return past_visits(m.gallery, self.camera.name, settings.visits.revisit_s)
        except Exception as exc:
            log.warning("camera %r: cannot read its recent visits: %s", self.camera.name, exc)
            return []

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
                past = self._take_over(settings)
                if self.stop.is_set():
                    break
                source = self._open(settings)
                worker = m.worker_factory(
                    self.camera.name,
                    m.pipeline,
                    m.gallery,
                    settings,
                    sinks=self.sinks,
                    policy=m.policy,
                )
                resume = getattr(worker, "resume", None)
                if past and resume is not None:
                    resume(past)
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
    :class:`~marginface.streams.camera.CameraWorker` (tests). :attr:`node`: the cluster node
    deciding which cameras run here (None: every enabled camera).
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
        #: the cluster node that says which cameras run here (set by its ``attach``)
        self.node: CameraNode | None = None
        # delivery marks not yet written: (notifier key, camera id) -> gallery event id
        self._marks: dict[tuple[str, str], int] = {}
        self._marks_lock = threading.Lock()
        self._camera_ids: dict[str, str] = {}  # camera name -> id, of the cameras run here
        self._taken: dict[str, LeaseRef | None] = {}  # camera id -> the lease it last ran under
        for notifier in self.notifiers:
            if getattr(notifier, "key", None) and hasattr(notifier, "on_done"):
                notifier.on_done = self._delivered_to(notifier.key)

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
        """Run every enabled camera (when workers are on; in a cluster, those whose lease
        the node takes) and the housekeeping thread."""
        if self.run_workers and self.node is None:
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
        try:
            self.flush_marks()
        except Exception as exc:
            log.warning("saving the notifiers' delivery marks failed: %s", exc)

    def _launch(self, camera: Camera, lease: LeaseRef | None = None) -> None:
        with self._lock:
            if self._closed.is_set() or camera.id in self._runners:
                return
            runner = _Runner(self, camera, lease)
            self._runners[camera.id] = runner
            self._camera_ids[camera.name] = camera.id
        runner.thread.start()

    def _halt(self, camera_id: str, wait: float = 10.0) -> _Runner | None:
        with self._lock:
            runner = self._runners.pop(camera_id, None)
        if runner is not None:
            runner.stop.set()
            if wait <= 0:  # stop reading the camera now, even if its worker is busy
                with runner.lock:
                    source = runner.source
                if source is not None:
                    try:
                        source.close()
                    except Exception:
                        log.warning("camera %r: closing its source failed", runner.camera.name)
            runner.thread.join(wait)
        return runner

    # -- the cluster node's side ------------------------------------------------------------------
    def run_leased(self, camera: Camera, lease: LeaseRef) -> None:
        """Run ``camera`` under ``lease`` (the node holds it): a runner of an older lease, or
        of an older version of the camera, is stopped first; one that failed or ended is
        left as it is (restarted by :meth:`start_camera`)."""
        with self._lock:
            runner = self._runners.get(camera.id)
        if runner is not None:
            same = runner.lease == lease and runner.camera.updated_at == camera.updated_at
            if same:
                return
            self._halt(camera.id, wait=5.0)
        self._launch(camera, lease)

    def ensure_running(self, lease: CameraLease) -> None:
        """Run the camera of ``lease`` (held by this node) unless it runs already under it,
        as the camera is now (a camera changed through another node restarts)."""
        runner = self._runner(lease.camera_id)
        if (
            runner is not None
            and runner.lease == lease.ref
            and runner.camera.updated_at == lease.updated_at
        ):
            return
        self.run_leased(self.gallery.cameras.get(lease.camera_id), lease.ref)

    def stop_leased(self, camera_id: str, *, wait: float = 0.0) -> bool:
        """Stop running ``camera_id`` here (the lease was lost, or is given up); wait up to
        ``wait`` seconds for its worker to end (its last events written). Whether the worker
        ended (True also when none ran)."""
        runner = self._halt(camera_id, wait=wait)
        return runner is None or not runner.thread.is_alive()

    def camera_name(self, camera_id: str) -> str:
        """The name of a camera run here (its id when it runs nowhere here)."""
        runner = self._runner(camera_id)
        return runner.camera.name if runner is not None else camera_id

    def running(self) -> dict[str, LeaseRef | None]:
        """The cameras this manager runs now, with the lease each runs under."""
        with self._lock:
            return {cid: r.lease for cid, r in self._runners.items()}

    def between_visits(self, camera_id: str) -> bool:
        """Whether nobody is being followed on the camera now (a good moment to move it)."""
        runner = self._runner(camera_id)
        if runner is None:
            return True
        with runner.lock:
            worker = runner.worker
        check = getattr(worker, "between_visits", None)
        return bool(check()) if check is not None else True

    def local_statuses(self) -> dict[str, dict[str, Any]]:
        """The status of each camera run here (what the node publishes for the others)."""
        with self._lock:
            runners = list(self._runners.values())
        return {
            runner.camera.id: self._status(runner.camera, notifications=False) for runner in runners
        }

    # -- cameras ------------------------------------------------------------------------------
    def require(self, camera_id: str) -> Camera:
        """The camera with this id (NotFoundError when none)."""
        camera = self.gallery.cameras.get(camera_id)
        if camera.id != camera_id:  # the gallery also finds cameras by name; the API by id
            raise NotFoundError(f"unknown camera {camera_id!r}")
        return camera

    def validate(self, url: str | None, settings: dict[str, Any] | None) -> None:
        """Refuse (DataError) a URL no source may read here (:func:`check_camera_url` with
        this manager's policy), settings ``CameraSettings`` refuses, and source options that
        do not suit the URL's kind of source (``transport`` for RTSP, ``loop`` for files)."""
        if url is not None:
            check_camera_url(url, self.source_policy)
        if settings is not None:
            parsed = _camera_settings(settings)
            if url is not None:
                try:
                    parsed.source.check(source_kind(url))
                except ConfigError as exc:
                    raise DataError(f"camera settings: {exc}") from None

    def capacity(self) -> int:
        """How many cameras may be configured: this service's ``max_cameras``; in a cluster
        (a node, PostgreSQL), the sum of the live nodes' ``max_cameras``."""
        if self.node is None or self.gallery.backend == "sqlite":
            return self.max_cameras
        total = 0
        for node in self.gallery.cluster.nodes():
            if node.state == "live":
                total += int(node.info.get("max_cameras", node.capacity) or 0)
        return max(total, self.max_cameras if self.run_workers else 0)

    def create(
        self, name: str, url: str, settings: dict[str, Any] | None = None, enabled: bool = True
    ) -> dict[str, Any]:
        """Store a new camera (running it at once when ``enabled``); its view."""
        url = check_camera_url(url, self.source_policy)
        self.validate(url, settings or {})
        limit = self.capacity()
        if len(self.gallery.cameras.list()) >= limit:
            where = "this service watches" if self.node is None else "the live nodes watch"
            raise ConflictError(f"{where} at most {limit} cameras (max_cameras)")
        camera = self.gallery.cameras.create(name, url, settings or {}, enabled=enabled)
        if camera.enabled:
            self._run(camera)
        return self.view(camera)

    def _run(self, camera: Camera) -> None:
        """Have an enabled camera run: here at once without a node; else the node looks for
        cameras to take now (this one, when it is this node's to take)."""
        if self.node is not None:
            self.node.take(camera.id)
        elif self.run_workers:
            self._launch(camera)

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
        current = self.require(camera_id)
        if url is not None:
            url = check_camera_url(url, self.source_policy)
        self.validate(url or current.url, settings if settings is not None else current.settings)
        camera = self.gallery.cameras.update(
            camera_id, name=name, url=url, settings=settings, enabled=enabled
        )
        runner = self._halt(camera.id)
        if self.node is not None:
            if runner is not None and runner.lease is not None:
                if camera.enabled:
                    self._launch(camera, runner.lease)  # the same lease, the new settings
                else:
                    self.node.give_up(runner.lease)
            elif camera.enabled:
                self.node.take(camera.id)  # held elsewhere: its node restarts it, changed
        elif camera.enabled and self.run_workers:
            self._launch(camera)
        return self.view(camera)

    def delete(self, camera_id: str) -> None:
        """Stop the camera and forget it (its visits stay in the events)."""
        camera = self.require(camera_id)
        runner = self._halt(camera.id)
        if runner is not None and runner.lease is not None and self.node is not None:
            self.node.give_up(runner.lease)
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
        with self._lock:
            runner = self._runners.get(camera.id)
        if runner is not None and not runner.thread.is_alive():
            self._halt(camera.id)  # ended or failed: try again
            if runner.lease is not None:
                self._launch(camera, runner.lease)
                return self.view(camera)
        if self.node is not None:
            if runner is None:
                self._elsewhere(camera, "its worker")  # its node restarts it
                self.node.take(camera.id)
        elif self.run_workers:
            self._launch(camera)
        return self.view(camera)

    def stop_camera(self, camera_id: str) -> dict[str, Any]:
        """Stop the camera (and remember that it is stopped)."""
        camera = self.require(camera_id)
        if camera.enabled:
            camera = self.gallery.cameras.update(camera.id, enabled=False)
        runner = self._halt(camera.id)
        if runner is not None and runner.lease is not None and self.node is not None:
            self.node.give_up(runner.lease)
        return self.view(camera)

    def get(self, camera_id: str) -> dict[str, Any]:
        """The camera's view: its record (URL redacted) and ``status``."""
        return self.view(self.require(camera_id))

    def list_cameras(self) -> list[dict[str, Any]]:
        """Every camera's view, by name."""
        placements = self.placements()
        return [self.view(c, placements.get(c.id)) for c in self.gallery.cameras.list()]

    def view(self, camera: Camera, placement: Placement | None = None) -> dict[str, Any]:
        """The camera's record (URL redacted), the node running it and its lease's epoch
        (in a cluster), and its ``status`` (from the node running it)."""
        if placement is None and self.node is not None:
            placement = self.placements([camera.id]).get(camera.id)
        out = camera.to_dict(redact=True)
        out["push"] = is_push_url(camera.url)
        held = placement.lease if placement is not None and placement.lease.held else None
        out["node"] = held.node if held is not None else None
        out["epoch"] = held.epoch if held is not None else None
        out["status"] = self._status(camera, placement)
        return out

    def placements(self, camera_ids: Sequence[str] | None = None) -> dict[str, Placement]:
        """Where each camera runs in the cluster (empty without a node)."""
        if self.node is None:
            return {}
        leases = [
            lease
            for lease in self.gallery.cluster.leases()
            if camera_ids is None or lease.camera_id in camera_ids
        ]
        nodes = {n.name: n for n in self.gallery.cluster.nodes()} if leases else {}
        return {
            lease.camera_id: Placement(lease, nodes.get(lease.node) if lease.node else None)
            for lease in leases
        }

    def holder(self, camera_id: str) -> NodeRecord | None:
        """The other live node running ``camera_id``, when it is not this one."""
        if self.node is None:
            return None
        placement = self.placements([camera_id]).get(camera_id)
        if placement is None or not placement.lease.held or placement.holder is None:
            return None
        if placement.lease.node == self.node.name or placement.holder.state != "live":
            return None
        return placement.holder

    def _elsewhere(self, camera: Camera, what: str) -> None:
        """Raise :class:`CameraElsewhereError` when another node runs ``camera``."""
        holder = self.holder(camera.id)
        if holder is not None:
            raise CameraElsewhereError(
                f"camera {camera.name!r} runs on node {holder.name!r}: {what} is there",
                holder.name,
                holder.address,
            )

    # -- status -------------------------------------------------------------------------------
    def status(self, camera_id: str) -> dict[str, Any]:
        """What the camera is doing: ``state`` (:data:`CAMERA_STATES`), frames/s read and
        processed, lag, frames read / processed / dropped / corrupt, reconnections, restarts,
        last error, tracks open, visits, and the notifiers' delivery status."""
        return self._status(self.require(camera_id))

    def _runner(self, camera_id: str) -> _Runner | None:
        with self._lock:
            return self._runners.get(camera_id)

    def _remote(self, camera: Camera, placement: Placement | None) -> dict[str, Any] | None:
        """The status the node running ``camera`` published (None: this node's to say)."""
        if placement is None or self.node is None:
            return None
        lease, holder = placement.lease, placement.holder
        if not lease.held or lease.node == self.node.name:
            return None
        published = (holder.info.get("cameras") or {}).get(camera.id) if holder else None
        if isinstance(published, dict) and "state" in published:
            return {**published, "notifications": []}
        return {
            **_BLANK_STATUS,
            "state": "starting",
            "running": True,
            "last_error": None,
            "notifications": [],
        }

    def _status(
        self, camera: Camera, placement: Placement | None = None, *, notifications: bool = True
    ) -> dict[str, Any]:
        runner = self._runner(camera.id)
        if runner is None:
            remote = self._remote(camera, placement)
            if remote is not None:
                return remote
            raw: dict[str, Any] = {
                "state": "stopped",
                "last_error": None,
                "restarts": 0,
                "source": {},
                "worker": {},
            }
            if camera.enabled and not self.run_workers:
                raw["last_error"] = "camera workers are off in this service (cameras: false)"
            elif camera.enabled and self.node is not None:
                raw["state"] = "waiting"
                blocker = self.node.exclusive_holder()
                raw["last_error"] = (
                    f"node {blocker!r} runs the cameras of this gallery (SQLite: one node "
                    "runs them; use PostgreSQL to spread cameras over nodes)"
                    if blocker is not None
                    else "held by no node yet: waiting for a node with room (max_cameras, "
                    "cpu_budget) to take it"
                )
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
        }
        if notifications:
            out["notifications"] = self.notification_status(camera.name)
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
        """(name, status) of the cameras this service answers for (``/metrics``, MQTT
        states): every camera without a node; in a cluster, those it runs and those no node
        holds (each node reports its own)."""
        cameras = self.gallery.cameras.list()
        if self.node is None:
            return [(camera.name, self._status(camera)) for camera in cameras]
        placements = self.placements()
        mine = self.running()
        out = []
        for camera in cameras:
            placement = placements.get(camera.id)
            if camera.id in mine or placement is None or not placement.lease.held:
                out.append((camera.name, self._status(camera, placement)))
        return out

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
        until = time.monotonic() + _PUSH_WAIT_S
        while runner is not None:
            with runner.lock:
                source = runner.source if runner.state == "running" else None
                starting = runner.state == "starting"
            if source is not None or not starting or time.monotonic() > until:
                break
            time.sleep(0.01)  # the camera is starting: its source opens in a moment
        if source is None:
            self._elsewhere(camera, "its worker")
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
            if worker is None:
                self._elsewhere(camera, "its live view")
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
            event = self.gallery.events.get(event_id)
        except NotFoundError:  # purged meanwhile
            event = None
        if jpeg is None and event is not None and self.node is not None:
            made_by = (event.details or {}).get("node")
            if made_by and made_by != self.node.name:  # its thumbnail is in that node's memory
                holder = next((n for n in self.gallery.cluster.nodes() if n.name == made_by), None)
                if holder is not None and holder.state == "live":
                    raise CameraElsewhereError(
                        f"visit event {event_id} was recorded by node {made_by!r}",
                        holder.name,
                        holder.address,
                    )
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

    # -- notifications at least once -------------------------------------------------------------
    def _delivered_to(self, key: str) -> Callable[[VisitEvent], None]:
        """The ``on_done`` of the notifier named ``key``: its delivery mark of the event's
        camera moves to the event (written to the gallery by :meth:`flush_marks`)."""

        def done(event: VisitEvent) -> None:
            camera_id = self._camera_ids.get(event.camera)
            if event.record_id is None or camera_id is None:
                return
            with self._marks_lock:
                mark = (key, camera_id)
                self._marks[mark] = max(self._marks.get(mark, 0), int(event.record_id))

        return done

    def flush_marks(self) -> None:
        """Write the delivery marks noted since the last call to the gallery."""
        with self._marks_lock:
            marks, self._marks = self._marks, {}
        by_sink: dict[str, dict[str, int]] = {}
        for (key, camera_id), event_id in marks.items():
            by_sink.setdefault(key, {})[camera_id] = event_id
        try:
            for key, sink_marks in by_sink.items():
                self.gallery.cluster.advance_marks(key, sink_marks)
        except Exception:
            with self._marks_lock:  # kept for the next try
                for mark, event_id in marks.items():
                    self._marks[mark] = max(self._marks.get(mark, 0), event_id)
            raise

    def first_run(self, camera_id: str, lease: LeaseRef | None) -> bool:
        """Whether ``camera_id`` starts running under ``lease`` for the first time in this
        process (taken over, or started after a restart): then what its notifiers may have
        missed is sent again; a worker restarted under the same lease sends nothing again."""
        with self._lock:
            first = camera_id not in self._taken or self._taken[camera_id] != lease
            self._taken[camera_id] = lease
        return first

    def replay(self, camera: Camera) -> int:
        """Send each notifier (that keeps delivery marks) the camera's visit events written
        after its mark, at most :data:`REPLAY_LIMIT`, none older than
        :data:`REPLAY_WINDOW_S`: those a previous holder of the camera (a node that died) or
        this service before a restart may not have delivered. Delivery is thus at least once;
        each event keeps its ``event_id``, by which receivers drop a repeat. Returns how many
        were sent."""
        with self._lock:
            self._camera_ids[camera.name] = camera.id
        keyed = [n for n in self.notifiers if getattr(n, "key", None)]
        if not keyed:
            return 0
        self.flush_marks()  # what this service delivered itself is not sent again
        sent = 0
        since = time.time() - REPLAY_WINDOW_S
        for notifier in keyed:
            mark = self.gallery.cluster.marks(notifier.key, [camera.id]).get(camera.id)
            if mark is None:
                continue
            events = self.gallery.events.list(
                source=camera.name, after_id=mark, start=since, limit=REPLAY_LIMIT
            )
            for event in sorted(events, key=lambda e: e.id):
                visit = logged_visit(event)
                if visit is not None:
                    notifier(visit)
                    sent += 1
        if sent:
            log.info(
                "camera %r: %d notification(s) its previous run may not have delivered are "
                "sent again",
                camera.name,
                sent,
            )
        return sent

    def _housekeeping(self) -> None:
        next_purge = time.monotonic() + min(60.0, self.purge_every_s)
        while not self._closed.wait(self.state_every_s):
            try:
                self.publish_states()
            except Exception:
                log.warning("publishing camera states failed", exc_info=True)
            try:
                self.flush_marks()
            except Exception as exc:
                log.warning("saving the notifiers' delivery marks failed: %s", exc)
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


#: The status of a camera nobody reports on yet.
_BLANK_STATUS: dict[str, Any] = {
    "state": "stopped",
    "running": False,
    "last_error": None,
    "restarts": 0,
    "read_fps": None,
    "process_fps": None,
    "lag_s": None,
    "frames_read": 0,
    "frames_processed": 0,
    "ms_per_frame": None,
    "frame_errors": 0,
    "frames_dropped": 0,
    "frames_corrupt": 0,
    "reconnects": 0,
    "tracks_open": 0,
    "visits": 0,
    "width": None,
    "height": None,
    "stream_fps": None,
}


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
