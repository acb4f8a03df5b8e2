"""Camera streams on this machine: are the visits right, and how many cameras fit?

Everything runs on marginface's real components: the synthetic scenes of
:mod:`tests.streams.synthetic` (celeba-dev people walking past a camera, H.264
1280x720 at 25 frames/s, with exact ground truth), PyAV sources, YuNet + SFace, ByteTrack,
the visit decisions at the gallery's FPIR operating point. Six people are enrolled from other
photos than the ones in the videos; three are strangers.

1. **correctness**: each standard scene, read as a file at 5 processed frames/s: every
   passer must give exactly one visit, named right (enrolled) or unknown (stranger); the
   appearance-to-decision delay in stream time;
2. **decoding alone**: N live cameras (the 60 s ``door`` scene looped, paced at 25 frames/s
   like a camera), frames only decoded and handed over: CPU per decoded frame;
3. **real time**: the same N cameras, each processed at 5 frames/s by its own worker thread
   (as the service runs them) for ``--duration`` seconds: processed frames/s, lag over time
   (first third vs last third: it must not grow), frames dropped, CPU per processed frame,
   the time from a face's first appearance in a camera's timeline to its ``arrived`` event
   (median, p95), and the visits per loop against the truth;
4. **one camera, every frame**: the most frames/s one camera is processed at (live, at the
   stream's 25 frames/s, and a file as fast as it goes);
5. **faces in view**: ms per processed frame with 0..4 faces in view, while tracks gather
   evidence (embedding) and once they are decided (detection and tracking only).

Run: ``python bench/streams.py`` (10 minutes of real time: ``--duration 600``; ``--quick``
for a 60 s check). The load average is printed beside the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marginface.embed.pipeline import Pipeline  # noqa: E402
from marginface.gallery import Gallery, Recognizer  # noqa: E402
from marginface.streams.camera import CameraSettings, CameraWorker  # noqa: E402
from marginface.streams.sources import open_source  # noqa: E402
from marginface.streams.visits import VisitEvent, VisitSettings  # noqa: E402
from tests.streams.synthetic import (  # noqa: E402
    Passer,
    Scene,
    choose_people,
    render,
    render_frames,
    standard_scenes,
    truth,
)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def build_gallery(path: Path, people: Any, pipeline: Pipeline) -> Gallery:
    if path.exists():
        path.unlink()
    gallery = Gallery.open(path, card=pipeline.embedder.card)
    rec = Recognizer(gallery, pipeline)
    for person in people.enrolled:
        rec.enroll(person.identity, list(person.enrol_photos))
    return gallery


def rendered(scene: Scene, folder: Path) -> Path:
    """The scene's mp4, rendered once (kept beside its scene description)."""
    path = folder / f"{scene.name}.mp4"
    meta = folder / f"{scene.name}.json"
    description = json.dumps(scene.to_json(), sort_keys=True, default=str)
    if not (path.exists() and meta.exists() and meta.read_text() == description):
        render(scene, path)
        meta.write_text(description)
    return path


def match_passer(passers: list[dict[str, Any]], t0: float, t1: float) -> int | None:
    """The passer whose visible time overlaps [t0, t1] most."""
    best, best_overlap = None, 0.0
    for i, p in enumerate(passers):
        overlap = sum(max(0.0, min(t1, b) - max(t0, a)) for a, b in p["visible"])
        if overlap > best_overlap:
            best, best_overlap = i, overlap
    return best


