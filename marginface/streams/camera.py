"""One camera's pipeline: frames -> faces -> tracks -> visits whose decisions follow the evidence.

For each processed frame (:meth:`CameraWorker.process`):

1. a **shot cut** or a jump of the whole scene (:class:`~marginface.streams.scene.SceneChange`)
   ends every track: the face now at a track's place is someone else's;
2. **detect** faces on a copy of the frame scaled to ``detect_max_side`` (shrunk, or enlarged
   up to ``detect_upscale`` times for low-resolution streams, whose 12-20 px faces YuNet
   misses at their own size); boxes and landmarks come back in full-frame pixels, crops are
   cut from the full frame; faces smaller than ``min_face_size`` are ignored;
3. **track** them (:class:`~marginface.streams.tracking.FaceTracker`: ByteTrack, motion only);
4. for each tracked face, its **quality** from the landmarks, detection score and ONet's
   face probability (:func:`~marginface.align.quality.face_quality`); when
   :meth:`VisitTracker.wants_embedding` says the face is worth it (evidence for the decision,
   or a decided track's verification), it is aligned and embedded: **all of the frame's crops
   in one embedder call**;
5. **appearance**: each embedded face is verified against its own track
   (:meth:`VisitTracker.verify`); a face that is another person **splits** the track (the old
   track's visit gets ``left``, the face starts a new track): a track never carries two
   people, and a name never passes to the person who walked beside its owner;
6. :meth:`VisitTracker.observe` turns the evidence into ``arrived``, ``identified`` and
   ``corrected`` events; tracks the tracker ended become ``left`` events.

Every event goes to every sink (``Callable[[VisitEvent], None]``: the gallery's recorder,
webhooks, MQTT); a sink that raises is logged and counted, and never stops the camera.

The worker keeps the latest frame and its labelled boxes (:class:`TrackedBox`: track, state,
name) for the live view, ``watch --annotate`` and ``--tracks-jsonl`` (drawn only when asked,
:meth:`CameraWorker.latest_annotated`), and counters for :meth:`CameraWorker.status`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, model_validator

from marginface.align.detection import Detection, box_coverage
from marginface.align.quality import FaceQuality, face_quality
from marginface.config import StrictModel
from marginface.detection_defaults import DEFAULT_SCORE_THRESHOLD, DEFAULT_TRACKED_FACE_SIZE
from marginface.streams.scene import SceneChange
from marginface.streams.sources import CameraSource
from marginface.streams.tracking import FaceTracker
from marginface.streams.visits import (
    PastVisit,
    TrackState,
    VisitEvent,
    VisitSettings,
    VisitTracker,
)

if TYPE_CHECKING:
    from marginface.decision import IdentificationPolicy
    from marginface.embed.pipeline import Pipeline
    from marginface.gallery import Gallery
    from marginface.streams.sources import Frame, Source

__all__ = [
    "CameraSettings",
    "CameraWorker",
    "Sink",
    "TrackState",
    "TrackedBox",
    "draw_tracks",
]

log = logging.getLogger(__name__)

#: A consumer of visit events (the recorder, a webhook, MQTT, a JSONL writer).
Sink = Callable[[VisitEvent], None]
#: Consecutive frames that fail to process before :meth:`CameraWorker.run` gives up.
_MAX_CONSECUTIVE_ERRORS = 50


class CameraSettings(StrictModel):
    """How one camera is processed (the defaults suit 1280x720 at 5 frames/s on a small
    machine, and low-resolution streams down to 480x270)."""

    fps: float = Field(5.0, gt=0.0, le=60.0, description="frames processed per second")
    detect_max_side: int = Field(
        640,
        ge=64,
        le=4096,
        description="faces are detected on a copy of the frame scaled to this longest side "
        "(crops are cut from the full frame)",
    )
    detect_upscale: float = Field(
        2.0,
        ge=1.0,
        le=4.0,
        description="a frame smaller than detect_max_side is enlarged for detection at most "
        "this many times (1: never): small faces of low-resolution streams are found",
    )
    min_face_size: float = Field(
        DEFAULT_TRACKED_FACE_SIZE,
        ge=0.0,
        le=4096.0,
        description="smallest face tracked and counted: its box's shorter side, full-frame px "
        "(faces are identified only from visits.min_eye_distance)",
    )
    score_threshold: float = Field(
        DEFAULT_SCORE_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="detection score that starts a track and may be embedded (lower-scored "
        "detections only continue tracks)",
    )
    track_buffer_s: float = Field(
        1.0, ge=0.0, le=30.0, description="how long a lost face's track survives (occlusions)"
    )
    cut_threshold: float = Field(
        6.0,
        ge=0.0,
        le=255.0,
        description="a shot cut or a jump of the whole scene ends every track: the score of a "
        "change between two processed frames (0: never)",
    )
    visits: VisitSettings = Field(
        default_factory=VisitSettings,
        description="evidence per track, appearance checks and the re-appearance window",
    )
    source: CameraSource = Field(
        default_factory=CameraSource,
        description="how the source is read: RTSP transport, timeouts, reconnection backoff, "
        "and loop (a video file played as a live camera)",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_store_crops(cls, data: Any) -> Any:
        """``store_crops`` of cameras stored before it went: every track now keeps its best
        faces' crops in memory, and whether a stranger's are stored for review is the
        recorder's (the service's ``review_crops``)."""
        if isinstance(data, dict) and "store_crops" in data:
            data = {k: v for k, v in data.items() if k != "store_crops"}
        return data


class TrackedBox:
    """A face of the latest processed frame: its box (full-frame px), track, ``state``
    (``undecided``, ``known``, ``unknown``) and the name the system gives it now."""

    __slots__ = ("box", "name", "state", "subject_id", "track_id")

    def __init__(
        self,
        box: np.ndarray,
        track_id: int,
        state: TrackState,
        subject_id: str | None = None,
        name: str | None = None,
    ) -> None:
        self.box = box
        self.track_id = track_id
        self.state: TrackState = state
        self.subject_id = subject_id
        self.name = name

    @property
    def known(self) -> bool | None:
        """True: named, False: unknown, None: not decided yet."""
        return {"known": True, "unknown": False}.get(self.state)

    @property
    def label(self) -> str:
        """What the live view writes: the name, ``unknown`` or ``#track``."""
        if self.state == "known":
            return self.name or self.subject_id or "?"
        return "unknown" if self.state == "unknown" else f"#{self.track_id}"

    def to_dict(self) -> dict[str, Any]:
        """The ``--tracks-jsonl`` form of one face (also the live view's, with ``label`` and
        ``known``)."""
        return {
            "track_id": self.track_id,
            "box": [round(float(v), 1) for v in self.box],
            "name": self.name if self.state == "known" else None,
            "subject_id": self.subject_id if self.state == "known" else None,
            "state": self.state,
            "label": self.label,
            "known": self.known,
        }


