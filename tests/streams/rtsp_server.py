"""A test RTSP server: GStreamer's GstRtspServer serving an H.264 mp4 without re-encoding.

Run by the *system* python (``/usr/bin/python3``, where Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0`` live), not the project's virtual environment::

    /usr/bin/python3 tests/streams/rtsp_server.py --port 8554 --video clip.mp4 [--path /stream]

Every client gets its own pipeline (the file from its start, at its own pace: the RTSP sinks
follow the clock, like a camera), over RTP/TCP (interleaved) or RTP/UDP as the client asks.
The stream ends with the file (no looping): make the test video as long as the test needs.
SIGTERM or SIGINT stops the server.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", required=True, help="an H.264 mp4 file")
    parser.add_argument("--path", default="/stream", help="mount point (default /stream)")
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.video.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! qtdemux ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)
    # The default protocols: RTP over UDP, UDP multicast and TCP (interleaved).
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"rtsp://{args.address}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
