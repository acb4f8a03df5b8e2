"""``marginface watch``: recognise the people passing one camera (or in one video file).

Each face is followed across frames, verified to stay one person, and its visit decided as the
evidence comes (``marginface.streams``): a line when a person ``arrived``, when an unknown
visit is ``identified`` or a named one ``corrected``, and when they ``left``.

* ``--events-jsonl FILE`` appends one JSON object per event, flushed and synced line by line,
  so a killed run loses no event it announced;
* ``--tracks-jsonl FILE`` writes one JSON object per processed frame: every tracked face's
  box, track, state and the name it carries now;
* ``--annotate OUT.mp4`` writes the video with each face's box, track and name (every frame of
  a file; the processed frames of a live source);
* ``--record`` writes the visits to the gallery (events for the attendance report, strangers
  and their best crops for the review queue).

A gallery with no one enrolled counts strangers (every visit unknown, grouped as visitors with
``--record``); a ``--db`` that does not exist yet is created, as ``enroll`` does. A file is
processed to its end (exit 0 and a summary); a live source (RTSP, MJPEG over HTTP, a webcam)
runs until Ctrl-C. Every camera setting of the service is an option here, or ``--set
key=value`` (``--set visits.min_faces=2``) over ``--settings FILE`` (YAML), the service's
camera ``settings`` (docs/streams.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from marginface.cli.gallery_access import DB_OPTION
from marginface.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np

    from marginface.streams.camera import CameraWorker
    from marginface.streams.sources import Frame, Source
    from marginface.streams.visits import VisitEvent

__all__ = ["register", "watch"]


class _JsonlFile:
    """A JSON-lines file appended to, each line flushed and fsynced at once (``--events-jsonl``
    for events: a SIGKILL loses none announced) or flushed only (``--tracks-jsonl``)."""

    def __init__(self, path: Path, option: str, *, sync: bool, append: bool = True) -> None:
        try:
            self.file: IO[str] = path.open("a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {option} {path}: {exc.strerror}") from None
        self.sync = sync
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.sync:
            os.fsync(self.file.fileno())
        self.lines += 1

    def __call__(self, event: VisitEvent) -> None:
        self.write(event.to_dict())

    def close(self) -> None:
        self.file.close()


class _AnnotatedVideo:
    """``--annotate``: the frames with each tracked face's box, track and name, H.264 through
    PyAV, one output frame per frame given (a file's every frame)."""

    def __init__(self, path: Path, fps: float) -> None:
        import av  # CLI: keeps marginface --help quick

        self.path = path
        self.fps = fps
        try:
            self.container: Any = av.open(str(path), mode="w")
        except (OSError, av.FFmpegError) as exc:
            raise ConfigError(f"cannot write --annotate {path}: {exc}") from None
        self.stream: Any = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        from fractions import Fraction

        import av

        if self.stream is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.height, self.stream.width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "23", "preset": "veryfast"}
        h, w = self.stream.height, self.stream.width
        frame = av.VideoFrame.from_ndarray(image[:h, :w], format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


class _Printer:
    """One line per event on stdout, and each visit's latest decision for the summary."""

    def __init__(self) -> None:
        self.visits: dict[str, str | None] = {}  # visit uid -> subject id (its latest)

    def __call__(self, event: VisitEvent) -> None:
        who = event.name if event.subject_id is not None else "unknown"
        head = f"{event.kind:<10} {event.camera}  track {event.track_id}  visit {event.visit_id}"
        if event.kind == "left":
            self.visits.setdefault(event.uid, event.subject_id)
            line = (
                f"{head}  {who}  {event.start_s:.1f}-{event.end_s:.1f} s  "
                f"({event.end_s - event.start_s:.1f} s, {event.faces} faces)"
            )
        else:
            self.visits[event.uid] = event.subject_id
            was = ""
            if event.kind == "corrected":
                was = f"  (was {event.previous_name or 'unknown'})"
            line = (
                f"{head}  {who}{was}  score {event.score:.3f} (threshold {event.threshold:.3f})"
                f"  at {event.end_s:.1f} s"
            )
        typer.echo(line)


#: Options that set camera settings: option name -> the settings' dotted key.
_OPTION_KEYS = {
    "--fps": "fps",
    "--min-faces": "visits.min_faces",
    "--revisit": "visits.revisit_s",
    "--min-face-size": "min_face_size",
    "--min-eye-distance": "visits.min_eye_distance",
    "--detect-size": "detect_max_side",
    "--detect-upscale": "detect_upscale",
    "--score-threshold": "score_threshold",
    "--track-buffer": "track_buffer_s",
    "--cut-threshold": "cut_threshold",
}


def _settings(path: Path | None, overrides: list[str], options: dict[str, Any]) -> Any:
    """CameraSettings from ``--settings`` (YAML), ``--set`` and the options (options win); a
    bad value is one ConfigError line naming the option or key."""
    from pydantic import ValidationError

    from marginface.config import apply_overrides, format_validation_error, read_yaml_mapping
    from marginface.streams.camera import CameraSettings

    data = read_yaml_mapping(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    given = {key: value for key, value in options.items() if value is not None}
    if "visits.min_faces" in given:  # a track keeps at least as many faces as it decides on
        data.setdefault("visits", {}).setdefault("max_faces", max(5, given["visits.min_faces"]))
    data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in given.items()])
    names = {key: option for option, key in _OPTION_KEYS.items()}
    names["visits.max_faces"] = "--min-faces"
    try:
        return CameraSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, names)) from None


