"""Video sources: files, webcams, RTSP, HTTP MJPEG and pushed snapshots, as RGB frames.

A :class:`Source` decodes its input on one background thread and hands the consumer (a camera
worker) the frames to process, at a processing rate ``fps`` chosen separately from the
stream's own frame rate:

* **files** are read in full: every frame spaced at least ``1/fps`` apart in presentation time
  is delivered, none is dropped (the reader waits for the consumer), and :meth:`Source.read`
  returns None at the end (state ``"ended"``). ``Frame.t`` is the presentation time;
* **live sources** (webcams, RTSP, MJPEG, pushed snapshots, or a file opened with
  ``live=True``) are always processed at their **latest** frame: the reader keeps decoding
  at the stream's rate and holds one frame for the consumer; a newer frame replaces one the
  consumer has not taken yet (counted in ``frames_dropped``), so a slow consumer skips frames
  and its lag never grows. ``Frame.t`` is seconds since the source was opened;
* a live source that fails (cannot connect, connection lost, the stream ends) **reconnects**
  with exponential backoff (``backoff_initial`` 0.5 s doubling to ``backoff_max`` 30 s, back
  to the start after a good frame), and :meth:`Source.status` says why in ``last_error``;
  a corrupt packet is skipped and counted in ``frames_corrupt``. A file that cannot be
  decoded is ``"failed"`` (no retry). Every FFmpeg wait is bounded (``open_timeout``,
  ``read_timeout``) and :meth:`Source.close` returns within about a second even while the
  reader is blocked in a connect or a read.

Only delivered frames are converted to RGB numpy arrays: converting a 1280x720 frame costs
about a third of decoding it (0.7 ms against 2.3 ms here), and a camera processed at 5 of its
25 frames/s would otherwise convert five times the frames it uses. For live sources the
conversion happens in :meth:`Source.read`, so frames dropped under overload are never
converted. The processing rate is kept on the frames *offered* to the consumer, not on those
it took: under overload, timing from the last delivered frame would make every frame due
(and converted). File frames are at least ``1/fps`` apart in presentation time; live frames
follow a ``1/fps`` grid, so that a 25 frames/s camera processed at 10 frames/s gives 10
frames/s (not 8.3, every third frame) whatever the arrival jitter.

Why PyAV rather than OpenCV's FFmpeg backend (``bench/decode.py``: 250 frames of 1280x720
H.264 at 25 frames/s, ``testsrc2`` encoded by libx264, on the 2 cores here; CPU ms per frame
and frames/s of one stream, PyAV 18.1 vs OpenCV 5.0):

* decode only, one thread: PyAV 2.26 ms (442/s), OpenCV ``grab()`` 1.90 ms (518/s);
* decode, one frame in five converted (a camera processed at 5 of its 25 frames/s):
  PyAV 2.50 ms (403/s), OpenCV 2.21 ms (451/s);
* decode and convert every frame: PyAV 2.97 ms (348/s, RGB), OpenCV ``read()`` 3.15 ms
  (286/s, BGR);
* decode only, FFmpeg's threads: PyAV 2.28 ms (697/s), OpenCV 2.38 ms (401/s);
* a file with garbage written over 64 KiB blocks of its second half: PyAV decoded 230 of the
  250 frames and raised 20 ``InvalidDataError`` ("Invalid data found when processing input"),
  one per bad packet, going on after each; OpenCV's ``read()`` returned False after 122 frames
  (the stream ends there for the caller) with no reason;
* a server that accepts and never answers, 2 s timeouts: both give up after 2.0 s; PyAV raises
  ``ExitError``, OpenCV's ``isOpened()`` is False with no reason.

Decoding costs the same in both (the same libavcodec); 8 cameras at 25 frames/s need about
0.5 of a core to decode either way. PyAV wins on everything around it: FFmpeg options are
given **per open** (``rtsp_transport``, ``timeout``, ``rw_timeout``, v4l2's ``video_size``),
whereas OpenCV takes only a few per open (timeouts, threads) and reads every other FFmpeg
option from the process-wide ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` variable, so two cameras with
different transports would race on the environment; PyAV raises an
exception per bad packet and keeps going (OpenCV stopped at the first corrupt stretch of the
file, without a reason to show in a status); errors carry FFmpeg's message ("Connection
refused", "Invalid data found") for ``last_error``; and demuxing and decoding are separate
steps, so a frame can be decoded without being converted. Live decoders run one thread each
(FFmpeg's frame threads add a frame of latency per thread and oversubscribe 2 cores shared by
8 cameras); files use FFmpeg's automatic threading.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
from pydantic import Field, ValidationError

from marginface.config import StrictModel, format_validation_error
from marginface.errors import ConfigError, DataError, ImageError
from marginface.gallery.types import redact_url

__all__ = ["Frame", "Source", "SourceOptions", "SourceStatus", "open_source"]

State = Literal["connecting", "running", "reconnecting", "ended", "stopped", "failed"]
Kind = Literal["file", "webcam", "rtsp", "mjpeg", "push"]

_FINAL_STATES = ("ended", "stopped", "failed")
_RATE_WINDOW_S = 5.0  # read_fps is measured over the last few seconds
_MAX_BAD_PACKETS = 100  # consecutive undecodable packets before a source counts as broken
_CLOSE_WAIT_S = 1.0  # how long close() waits for the reader thread
_EPS = 1e-3  # tolerance on the 1/fps spacing (timestamps are rounded to the time base)
_SCHEMES = (
    "file path",
    "file://",
    "rtsp://",
    "rtsps://",
    "http(s):// (MJPEG)",
    "webcam:N",
    "/dev/videoN",
    "push:",
)
_source_ids = itertools.count(1)


@dataclass(frozen=True)
class Frame:
    """One decoded frame handed to the consumer.

    ``image`` is RGB uint8 (H, W, 3). ``t`` is seconds from the start of the source: the
    presentation time for files, seconds since the source was opened (monotonic clock) for live
    sources. ``wall`` is epoch seconds: when it was decoded (live), or the run's start plus
    ``t`` (files, so that a file's events get times as if it were watched live). ``index`` is
    the number of the decoded frame (0-based, every decoded frame counts, delivered or not).
    ``due``: whether the frame is one of those to process at the source's ``fps`` (always,
    unless the source delivers every frame of a file: ``open_source(..., every_frame=True)``,
    what ``watch --annotate`` draws on).
    """

    image: np.ndarray
    t: float
    wall: float
    index: int
    due: bool = True


@dataclass
class SourceStatus:
    """A snapshot of a source's health, for status pages and metrics.

    ``frames_read`` counts decoded frames, ``frames_delivered`` those :meth:`Source.read`
    returned, ``frames_dropped`` live frames replaced before the consumer took them,
    ``frames_corrupt`` packets or pushed images that could not be decoded, ``reconnects`` the
    reconnection attempts. ``last_error`` is the latest failure, one line (kept after a
    recovery, so that a flapping camera shows why). ``read_fps`` is frames decoded per second
    over the last few seconds; ``lag_s`` how old the latest delivered frame was when it was
    delivered.
    """

    state: State = "connecting"
    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    reconnects: int = 0
    last_error: str | None = None
    read_fps: float = 0.0
    width: int | None = None
    height: int | None = None
    stream_fps: float | None = None
    lag_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict."""
        return asdict(self)