# -- 1. correctness ------------------------------------------------------------------------------
def correctness(
    scenes: dict[str, Scene], folder: Path, gallery: Gallery, pipeline: Pipeline, fps: float
) -> dict[str, Any]:
    print(f"\n1. correctness: each scene read as a file at {fps:g} processed frames/s")
    rows, delays, all_ok = [], [], True
    for name, scene in scenes.items():
        path = rendered(scene, folder)
        events: list[VisitEvent] = []
        worker = CameraWorker(
            name, pipeline, gallery, CameraSettings(fps=fps), sinks=[events.append]
        )
        with open_source(path, fps=fps) as source:
            worker.run(source, threading.Event())
        passers = truth(scene)
        visits: dict[int, list[VisitEvent]] = {}
        for e in events:
            visits.setdefault(e.visit_id, []).append(e)
        found: dict[int, list[tuple[str | None, float]]] = {i: [] for i in range(len(passers))}
        stray = 0
        for evs in visits.values():
            arrived = next((e for e in evs if e.kind == "arrived"), None)
            t0 = min(e.start_s for e in evs)
            t1 = max(e.end_s for e in evs)
            who = (
                who_passed(passers, arrived.start_s, arrived.name)
                if arrived is not None
                else match_passer(passers, t0, t1)
            )
            if who is None or arrived is None:
                stray += 1
                continue
            found[who].append((arrived.name, arrived.end_s - passers[who]["first_visible_s"]))
        ok_passers = 0
        for i, p in enumerate(passers):
            want = p["identity"] if p["enrolled"] else None
            got = found[i]
            right = len(got) == 1 and got[0][0] == want
            ok_passers += right
            if got:
                delays.append(got[0][1])
            if not right:
                kind = "enrolled" if p["enrolled"] else "stranger"
                print(f"   {name}: passer {p['identity']} ({kind}) gave {[g[0] for g in got]}")
        all_ok &= ok_passers == len(passers) and stray == 0
        rows.append((name, len(passers), ok_passers, stray))
        print(
            f"   {name:12s} passers {len(passers)}  one right visit {ok_passers}  "
            f"stray visits {stray}"
        )
    print(
        f"   appearance -> decision in stream time: median {statistics.median(delays):.2f} s,"
        f" p95 {pct(delays, 95):.2f} s (decided at the frame that completes min_faces)"
    )
    print(f"   ALL RIGHT: {all_ok}")
    return {"ok": all_ok, "rows": rows, "stream_delay_median": statistics.median(delays)}


# -- 2 and 3. many live cameras ------------------------------------------------------------------
def who_passed(passers: list[dict[str, Any]], at: float, name: str | None) -> int | None:
    """The passer visible around stream time ``at`` that the decision ``name`` is about: the
    named person, or, for an unknown, the stranger (or whoever overlaps most)."""
    near = [
        i for i, p in enumerate(passers) if any(a - 0.3 <= at <= b + 0.3 for a, b in p["visible"])
    ]
    for i in near:
        if (passers[i]["identity"] if passers[i]["enrolled"] else None) == name:
            return i
    return near[0] if near else None


def frame_at(seen: list[tuple[float, int]], wall: float) -> int | None:
    """The number of the processed frame decoded at ``wall`` (an event's ``first_seen``, which
    went through a datetime: microseconds), or None."""
    i = bisect.bisect_left(seen, (wall - 1e-3, -1))
    for w, index in seen[i : i + 3]:
        if abs(w - wall) < 1e-3:
            return index
    return None


