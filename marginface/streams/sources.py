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
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
from pydantic import Field, ValidationError

from marginface.config import StrictModel, format_validation_error
from marginface.errors import ConfigError, DataError, ImageError
from marginface.imaging import DEFAULT_MAX_PIXELS, decode_image
from marginface.urls import parse_url, redact_url, scheme_of

__all__ = [
    "ANY_SOURCE",
    "CameraSource",
    "Frame",
    "Source",
    "SourceOptions",
    "SourcePolicy",
    "SourceSpec",
    "SourceStatus",
    "open_source",
    "parse_source",
    "source_kind",
]

State = Literal["connecting", "running", "reconnecting", "ended", "stopped", "failed"]
Kind = Literal["file", "webcam", "rtsp", "mjpeg", "push"]

_FINAL_STATES = ("ended", "stopped", "failed")
_RATE_WINDOW_S = 5.0  # read_fps is measured over the last few seconds
_MAX_BAD_PACKETS = 100  # consecutive undecodable packets before a source counts as broken
_CLOSE_WAIT_S = 1.0  # how long close() waits for the reader thread
_EPS = 1e-3  # tolerance on the 1/fps spacing (timestamps are rounded to the time base)
_SCHEMES = (
    "a file path",
    "file://",
    "rtsp://",
    "rtsps://",
    "http(s):// (MJPEG)",
    "webcam:N",
    "/dev/videoN",
    "push:",
)
_source_ids = itertools.count(1)
#: The FFmpeg protocols each kind of source may use (FFmpeg's ``protocol_whitelist``).
_PROTOCOLS: dict[str, str] = {
    "file": "file",
    "webcam": "file",
    "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls,http,https,httpproxy",
    "mjpeg": "http,https,tcp,tls,httpproxy",
    "push": "",
}


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
    returned, ``frames_dropped`` live frames replaced before the consumer took them (and
    pushed frames that came sooner than ``1/fps`` after the previous one: never processed),
    ``frames_corrupt`` packets or pushed images that could not be decoded, ``reconnects`` the
    reconnection attempts. ``last_error`` is the latest failure, one line (kept after a
    recovery, so that a flapping camera shows why). ``read_fps`` is frames decoded per second
    over the last few seconds; ``lag_s`` how old the latest delivered frame was when it was
    delivered. ``position_s``: a file's presentation time of the latest frame delivered
    (reading it again from there, ``start_s``, skips what was delivered); None when live.
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
    position_s: float | None = None

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
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="largest frame (width x height) decoded: the decompression-bomb guard of "
        "every image marginface decodes (marginface.imaging), for pushed images and for "
        "FFmpeg's decoders alike",
    )
    start_s: float = Field(
        0.0,
        ge=0.0,
        description="files: start at this presentation time (seconds); frames before it are "
        "not delivered (a camera resuming where it stopped)",
    )


class CameraSource(StrictModel):
    """A camera's source options in the service (its ``settings.source``): the part of
    :class:`SourceOptions` a camera's administrator may choose. FFmpeg's own options, demuxers
    and limits stay the service's (they could open what its source policy refuses)."""

    transport: Literal["tcp", "udp"] | None = Field(
        None,
        description="RTSP lower transport (rtsp:// and rtsps:// only; default tcp, also "
        "?transport= in the URL)",
    )
    open_timeout: float = Field(10.0, gt=0, le=600, description="seconds to connect and probe")
    read_timeout: float = Field(
        10.0, gt=0, le=600, description="seconds without data before the stream counts as lost"
    )
    backoff_initial: float = Field(
        0.5, gt=0, le=600, description="first wait before reconnecting (doubled each time)"
    )
    backoff_max: float = Field(
        30.0, gt=0, le=3600, description="longest wait between reconnections (>= the first)"
    )
    loop: bool = Field(
        False,
        description="a video file is played as a live camera: paced at its own rate, from its "
        "start again at its end, no reading position kept (demos, tests, load trials; files "
        "only)",
    )

    def check(self, kind: str | None) -> None:
        """Refuse (ConfigError) options that do not suit a source of ``kind``."""
        if self.transport is not None and kind != "rtsp":
            raise ConfigError(f"source.transport is for rtsp:// sources, not {kind} sources")
        if self.loop and kind != "file":
            raise ConfigError(f"source.loop is for video files, not {kind} sources")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError("source.backoff_max must be >= source.backoff_initial")

    def options(self) -> dict[str, Any]:
        """The :func:`open_source` options these settings give."""
        out = self.model_dump(exclude={"transport"})
        if self.transport is not None:
            out["transport"] = self.transport
        return out


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