def draw_tracks(
    image: np.ndarray, boxes: Iterable[TrackedBox], *, names: bool = True
) -> np.ndarray:
    """A copy of ``image`` (RGB) with each face's box, track id and name drawn: green named,
    red unknown, yellow not decided yet (the live view and ``watch --annotate``);
    ``names=False`` writes ``known`` instead of a name."""
    import cv2  # heavy: cv2

    out = image.copy()
    scale = max(out.shape[:2]) / 1280.0
    thick = max(1, round(2 * scale))
    colours = {"known": (0, 200, 0), "unknown": (230, 40, 40), "undecided": (240, 200, 0)}
    for b in boxes:
        colour = colours[b.state]
        x1, y1, x2, y2 = (round(float(v)) for v in b.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = b.label if names or b.state != "known" else "known"
        text = f"{label} #{b.track_id}" if b.state != "undecided" else label
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


def _cut_by_frame(box: np.ndarray, shape: tuple[int, ...], margin: float = 0.05) -> bool:
    """Whether a face box reaches the frame's border (within ``margin`` of its size): the
    face may be partly outside, and a crop padded with black says little about who it is."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    h, w = shape[:2]
    return x1 < mx or y1 < my or x2 > w - mx or y2 > h - my


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
    ``gallery``: where faces are identified; ``sinks``: called with every event; ``policy``:
    how visits are identified (default: the gallery's). :meth:`process` and :meth:`finish`
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
        policy: IdentificationPolicy | None = None,
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
        self.visits = VisitTracker(gallery, name, s.visits, policy=policy)
        self.scene = SceneChange(s.cut_threshold)
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, list[TrackedBox], float, int] | None = None
        self._last_t: float | None = None
        self._last_mono = 0.0
        self._next_forget = 0.0
        # counters for status()
        self.frames = 0
        self.faces_seen = 0
        self.small_faces = 0
        self.embeddings = 0
        self.events = 0
        self.visits_started = 0
        self.sink_errors = 0
        self.errors = 0
        self._busy_s = 0.0
        self._embed_s = 0.0
        self._ms_per_frame = 0.0
        self._rate_window: list[float] = []  # monotonic times of the latest processed frames
        self._last_event: dict[str, Any] | None = None
        self._started = time.monotonic()
        self._resume: list[PastVisit] = []
        self.resumed = 0  # visits taken over from the camera's previous holder

    # -- processing ------------------------------------------------------------------------------
    def _detect(self, image: np.ndarray) -> list[Detection]:
        """The frame's faces at ``detect_max_side`` (enlarged up to ``detect_upscale``), in
        full-frame pixels, at least ``min_face_size``."""
        import cv2  # heavy: cv2

        s = self.settings
        longest = max(image.shape[:2])
        factor = min(s.detect_max_side / max(longest, 1), s.detect_upscale)
        if factor > 1.0 + 1e-6:
            size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
            work = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            found = [d.scaled(1.0 / factor) for d in self.detector.detect(work)]
        else:
            found = self.detector.detect(image)
        return [d for d in found if d.size >= s.min_face_size]

    def process(self, frame: Frame) -> list[VisitEvent]:
        """Process one frame; returns (and gives every sink) the events it caused: ``left``
        for tracks a cut ended, then ``arrived`` / ``identified`` / ``corrected`` and
        ``left`` for split tracks as the frame's faces come, then ``left`` for tracks that
        ended."""
        start = time.perf_counter()
        s = self.settings
        image, t, wall = frame.image, float(frame.t), float(frame.wall)
        if self._resume:  # visits of the camera's previous holder, in this frame's clock
            self.resumed = self.visits.resume(self._resume, t, time.time())
            self._resume = []
        events: list[VisitEvent] = []
        if self.scene.update(image):
            events += self._end_all("cut")
        detections = self._detect(image)
        tracked = self.tracker.update(detections, t)
        pending: list[tuple[int, Detection, FaceQuality, np.ndarray]] = []
        shown: list[tuple[int, Detection]] = []
        for track_id, det in tracked:
            rough = face_quality(det.landmarks, det.score, None, det.face_prob)  # no crop: sharp
            if _cut_by_frame(det.box, image.shape):  # half a face: no evidence of who it is
                rough = dataclasses.replace(rough, face_prob=0.0)
            if rough.size < s.visits.min_eye_distance:
                self.small_faces += 1
            elif self.visits.wants_embedding(track_id, rough, t, det.box):
                crop = self.aligner.crop(image, det.landmarks)
                quality = face_quality(det.landmarks, det.score, crop, rough.face_prob)
                if self.visits.wants_embedding(track_id, quality, t, det.box):
                    pending.append((track_id, det, quality, crop))
                    continue
            big = rough.size >= s.visits.min_eye_distance  # a face that could name someone
            if big and self.visits.jumped(track_id, det.box, t):
                events += self.visits.end(track_id, "jump")  # a face it cannot verify, after a jump
                track_id = self.tracker.split(track_id)
            events += self.visits.observe(track_id, t, rough, wall=wall, box=det.box)
            shown.append((track_id, det))
        if pending:
            began = time.perf_counter()
            crops = np.stack([c for _, _, _, c in pending])
            embeddings = self.embedder.embed(crops, flip=self.flip)
            self._embed_s += time.perf_counter() - began
            self.embeddings += len(pending)
            for (track_id, det, quality, crop), emb in zip(pending, embeddings, strict=True):
                verdict = self.visits.verify(track_id, quality, emb)
                if verdict == "different":
                    events += self.visits.end(track_id, "split")  # another person's face
                    track_id = self.tracker.split(track_id)
                elif verdict == "unsure" and self.visits.jumped(track_id, det.box, t):
                    events += self.visits.end(track_id, "jump")  # a jump to a face not verified
                    track_id = self.tracker.split(track_id)
                events += self.visits.observe(
                    track_id, t, quality, emb, wall=wall, crop=crop, box=det.box
                )
                shown.append((track_id, det))
        for (a, box_a), (b, box_b) in itertools.combinations([(i, d.box) for i, d in shown], 2):
            if box_coverage(box_a, box_b) >= 0.4:
                self.visits.overlap(a, b)
        for track_id in self.tracker.ended(t):
            events += self.visits.end(track_id)
        events += self.visits.flush(t)
        if t >= self._next_forget:
            self.visits.forget_before(t)
            self._next_forget = t + 10.0
        self._keep_latest(image, shown, t, int(getattr(frame, "index", self.frames)))
        self.faces_seen += len(tracked)
        self._last_t, self._last_mono = t, time.monotonic()
        self._emit(events)
        self._count_frame(time.perf_counter() - start)
        return events

    def _end_all(self, reason: str) -> list[VisitEvent]:
        """End every open track (a cut, the end of the source); the ``arrived`` of people
        seen briefly."""
        return [e for i in self.tracker.close_all() for e in self.visits.end(i, reason)]

    def expire(self, t: float | None = None) -> list[VisitEvent]:
        """End the tracks lost for longer than ``track_buffer_s`` at ``t`` (default: the last
        frame's time plus the wall time since) without a new frame: a live camera that stopped
        sending frames still closes its visits. Returns the ``left`` events."""
        if t is None:
            if self._last_t is None:
                return []
            t = self._last_t + (time.monotonic() - self._last_mono)
        events = [e for i in self.tracker.ended(t) for e in self.visits.end(i)]
        events += self.visits.flush(t)
        self._emit(events)
        return events

    def finish(self) -> list[VisitEvent]:
        """End every open track (the end of a file, the camera stopping): their ``left``
        events, also given to the sinks."""
        events = self._end_all("closed")
        events += self.visits.close()
        self._emit(events)
        with self._lock:
            if self._latest is not None:
                self._latest = (self._latest[0], [], self._latest[2], self._latest[3])
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
        ``on_frame`` is called after each processed frame (a progress bar, ``--tracks-jsonl``)
        and with no events for each frame of a source read ``every_frame`` that is not due
        (``Frame.due`` False: ``--annotate`` draws the latest boxes on it)."""
        consecutive = 0
        try:
            while not stop.is_set():
                frame = source.read(timeout=0.5)
                if frame is None:
                    if source.status().state in ("ended", "stopped", "failed"):
                        break
                    self.expire()
                    continue
                if not getattr(frame, "due", True):
                    if on_frame is not None:
                        on_frame(frame, [])
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

    def resume(self, visits: list[PastVisit]) -> None:
        """Continue the recent visits an earlier holder of this camera recorded
        (:meth:`VisitTracker.resume`), from the next processed frame on."""
        self._resume = list(visits)

    def between_visits(self) -> bool:
        """Whether nobody is being followed now (no track open, no visit waiting for its
        ``left``): when the camera can move to another node without cutting a visit."""
        return self.tracker.open_tracks() == 0 and self.visits.idle()

    # -- live view and status --------------------------------------------------------------------
    def _keep_latest(
        self, image: np.ndarray, tracked: list[tuple[int, Detection]], t: float, index: int
    ) -> None:
        boxes = []
        for track_id, det in sorted(tracked, key=lambda x: x[0]):
            state, subject_id, name = self.visits.label(track_id)
            boxes.append(TrackedBox(det.box, track_id, state, subject_id, name))
        with self._lock:
            self._latest = (image, boxes, t, index)

    def latest(self) -> tuple[np.ndarray, list[TrackedBox]] | None:
        """The latest processed frame (RGB, not a copy: do not modify it) and its tracked
        faces; None before the first frame."""
        with self._lock:
            latest = self._latest
        return None if latest is None else (latest[0], latest[1])

    def latest_tracks(self) -> dict[str, Any] | None:
        """The latest processed frame's record for ``--tracks-jsonl``: ``t`` (seconds from the
        source's start), ``frame`` (the decoded frame's 0-based index) and ``tracks`` (each
        face's ``track_id``, ``box``, ``name``, ``subject_id``, ``state``); None before the
        first frame."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        tracks = [
            {k: v for k, v in b.to_dict().items() if k not in ("label", "known")} for b in latest[1]
        ]
        return {"t": round(latest[2], 3), "frame": latest[3], "tracks": tracks}

    def latest_annotated(
        self, image: np.ndarray | None = None, *, names: bool = True
    ) -> np.ndarray | None:
        """The latest processed frame (RGB) with each tracked face's box, track id and name
        drawn (green: named, red: unknown, yellow: not decided yet); drawn now, on a copy.
        ``image``: draw the latest boxes on this frame instead (``watch --annotate`` draws
        every frame of a file, the processed ones' boxes on the frames between);
        ``names=False`` writes ``known`` instead of a name (the role matrix). None before the
        first frame."""
        latest = self.latest()
        if latest is None:
            return None
        return draw_tracks(latest[0] if image is None else image, latest[1], names=names)

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
        frames/s (over the latest 50 frames), ms per frame (moving average), faces seen, faces
        too small to identify (eyes closer than ``visits.min_eye_distance``), embeddings
        computed and the embedder's ms per frame, tracks open, tracks split by appearance,
        scene cuts, corrected decisions, visits started, events, sink errors, frames that
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
            "faces_too_small": self.small_faces,
            "embeddings": self.embeddings,
            "embed_ms": round(1000.0 * self._embed_s / max(self.frames, 1), 2),
            "tracks_open": self.tracker.open_tracks(),
            "tracks_split": self.visits.splits,
            "tracks_rejoined": self.visits.rejoined,
            "visits_resumed": self.resumed,
            "scene_cuts": self.scene.cuts,
            "corrections": self.visits.corrections,
            "visits": self.visits_started,
            "events": self.events,
            "sink_errors": self.sink_errors,
            "frame_errors": self.errors,
            "last_event": self._last_event,
        }
