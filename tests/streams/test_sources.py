"""Video sources against real servers: files, RTSP (GStreamer, TCP and UDP), HTTP MJPEG,
pushed snapshots; reconnection, unreachable and silent servers, bad input, bounded lag."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from marginface.errors import ConfigError, DataError, ImageError
from marginface.streams.sources import Frame, Source, SourcePolicy, open_source
from tests.streams.servers import (
    LOCAL_SOURCES,
    free_port,
    huge_jpeg,
    make_video,
    mjpeg_server,
    require_ffmpeg,
    rtsp_server,
    silent_server,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 640x360 H.264 at 25 frames/s (100 frames)."""
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", seconds=4)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of 640x360 H.264 at 25 frames/s, for the streamed tests."""
    return make_video(tmp_path_factory.mktemp("video") / "long.mp4", seconds=12)


@pytest.fixture(scope="module")
def rtsp_url(long_clip: Path) -> Iterator[str]:
    with rtsp_server(long_clip) as url:
        yield url


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_frames(source: Source, seconds: float, count: int = 10**6) -> list[Frame]:
    """Frames read for ``seconds`` or until ``count`` of them came."""
    frames: list[Frame] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(frames) < count:
        frame = source.read(timeout=0.2)
        if frame is not None:
            frames.append(frame)
    return frames


def check_image(frame: Frame, shape: tuple[int, int, int] = (360, 640, 3)) -> None:
    assert frame.image.shape == shape
    assert frame.image.dtype == np.uint8
    assert frame.image.flags.c_contiguous
    assert frame.image.std() > 10  # a picture, not a blank buffer


# -- files --------------------------------------------------------------------------------


def test_file_source_delivers_every_due_frame_then_ends(clip: Path) -> None:
    start = time.time()
    with open_source(clip, fps=5) as source:
        frames = []
        while (frame := source.read(timeout=10)) is not None:
            frames.append(frame)
            time.sleep(0.005)  # a slow consumer: a file loses nothing
        status = source.status()
        assert source.read(timeout=0.1) is None
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(0, 100, 5))
    assert [f.t for f in frames] == pytest.approx([i * 0.2 for i in range(20)], abs=1e-6)
    assert all(f.wall == pytest.approx(start + f.t, abs=1.0) for f in frames)
    check_image(frames[0])
    assert status.state == "ended"
    assert (status.frames_read, status.frames_delivered, status.frames_dropped) == (100, 20, 0)
    assert (status.width, status.height, status.stream_fps) == (640, 360, 25.0)
    assert status.to_dict()["state"] == "ended"


def test_file_url_every_frame_without_fps(clip: Path) -> None:
    with open_source(f"file://{clip}", fps=None) as source:
        frames = []
        while (frame := source.read(timeout=10)) is not None:
            frames.append(frame)
    assert [f.index for f in frames] == list(range(100))
    assert frames[-1].t == pytest.approx(3.96)
    assert source.status().state == "ended"


def test_missing_file_and_wrong_scheme_raise_at_once(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "nope.mp4")
    with pytest.raises(DataError, match="not found"):
        open_source(f"file://{tmp_path}/nope.mp4")
    for url in ("ftp://example.org/a.mp4", "foo:", "gopher://x"):
        with pytest.raises(ConfigError, match="unsupported video source scheme"):
            open_source(url)
    with pytest.raises(ConfigError, match="tcp or udp"):
        open_source("rtsp://127.0.0.1:1/x?transport=sctp")
    with pytest.raises(ConfigError, match="fps"):
        open_source("rtsp://127.0.0.1:1/x", fps=0)
    with pytest.raises(ConfigError, match="colour"):
        open_source("rtsp://127.0.0.1:1/x", colour="red")
    with pytest.raises(ConfigError, match="rtsp"):
        open_source("http://127.0.0.1:1/x", transport="udp")


def test_non_video_file_fails_with_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("these are not frames\n" * 50)
    with open_source(bogus) as source:
        assert source.read(timeout=10) is None
        status = source.status()
    assert status.state == "failed"
    assert status.last_error is not None and "notes.mp4" in status.last_error
    assert "\n" not in status.last_error
    assert status.reconnects == 0
    audio = tmp_path / "tone.m4a"
    subprocess.run(
        [require_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)],
        check=True,
        timeout=60,
    )
    with open_source(audio) as source:
        assert source.read(timeout=10) is None
    assert source.status().state == "failed"
    assert source.status().last_error == f"{audio}: no video stream"


