"""Stream servers for the tests: RTSP (GStreamer, a subprocess) and HTTP MJPEG (in process).

* :func:`rtsp_server` runs ``tests/streams/rtsp_server.py`` with the system ``/usr/bin/python3``
  (GStreamer's RTSP server from Debian: ``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``),
  serving an H.264 mp4 without re-encoding, over RTP/TCP and RTP/UDP;
* :func:`mjpeg_server` serves ``multipart/x-mixed-replace`` JPEG frames at a given rate, as
  IP cameras do, optionally with garbage in place of some frames;
* :func:`make_video` encodes a test video with ffmpeg (``testsrc2``).

Both servers yield a :class:`Served`: the stream's URL (a ``str``) that can also be stopped and
started again on the same port (the reconnection tests). A missing tool fails the test with
the Debian package to install, never skips it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
GST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)


def free_port() -> int:
    """A TCP port nobody listens on now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebhookReceiver:
    """A webhook receiver on a free local port: every POST's arrival time, ``X-Marginface-Event-Id``
    header and JSON body, in ``received``; ``close()`` stops it."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str | None, dict[str, Any]]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.received.append(
                        (time.time(), self.headers.get("X-Marginface-Event-Id"), json.loads(body))
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        """Every body received so far, in arrival order."""
        with self._lock:
            return [body for _, _, body in self.received]

    def events(self, before: float | None = None) -> list[dict[str, Any]]:
        """The visit events received (before ``before``, epoch seconds), each with the
        delivery's event id header as ``header_id``."""
        with self._lock:
            got = list(self.received)
        return [
            {**body["event"], "header_id": event_id}
            for at, event_id, body in got
            if body.get("type", "").startswith("visit.") and (before is None or at < before)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_port(port: int, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (or fail the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail(f"the server for port {port} exited before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port} after {timeout} s")


def require_ffmpeg() -> str:
    """The ffmpeg executable, or fail naming Debian's package."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg is missing: apt-get install ffmpeg")
    return path


def require_gstreamer() -> None:
    """Fail (naming Debian's packages) unless the system python has GstRtspServer."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); "
        "gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert Gst.ElementFactory.find('rtph264pay') and "
        "Gst.ElementFactory.find('h264parse') and Gst.ElementFactory.find('qtdemux')"
    )
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{SYSTEM_PYTHON} cannot run ({exc}): apt-get install python3 {GST_PACKAGES}")
    if result.returncode != 0:
        pytest.fail(
            "GStreamer's RTSP server is missing from the system python: "
            f"apt-get install {GST_PACKAGES}\n{result.stderr.decode()[-500:]}"
        )


def make_video(
    path: Path,
    *,
    seconds: float = 5.0,
    size: str = "640x360",
    rate: int = 25,
    gop: int | None = None,
) -> Path:
    """Encode ``testsrc2`` as H.264 mp4 (yuv420p, a key frame every second by default)."""
    ffmpeg = require_ffmpeg()
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={rate}",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            str(gop or rate),
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


class Served(str):
    """A running test server's URL; ``stop()`` and ``start()`` it again on the same port."""

    _stop: Callable[[], None]
    _start: Callable[[], None]

    def __new__(cls, url: str, start: Callable[[], None], stop: Callable[[], None]) -> Served:
        self = super().__new__(cls, url)
        self._start, self._stop = start, stop
        return self

    @property
    def url(self) -> str:
        return str(self)

    def start(self) -> None:
        self._start()

    def stop(self) -> None:
        self._stop()


@contextlib.contextmanager
def rtsp_server(
    video_path: Path | str, port: int | None = None, path: str = "/stream"
) -> Iterator[Served]:
    """Serve an H.264 mp4 over RTSP with GStreamer; yields ``rtsp://127.0.0.1:PORT/stream``.

    Each client gets the file from its start, paced like a camera; the stream ends with the
    file. ``stop()`` kills the server (clients see the connection drop), ``start()`` restarts
    it on the same port.
    """
    require_gstreamer()
    port = port or free_port()
    state: dict[str, Any] = {"proc": None}

    def start() -> None:
        if state["proc"] is not None:
            return
        proc = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(RTSP_SCRIPT),
                "--port",
                str(port),
                "--video",
                str(video_path),
                "--path",
                path,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        state["proc"] = proc
        try:
            wait_port(port, 15.0, alive=lambda: proc.poll() is None)
        except BaseException:
            err = b""
            if proc.poll() is not None and proc.stderr is not None:
                err = proc.stderr.read()
            stop()
            if err:
                pytest.fail(f"rtsp_server.py failed: {err.decode()[-800:]}")
            raise

    def stop() -> None:
        proc = state["proc"]
        if proc is None:
            return
        state["proc"] = None
        proc.kill()  # abrupt, like a camera losing power
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()

    start()
    try:
        yield Served(f"rtsp://127.0.0.1:{port}{path}", start, stop)
    finally:
        stop()


def _jpeg_frames(
    frames_or_video: Sequence[bytes] | Sequence[np.ndarray] | Path | str, limit: int
) -> list[bytes]:
    """JPEG bytes from JPEG bytes, RGB arrays, or the first ``limit`` frames of a video."""
    import cv2

    if isinstance(frames_or_video, str | Path):
        import av

        images = []
        with av.open(str(frames_or_video)) as container:
            for frame in container.decode(video=0):
                images.append(frame.to_ndarray(format="rgb24"))
                if len(images) >= limit:
                    break
        frames_or_video = images
    out = []
    for item in frames_or_video:
        if isinstance(item, bytes | bytearray):
            out.append(bytes(item))
        else:
            ok, buf = cv2.imencode(
                ".jpg", np.ascontiguousarray(item[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80]
            )
            assert ok
            out.append(buf.tobytes())
    if not out:
        raise ValueError("mjpeg_server needs at least one frame")
    return out


@contextlib.contextmanager
def mjpeg_server(
    frames_or_video: Sequence[bytes] | Sequence[np.ndarray] | Path | str,
    port: int | None = None,
    *,
    fps: float = 25.0,
    garbage_every: int = 0,
    max_frames: int = 250,
    loop: bool = True,
) -> Iterator[Served]:
    """Serve JPEG frames as ``multipart/x-mixed-replace`` at ``fps``; yields the http URL.

    ``frames_or_video``: JPEG bytes, RGB arrays, or a video file (its first ``max_frames``
    frames). ``garbage_every=N`` sends random bytes instead of every N-th frame (1: only
    garbage). The frames repeat while ``loop``; otherwise the response ends after the last.
    """
    jpegs = _jpeg_frames(frames_or_video, max_frames)
    boundary = "mfboundary"
    period = 1.0 / fps
    rng = np.random.default_rng(0)
    garbage = [rng.integers(0, 256, len(j), dtype=np.uint8).tobytes() for j in jpegs[:4]]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={boundary}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            start = time.monotonic()
            for n in range(10**9):
                if not loop and n >= len(jpegs):
                    return
                if garbage_every and n % garbage_every == garbage_every - 1:
                    body = garbage[n % len(garbage)]
                else:
                    body = jpegs[n % len(jpegs)]
                part = (
                    (
                        f"--{boundary}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    ).encode()
                    + body
                    + b"\r\n"
                )
                try:
                    self.wfile.write(part)
                    self.wfile.flush()
                except OSError:
                    return
                if server_state["stopping"]:
                    return
                delay = start + (n + 1) * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    server_state: dict[str, Any] = {"server": None, "thread": None, "stopping": False}
    port = port or free_port()

    def start() -> None:
        if server_state["server"] is not None:
            return
        server_state["stopping"] = False
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mjpeg-server-{port}",
            daemon=True,
        )
        thread.start()
        server_state.update(server=httpd, thread=thread)

    def stop() -> None:
        httpd = server_state["server"]
        if httpd is None:
            return
        server_state["stopping"] = True
        httpd.shutdown()
        httpd.server_close()
        server_state["thread"].join(5)
        server_state.update(server=None, thread=None)

    start()
    try:
        yield Served(f"http://127.0.0.1:{port}/stream.mjpg", start, stop)
    finally:
        stop()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers; yields an http URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(srv.accept()[0])

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/stream.mjpg"
    finally:
        done.set()
        thread.join(2)
        srv.close()
        for conn in held:
            conn.close()


def huge_jpeg(path: Path, width: int = 10100, height: int = 10100) -> Path:
    """A plain JPEG of more than 100 megapixels (a few hundred KB: one colour)."""
    subprocess.run(
        [
            *(require_ffmpeg(), "-v", "error", "-y", "-f", "lavfi"),
            *("-i", f"color=c=red:s={width}x{height}", "-frames:v", "1", "-q:v", "31", str(path)),
        ],
        check=True,
        timeout=120,
    )
    return path


#: Local files, devices and FFmpeg protocol syntax that issue #25 used as camera URLs; the
#: service refuses each as "not allowed", whether it exists or not.
LOCAL_SOURCES = (
    "file:///etc/passwd",
    "/etc/shadow",
    "/proc/self/environ",
    "../../../../etc/hostname",
    "/dev/zero",
    "/etc",
    "/etc/no-such-file",
    "subfile,,start,0,end,100,,:/etc/passwd",
    "webcam:0",
    "/dev/video0",
    "0",
)