def live_cameras(
    video: Path,
    n: int,
    fps: float,
    seconds: float,
    gallery: Gallery | None,
    pipeline: Pipeline,
    passers: list[dict[str, Any]],
    loop_frames: int,
    stream_fps: float,
    label: str,
) -> dict[str, Any]:
    """``n`` cameras playing ``video`` in a loop at its own rate, for ``seconds`` after a
    warm-up: decoded only (``gallery`` None) or processed by one worker thread each.

    Timing of a decision: every processed frame's decode time (``Frame.wall``) and number
    (``Frame.index``, counting every decoded frame, so its place in the looped video is
    ``index % loop_frames``) are kept; an ``arrived`` event's ``first_seen`` is the decode
    time of its track's first frame, which places the track in the video and names the
    passer; the passer's first appearance was decoded ``(that place - first_visible_s)``
    seconds before (the source is paced like a camera), and the latency is the time from
    then to the moment the event reached the sink."""
    stop = threading.Event()
    sources = [open_source(video, fps=fps, live=True, loop=True, name=f"cam{i}") for i in range(n)]
    arrivals: list[tuple[int, float, VisitEvent]] = []
    frames_seen: list[list[tuple[float, int]]] = [[] for _ in range(n)]  # (wall, index)
    lock = threading.Lock()
    workers: list[CameraWorker] = []
    threads = []
    for i, source in enumerate(sources):
        if gallery is None:

            def consume(src: Any = source) -> None:
                while not stop.is_set():
                    src.read(timeout=0.5)

            threads.append(threading.Thread(target=consume, daemon=True))
            continue

        def sink(event: VisitEvent, cam: int = i) -> None:
            with lock:
                arrivals.append((cam, time.time(), event))

        def seen(frame: Any, _events: Any, cam: int = i) -> None:
            frames_seen[cam].append((frame.wall, frame.index))

        # The video loops every minute: a re-appearance window shorter than the gap between
        # one person's loops makes every loop's passers new visits, to be counted again.
        settings = CameraSettings(fps=fps, visits=VisitSettings(revisit_s=5.0))
        worker = CameraWorker(f"cam{i}", pipeline, gallery, settings, sinks=[sink])
        workers.append(worker)
        threads.append(
            threading.Thread(
                target=worker.run, args=(source, stop), kwargs={"on_frame": seen}, daemon=True
            )
        )
    for t in threads:
        t.start()
    time.sleep(min(10.0, seconds / 6))  # warm-up: models loaded, tracks under way
    cpu0, wall0 = time.process_time(), time.monotonic()
    read0 = sum(s.status().frames_read for s in sources)
    done0 = sum(w.frames for w in workers)
    drop0 = sum(s.status().frames_dropped for s in sources)
    lags: list[tuple[float, float]] = []  # (elapsed, worst camera's lag)
    while time.monotonic() - wall0 < seconds:
        time.sleep(1.0)
        lags.append((time.monotonic() - wall0, max((s.status().lag_s or 0.0) for s in sources)))
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    read = sum(s.status().frames_read for s in sources) - read0
    done = sum(w.frames for w in workers) - done0
    dropped = sum(s.status().frames_dropped for s in sources) - drop0
    stop.set()
    for t in threads:
        t.join(timeout=10)
    for s in sources:
        s.close()
    out: dict[str, Any] = {
        "cpu_s": cpu,
        "wall_s": wall,
        "decoded": read,
        "processed": done,
        "dropped": dropped,
        "decoded_per_s": read / wall,
        "processed_per_s": done / wall,
    }
    third = max(1, len(lags) // 3)
    out["lag_first"] = statistics.mean(v for _, v in lags[:third])
    out["lag_last"] = statistics.mean(v for _, v in lags[-third:])
    out["lag_max"] = max(v for _, v in lags)
    if gallery is not None:
        latencies: list[float] = []
        unplaced = 0
        per_loop: dict[tuple[int, int], list[tuple[int | None, bool, str | None]]] = {}
        for cam, emitted, e in arrivals:
            if e.kind != "arrived" or e.first_seen is None:
                continue
            index = frame_at(frames_seen[cam], e.first_seen.timestamp())
            if index is None:
                unplaced += 1
                continue
            loop, place = divmod(index, loop_frames)
            at = place / stream_fps
            who = who_passed(passers, at, e.name)
            right = who is not None and e.name == (
                passers[who]["identity"] if passers[who]["enrolled"] else None
            )
            per_loop.setdefault((cam, loop), []).append((who, right, e.name))
            if who is not None:
                appeared = e.first_seen.timestamp() - (at - passers[who]["first_visible_s"])
                latencies.append(emitted - appeared)
        out["latencies"] = latencies
        out["unplaced"] = unplaced
        last_loop = [max((index // loop_frames for _, index in f), default=0) for f in frames_seen]
        complete = [v for (cam, loop), v in per_loop.items() if loop < last_loop[cam]]
        out["loops_checked"] = len(complete)
        out["loops_right"] = 0
        for (cam, loop), v in sorted(per_loop.items()):
            if loop >= last_loop[cam]:
                continue
            got = sorted(w for w, _, _ in v if w is not None)
            if got == list(range(len(passers))) and all(r for _, r, _ in v):
                out["loops_right"] += 1
                continue
            missing = [passers[i]["identity"] for i in range(len(passers)) if i not in got]
            twice = sorted({passers[i]["identity"] for i in got if got.count(i) > 1})
            wrong = [
                f"{passers[w]['identity'] if w is not None else '?'} as {name}"
                for w, r, name in v
                if not r
            ]
            print(
                f"   camera {cam} loop {loop}: missing {missing}, more than one visit "
                f"{twice}, wrong decision {wrong}"
            )
    print(
        f"   {label}: {n} cameras, {wall:.0f} s: decoded {read / wall:.1f} frames/s, "
        f"processed {done / wall:.1f}/s, dropped {dropped}, CPU {cpu / wall:.2f} cores; "
        f"{load()}"
    )
    return out


# -- 5. faces in view ----------------------------------------------------------------------------
def faces_in_view(people: Any, gallery: Gallery, pipeline: Pipeline) -> None:
    print("\n5. ms per processed frame by faces in view (1280x720)")
    lanes = [(0.2, 0.45), (0.4, 0.5), (0.6, 0.45), (0.8, 0.5)]
    for k in range(0, 5):
        passers = [
            Passer.of(p, 0.0, 100.0, start=lanes[i], end=lanes[i], start_height=300, end_height=300)
            for i, p in enumerate(people.everyone[:k])
        ]
        scene = Scene(duration_s=4.0, passers=passers, name=f"faces{k}")
        frames = list(render_frames(scene, indices=range(0, 100, 5)))
        worker = CameraWorker(f"faces{k}", pipeline, gallery, CameraSettings())
        from marginface.streams.sources import Frame

        times = []
        for i, image in enumerate(frames):
            t0 = time.perf_counter()
            worker.process(Frame(image=image, t=i / 5.0, wall=time.time(), index=i))
            times.append(1000 * (time.perf_counter() - t0))
        gathering, decided = times[:4], times[6:]
        print(
            f"   {k} faces: gathering evidence {statistics.mean(gathering):6.1f} ms, "
            f"decided {statistics.median(decided):6.1f} ms "
            f"(embeddings {worker.embeddings})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds of real-time processing of the N cameras",
    )
    ap.add_argument("--quick", action="store_true", help="60 s of real time, fewer checks")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mf-streams")
    args = ap.parse_args()
    if args.quick:
        args.duration = min(args.duration, 60.0)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench/streams.py: {args.cameras} cameras, {args.fps:g} processed frames/s, "
        f"{args.duration:g} s; {os.cpu_count()} CPUs, {load()}"
    )
    pipeline = Pipeline.from_names()
    people = choose_people(args.data, 6, 3, 0, pipeline=pipeline)
    scenes = standard_scenes(args.data, people, seed=0)
    gallery = build_gallery(args.workdir / "gallery.db", people, pipeline)
    try:
        result = correctness(scenes, args.workdir, gallery, pipeline, args.fps)
        door = scenes["door"]
        video = rendered(door, args.workdir)
        passers = truth(door)

        print(f"\n2. decoding alone ({args.cameras} live cameras, 1280x720 at 25 frames/s)")
        loop = (door.n_frames, float(door.fps))
        dec = live_cameras(
            video,
            args.cameras,
            args.fps,
            20.0 if not args.quick else 10.0,
            None,
            pipeline,
            passers,
            *loop,
            "decode only",
        )
        decode_ms = 1000 * dec["cpu_s"] / max(dec["decoded"], 1)
        print(f"   CPU per decoded frame {decode_ms:.2f} ms")

        print(f"\n3. real time: {args.cameras} cameras processed at {args.fps:g} frames/s")
        live = live_cameras(
            video,
            args.cameras,
            args.fps,
            args.duration,
            gallery,
            pipeline,
            passers,
            *loop,
            "processing",
        )
        per_processed = (
            1000 * (live["cpu_s"] - decode_ms / 1000 * live["decoded"]) / max(live["processed"], 1)
        )
        lat = live["latencies"]
        target = args.cameras * args.fps
        print(
            f"   processed {live['processed_per_s']:.1f} of {target:g} frames/s "
            f"({live['processed_per_s'] / target:.2f}x the target), dropped "
            f"{live['dropped']} frames"
        )
        print(
            f"   lag (worst camera): first third {live.get('lag_first', 0):.2f} s, last third "
            f"{live.get('lag_last', 0):.2f} s, max {live.get('lag_max', 0):.2f} s"
        )
        print(
            f"   CPU per processed frame (decoding excluded) {per_processed:.1f} ms; per decoded"
            f" frame {decode_ms:.2f} ms; total {live['cpu_s'] / live['wall_s']:.2f} of "
            f"{os.cpu_count()} cores"
        )
        print(
            f"   appearance -> arrived: median {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s"
            f" over {len(lat)} arrivals "
            f"(targets: <= 1 s median, <= 2 s p95)"
        )
        print(
            f"   complete loops with every passer one right visit: {live['loops_right']} of "
            f"{live['loops_checked']} ({live['unplaced']} arrivals not placed in the video)"
        )

        print("\n4. one camera, every frame")
        one = live_cameras(
            video,
            1,
            25.0,
            30.0 if not args.quick else 15.0,
            gallery,
            pipeline,
            passers,
            *loop,
            "one live camera at 25 frames/s",
        )
        worker = CameraWorker("file", pipeline, gallery, CameraSettings(fps=25.0))
        t0 = time.monotonic()
        with open_source(video, fps=None) as source:
            stop = threading.Event()
            limit = threading.Timer(20.0, stop.set)
            limit.start()
            worker.run(source, stop)
            limit.cancel()
        file_fps = worker.frames / (time.monotonic() - t0)
        print(
            f"   live: {one['processed_per_s']:.1f} of 25 frames/s; a file as fast as it goes:"
            f" {file_fps:.1f} frames/s; {load()}"
        )

        faces_in_view(people, gallery, pipeline)
        print(f"\nend: {load()}")
        print(
            f"summary: correct={result['ok']} cameras={args.cameras} "
            f"realtime={live['processed_per_s'] / target:.2f}x "
            f"lag_last={live.get('lag_last', 0):.2f}s "
            f"arrived_median={pct(lat, 50):.2f}s "
            f"p95={pct(lat, 95):.2f}s one_camera_max={max(one['processed_per_s'], 0):.1f}fps"
        )
    finally:
        gallery.close()
        if os.environ.get("MF_BENCH_CLEAN"):
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
