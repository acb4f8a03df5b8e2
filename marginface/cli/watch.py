"""``marginface watch``: recognise the people passing one camera (or in one video file).

Each face is followed across frames and decided once per visit (``marginface.streams``): an
``arrived`` line when a track is decided, a ``left`` line when it ends. ``--events-jsonl``
appends one JSON object per finished track, flushed and synced to disk line by line, so a
killed run loses no finished visit; ``--record`` writes the visits to the gallery (events for
the attendance report, strangers for the review queue). A file is processed to its end (exit
0 and a summary); a live source (RTSP, MJPEG over HTTP, a webcam) runs until Ctrl-C.
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
from marginface.errors import ConfigError, DataError, GalleryError

if TYPE_CHECKING:
    from marginface.streams.visits import VisitEvent

__all__ = ["register", "watch"]


class _JsonlSink:
    """Appends each ``left`` event (a finished track) as one JSON line, flushed and fsynced
    at once: a SIGKILL loses no finished visit."""

    def __init__(self, path: Path) -> None:
        try:
            self.file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write --events-jsonl {path}: {exc.strerror}") from None
        self.lines = 0

    def __call__(self, event: VisitEvent) -> None:
        if event.kind != "left":
            return
        self.file.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.lines += 1

    def close(self) -> None:
        self.file.close()


class _Printer:
    """One line per event on stdout, and the visits counted for the summary."""

    def __init__(self) -> None:
        self.visits: dict[int, str | None] = {}  # visit id -> subject id

    def __call__(self, event: VisitEvent) -> None:
        who = event.name if event.subject_id is not None else "unknown"
        if event.kind == "arrived":
            self.visits[event.visit_id] = event.subject_id
            line = (
                f"arrived  {event.camera}  track {event.track_id}  visit {event.visit_id}  "
                f"{who}  score {event.score:.3f} (threshold {event.threshold:.3f})  "
                f"at {event.start_s:.1f} s"
            )
        else:
            self.visits.setdefault(event.visit_id, event.subject_id)
            line = (
                f"left     {event.camera}  track {event.track_id}  visit {event.visit_id}  "
                f"{who}  {event.start_s:.1f}-{event.end_s:.1f} s  "
                f"({event.end_s - event.start_s:.1f} s, {event.faces} faces)"
            )
        typer.echo(line)


def _settings(fps: float, min_faces: int | None, revisit: float | None, store_crops: bool) -> Any:
    """CameraSettings from the options; a bad value is one ConfigError line."""
    from pydantic import ValidationError

    from marginface.streams.camera import CameraSettings

    visits: dict[str, Any] = {}
    if min_faces is not None:
        visits["min_faces"] = min_faces
        visits["max_faces"] = max(min_faces, 5)
    if revisit is not None:
        visits["revisit_s"] = revisit
    names = {"fps": "--fps", "min_faces": "--min-faces", "revisit_s": "--revisit"}
    try:
        return CameraSettings.model_validate(
            {"fps": fps, "visits": visits, "store_crops": store_crops}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        key = names.get(str(err["loc"][-1]), ".".join(map(str, err["loc"])))
        raise ConfigError(f"{key}: {err['msg'].lower()}") from None


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
        None, "--events-jsonl", help="append one JSON object per finished track (visit) here"
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
    model: str = typer.Option(
        "default",
        "--model",
        "-m",
        help="embedding model: built-in name, model directory or .onnx file",
    ),
    store_crops: bool = typer.Option(
        False,
        "--store-crops",
        help="keep the best face crops of each track (with --record: strangers' crops for review)",
    ),
    record: bool = typer.Option(
        False,
        "--record",
        help="write each visit to the gallery: "
        "arrived/left events (the attendance report) and strangers "
        "to the review queue (/v1/unknowns)",
    ),
) -> None:
    """Recognise the people passing a camera: one line when a person arrives (is decided)
    and one when they leave; a video file is processed to its end."""
    settings = _settings(fps, min_faces, revisit, store_crops)
    # CLI: keeps marginface --help quick
    from marginface.gallery import Gallery, default_gallery_url
    from marginface.gallery.db import require_existing
    from marginface.streams.sources import open_source
    from marginface.urls import redact_url

    require_existing(db if db is not None else default_gallery_url())
    stream = open_source(source, fps=settings.fps)  # ConfigError / DataError at once
    printer, jsonl, gallery = _Printer(), None, None
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
            fpir=fpir,
            create=False,
        )
        if gallery.count_subjects() == 0:
            raise GalleryError(
                f"the gallery {redact_url(str(gallery.url))} has no subjects: enrol people first "
                "(marginface enroll NAME PHOTOS...)"
            )
        point = gallery.operating_point()  # GalleryError: a card without an impostor table
        if events_jsonl is not None:
            jsonl = _JsonlSink(events_jsonl)
        name = camera or (Path(source).stem if not stream.live else "camera")
        sinks: list[Any] = [printer] + ([jsonl] if jsonl is not None else [])
        if record:
            from marginface.streams.recorder import VisitRecorder

            sinks.insert(0, VisitRecorder(gallery, store_crops=store_crops))
        worker = CameraWorker(name, pipeline, gallery, settings, sinks=sinks, fpir=fpir)
        typer.echo(
            f"watching {stream.url} as {name!r}: {gallery.count_subjects()} subjects, "
            f"threshold {point.threshold:.3f}" + ("" if not stream.live else "; Ctrl-C to stop"),
            err=True,
        )
        started = time.monotonic()
        _run(worker, stream, source)
        elapsed = time.monotonic() - started
    finally:
        stream.close()
        if jsonl is not None:
            jsonl.close()
        if gallery is not None:
            gallery.close()
    status = stream.status()
    failed = status.state == "failed" or (worker.frames == 0 and status.last_error)
    if worker.frames or not failed:
        named = sum(1 for s in printer.visits.values() if s is not None)
        typer.echo(
            f"{len(printer.visits)} visits ({named} named, "
            f"{len(printer.visits) - named} unknown) in {worker.frames} frames, "
            f"{elapsed:.1f} s ({worker.frames / max(elapsed, 1e-9):.1f} frames/s)"
        )
    if failed:
        why = status.last_error or "no frame decoded"
        raise DataError(why if stream.url in why else f"cannot read {stream.url}: {why}")


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


def _run(worker: Any, stream: Any, source: str) -> None:
    """Run the worker until the file ends, or until Ctrl-C / SIGTERM (live sources: the
    normal way to stop), showing how far a file has been watched (:class:`_FileProgress`)."""
    stop = threading.Event()
    handlers: dict[signal.Signals, Any] = {}
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda *_: stop.set())
    bar = None if stream.live else _FileProgress(Path(source).name, _duration_s(source))
    try:
        worker.run(stream, stop, on_frame=bar)
    finally:
        if bar is not None:
            bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add ``watch`` to the root application."""
    app.command("watch")(watch)