def test_live_file_is_paced_and_loops(tmp_path: Path) -> None:
    short = make_video(tmp_path / "short.mp4", seconds=1)
    with open_source(short, fps=10, live=True, loop=True) as source:
        assert source.read(timeout=5) is not None
        t0 = time.monotonic()
        frames = read_frames(source, 10, count=15)  # 1.5 s: past the 1 s clip's end
        elapsed = time.monotonic() - t0
        status = source.status()
    assert len(frames) == 15
    assert elapsed == pytest.approx(1.5, abs=0.3)  # paced like a camera, not decoded at once
    assert status.state == "running" and status.reconnects == 0
    assert status.frames_read > 25 and status.last_error is None


def test_corrupt_packets_in_a_file_are_skipped_and_counted(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    for start in range(len(data) // 3, len(data) - 20_000, len(data) // 8):
        data[start : start + 4_000] = rng.integers(0, 256, 4_000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with open_source(damaged, fps=None) as source:
        frames = []
        while (frame := source.read(timeout=10)) is not None:
            frames.append(frame)
        status = source.status()
    assert status.state == "ended"
    assert status.frames_corrupt >= 1
    assert len(frames) >= 30


# -- live: RTSP, MJPEG, push --------------------------------------------------------------


@pytest.mark.parametrize("how", ["tcp", "udp-query", "udp-option"])
def test_rtsp_delivers_frames(rtsp_url: str, how: str) -> None:
    url, options = rtsp_url, {}
    if how == "udp-query":
        url = f"{rtsp_url}?transport=udp"
    elif how == "udp-option":
        options = {"transport": "udp"}
    with open_source(url, fps=5, **options) as source:
        frames = read_frames(source, 5.0, count=5)
        status = source.status()
    assert len(frames) >= 4, status
    check_image(frames[-1])
    ts = [f.t for f in frames]
    assert ts == sorted(ts)
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.2, abs=0.05), gaps  # 5 frames/s on average
    assert status.state == "running" and status.last_error is None
    assert (status.width, status.height, status.stream_fps) == (640, 360, 25.0)
    assert status.read_fps > 10
    assert frames[-1].wall == pytest.approx(time.time(), abs=3.0)


def test_mjpeg_over_http_delivers_frames(clip: Path) -> None:
    with mjpeg_server(clip, fps=25, max_frames=50) as url, open_source(url, fps=10) as source:
        frames = read_frames(source, 4.0, count=6)
        status = source.status()
    assert len(frames) >= 5, status
    check_image(frames[-1])
    assert status.state == "running" and status.frames_corrupt == 0
    assert (status.width, status.height) == (640, 360)


def test_mjpeg_garbage_is_skipped_and_counted(clip: Path) -> None:
    with (
        mjpeg_server(clip, fps=25, max_frames=20, garbage_every=3) as url,
        open_source(url, fps=None) as source,
    ):
        frames = read_frames(source, 1.5)
        status = source.status()
    assert len(frames) >= 5, status
    assert status.frames_corrupt >= 5
    assert status.state == "running" and status.reconnects == 0


def test_push_source_decodes_images_and_counts_garbage(shared_data: Path) -> None:
    photo = next(iter(sorted((shared_data / "celeba-dev").glob("*/*.jpg"))))
    jpeg = photo.read_bytes()
    expected = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    _, png = cv2.imencode(".png", expected[:, :, ::-1])
    with open_source("push:", fps=None) as source:
        assert source.status().state == "connecting"
        assert source.read(timeout=0.05) is None
        source.push(jpeg)
        frame = source.read(timeout=1)
        assert frame is not None
        assert np.array_equal(frame.image, expected)
        source.push(png.tobytes(), t=12.5)
        frame = source.read(timeout=1)
        assert frame is not None and frame.t == 12.5 and frame.index == 1
        for garbage in (b"", b"\xff\xd8not a jpeg at all", jpeg[: len(jpeg) // 50]):
            with pytest.raises(ImageError):
                source.push(garbage)
    status = source.status()
    assert status.frames_corrupt == 3
    assert status.frames_delivered == 2 and status.state == "stopped"
    assert (status.height, status.width) == expected.shape[:2]
    with pytest.raises(ConfigError):
        source.push(jpeg)


def test_push_is_only_for_push_sources(clip: Path) -> None:
    with open_source(clip) as source, pytest.raises(ConfigError, match="push"):
        source.push(b"x")


# -- failures -----------------------------------------------------------------------------


def test_reconnects_after_the_rtsp_server_restarts(long_clip: Path) -> None:
    with (
        rtsp_server(long_clip) as server,
        open_source(server, fps=5, backoff_initial=0.1, backoff_max=0.4, read_timeout=2) as source,
    ):
        wait_for(lambda: source.read(timeout=0.2) is not None, 8, "the first frame")
        assert source.status().state == "running"
        server.stop()
        wait_for(lambda: source.status().state == "reconnecting", 5, "reconnecting")
        status = source.status()
        assert status.last_error is not None and server.url in status.last_error
        server.start()
        wait_for(lambda: source.status().state == "running", 10, "running again")
        before = source.status().frames_delivered
        wait_for(lambda: source.read(timeout=0.2) is not None, 5, "a frame after reconnecting")
        status = source.status()
    assert status.reconnects >= 1
    assert status.frames_delivered > before


def test_unreachable_url_reconnects_with_the_reason_and_closes_promptly() -> None:
    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/cam"
    source = open_source(url, backoff_initial=0.1, backoff_max=0.2)
    wait_for(lambda: source.status().reconnects >= 2, 5, "reconnection attempts")
    status = source.status()
    assert status.state == "reconnecting"
    assert status.last_error is not None
    assert "Connection refused" in status.last_error
    assert "secret" not in status.last_error and "admin:***@127.0.0.1" in status.last_error
    assert source.read(timeout=0.1) is None
    t0 = time.monotonic()
    source.close()
    assert time.monotonic() - t0 < 2.0
    assert source.status().state == "stopped"
    assert source.read(timeout=1) is None


def test_close_is_prompt_while_blocked_on_a_silent_server() -> None:
    with silent_server() as url:
        source = open_source(url, open_timeout=20, read_timeout=20)
        time.sleep(0.5)
        assert source.status().state == "connecting"
        t0 = time.monotonic()
        source.close()
        assert time.monotonic() - t0 < 2.0
        assert source.status().state == "stopped"


def test_silent_server_times_out_into_reconnecting() -> None:
    with (
        silent_server() as url,
        open_source(url, open_timeout=0.5, read_timeout=0.5, backoff_initial=0.1) as source,
    ):
        wait_for(lambda: source.status().state == "reconnecting", 5, "the open timeout")
        status = source.status()
    assert status.last_error == f"cannot connect to {url}: timed out"


def test_bounded_lag_under_overload(rtsp_url: str) -> None:
    """A consumer at 2 frames/s on a 25 frames/s stream: frames drop, the lag stays flat."""
    with open_source(rtsp_url, fps=None) as source:
        assert source.read(timeout=8) is not None
        lags, dropped = [], []
        for _ in range(7):
            frame = source.read(timeout=2)
            assert frame is not None
            status = source.status()
            lags.append(status.lag_s)
            dropped.append(status.frames_dropped)
            time.sleep(0.5)
    assert all(lag is not None and lag < 1.0 for lag in lags), lags
    assert max(lags[4:]) <= max(lags[:4]) + 0.3, lags  # not growing
    assert dropped == sorted(dropped) and dropped[-1] - dropped[0] >= 50, dropped
    assert status.frames_delivered == 8


# -- what a source may open (issue #25) ------------------------------------------------------


def test_the_service_policy_refuses_local_files_without_telling_whether_they_exist(
    tmp_path: Path, clip: Path
) -> None:
    """The files, devices and FFmpeg protocols a camera URL named: every one refused with
    the same words, whether it exists or not; files under a media root are read."""
    media = tmp_path / "media"
    media.mkdir()
    inside = media / "door.mp4"
    inside.write_bytes(clip.read_bytes())
    (tmp_path / "outside.mp4").write_bytes(clip.read_bytes())
    (media / "escape.mp4").symlink_to(tmp_path / "outside.mp4")
    policy = SourcePolicy.service(media_roots=[media])
    for url in (
        *LOCAL_SOURCES,
        str(tmp_path / "outside.mp4"),
        str(media / ".." / "outside.mp4"),
        str(media / "escape.mp4"),  # a link out of the media folder
    ):
        with pytest.raises(ConfigError, match="is not allowed here") as err:
            open_source(url, policy=policy)
        assert "not found" not in str(err.value) and "directory" not in str(err.value)
    for url in ("concat:/etc/passwd|/etc/hostname", "pipe:0", "data:text/plain,x", "tcp://h:1"):
        with pytest.raises(ConfigError, match="unsupported video source scheme"):
            open_source(url, policy=policy)
    with pytest.raises(DataError, match="not found"):  # inside a media root: it may be said
        open_source(media / "missing.mp4", policy=policy)
    with open_source(f"file://{inside}", policy=policy, fps=None) as source:
        assert source.read(timeout=10) is not None
    webcams = SourcePolicy.service(allowed_devices=["webcam:2"])
    assert webcams.allowed_devices == ("/dev/video2",)
    with pytest.raises(ConfigError, match="not allowed"):
        open_source("/dev/video1", policy=webcams)


def test_ffmpeg_protocol_syntax_in_a_path_is_a_path(tmp_path: Path, clip: Path) -> None:
    """The CLI reads any file, but a path is always a file: FFmpeg's ``subfile,,...:`` or
    ``concat:`` syntax is never interpreted (files are opened as ``file:/absolute/path``)."""
    with pytest.raises(DataError, match="not found"):
        open_source("subfile,,start,0,end,100,,:/etc/passwd")
    odd = tmp_path / "subfile,,start,0,end,9,,:x.mp4"
    odd.write_bytes(clip.read_bytes())
    with open_source(odd, fps=None) as source:
        frames = list(iter(lambda: source.read(timeout=10), None))
    assert len(frames) == 100  # the whole file, not a sub-range of another one


def test_a_file_starts_where_an_earlier_reading_stopped(clip: Path) -> None:
    with open_source(clip, fps=None, start_s=2.0) as source:
        frames = list(iter(lambda: source.read(timeout=10), None))
        status = source.status()
    assert len(frames) == 50 and frames[0].t == pytest.approx(2.0, abs=0.01)
    assert status.state == "ended" and status.position_s == pytest.approx(3.96)
    with open_source(clip, fps=None, start_s=3.97) as source:  # read to its end already
        assert source.read(timeout=10) is None
    assert source.status().state == "ended" and source.status().last_error is None
    with pytest.raises(ConfigError, match="start_s"):
        open_source("push:", start_s=1.0)


def test_the_decompression_bomb_guard_covers_pushed_frames_and_stills(tmp_path: Path) -> None:
    """/v1/identify refused a 10100x10100 JPEG; a push camera and a file camera decoded it
    (a 16000x16000 one took the service from 1.3 to 2.8 GB)."""
    huge = huge_jpeg(tmp_path / "huge.jpg")
    with open_source("push:", fps=None) as source:
        with pytest.raises(ImageError, match="decompression-bomb guard"):
            source.push(huge.read_bytes())
        assert source.status().frames_corrupt == 1 and source.read(timeout=0.1) is None
    with open_source(huge, fps=None) as source:  # a still read as a video file
        assert source.read(timeout=20) is None
        status = source.status()
    assert status.state == "failed" and status.frames_read == 0
    assert status.last_error is not None and "decompression-bomb guard" in status.last_error


def test_pushed_frames_that_are_not_processed_are_counted_as_dropped(
    shared_data: Path,
) -> None:
    """391 of 400 pushed frames were skipped and frames_dropped stayed 0."""
    jpeg = next(iter(sorted((shared_data / "celeba-dev").glob("*/*.jpg")))).read_bytes()
    with open_source("push:", fps=1.0) as source:
        for i in range(10):
            source.push(jpeg, t=i * 0.05)  # ten frames in half a second, one is due
        assert source.read(timeout=1) is not None
        status = source.status()
    assert status.frames_read == 10 and status.frames_delivered == 1
    assert status.frames_dropped == 9


def test_a_silent_rtsp_server_is_reported_as_a_timeout() -> None:
    """A hanging RTSP server was reported as "Invalid data found when processing input"."""
    with silent_server() as http_url:
        url = http_url.replace("http://", "rtsp://")
        with open_source(url, open_timeout=0.5, read_timeout=0.5, backoff_initial=5) as source:
            wait_for(lambda: source.status().state == "reconnecting", 10, "the open timeout")
            status = source.status()
    assert status.last_error == f"cannot connect to {url}: timed out"
