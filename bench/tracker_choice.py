"""Which multi-object tracker follows faces best: measured on YuNet's detections of rendered
scenes (issue #15 asks for a maintained tracker, chosen by measurement, not a hand-written one).

Candidates (each imported from where it can be: ``--path`` entries are put on ``sys.path``):

* ``trackers`` 2.6 ``ByteTrackTracker`` and ``OCSORTTracker`` (Roboflow's tracker package, the
  successor of supervision's ByteTrack): ``pip install --no-deps --target /tmp/trackers
  trackers pydeprecate``;
* supervision's ``ByteTrack`` (deprecated since supervision 0.28, removed in 0.31; 0.30.9 has
  it): ``pip install --no-deps --target /tmp/sv030 supervision==0.30.9``;
* ``norfair`` 2.3 (IoU distance, Kalman filter): ``pip install --no-deps --target
  /tmp/norfair norfair`` (its metadata pins numpy<2, which our OpenCV 5 cannot use; it runs
  with numpy 2 all the same);
* ``boxmot`` is not measured: its wheel requires torchvision, timm, gdown, huggingface-hub,
  pandas, pyarrow and opencv-python<5 (see ``pip download --no-deps boxmot``).

Scenes (1280x720 frames of celeba-dev photos pasted on a textured background, processed at
5 frames/s as a camera worker would, faces detected by YuNet at ``max_side`` 640):

* ``occlusion``: one person walks across the view behind a pillar that hides the face for
  about 0.6 s (3 processed frames);
* ``crossing``: two people walk towards each other and cross (the nearer one hides the other
  for a frame or two);
* ``two``: two people side by side walking together (two faces at once).

Per tracker and scene: **fragments** (distinct track ids per person beyond the first),
**switches** (a track id given to two people), **unlabelled** (detections of a person returned
without a track id: the tracker's warm-up) and microseconds per update.

    .venv/bin/python bench/tracker_choice.py --path /tmp/norfair     # ~10 s
    .venv/bin/python bench/tracker_choice.py --path /tmp/sv030       # supervision 0.30's ByteTrack

(supervision 0.30 and the installed 0.31 cannot be imported together, hence two runs.)
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba-dev"
W, H, FPS = 1280, 720, 5.0


@dataclass
class Person:
    photo: np.ndarray  # RGB
    x0: float  # centre x at t=0, px
    vx: float  # px / s
    y: float  # centre y
    h0: float  # photo height at t=0, px
    vh: float  # growth, px / s
    depth: int  # larger: nearer (drawn later)

    def rect(self, t: float) -> tuple[int, int, int, int]:
        h = self.h0 + self.vh * t
        w = h * self.photo.shape[1] / self.photo.shape[0]
        cx = self.x0 + self.vx * t
        return int(cx - w / 2), int(self.y - h / 2), int(cx + w / 2), int(self.y + h / 2)


def background(seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 9)
    grad = np.linspace(60, 160, W, dtype=np.float32)[None, :, None]
    return np.clip(0.5 * noise + grad, 0, 255).astype(np.uint8)


def render(
    people: list[Person], t: float, bg: np.ndarray, pillars: tuple[tuple[int, int], ...] = ()
) -> tuple[np.ndarray, list[tuple]]:
    """The frame at ``t`` and each visible person's (index, rect), nearest last."""
    import cv2

    frame = bg.copy()
    shown = []
    for i in sorted(range(len(people)), key=lambda k: people[k].depth):
        x1, y1, x2, y2 = people[i].rect(t)
        if x2 <= 0 or x1 >= W:
            continue
        img = cv2.resize(people[i].photo, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
        sx1, sy1 = max(x1, 0), max(y1, 0)
        sx2, sy2 = min(x2, W), min(y2, H)
        frame[sy1:sy2, sx1:sx2] = img[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1]
        shown.append((i, (x1, y1, x2, y2)))
    for a, b in pillars:
        frame[:, a:b] = (90, 80, 70)
    return frame, shown


def owner(box: np.ndarray, shown: list[tuple]) -> int:
    """The person a detection belongs to: the nearest one whose photo holds its centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for i, (x1, y1, x2, y2) in reversed(shown):
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return i
    return -1


def scenes(photos: list[np.ndarray]) -> dict[str, tuple[list[Person], float, tuple]]:
    p = photos
    return {
        # walks 1280 px in 6 s (213 px/s); a 130 px pillar hides the face about 0.6 s
        "occlusion": ([Person(p[0], -100, 230, 380, 200, 15, 0)], 6.5, ((560, 690),)),
        "crossing": (
            [
                Person(p[1], -100, 240, 360, 190, 10, 0),
                Person(p[2], W + 100, -240, 380, 230, 10, 1),
            ],
            6.5,
            (),
        ),
        "two": (
            [Person(p[3], -250, 200, 360, 200, 10, 0), Person(p[4], -10, 200, 360, 200, 10, 0)],
            6.0,
            (),
        ),
    }


# -- the candidates: each returns an object with update(boxes, scores, t) -> ids (-1: none) --
class TrackersLib:
    def __init__(self, kind: str, buffer: float = 0.0) -> None:
        import supervision as sv
        import trackers

        self.sv = sv
        # lost_track_buffer counts 30 fps frames: 30 = 1 s
        if kind == "bytetrack":
            self.t = trackers.ByteTrackTracker(
                lost_track_buffer=30,
                frame_rate=FPS,
                track_activation_threshold=0.6,
                minimum_consecutive_frames=1,
                iou=trackers.BIoU(buffer_ratio=buffer) if buffer else None,
            )
        elif kind == "cbiou":
            self.t = trackers.CBIoUTracker(
                lost_track_buffer=30,
                frame_rate=FPS,
                track_activation_threshold=0.6,
                minimum_consecutive_frames=1,
                buffer_ratio_first=buffer,
                buffer_ratio_second=buffer * 1.5,
            )
        else:
            self.t = trackers.OCSORTTracker(
                lost_track_buffer=30, frame_rate=FPS, minimum_consecutive_frames=1
            )

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float) -> np.ndarray:
        det = self.sv.Detections(
            xyxy=boxes.reshape(-1, 4), confidence=scores, data={"i": np.arange(len(boxes))}
        )
        out = self.t.update(det, timestamp=t)
        ids = np.full(len(boxes), -1)
        if len(out):
            ids[out.data["i"]] = out.tracker_id
        return ids


class SupervisionByteTrack:
    def __init__(self) -> None:
        import supervision as sv

        self.sv = sv
        self.t = sv.ByteTrack(
            track_activation_threshold=0.6,
            lost_track_buffer=30,
            minimum_matching_threshold=0.8,
            frame_rate=int(FPS),
            minimum_consecutive_frames=1,
        )

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float) -> np.ndarray:
        det = self.sv.Detections(
            xyxy=boxes.reshape(-1, 4), confidence=scores, data={"i": np.arange(len(boxes))}
        )
        out = self.t.update_with_detections(det)
        ids = np.full(len(boxes), -1)
        if len(out):
            ids[out.data["i"]] = out.tracker_id
        return ids


def _size_normalised(detection: object, tracked: object) -> float:
    """Centre distance between a detection and a track's estimate, in box widths."""
    d = detection.points  # type: ignore[attr-defined]
    e = tracked.estimate  # type: ignore[attr-defined]
    width = max(float(e[1, 0] - e[0, 0]), 1.0)
    return float(np.linalg.norm(d.mean(axis=0) - e.mean(axis=0))) / width


class Norfair:
    def __init__(self, distance: str = "iou") -> None:
        import norfair

        self.nf = norfair
        # hit_counter_max 5 frames = 1 s at 5 fps
        if distance == "iou":  # a match needs IoU > 0.05 with the estimate
            self.t = norfair.Tracker(
                distance_function="iou",
                distance_threshold=0.95,
                hit_counter_max=5,
                initialization_delay=0,
            )
        else:  # centres at most 2.5 box widths apart
            self.t = norfair.Tracker(
                distance_function=_size_normalised,
                distance_threshold=2.5,
                hit_counter_max=5,
                initialization_delay=0,
            )

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float) -> np.ndarray:
        dets = [
            self.nf.Detection(points=b.reshape(2, 2), scores=np.array([s, s]))
            for b, s in zip(boxes, scores, strict=True)
        ]
        objs = self.t.update(dets)
        ids = np.full(len(boxes), -1)
        pos = {id(d): k for k, d in enumerate(dets)}
        for o in objs:
            k = pos.get(id(o.last_detection))
            if k is not None and o.id is not None:
                ids[k] = o.id
        return ids