class SourceOptions(StrictModel):
    """Per-source options (the ``**options`` of :func:`open_source`)."""

    transport: Literal["tcp", "udp"] | None = Field(
        None, description="RTSP lower transport (default tcp; also ?transport= in the URL)"
    )
    open_timeout: float = Field(10.0, gt=0, le=600, description="seconds to connect and probe")
    read_timeout: float = Field(10.0, gt=0, le=600, description="seconds without data = lost")
    backoff_initial: float = Field(0.5, gt=0, le=600, description="first reconnection delay")
    backoff_max: float = Field(30.0, gt=0, le=3600, description="longest reconnection delay")
    threads: int | None = Field(
        None, ge=0, le=64, description="decoder threads (0 auto; default: 1 live, auto files)"
    )
    loop: bool = Field(False, description="a file opened live restarts at its end")
    every_frame: bool = Field(
        False,
        description="a file (not live) delivers every decoded frame, those due at fps marked "
        "Frame.due (watch --annotate draws every frame)",
    )
    format: str | None = Field(
        None, description="FFmpeg demuxer (default: mpjpeg for http, v4l2 for webcams)"
    )
    ffmpeg: dict[str, str] = Field(
        default_factory=dict, description="extra FFmpeg options, e.g. video_size for v4l2"
    )
    name: str | None = Field(None, description="shown in the reader thread's name")
    max_push_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest pushed image")


