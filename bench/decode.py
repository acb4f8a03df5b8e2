"""Which FFmpeg binding decodes the camera streams: PyAV or OpenCV's FFmpeg backend?

Measured on one H.264 file, 1280x720 at 25 frames/s, 10 s (250 frames), the size the issue's
target names (8 such cameras on 2 cores):

1. **decode speed**: decode only (PyAV ``decode()`` / OpenCV ``grab()``), and decode plus
   conversion to a numpy image (PyAV ``to_ndarray(format="rgb24")`` / OpenCV ``read()``, BGR),
   for every frame and for one frame in five (a camera processed at 5 of its 25 frames/s),
   with one decoder thread and with FFmpeg's automatic threading;
2. **per-open options**: PyAV passes FFmpeg options (``rtsp_transport``, ``timeout``) to each
   ``av.open``; OpenCV reads them from the process-wide ``OPENCV_FFMPEG_CAPTURE_OPTIONS``
   environment variable, so two cameras cannot have different transports without racing on
   the environment;
3. **errors**: a file with garbage written over part of it; PyAV raises an exception naming
   the FFmpeg error for the packet that fails, OpenCV's ``read()`` only returns False;
4. **interrupting a blocked read**: a TCP server that accepts and never answers; the time each
   binding takes to give up with a 2 s timeout.

Usage: ``python bench/decode.py [--video PATH] [--json out.json]`` (without ``--video`` the test
video is made with ffmpeg in a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def make_video(path: Path) -> None:
    """Encode the 1280x720 25 fps H.264 test video with ffmpeg."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )


def pyav_decode(path: Path, threaded: bool, convert_every: int) -> tuple[int, float, float]:
    """Frames decoded, wall seconds and CPU seconds with PyAV."""
    import av

    w0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if threaded else "NONE"
        stream.thread_count = 0 if threaded else 1
        for frame in container.decode(stream):
            if convert_every and n % convert_every == 0:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n, time.perf_counter() - w0, time.process_time() - c0


def opencv_decode(path: Path, threaded: bool, convert_every: int) -> tuple[int, float, float]:
    """Frames decoded, wall seconds and CPU seconds with OpenCV's FFmpeg backend."""
    import cv2

    w0, c0 = time.perf_counter(), time.process_time()
    params = [cv2.CAP_PROP_N_THREADS, 0 if threaded else 1]
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    n = 0
    while True:
        if convert_every and n % convert_every == 0:
            ok, _ = cap.read()
        else:
            ok = cap.grab()
        if not ok:
            break
        n += 1
    cap.release()
    return n, time.perf_counter() - w0, time.process_time() - c0


def corrupt_copy(path: Path, out: Path) -> None:
    """Copy ``path`` with random bytes written over 64 KiB blocks in its second half."""
    import numpy as np

    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for start in range(len(data) // 2, len(data) - 70_000, 400_000):
        data[start : start + 65_536] = rng.integers(0, 256, 65_536, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))


def errors_pyav(path: Path) -> dict[str, Any]:
    """Frames decoded and exceptions raised by PyAV, decoding packet by packet."""
    import av

    frames, errors, messages = 0, 0, set()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                frames += len(packet.decode())
            except av.FFmpegError as exc:
                errors += 1
                messages.add(f"{type(exc).__name__}: {exc}"[:100])
    return {"frames": frames, "errors": errors, "messages": sorted(messages)[:3]}


def errors_opencv(path: Path) -> dict[str, Any]:
    """Frames read by OpenCV before ``read()`` returned False (no reason is given)."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    return {"frames": frames, "errors": "read() returned False, no reason"}


def silent_server() -> tuple[socket.socket, int]:
    """A TCP server that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def blocked_pyav(url: str) -> tuple[float, str]:
    """Seconds until PyAV gives up on a silent server with ``timeout=2``."""
    import av

    t0 = time.perf_counter()
    try:
        av.open(url, timeout=(2.0, 2.0)).close()
        return time.perf_counter() - t0, "opened?"
    except av.FFmpegError as exc:
        return time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:100]


def blocked_opencv(url: str) -> tuple[float, str]:
    """Seconds until OpenCV gives up on a silent server with a 2 s open timeout."""
    import cv2

    t0 = time.perf_counter()
    cap = cv2.VideoCapture(
        url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000],
    )
    ok = cap.isOpened()
    cap.release()
    return time.perf_counter() - t0, f"isOpened()={ok}, no reason"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results: dict[str, Any] = {"decode": []}
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            video = Path(tmp) / "720p25.mp4"
            make_video(video)
        print("1. decode speed (250 frames 1280x720 H.264)")
        print(
            f"   {'binding':8s} {'threads':7s} {'convert':>8s} {'frames/s':>9s} "
            f"{'CPU ms/frame':>12s}"
        )
        for name, fn in (("PyAV", pyav_decode), ("OpenCV", opencv_decode)):
            for threaded in (False, True):
                for every in (0, 5, 1):
                    best = min((fn(video, threaded, every) for _ in range(2)), key=lambda r: r[1])
                    n, wall, cpu = best
                    conv = {0: "none", 5: "1 in 5", 1: "all"}[every]
                    row = {
                        "binding": name,
                        "threaded": threaded,
                        "convert": conv,
                        "fps": n / wall,
                        "cpu_ms_per_frame": 1000 * cpu / n,
                    }
                    results["decode"].append(row)
                    print(
                        f"   {name:8s} {'auto' if threaded else '1':7s} {conv:>8s} "
                        f"{n / wall:9.0f} {1000 * cpu / n:12.2f}"
                    )
        bad = Path(tmp) / "corrupt.mp4"
        corrupt_copy(video, bad)
        results["errors"] = {"pyav": errors_pyav(bad), "opencv": errors_opencv(bad)}
        print("3. corrupt file:", json.dumps(results["errors"]))
    srv, port = silent_server()
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    results["blocked"] = {"pyav": blocked_pyav(url), "opencv": blocked_opencv(url)}
    srv.close()
    print("4. silent server, 2 s timeout:", json.dumps(results["blocked"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