def _duration_s(path: str) -> float | None:
    """A video file's duration in seconds (for the progress bar), None when unknown."""
    try:
        import av

        with av.open(path) as container:
            if container.duration:
                return float(container.duration) / 1_000_000
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # only the progress bar's total: never an error
        return None
    return None


def watch(
    source: str = typer.Argument(
        ...,
        help="a video file, rtsp://..., http(s)://... (MJPEG), "
        "or a webcam (0, /dev/video0, webcam:0)",
    ),
    db: str | None = DB_OPTION,
    camera: str | None = typer.Option(
        None, "--camera", help="camera name in events (default: the file's name or 'camera')"
    ),
    events_jsonl: Path | None = typer.Option(
        None, "--events-jsonl", help="append one JSON object per event (arrived ... left) here"
    ),
    tracks_jsonl: Path | None = typer.Option(
        None,
        "--tracks-jsonl",
        help="write one JSON object per processed frame: each face's box, track and name now",
    ),
    annotate: Path | None = typer.Option(
        None,
        "--annotate",
        help="write the video (.mp4) with each face's box, track and name on every frame",
    ),
    fps: float = typer.Option(5.0, "--fps", help="frames processed per second"),
    fpir: str | None = typer.Option(
        None,
        "--fpir",
        help="identification's target false positive identification rate (default: the gallery's)",
    ),
    min_faces: int | None = typer.Option(
        None, "--min-faces", help="faces embedded before a track is decided (3)"
    ),
    revisit: float | None = typer.Option(
        None,
        "--revisit",
        help="seconds within which a person back on camera continues the same visit (60)",
    ),
    min_face_size: float | None = typer.Option(
        None, "--min-face-size", help="smallest face tracked and counted, box side in px (10)"
    ),
    min_eye_distance: float | None = typer.Option(
        None, "--min-eye-distance", help="smallest face identified: eyes this many px apart (12)"
    ),
    detect_size: int | None = typer.Option(
        None, "--detect-size", help="faces are detected on the frame scaled to this side (640)"
    ),
    detect_upscale: float | None = typer.Option(
        None,
        "--detect-upscale",
        help="a smaller frame is enlarged for detection at most this many times (2)",
    ),
    score_threshold: float | None = typer.Option(
        None, "--score-threshold", help="detection score that starts a track (0.6)"
    ),
    track_buffer: float | None = typer.Option(
        None, "--track-buffer", help="seconds a lost face's track survives (1)"
    ),
    cut_threshold: float | None = typer.Option(
        None, "--cut-threshold", help="shot-change score that ends every track (6; 0: never)"
    ),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="camera settings (YAML), as the service's camera settings"
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="a camera setting, key=value (e.g. visits.min_faces=2); repeatable"
    ),
    model: str = typer.Option(
        "default",
        "--model",
        "-m",
        help="embedding model: built-in name, model directory or .onnx file",
    ),
    record: bool = typer.Option(
        False,
        "--record",
        help="write each visit to the gallery: its events (the attendance report) and "
        "strangers to the review queue (/v1/unknowns)",
    ),
    review_crops: bool = typer.Option(
        True,
        "--review-crops/--no-review-crops",
        help="with --record: keep strangers' best face crops for the review queue",
    ),
) -> None:
    """Recognise the people passing a camera: a line when a person arrives, is identified
    or corrected, and leaves; a video file is processed to its end."""
    values = {
        "--fps": fps,
        "--min-faces": min_faces,
        "--revisit": revisit,
        "--min-face-size": min_face_size,
        "--min-eye-distance": min_eye_distance,
        "--detect-size": detect_size,
        "--detect-upscale": detect_upscale,
        "--score-threshold": score_threshold,
        "--track-buffer": track_buffer,
        "--cut-threshold": cut_threshold,
    }
    settings = _settings(
        settings_file, list(overrides), {_OPTION_KEYS[k]: v for k, v in values.items()}
    )
    # CLI: keeps marginface --help quick
    from marginface.decision import IdentificationPolicy
    from marginface.gallery import Gallery
    from marginface.streams.sources import open_source

    policy = IdentificationPolicy(fpir=fpir)  # GalleryError for a bad --fpir, at once
    stream = open_source(source, fps=settings.fps, every_frame=annotate is not None)
    printer = _Printer()
    files: list[Any] = []
    gallery = None
    try:
        from marginface.embed import Pipeline
        from marginface.streams.camera import CameraWorker

        pipeline = Pipeline.from_names(
            model=model, detector="yunet", detector_options={"max_side": settings.detect_max_side}
        )
        gallery = Gallery.open(
            db,
            model_name=pipeline.embedder.name,
            dim=pipeline.embedder.embedding_dim,
            card=pipeline.embedder.card,
            policy=policy,
        )
        point = gallery.operating_point()  # GalleryError: a card without an impostor table
        name = camera or (Path(source).stem if not stream.live else "camera")
        sinks: list[Any] = [printer]
        if events_jsonl is not None:
            files.append(_JsonlFile(events_jsonl, "--events-jsonl", sync=True))
            sinks.append(files[-1])
        tracks = video = None
        if tracks_jsonl is not None:
            tracks = _JsonlFile(tracks_jsonl, "--tracks-jsonl", sync=False, append=False)
            files.append(tracks)
        if record:
            from marginface.streams.recorder import VisitRecorder

            sinks.insert(0, VisitRecorder(gallery, store_crops=review_crops))
        worker = CameraWorker(name, pipeline, gallery, settings, sinks=sinks, policy=policy)
        if annotate is not None:
            rate = stream.status().stream_fps if not stream.live else None
            video = _AnnotatedVideo(annotate, _rate(stream, rate or settings.fps))
            files.append(video)
        subjects = gallery.subjects.count()
        typer.echo(
            f"watching {stream.url} as {name!r}: {subjects} subjects"
            + (f", threshold {point.threshold:.3f}" if subjects else " (counting strangers)")
            + ("" if not stream.live else "; Ctrl-C to stop"),
            err=True,
        )
        started = time.monotonic()
        _run(worker, stream, source, tracks, video)
        elapsed = time.monotonic() - started
    finally:
        stream.close()
        for f in files:
            f.close()
        if gallery is not None:
            gallery.close()
    status = stream.status()
    failed = status.state == "failed" or (worker.frames == 0 and status.last_error)
    if worker.frames or not failed:
        _summary(printer, worker, elapsed)
    if failed:
        why = status.last_error or "no frame decoded"
        raise DataError(why if stream.url in why else f"cannot read {stream.url}: {why}")