@dataclass
class _Pending:
    """A frame waiting in the slot: decoded, converted only when delivered (live)."""

    frame: Any  # av.VideoFrame, or an RGB ndarray when already converted
    t: float
    wall: float
    index: int
    decoded_at: float  # monotonic
    due: bool = True


class _ReadError(Exception):
    """Ends one connection of the reader: ``message`` goes to last_error."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.final = final


def _describe(exc: BaseException) -> str:
    """FFmpeg's reason for ``exc``, one line, without the URL PyAV appends."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if type(exc).__name__ == "ExitError":
        reason = "timed out"
    return " ".join(str(reason).split())


def _import_av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - av is in the streams extra
        raise ConfigError("video sources need PyAV: pip install 'marginface[streams]'") from None
    return av


def _parse(url: str | int | Path) -> tuple[Kind, str]:
    """The kind of a source URL and the location FFmpeg opens."""
    if isinstance(url, bool):
        raise ConfigError(f"not a video source: {url!r}")
    if isinstance(url, int):
        if url < 0:
            raise ConfigError(f"webcam index must be >= 0, got {url}")
        return "webcam", f"/dev/video{url}"
    text = str(url).strip()
    if not text:
        raise ConfigError("empty video source URL")
    if text in ("push", "push:"):
        return "push", "push:"
    if text.isdigit():
        return "webcam", f"/dev/video{int(text)}"
    match = re.fullmatch(r"webcam:(\d+)", text)
    if match:
        return "webcam", f"/dev/video{int(match.group(1))}"
    if re.fullmatch(r"/dev/video\d+", text):
        return "webcam", text
    scheme = urlsplit(text).scheme.lower() if re.match(r"^[A-Za-z][\w+.-]*:", text) else ""
    if scheme in ("rtsp", "rtsps"):
        return "rtsp", text
    if scheme in ("http", "https"):
        return "mjpeg", text
    if scheme == "file":
        return "file", unquote(urlsplit(text).path)
    if scheme and not Path(text).exists():
        raise ConfigError(
            f"unsupported video source scheme {scheme + ':'!r} in "
            f"{redact_url(text)!r}; use one of: {', '.join(_SCHEMES)}"
        )
    return "file", text