CANDIDATES: dict[str, Callable[[], object]] = {
    "trackers ByteTrack": lambda: TrackersLib("bytetrack"),
    "trackers ByteTrack BIoU 1.0": lambda: TrackersLib("bytetrack", 1.0),
    "trackers ByteTrack BIoU 1.5": lambda: TrackersLib("bytetrack", 1.5),
    "trackers C-BIoU 1.0/1.5": lambda: TrackersLib("cbiou", 1.0),
    "trackers OC-SORT": lambda: TrackersLib("ocsort"),
    "supervision 0.30 ByteTrack": SupervisionByteTrack,
    "norfair IoU": Norfair,
    "norfair centre/width 2.5": lambda: Norfair("centre"),
}


def detections_of(scene: tuple, detector: object) -> list[tuple]:
    people, duration, pillars = scene
    bg = background()
    out = []
    for k in range(int(duration * FPS)):
        t = k / FPS
        frame, shown = render(people, t, bg, pillars)
        dets = [d for d in detector.detect(frame) if d.size >= 20]  # type: ignore[attr-defined]
        boxes = np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float32)
        truth = [owner(b, shown) for b in boxes]
        out.append((t, boxes, scores, truth))
    return out


def measure(make: Callable[[], object], frames: list[tuple]) -> dict[str, float]:
    tracker = make()
    per_person: dict[int, list[int]] = {}
    owners: dict[int, set[int]] = {}
    unlabelled = 0
    times = []
    for t, boxes, scores, truth in frames:
        start = time.perf_counter()
        ids = tracker.update(boxes, scores, t)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
        for tid, who in zip(ids, truth, strict=True):
            if who < 0:
                continue
            if tid < 0:
                unlabelled += 1
                continue
            per_person.setdefault(who, []).append(int(tid))
            owners.setdefault(int(tid), set()).add(who)
    fragments = sum(len(set(v)) - 1 for v in per_person.values())
    switches = sum(len(v) - 1 for v in owners.values())
    return {
        "fragments": fragments,
        "switches": switches,
        "unlabelled": unlabelled,
        "us": 1e6 * statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        help="a folder to put first on sys.path (a --target install)",
    )
    args = parser.parse_args()
    for p in reversed(args.path):
        sys.path.insert(0, p)
    from PIL import Image

    from marginface.align.detect import load_detector

    ids = sorted(d for d in DATA.iterdir() if d.is_dir())
    photos = [np.asarray(Image.open(sorted(d.glob("*.jpg"))[0]).convert("RGB")) for d in ids[:5]]
    detector = load_detector("yunet", max_side=640)
    frames = {name: detections_of(s, detector) for name, s in scenes(photos).items()}
    for name, fr in frames.items():
        n = sum(sum(1 for w in f[3] if w >= 0) for f in fr)
        print(f"scene {name}: {len(fr)} frames, {n} face detections")
    print(
        f"{'tracker':28s} {'scene':10s} {'fragments':>9s} {'switches':>8s} "
        f"{'unlabelled':>10s} {'us/update':>9s}"
    )
    for label, make in CANDIDATES.items():
        for name, fr in frames.items():
            try:
                importlib.invalidate_caches()
                m = measure(make, fr)
            except Exception as exc:  # a candidate that cannot run here
                print(f"{label:28s} {name:10s} not measured: {type(exc).__name__}: {str(exc)[:80]}")
                break
            print(
                f"{label:28s} {name:10s} {m['fragments']:9d} {m['switches']:8d} "
                f"{m['unlabelled']:10d} {m['us']:9.0f}"
            )
    print(
        "boxmot                       not measured: needs torchvision, timm, pandas, pyarrow, "
        "opencv-python<5"
    )
    print(
        "chosen: trackers ByteTrack with BIoU 1.0 (marginface.streams.tracking): no fragment "
        "or switch, maintained, installs with numpy 2"
    )


if __name__ == "__main__":
    main()