def _rate(stream: Source, fallback: float) -> float:
    """The file's frame rate, once its reader has opened it (for ``--annotate``)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        status = stream.status()
        if status.stream_fps or status.state in ("ended", "failed", "stopped"):
            break
        time.sleep(0.01)
    return float(stream.status().stream_fps or fallback)


def _summary(printer: _Printer, worker: CameraWorker, elapsed: float) -> None:
    named = sum(1 for s in printer.visits.values() if s is not None)
    status = worker.status()
    typer.echo(
        f"{len(printer.visits)} visits ({named} named, {len(printer.visits) - named} unknown) "
        f"in {worker.frames} frames, {elapsed:.1f} s "
        f"({worker.frames / max(elapsed, 1e-9):.1f} frames/s)"
    )
    small = status["faces_too_small"]
    if small:
        eyes = worker.settings.visits.min_eye_distance
        typer.echo(
            f"{small} faces too small to identify (eyes closer than {eyes:g} px): counted, "
            "not named; a closer camera or --detect-upscale helps"
        )
    if status["tracks_split"] or status["scene_cuts"] or status["corrections"]:
        typer.echo(
            f"{status['tracks_split']} tracks split by appearance, {status['scene_cuts']} "
            f"scene cuts, {status['corrections']} decisions corrected"
        )


class _FileProgress:
    """How far a video file has been watched, on stderr: a bar on a terminal, else a line at
    every tenth of the file (every 30 s of video when its length is unknown), for logs and
    pipes. The bar's size is the terminal's, or 80x24 for a terminal that reports none
    (tqdm's own measure then hid the bar: the promised progress bar never showed)."""

    def __init__(self, name: str, total: float | None) -> None:
        self.name = name
        self.total = total if total and total > 0 else None
        self.bar: Any = None
        self.next_line = 0.0
        if sys.stderr.isatty():
            from tqdm.auto import tqdm  # CLI: keeps marginface --help quick

            size = shutil.get_terminal_size()  # 80x24 where the terminal says 0
            self.bar = tqdm(
                total=round(self.total, 1) if self.total else None,
                unit="s",
                desc="watching",
                ncols=size.columns,
                nrows=size.lines,
                file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s [{elapsed}<{remaining}]",
            )
        else:
            self.next_line = self.total / 10 if self.total else 30.0

    def __call__(self, frame: Any, events: list[Any]) -> None:
        t = float(frame.t)
        if self.bar is not None:
            self.bar.n = round(t, 1)
            self.bar.refresh()
        elif t >= self.next_line:
            if self.total:
                share = min(100, round(100 * t / self.total))
                line = f"watched {t:.1f} of {self.total:.1f} s of {self.name} ({share} %)"
                self.next_line += self.total / 10
            else:
                line = f"watched {t:.0f} s of {self.name}"
                self.next_line += 30.0
            typer.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(
    worker: CameraWorker,
    stream: Source,
    source: str,
    tracks: _JsonlFile | None,
    video: _AnnotatedVideo | None,
) -> None:
    """Run the worker until the file ends, or until Ctrl-C / SIGTERM (live sources: the
    normal way to stop), showing how far a file has been watched (:class:`_FileProgress`);
    ``--tracks-jsonl`` and ``--annotate`` are written as the frames come."""
    stop = threading.Event()
    handlers: dict[signal.Signals, Any] = {}
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: stop.set())
    bar = None if stream.live else _FileProgress(Path(source).name, _duration_s(source))
    try:

        def on_frame(frame: Frame, events: list[VisitEvent]) -> None:
            if frame.due and tracks is not None:
                record = worker.latest_tracks()
                if record is not None:
                    tracks.write(record)
            if video is not None:
                drawn = worker.latest_annotated(frame.image)
                video.write(drawn if drawn is not None else frame.image)
            if bar is not None:
                bar(frame, events)

        worker.run(stream, stop, on_frame=on_frame)
    finally:
        if bar is not None:
            bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add ``watch`` to the root application."""
    app.command("watch")(watch)