@dataclass(frozen=True)
class SourcePolicy:
    """Which sources may be opened, beyond the URL rules every source follows.

    ``media_roots``: folders whose files may be read (None: any file, the CLI's ``watch``
    reading what its user names; empty: no file at all). A file counts as inside a folder when
    its real path (symbolic links and ``..`` resolved) is. ``allowed_devices``: webcams that
    may be opened, as ``/dev/videoN`` (None: any; empty: none). ``push``: whether ``push:``
    sources are allowed. The service builds its policy from its settings (``media_roots``
    and ``allowed_devices``, both empty by default): a camera URL is a network stream or a
    push camera unless the operator allows more."""

    media_roots: tuple[Path, ...] | None = None
    allowed_devices: tuple[str, ...] | None = None
    push: bool = True

    @classmethod
    def service(
        cls, media_roots: Sequence[str | Path] = (), allowed_devices: Sequence[str | int] = ()
    ) -> SourcePolicy:
        """A policy that allows network streams, push cameras, the files under
        ``media_roots`` and the webcams ``allowed_devices`` (``N``, ``webcam:N`` or
        ``/dev/videoN``)."""
        roots = tuple(Path(os.path.realpath(Path(r).expanduser())) for r in media_roots)
        devices = tuple(_device(d) for d in allowed_devices)
        return cls(media_roots=roots, allowed_devices=devices)

    def describe(self) -> str:
        """What this policy allows, in words (for messages)."""
        files = (
            "any file"
            if self.media_roots is None
            else "files under " + ", ".join(map(str, self.media_roots))
            if self.media_roots
            else "no file (media_roots is empty)"
        )
        devices = (
            "any webcam"
            if self.allowed_devices is None
            else "the webcams " + ", ".join(self.allowed_devices)
            if self.allowed_devices
            else "no webcam (allowed_devices is empty)"
        )
        return f"network streams, {'push cameras, ' if self.push else ''}{files} and {devices}"


#: What the CLI may open: anything its user names.
ANY_SOURCE = SourcePolicy()


@dataclass(frozen=True)
class SourceSpec:
    """A source URL, understood: its ``kind``, the ``location`` FFmpeg opens (a file as an
    absolute ``file:`` path, so that no FFmpeg protocol syntax in it is ever interpreted; an
    RTSP URL without its ``transport`` query parameter), the RTSP ``transport`` and ``shown``,
    how messages name it (credentials hidden)."""

    kind: Kind
    location: str
    shown: str
    transport: str | None = None


