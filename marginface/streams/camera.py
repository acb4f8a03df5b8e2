"""One camera's pipeline: frames -> faces -> tracks -> one decision per visit -> sinks.

For each processed frame (:meth:`CameraWorker.process`):

1. **detect** faces with the pipeline's detector on a copy shrunk to ``detect_max_side``
   (boxes and landmarks come back in full-frame pixels; crops are cut from the full frame);
   faces smaller than ``min_face_size`` are ignored;
2. **track** them (:class:`~marginface.streams.tracking.FaceTracker`);
3. for each tracked face, its **quality** from the landmarks and detection score
   (:func:`~marginface.align.quality.face_quality`); only when
   :meth:`VisitTracker.wants_embedding` says the face may be worth it is it aligned and its
   crop's sharpness measured, and only when it still is, embedded: **all of the frame's crops
   in one embedder call**. A decided track embeds no more faces (except an unknown one when
   ``store_crops`` keeps its best crops). Most faces of most frames cost no alignment and no
   embedding;
4. :meth:`VisitTracker.observe` turns the evidence into ``arrived`` events; tracks the tracker
   ended become ``left`` events (:meth:`VisitTracker.end`).

Every event goes to every sink (``Callable[[VisitEvent], None]``: the gallery's recorder,
webhooks, MQTT); a sink that raises is logged and counted, and never stops the camera.

The worker keeps the latest frame and its labelled boxes for a live view (drawn only when
asked, :meth:`CameraWorker.latest_annotated`) and counters for :meth:`CameraWorker.status`.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from marginface.align.detection import Detection
from marginface.align.quality import face_quality
from marginface.config import StrictModel
from marginface.streams.tracking import FaceTracker
from marginface.streams.visits import VisitEvent, VisitSettings, VisitTracker

if TYPE_CHECKING:
    from marginface.embed.pipeline import Pipeline
    from marginface.gallery import Gallery
    from marginface.streams.sources import Frame, Source

__all__ = ["CameraSettings", "CameraWorker", "Sink", "TrackedBox"]

log = logging.getLogger(__name__)

#: A consumer of visit events (the recorder, a webhook, MQTT, a JSONL writer).
Sink = Callable[[VisitEvent], None]
#: Consecutive frames that fail to process before :meth:`CameraWorker.run` gives up.
_MAX_CONSECUTIVE_ERRORS = 50


class CameraSettings(StrictModel):
    """How one camera is processed (the defaults suit 1280x720 at 5 frames/s on a small
    machine)."""

    fps: float = Field(5.0, gt=0.0, le=60.0, description="frames processed per second")
    detect_max_side: int = Field(
        640,
        ge=64,
        le=4096,
        description="faces are detected on a copy of the frame shrunk to "
        "this longest side (crops are cut from the full frame)",
    )
    min_face_size: float = Field(
        20.0, ge=0.0, description="smallest face tracked: its box's shorter side, full-frame px"
    )
    score_threshold: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="detection score that starts a track and may be "
        "embedded (lower-scored detections only continue tracks)",
    )
    track_buffer_s: float = Field(
        1.0, ge=0.0, le=30.0, description="how long a lost face's track survives (occlusions)"
    )
    visits: VisitSettings = Field(
        default_factory=VisitSettings, description="evidence per track and the re-appearance window"
    )
    store_crops: bool = Field(
        False,
        description="an unknown track keeps collecting its best "
        "faces after its decision, for the strangers' review (the "
        "recorder stores their crops only when it is told to: the "
        "service's store_photos)",
    )


class TrackedBox:
    """A face of the latest processed frame, for the live view."""

    __slots__ = ("box", "known", "label", "track_id")

    def __init__(self, box: np.ndarray, track_id: int, label: str, known: bool | None) -> None:
        self.box = box
        self.track_id = track_id
        self.label = label
        self.known = known  # True: named, False: unknown, None: not decided yet

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "track_id": self.track_id,
            "label": self.label,
            "known": self.known,
        }


def _camera_detector(pipeline: Pipeline, max_side: int) -> Any:
    """The pipeline's detector, working at ``max_side``: a shallow copy when its own setting
    differs (the pipeline is shared between cameras and the service; its detector is not
    changed). A detector without a ``max_side`` is used as it is."""
    detector: Any = pipeline.detector
    if getattr(detector, "max_side", max_side) == max_side:
        return detector
    detector = copy.copy(detector)  # per-thread models are rebuilt lazily by the copy
    detector.max_side = int(max_side)
    return detector


class CameraWorker:
    """Processes one camera's frames into visit events (see the module's docstring).

    ``pipeline``: the face pipeline (detector, aligner, embedder) shared with other cameras;
    ``gallery``: where faces are identified; ``sinks``: called with every event; ``fpir``:
    the open-set operating point (default: the gallery's). :meth:`process` and :meth:`finish`
    are called by one thread (the camera's); :meth:`status` and :meth:`latest_annotated` may
    be called from any thread.
    """

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        gallery: Gallery,
        settings: CameraSettings | None = None,
        *,
        sinks: Iterable[Sink] = (),
        fpir: str | float | None = None,
    ) -> None:
        self.name = name
        self.settings = settings if settings is not None else CameraSettings()
        s = self.settings
        self.pipeline = pipeline
        self.detector = _camera_detector(pipeline, s.detect_max_side)
        self.aligner = pipeline.aligner
        self.embedder = pipeline.embedder
        self.flip = bool(getattr(pipeline, "flip", False))
        self.gallery = gallery
        self.sinks = tuple(sinks)
        self.tracker = FaceTracker(s.fps, s.track_buffer_s, activation_threshold=s.score_threshold)
        self.visits = VisitTracker(gallery, name, s.visits, fpir=fpir)
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, list[TrackedBox], float] | None = None
        self._last_t: float | None = None
        self._last_mono = 0.0
        self._next_forget = 0.0
        # counters for status()
        self.frames = 0
        self.faces_seen = 0
        self.embeddings = 0
        self.events = 0
        self.visits_started = 0
        self.sink_errors = 0
        self.errors = 0
        self._busy_s = 0.0
        self._ms_per_frame = 0.0
        self._rate_window: list[float] = []  # monotonic times of the latest processed frames
        self._last_event: dict[str, Any] | None = None
        self._started = time.monotonic()

    # -- processing ------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[VisitEvent]:
        """Process one frame; returns (and gives every sink) the events it caused: ``arrived``
        for tracks decided by this frame, then ``left`` for tracks that ended."""
        start = time.perf_counter()
        s = self.settings
        image, t, wall = frame.image, float(frame.t), float(frame.wall)
        detections = [d for d in self.detector.detect(image) if d.size >= s.min_face_size]
        tracked = self.tracker.update(detections, t)
        events: list[VisitEvent] = []
        pending: list[tuple[int, Any, np.ndarray]] = []  # (track, quality, crop) to embed
        for track_id, det in tracked:
            if det.score >= s.score_threshold and self._collecting(track_id):
                rough = face_quality(det.landmarks, det.score, None)  # no crop: sharp
                if self.visits.wants_embedding(track_id, rough, t):
                    crop = self.aligner.crop(image, det.landmarks)
                    quality = face_quality(det.landmarks, det.score, crop)
                    if self.visits.wants_embedding(track_id, quality, t):
                        pending.append((track_id, quality, crop))
                        continue
            self.visits.observe(track_id, t, wall=wall)
        if pending:
            crops = np.stack([c for _, _, c in pending])
            embeddings = self.embedder.embed(crops, flip=self.flip)
            self.embeddings += len(pending)
            for (track_id, quality, crop), emb in zip(pending, embeddings, strict=True):
                event = self.visits.observe(track_id, t, quality, emb, wall=wall, crop=crop)
                if event is not None:
                    events.append(event)
        for track_id in self.tracker.ended(t):
            left = self.visits.end(track_id)
            if left is not None:
                events.append(left)
        if t >= self._next_forget:
            self.visits.forget_before(t)
            self._next_forget = t + 10.0
        self._keep_latest(image, tracked, t)
        self.faces_seen += len(tracked)
        self._last_t, self._last_mono = t, time.monotonic()
        self._emit(events)
        self._count_frame(time.perf_counter() - start)
        return events

    def _collecting(self, track_id: int) -> bool:
        """Whether the track still gathers evidence: until it is decided, and afterwards only
        an unknown track whose best crops are kept (the strangers' review needs its best
        faces; a decided track's other faces change nothing)."""
        decided = self.visits.decision(track_id)
        return decided is None or (self.settings.store_crops and decided.subject_id is None)

    def expire(self, t: float | None = None) -> list[VisitEvent]:
        """End the tracks lost for longer than ``track_buffer_s`` at ``t`` (default: the last
        frame's time plus the wall time since) without a new frame: a live camera that stopped
        sending frames still closes its visits. Returns the ``left`` events."""
        if t is None:
            if self._last_t is None:
                return []
            t = self._last_t + (time.monotonic() - self._last_mono)
        events = [e for e in (self.visits.end(i) for i in self.tracker.ended(t)) if e]
        self._emit(events)
        return events

    def finish(self) -> list[VisitEvent]:
        """End every open track (the end of a file, the camera stopping): their ``left``
        events, also given to the sinks."""
        events = [e for e in (self.visits.end(i) for i in self.tracker.close_all()) if e]
        self._emit(events)
        with self._lock:
            if self._latest is not None:
                self._latest = (self._latest[0], [], self._latest[2])
        return events

    def run(
        self,
        source: Source,
        stop: threading.Event,
        *,
        on_frame: Callable[[Frame, list[VisitEvent]], None] | None = None,
    ) -> None:
        """Process ``source``'s frames until ``stop`` is set or the source ends (a file's end,
        a source that stopped or failed), then :meth:`finish`. A frame that fails to process
        is logged, counted and skipped; many failures in a row raise the last error.
        ``on_frame`` is called after each processed frame (a progress bar)."""
        consecutive = 0
        try:
            while not stop.is_set():
                frame = source.read(timeout=0.5)
                if frame is None:
                    if source.status().state in ("ended", "stopped", "failed"):
                        break
                    self.expire()
                    continue
                try:
                    events = self.process(frame)
                    consecutive = 0
                except Exception:
                    self.errors += 1
                    consecutive += 1
                    if consecutive >= _MAX_CONSECUTIVE_ERRORS:
                        raise
                    if consecutive == 1:
                        log.exception(
                            "camera %r: frame %s could not be processed",
                            self.name,
                            getattr(frame, "index", "?"),
                        )
                    continue
                if on_frame is not None:
                    on_frame(frame, events)
        finally:
            self.finish()

    def _emit(self, events: list[VisitEvent]) -> None:
        for event in events:
            self.events += 1
            if event.kind == "arrived":
                self.visits_started += 1
            self._last_event = event.to_dict()
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:
                    self.sink_errors += 1
                    log.exception("camera %r: a sink failed on a %s event", self.name, event.kind)

    # -- live view and status --------------------------------------------------------------------
    def _keep_latest(
        self, image: np.ndarray, tracked: list[tuple[int, Detection]], t: float
    ) -> None:
        boxes = []
        for track_id, det in tracked:
            decided = self.visits.decision(track_id)
            if decided is None:
                boxes.append(TrackedBox(det.box, track_id, f"#{track_id}", None))
            elif decided.subject_id is None:
                boxes.append(TrackedBox(det.box, track_id, "unknown", False))
            else:
                boxes.append(
                    TrackedBox(det.box, track_id, decided.name or decided.subject_id, True)
                )
        with self._lock:
            self._latest = (image, boxes, t)

    def latest(self) -> tuple[np.ndarray, list[TrackedBox]] | None:
        """The latest processed frame (RGB, not a copy: do not modify it) and its tracked
        faces; None before the first frame."""
        with self._lock:
            latest = self._latest
        return None if latest is None else (latest[0], latest[1])

    def latest_annotated(self, *, names: bool = True) -> np.ndarray | None:
        """The latest processed frame (RGB) with each tracked face's box, track id and name
        drawn (green: named, red: unknown, yellow: not decided yet); drawn now, on a copy.
        ``names=False`` writes ``known`` instead of a name. None before the first frame."""
        import cv2  # heavy: cv2

        latest = self.latest()
        if latest is None:
            return None
        image, boxes = latest
        out = image.copy()
        scale = max(out.shape[:2]) / 1280.0
        thick = max(1, round(2 * scale))
        for b in boxes:
            colour = {True: (0, 200, 0), False: (230, 40, 40), None: (240, 200, 0)}[b.known]
            x1, y1, x2, y2 = (round(float(v)) for v in b.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
            label = b.label if names or not b.known else "known"
            text = f"{label} #{b.track_id}" if b.known is not None else label
            cv2.putText(
                out,
                text,
                (x1, max(12, y1 - 6)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.6 * max(scale, 0.5),
                colour,
                thick,
                cv2.LINE_AA,
            )
        return out

    def _count_frame(self, seconds: float) -> None:
        now = time.monotonic()
        self.frames += 1
        self._busy_s += seconds
        ms = 1000.0 * seconds
        self._ms_per_frame = ms if self.frames == 1 else 0.9 * self._ms_per_frame + 0.1 * ms
        window = self._rate_window
        window.append(now)
        if len(window) > 50:
            del window[0]

    def status(self) -> dict[str, Any]:
        """Counters for the camera's status and ``/metrics``: frames processed, processing
        frames/s (over the latest 50 frames), ms per frame (moving average), faces seen,
        embeddings computed, tracks open, visits started, events, sink errors, frames that
        failed, the last event."""
        window = list(self._rate_window)
        fps = (
            (len(window) - 1) / (window[-1] - window[0])
            if len(window) > 1 and window[-1] > window[0]
            else 0.0
        )
        return {
            "camera": self.name,
            "frames_processed": self.frames,
            "processing_fps": round(fps, 2),
            "ms_per_frame": round(self._ms_per_frame, 1),
            "busy_s": round(self._busy_s, 3),
            "faces_seen": self.faces_seen,
            "embeddings": self.embeddings,
            "tracks_open": self.tracker.open_tracks(),
            "visits": self.visits_started,
            "events": self.events,
            "sink_errors": self.sink_errors,
            "frame_errors": self.errors,
            "last_event": self._last_event,
        }