def _rtsp_transport(url: str, option: str | None) -> tuple[str, str]:
    """The RTSP URL without its ``transport`` query parameter, and the transport to use."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [value.lower() for key, value in query if key == "transport"]
    for value in from_url:
        if value not in ("tcp", "udp"):
            raise ConfigError(
                f"RTSP transport must be tcp or udp, got {value!r} in {redact_url(url)!r}"
            )
    if option and from_url and from_url[-1] != option:
        raise ConfigError(
            f"RTSP transport {option!r} disagrees with ?transport="
            f"{from_url[-1]} in {redact_url(url)!r}"
        )
    transport = option or (from_url[-1] if from_url else "tcp")
    rest = [(key, value) for key, value in query if key != "transport"]
    return urlunsplit(parts._replace(query=urlencode(rest))), transport


def open_source(
    url: str | int | Path, *, fps: float | None = 5.0, live: bool | None = None, **options: Any
) -> Source:
    """Open a video source and start reading it in the background.

    ``url``: a file path or ``file://`` URL, a webcam (an int, ``"N"``, ``"/dev/videoN"`` or
    ``"webcam:N"``), ``rtsp://`` / ``rtsps://`` (``?transport=udp|tcp`` or the ``transport``
    option; TCP by default), ``http(s)://`` serving multipart MJPEG, or ``"push:"`` (frames
    given with :meth:`Source.push`). ``fps``: frames to process per second (None: every frame).
    ``live``: None means files are not live and everything else is. ``options``: see
    :class:`SourceOptions`.

    Raises ConfigError for a wrong scheme or option and DataError for a missing file. An
    unreachable URL does not raise: the source reconnects and its status says why.
    """
    if fps is not None and (not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0):
        raise ConfigError(f"fps must be a positive number or None, got {fps!r}")
    try:
        opts = SourceOptions(**options)
    except ValidationError as exc:
        raise ConfigError(f"invalid source options: {format_validation_error(exc)}") from None
    if opts.backoff_max < opts.backoff_initial:
        raise ConfigError("backoff_max must be >= backoff_initial")
    kind, location = _parse(url)
    if kind == "file":
        path = Path(location).expanduser()
        if not path.exists():
            raise DataError(f"video file not found: {path}")
        if not path.is_file():
            raise DataError(f"not a video file: {path} is a directory or a device")
        location = str(path)
    transport = None
    if kind == "rtsp":
        location, transport = _rtsp_transport(location, opts.transport)
    elif opts.transport is not None:
        raise ConfigError(f"the transport option is for rtsp:// sources, not {kind}")
    is_live = kind != "file" if live is None else bool(live)
    if kind == "push" and not is_live:
        raise ConfigError("a push: source is always live")
    if kind != "push":
        _import_av()
    source = Source(kind, location, fps=fps, live=is_live, options=opts, transport=transport)
    source._start()
    return source


class Source:
    """A running video source; made by :func:`open_source`. Thread-safe."""

    def __init__(
        self,
        kind: Kind,
        location: str,
        *,
        fps: float | None,
        live: bool,
        options: SourceOptions,
        transport: str | None = None,
    ) -> None:
        self.kind: Kind = kind
        self.url = redact_url(location)  # for messages and statuses
        self.live = live
        self.fps = fps
        self._location = location
        self._options = options
        self._transport = transport
        self._period = 0.0 if fps is None else 1.0 / fps
        self._every_frame = options.every_frame and not live
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._status = SourceStatus()
        self._slot: _Pending | None = None
        self._next_due: float | None = None  # the time from which a frame is due
        self._read_times: collections.deque[float] = collections.deque(maxlen=2048)
        self._opened_mono = time.monotonic()
        self._opened_wall = time.time()
        self._thread: threading.Thread | None = None
        self._id = next(_source_ids)

    # -- consumer side -------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame to process, or None.

        Files: the next frame (>= 1/fps after the previous one), None at the end or after a
        failure. Live: the latest frame not yet delivered, waiting up to ``timeout`` seconds
        (None: until one comes or the source stops); None on timeout or once closed.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._slot is None:
                if self._status.state in _FINAL_STATES:
                    return None
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            pending, self._slot = self._slot, None
            self._cond.notify_all()
        image = pending.frame
        if not isinstance(image, np.ndarray):
            image = image.to_ndarray(format="rgb24")
        lag = max(0.0, time.monotonic() - pending.decoded_at)
        with self._cond:
            self._status.frames_delivered += 1
            self._status.lag_s = lag
        return Frame(
            image=image, t=pending.t, wall=pending.wall, index=pending.index, due=pending.due
        )

    def status(self) -> SourceStatus:
        """A snapshot of the source's state and counters."""
        now = time.monotonic()
        with self._cond:
            snap = SourceStatus(**asdict(self._status))
            times = [t for t in self._read_times if t >= now - _RATE_WINDOW_S]
        span = min(_RATE_WINDOW_S, now - self._opened_mono)
        snap.read_fps = round(len(times) / span, 2) if times and span > 0 else 0.0
        if snap.lag_s is not None:
            snap.lag_s = round(snap.lag_s, 4)
        return snap

    def push(self, data: bytes, t: float | None = None) -> None:
        """Give a push source one JPEG or PNG image (``t``: seconds since the source opened).

        Raises ImageError (and counts the image as corrupt) when ``data`` is not a decodable
        image, ConfigError when this is not a push source or it is closed.
        """
        if self.kind != "push":
            raise ConfigError(f"push() is only for push: sources, not {self.kind}")
        if self._stop.is_set():
            raise ConfigError("the source is closed")
        import cv2

        image = None
        if 0 < len(data) <= self._options.max_push_bytes:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None and bgr.ndim == 3 and bgr.size:
                image = np.ascontiguousarray(bgr[:, :, ::-1])
        if image is None:
            with self._cond:
                self._status.frames_corrupt += 1
            if len(data) > self._options.max_push_bytes:
                raise ImageError(
                    f"pushed image is too large ({len(data)} bytes, at most "
                    f"{self._options.max_push_bytes})"
                )
            raise ImageError(f"pushed data is not a JPEG or PNG image ({len(data)} bytes)")
        now = time.monotonic()
        t = now - self._opened_mono if t is None else float(t)
        with self._cond:
            self._status.state = "running"
            self._status.height, self._status.width = image.shape[:2]
        self._offer(image, t, time.time(), now)

    def close(self) -> None:
        """Stop reading; returns within about a second even if FFmpeg is blocked."""
        self._stop.set()
        with self._cond:
            if self._status.state not in ("ended", "failed"):
                self._status.state = "stopped"
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_WAIT_S)  # a reader blocked in FFmpeg exits at its timeout

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Source({self.kind}, {self.url!r}, state={self._status.state})"

    # -- reader side ---------------------------------------------------------------------

    def _start(self) -> None:
        if self.kind == "push":
            return
        name = f"marginface-source-{self._options.name or self.kind}-{self._id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _set(self, **fields: Any) -> None:
        with self._cond:
            if self._status.state == "stopped" and fields.get("state") not in (None, "stopped"):
                fields.pop("state")
            for key, value in fields.items():
                setattr(self._status, key, value)
            self._cond.notify_all()

    def _run(self) -> None:
        """The reader thread: connect, decode, reconnect with backoff, until closed."""
        delay = self._options.backoff_initial
        retry = False  # the next open is a reconnection (not the first, nor a file's loop)
        while not self._stop.is_set():
            if retry:
                with self._cond:
                    self._status.reconnects += 1
            retry = True
            try:
                got_frames = self._read_once()
            except _ReadError as failure:
                got_frames = False
                if self._stop.is_set():
                    break
                if not self.live or failure.final:
                    self._set(state="failed", last_error=failure.message)
                    return
                self._set(state="reconnecting", last_error=failure.message)
            except Exception as exc:  # never let the thread die silently
                if self._stop.is_set():
                    break
                message = f"{self.url}: {type(exc).__name__}: {_describe(exc)}"
                if not self.live:
                    self._set(state="failed", last_error=message)
                    return
                self._set(state="reconnecting", last_error=message)
                got_frames = False
            else:
                if self._stop.is_set():
                    break
                if not self.live or (self.kind == "file" and not self._options.loop):
                    self._set(state="ended")
                    return
                if self.kind == "file":  # a live file that loops: restart at once
                    delay, retry = self._options.backoff_initial, False
                    continue
                self._set(state="reconnecting", last_error=f"{self.url}: the stream ended")
            if got_frames:
                delay = self._options.backoff_initial
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._options.backoff_max)

    def _ffmpeg_options(self) -> tuple[str | None, dict[str, str]]:
        opts = self._options
        fmt = opts.format
        ffopts: dict[str, str] = {}
        micro = str(int(opts.read_timeout * 1_000_000))
        if self.kind == "rtsp":
            ffopts.update(rtsp_transport=self._transport or "tcp", timeout=micro)
        elif self.kind == "mjpeg":
            fmt = fmt or "mpjpeg"
            ffopts.update(rw_timeout=micro)
        elif self.kind == "webcam":
            fmt = fmt or "v4l2"
        ffopts.update(opts.ffmpeg)
        return fmt, ffopts

    def _read_once(self) -> bool:
        """One connection: open, decode until the end; True when it gave frames."""
        av = _import_av()
        fmt, ffopts = self._ffmpeg_options()
        verb = "open" if self.kind == "file" else "connect to"
        try:
            container = av.open(
                self._location,
                mode="r",
                format=fmt,
                options=ffopts,
                timeout=(self._options.open_timeout, self._options.read_timeout),
            )
        except av.FFmpegError as exc:
            hint = " (not a video file?)" if isinstance(exc, av.InvalidDataError) else ""
            raise _ReadError(f"cannot {verb} {self.url}: {_describe(exc)}{hint}") from None
        except OSError as exc:
            raise _ReadError(f"cannot {verb} {self.url}: {_describe(exc)}") from None
        try:
            return self._decode(av, container)
        finally:
            with contextlib.suppress(Exception):
                container.close()

    def _decode(self, av: Any, container: Any) -> bool:
        if not container.streams.video:
            raise _ReadError(f"{self.url}: no video stream", final=self.kind == "file")
        stream = container.streams.video[0]
        threads = self._options.threads
        if threads is None:
            threads = 1 if self.live else 0
        try:
            ctx = stream.codec_context
            ctx.thread_type = "AUTO" if threads != 1 else "NONE"
            ctx.thread_count = threads
        except Exception as exc:
            raise _ReadError(
                f"{self.url}: unsupported codec ({_describe(exc)})", final=self.kind == "file"
            ) from None
        rate = stream.average_rate or stream.guessed_rate
        stream_fps = float(rate) if rate else None
        self._set(width=ctx.width or None, height=ctx.height or None, stream_fps=stream_fps)
        time_base = float(stream.time_base) if stream.time_base else None
        origin = (
            float(stream.start_time * stream.time_base)
            if stream.start_time is not None and time_base
            else None
        )
        # A file played live is paced at its own rate, like a camera.
        pace_start = time.monotonic() if self.live and self.kind == "file" else None
        got = 0
        bad_in_row = 0
        last_error = ""
        demux = container.demux(stream)
        while not self._stop.is_set():
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                if got and self.kind == "file" and isinstance(exc, av.InvalidDataError):
                    with self._cond:
                        self._status.frames_corrupt += 1
                    break  # a damaged end of file: keep what was decoded
                lost = "lost" if got else "cannot read"
                raise _ReadError(f"{lost} {self.url}: {_describe(exc)}") from None
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad_in_row += 1
                last_error = _describe(exc)
                with self._cond:
                    self._status.frames_corrupt += 1
                if bad_in_row >= _MAX_BAD_PACKETS:
                    raise _ReadError(
                        f"{self.url}: {bad_in_row} packets in a row could not be "
                        f"decoded ({last_error})",
                        final=not got,
                    ) from None
                continue
            for frame in frames:
                bad_in_row = 0
                now = time.monotonic()
                if self.live:
                    if pace_start is not None and frame.time is not None:
                        ahead = pace_start + frame.time - (origin or 0.0) - now
                        if ahead > 0 and self._stop.wait(ahead):
                            return got > 0
                        now = time.monotonic()
                    t, wall = now - self._opened_mono, time.time()
                else:
                    if frame.time is not None:
                        if origin is None:
                            origin = frame.time
                        t = frame.time - origin
                    else:
                        t = self._status.frames_read / (stream_fps or 25.0)
                    wall = self._opened_wall + t
                got += 1
                if got == 1:
                    self._set(state="running", width=frame.width, height=frame.height)
                self._on_frame(frame, t, wall, now)
                if self._stop.is_set():
                    return True
        if got == 0 and bad_in_row:
            raise _ReadError(
                f"{self.url}: no frame could be decoded ({last_error})", final=self.kind == "file"
            )
        if got == 0 and self.kind == "file":
            raise _ReadError(f"{self.url}: no video frames", final=True)
        return got > 0

    def _on_frame(self, frame: Any, t: float, wall: float, now: float) -> None:
        """Count a decoded frame and offer it when it is due (>= 1/fps after the last one)."""
        with self._cond:
            index = self._status.frames_read
            self._status.frames_read += 1
            self._read_times.append(now)
        due = self._due(t)
        if not due and not self._every_frame:
            return
        if not self.live:
            frame = frame.to_ndarray(format="rgb24")  # it will be delivered: convert here
        self._offer(frame, t, wall, now, index, due)

    def _due(self, t: float) -> bool:
        """Whether a frame at ``t`` is due for processing (see :meth:`_mark_due`)."""
        due = self._next_due
        return due is None or t >= due - _EPS or t < due - 2 * self._period - 1.0

    def _mark_due(self, t: float) -> None:
        """Set when the next frame is due after offering one at ``t``.

        One period after the previous due time (a grid), so that a 25 frames/s camera
        processed at 10 frames/s gives 10 frames/s and not 8.3 (every third frame), a 12
        frames/s file processed at 5 gives 5 and not 4, and arrival jitter does not lower the
        rate; after a gap the grid restarts at ``t``. (Files and live sources alike: a file
        is processed as its camera would have been.)
        """
        due = self._next_due
        if due is None or t - due >= self._period:
            self._next_due = t + self._period
        else:
            self._next_due = due + self._period

    def _offer(
        self,
        frame: Any,
        t: float,
        wall: float,
        now: float,
        index: int | None = None,
        due: bool | None = None,
    ) -> None:
        """Put a due frame (or any frame of a file read ``every_frame``) in the slot: replace
        an undelivered one (live) or wait (files)."""
        with self._cond:
            if index is None:
                index = self._status.frames_read
                self._status.frames_read += 1
                self._read_times.append(now)
            if due is None:
                due = self._due(t)
            if not due and not self._every_frame:
                return
            if due:
                self._mark_due(t)
            if self.live:
                if self._slot is not None:
                    self._status.frames_dropped += 1
            else:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
            self._slot = _Pending(frame, t, wall, index, now, due)
            self._cond.notify_all()