def _device(value: str | int) -> str:
    """A webcam as ``/dev/videoN`` (ConfigError for anything else)."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:webcam:)?(\d+)|/dev/video(\d+)", text)
    if match is None or isinstance(value, bool):
        raise ConfigError(f"not a webcam: {value!r} (use N, webcam:N or /dev/videoN)")
    return f"/dev/video{int(match.group(1) or match.group(2))}"


def _not_allowed(what: str, policy: SourcePolicy) -> ConfigError:
    return ConfigError(f"{what} is not allowed here: this service reads {policy.describe()}")


def parse_source(
    url: str | int | Path, *, policy: SourcePolicy = ANY_SOURCE, transport: str | None = None
) -> SourceSpec:
    """What ``url`` names and where FFmpeg opens it; nothing is opened or connected.

    Raises :class:`ConfigError` for a scheme no source reads (FFmpeg's own protocols such as
    ``concat:``, ``subfile,...:`` or ``pipe:`` included), a bad RTSP transport, or a source
    ``policy`` does not allow (the message says "not allowed" and never whether a file
    exists); :class:`~marginface.urls.UrlError` (a :class:`DataError`) for a malformed network
    URL; :class:`DataError` for a missing file, or one that is not a regular file, among the
    files the policy allows."""
    if isinstance(url, bool):
        raise ConfigError(f"not a video source: {url!r}")
    if isinstance(url, int):
        if url < 0:
            raise ConfigError(f"webcam index must be >= 0, got {url}")
        return _webcam(f"/dev/video{url}", policy)
    text = str(url).strip()
    if not text:
        raise ConfigError("empty video source URL")
    if text.lower() in ("push", "push:"):
        if not policy.push:
            raise _not_allowed("a push: source", policy)
        return SourceSpec("push", "push:", "push:")
    if text.isdigit() or re.fullmatch(r"webcam:\d+|/dev/video\d+", text):
        return _webcam(_device(text), policy)
    scheme = scheme_of(text)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        parsed = parse_url(text, what="camera URL")
        if scheme.startswith("rtsp"):
            location, chosen = _rtsp_transport(parsed.text, transport)
            return SourceSpec("rtsp", location, parsed.redacted, chosen)
        return SourceSpec("mjpeg", parsed.text, parsed.redacted)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"a file:// URL names a file of this machine, not of {parts.netloc!r}"
            )
        return _file(unquote(parts.path), text, policy)
    if scheme:
        raise ConfigError(
            f"unsupported video source scheme {scheme + ':'!r} in {redact_url(text)!r}; use one "
            f"of: {', '.join(_SCHEMES)} (a file whose name holds ':' as ./{text})"
        )
    return _file(text, text, policy)


def source_kind(url: str | int | Path) -> Kind | None:
    """The kind of source ``url`` names, from its form alone (nothing is checked or opened;
    None when no source reads it)."""
    if isinstance(url, bool):
        return None
    if isinstance(url, int):
        return "webcam"
    text = str(url).strip()
    if text.lower() in ("push", "push:"):
        return "push"
    if text.isdigit() or re.fullmatch(r"webcam:\d+|/dev/video\d+", text):
        return "webcam"
    scheme = scheme_of(text)
    kinds: dict[str, Kind] = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "mjpeg", "https": "mjpeg"}
    if scheme in kinds:
        return kinds[scheme]
    return "file" if text and scheme in ("", "file") else None


def _webcam(device: str, policy: SourcePolicy) -> SourceSpec:
    if policy.allowed_devices is not None and device not in policy.allowed_devices:
        raise _not_allowed(f"the webcam {device}", policy)
    return SourceSpec("webcam", device, device)


def _file(path_text: str, given: str, policy: SourcePolicy) -> SourceSpec:
    """A file source: allowed by the policy (before anything about the file is looked at),
    then existing and a regular file."""
    path = Path(path_text).expanduser()
    real = Path(os.path.realpath(path))
    if policy.media_roots is not None and not any(
        real.is_relative_to(root) for root in policy.media_roots
    ):
        raise _not_allowed(f"the file {given!r}", policy)
    if not real.exists():
        raise DataError(f"video file not found: {path}")
    if not real.is_file():
        raise DataError(f"not a video file: {path} is a directory or a device")
    return SourceSpec("file", f"file:{real}", str(path))


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
    url: str | int | Path,
    *,
    fps: float | None = 5.0,
    live: bool | None = None,
    policy: SourcePolicy = ANY_SOURCE,
    **options: Any,
) -> Source:
    """Open a video source and start reading it in the background.

    ``url``: a file path or ``file://`` URL, a webcam (an int, ``"N"``, ``"/dev/videoN"`` or
    ``"webcam:N"``), ``rtsp://`` / ``rtsps://`` (``?transport=udp|tcp`` or the ``transport``
    option; TCP by default), ``http(s)://`` serving multipart MJPEG, or ``"push:"`` (frames
    given with :meth:`Source.push`). ``fps``: frames to process per second (None: every frame).
    ``live``: None means files are not live and everything else is. ``policy``: which
    sources may be opened (default: any; the service passes its own). ``options``: see
    :class:`SourceOptions`.

    Raises ConfigError for a wrong scheme or option or a source the policy does not allow,
    and DataError for a malformed URL or a missing file (:func:`parse_source`). An
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
    spec = parse_source(url, policy=policy, transport=opts.transport)
    kind = spec.kind
    if kind != "rtsp" and opts.transport is not None:
        raise ConfigError(f"the transport option is for rtsp:// sources, not {kind}")
    is_live = kind != "file" if live is None else bool(live)
    if kind == "push" and not is_live:
        raise ConfigError("a push: source is always live")
    if opts.start_s and kind != "file":
        raise ConfigError(f"start_s is for files, not {kind} sources")
    if kind != "push":
        _import_av()
    source = Source(spec, fps=fps, live=is_live, options=opts)
    source._start()
    return source


class Source:
    """A running video source; made by :func:`open_source`. Thread-safe."""

    def __init__(
        self, spec: SourceSpec, *, fps: float | None, live: bool, options: SourceOptions
    ) -> None:
        self.kind: Kind = spec.kind
        self.url = spec.shown  # for messages and statuses: credentials hidden
        self.live = live
        self.fps = fps
        self._location = spec.location
        self._options = options
        self._transport = spec.transport
        self._period = 0.0 if fps is None else 1.0 / fps
        self._every_frame = options.every_frame and not live
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._status = SourceStatus()
        self._slot: _Pending | None = None
        self._next_due: float | None = None  # the time from which a frame is due
        self._passed_t: float | None = None  # a file's frame passed over after the slot's
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
            if self.kind == "file" and not self.live:
                # the frame, or the frames not due after it that were passed over meanwhile
                passed = self._passed_t
                self._status.position_s = pending.t if passed is None else passed
                self._passed_t = None
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

        The image is decoded by :func:`marginface.imaging.decode_image`, the decoder of every
        photo (EXIF orientation, every mode as RGB, and the decompression-bomb guard: an image
        whose header announces more than ``max_pixels`` pixels is refused before any pixel is
        decoded). Raises ImageError (and counts the image as corrupt) when ``data`` is not a
        decodable image or too large, ConfigError when this is not a push source or it is
        closed.
        """
        if self.kind != "push":
            raise ConfigError(f"push() is only for push: sources, not {self.kind}")
        if self._stop.is_set():
            raise ConfigError("the source is closed")
        try:
            if len(data) > self._options.max_push_bytes:
                raise ImageError(
                    f"pushed image is too large ({len(data)} bytes, at most "
                    f"{self._options.max_push_bytes})"
                )
            image = decode_image(
                data, max_pixels=self._options.max_pixels, source="pushed image"
            ).pixels
        except ImageError:
            with self._cond:
                self._status.frames_corrupt += 1
            raise
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
        # FFmpeg opens only the protocols of this kind of source, whatever the stream says:
        # an HTTP redirect, an RTSP answer or a playlist cannot lead it to a local file.
        ffopts["protocol_whitelist"] = _PROTOCOLS[self.kind]
        return fmt, ffopts

    def _too_large(self, width: int, height: int) -> _ReadError | None:
        """The decompression-bomb guard (:data:`marginface.imaging.DEFAULT_MAX_PIXELS`) on a
        stream's frame size, known from its headers before any frame is decoded."""
        limit = self._options.max_pixels
        if width * height <= limit:
            return None
        return _ReadError(
            f"{self.url}: frames of {width}x{height} = {width * height / 1e6:.0f} megapixels, "
            f"above the limit of {limit / 1e6:.0f} (decompression-bomb guard)",
            final=self.kind == "file",
        )

    def _read_once(self) -> bool:
        """One connection: open, decode until the end; True when it gave frames."""
        av = _import_av()
        fmt, ffopts = self._ffmpeg_options()
        verb = "open" if self.kind == "file" else "connect to"
        opts = self._options
        began = time.monotonic()
        try:
            container = av.open(
                self._location,
                mode="r",
                format=fmt,
                options=ffopts,
                timeout=(opts.open_timeout, opts.read_timeout),
            )
        except av.FFmpegError as exc:
            waited = time.monotonic() - began
            if self.kind != "file" and waited >= min(opts.open_timeout, opts.read_timeout) - 0.05:
                # A server that accepts and never answers: RTSP's own socket timeout ends the
                # wait as "Invalid data found", which would blame the stream.
                reason = "timed out"
            else:
                hint = ""
                if self.kind == "file" and isinstance(exc, av.InvalidDataError):
                    hint = " (not a video file?)"
                reason = _describe(exc) + hint
            raise _ReadError(f"cannot {verb} {self.url}: {reason}") from None
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
            # the decoder refuses a frame above the limit too (a stream whose size changes)
            ctx.options = {**ctx.options, "max_pixels": str(self._options.max_pixels)}
        except Exception as exc:
            raise _ReadError(
                f"{self.url}: unsupported codec ({_describe(exc)})", final=self.kind == "file"
            ) from None
        too_large = self._too_large(ctx.width or 0, ctx.height or 0)
        if too_large is not None:
            raise too_large
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
        start_s = self._options.start_s
        if start_s and origin is not None and time_base:
            with contextlib.suppress(av.FFmpegError):  # unseekable: the frames are skipped
                container.seek(int((origin + start_s) / time_base), stream=stream, backward=True)
        got = 0
        skipped = 0
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
                        t = (self._status.frames_read + skipped) / (stream_fps or 25.0)
                    if t < start_s - _EPS:
                        skipped += 1  # delivered by an earlier reading
                        continue
                    wall = self._opened_wall + t - start_s
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
        if got == 0 and self.kind == "file" and not start_s:
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
                if not self.live:  # passed over: a later reading need not see it again
                    if self._slot is None:
                        self._status.position_s = t
                    else:
                        self._passed_t = t
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
                if self.kind == "push":  # pushed, and never to be processed
                    self._status.frames_dropped += 1
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
