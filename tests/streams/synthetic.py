"""Synthetic camera footage with exact ground truth: real photos of people passing a camera.

Real footage of consenting people is not available, so the tests and the benchmark
(``bench/streams.py``) make video from the real photos in ``celeba-dev``: each *passer* is one
of a person's photos (cropped to a 2:3 portrait around the face, pasted with a soft edge)
moving linearly across a static textured background and growing as they approach the camera,
switching between two or three of their photos on the way (pose changes). A passer can be
hidden behind a pillar for a moment (occlusions) or vanish and come back (gaps).

Everything is deterministic from the scene (its ``seed`` draws the background and the sensor
noise), and the same geometry (:meth:`Scene.layout`) both draws the frames and gives the
ground truth: where each passer and each face is in every frame, and when each face is
visible (:func:`truth`).

* :func:`choose_people` picks enrolled people (with enrolment photos that never appear in the
  video) and strangers, keeping photos in which the default pipeline finds exactly one face;
* :func:`standard_scenes` builds the named scenes the tests and the benchmark share;
* :func:`render_frames` yields RGB frames, :func:`render` encodes H.264 (yuv420p, mp4) by
  piping raw frames to the ``ffmpeg`` command line tool.

This module never downloads anything: the data folder is an argument.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marginface.errors import ConfigError, DataError

if TYPE_CHECKING:
    from marginface.embed.pipeline import Pipeline

__all__ = [
    "PORTRAIT_ASPECT",
    "STANDARD_SCENES",
    "Passer",
    "People",
    "Person",
    "PlacedPasser",
    "Scene",
    "choose_people",
    "render",
    "render_frames",
    "standard_scenes",
    "truth",
]

#: Width / height of every passer's picture (photos are cropped to it around the face).
PORTRAIT_ASPECT = 2.0 / 3.0
#: A face counts as visible when at least this share of its box is inside the frame ...
_IN_FRAME = 0.9
#: ... and at most this share of it is covered (by a pillar or a nearer passer).
_MAX_COVERED = 0.2
#: The names :func:`standard_scenes` returns.
STANDARD_SCENES = ("single", "two_at_once", "occlusion", "gap_revisit", "stranger", "door")

Box = tuple[float, float, float, float]
Interval = tuple[float, float]


# -- people ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One identity of the data set and the photos chosen for it.

    ``video_photos`` appear in the video (``face_boxes``: the face detected in each, x1, y1,
    x2, y2 in that photo's pixels); ``enrol_photos`` (empty for strangers) are for enrolment
    only and never appear in the video.
    """

    identity: str
    enrolled: bool
    video_photos: tuple[Path, ...]
    face_boxes: tuple[Box, ...]
    enrol_photos: tuple[Path, ...] = ()


@dataclass(frozen=True)
class People:
    """The people of the test videos: ``enrolled`` ones and ``strangers``."""

    enrolled: tuple[Person, ...]
    strangers: tuple[Person, ...]

    @property
    def everyone(self) -> tuple[Person, ...]:
        return self.enrolled + self.strangers

    def get(self, identity: str) -> Person:
        """The person of that identity (:class:`DataError` when not chosen)."""
        for p in self.everyone:
            if p.identity == identity:
                return p
        raise DataError(f"{identity!r} is not one of the chosen people")


def _photo_faces(pipeline: Pipeline, path: Path) -> list[tuple[Box, float, tuple[int, int]]]:
    """Every face the pipeline's detector finds in a photo (box, score, photo (H, W))."""
    from marginface.errors import ImageError

    try:
        result = pipeline.align(path)
    except ImageError:
        return []
    return [(_box4(d.box), float(d.score), result.image_shape) for d in result.faces]


def _box4(values: Sequence[float] | np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in list(values)[:4])
    return x1, y1, x2, y2


def _portrait_crop(size: tuple[int, int], face: Box | None) -> tuple[int, int, int, int]:
    """The 2:3 crop (x0, y0, x1, y1) of a photo of ``size`` (H, W), centred on the face."""
    h, w = size
    if face is None:
        cx, cy = w / 2.0, h / 2.0
    else:
        cx, cy = (face[0] + face[2]) / 2.0, (face[1] + face[3]) / 2.0
    if w / h > PORTRAIT_ASPECT:
        cw = max(1, round(h * PORTRAIT_ASPECT))
        x0 = int(np.clip(round(cx - cw / 2.0), 0, w - cw))
        return x0, 0, x0 + cw, h
    ch = max(1, round(w / PORTRAIT_ASPECT))
    y0 = int(np.clip(round(cy - ch / 2.0), 0, h - ch))
    return 0, y0, w, y0 + ch


def _face_in_crop(size: tuple[int, int], face: Box | None) -> Box:
    """The face box as fractions (x1, y1, x2, y2) of the photo's 2:3 crop."""
    x0, y0, x1, y1 = _portrait_crop(size, face)
    if face is None:  # no detection known: the upper middle of the picture
        return (0.25, 0.15, 0.75, 0.6)
    cw, ch = x1 - x0, y1 - y0
    return ((face[0] - x0) / cw, (face[1] - y0) / ch, (face[2] - x0) / cw, (face[3] - y0) / ch)


@functools.lru_cache(maxsize=4)
def _default_pipeline() -> Pipeline:
    from marginface.embed.pipeline import Pipeline

    return Pipeline.from_names(selection="all")


def choose_people(
    data_dir: str | Path,
    n_enrolled: int = 6,
    n_strangers: int = 3,
    seed: int = 0,
    *,
    n_video_photos: int = 3,
    n_enrol_photos: int = 3,
    pipeline: Pipeline | None = None,
) -> People:
    """Choose ``n_enrolled`` people to enrol and ``n_strangers`` others from
    ``data_dir/celeba-dev``, deterministically from ``seed``.

    Only photos in which the default pipeline (``Pipeline.from_names()``: YuNet, SFace's
    alignment) finds exactly one face are used. Video photos must also show the face large
    (at least 30% of the 2:3 crop's height, wholly inside it) so that it is detectable when
    the passer is small; enrolment photos are other photos of the same person. Results are
    cached per process (when ``pipeline`` is not given).
    """
    root = Path(data_dir).expanduser().resolve()
    if pipeline is None:
        return _choose_cached(
            str(root), n_enrolled, n_strangers, seed, n_video_photos, n_enrol_photos
        )
    return _choose(root, n_enrolled, n_strangers, seed, n_video_photos, n_enrol_photos, pipeline)


@functools.lru_cache(maxsize=16)
def _choose_cached(
    root: str, n_enrolled: int, n_strangers: int, seed: int, n_video: int, n_enrol: int
) -> People:
    return _choose(Path(root), n_enrolled, n_strangers, seed, n_video, n_enrol, _default_pipeline())


def _choose(
    root: Path,
    n_enrolled: int,
    n_strangers: int,
    seed: int,
    n_video: int,
    n_enrol: int,
    pipeline: Pipeline,
) -> People:
    from marginface.embed.pipeline import Pipeline

    if n_enrolled < 0 or n_strangers < 0 or n_video < 1:
        raise ConfigError("choose_people needs n_enrolled, n_strangers >= 0, n_video_photos >= 1")
    base = root / "celeba-dev"
    if not base.is_dir():
        raise DataError(f"no celeba-dev folder in {root}")
    if pipeline.selection != "all":  # every face, to refuse photos with two
        pipeline = Pipeline(
            pipeline.detector,
            pipeline.embedder,
            selection="all",
            min_face_size=pipeline.min_face_size,
            score_threshold=pipeline.score_threshold,
            max_pixels=pipeline.aligner.max_pixels,
        )
    rng = np.random.default_rng(seed)
    identities = sorted(p.name for p in base.iterdir() if p.is_dir())
    order = [identities[i] for i in rng.permutation(len(identities))]
    enrolled: list[Person] = []
    strangers: list[Person] = []
    for identity in order:
        if len(enrolled) >= n_enrolled and len(strangers) >= n_strangers:
            break
        want_enrol = len(enrolled) < n_enrolled
        photos = sorted((base / identity).glob(f"{identity}_*.jpg"))
        photos = [photos[i] for i in rng.permutation(len(photos))]
        video: list[tuple[Path, Box]] = []
        enrol: list[Path] = []
        for path in photos:
            if len(video) >= n_video and (not want_enrol or len(enrol) >= n_enrol):
                break
            faces = _photo_faces(pipeline, path)
            if len(faces) != 1:
                continue
            box, score, size = faces[0]
            fx = _face_in_crop(size, box)
            big = (
                fx[3] - fx[1] >= 0.3
                and min(fx[0], fx[1]) >= 0.0
                and max(fx[2], fx[3]) <= 1.0
                and score >= 0.8
            )
            if big and len(video) < n_video:
                video.append((path, box))
            elif want_enrol and len(enrol) < n_enrol:
                enrol.append(path)
        if len(video) < n_video:
            continue
        person = Person(
            identity=identity,
            enrolled=False,
            video_photos=tuple(p for p, _ in video),
            face_boxes=tuple(b for _, b in video),
        )
        if want_enrol and len(enrol) >= n_enrol:
            enrolled.append(
                Person(
                    identity=identity,
                    enrolled=True,
                    video_photos=person.video_photos,
                    face_boxes=person.face_boxes,
                    enrol_photos=tuple(enrol),
                )
            )
        elif len(strangers) < n_strangers:
            strangers.append(person)
    if len(enrolled) < n_enrolled or len(strangers) < n_strangers:
        raise DataError(
            f"{base} has too few usable people: found {len(enrolled)} to enrol and "
            f"{len(strangers)} strangers, asked for {n_enrolled} and {n_strangers}"
        )
    return People(enrolled=tuple(enrolled), strangers=tuple(strangers))


# -- scenes ----------------------------------------------------------------------------------


def _intervals(value: Sequence[Sequence[float]]) -> list[Interval]:
    out = []
    for item in value:
        a, b = (float(x) for x in item)
        if not b > a:
            raise ConfigError(f"an interval must end after it starts: {list(item)}")
        out.append((a, b))
    return out


@dataclass
class Passer:
    """One person crossing the scene.

    The passer is drawn from ``enter_s`` (inclusive) to ``exit_s`` (exclusive), except during
    ``gaps``; the picture's centre moves linearly from ``start`` to ``end`` (fractions of the
    frame's width and height; outside [0, 1] is off screen) while its height grows linearly
    from ``start_height`` to ``end_height`` pixels (the width is 2/3 of it). ``photos`` are
    shown in turn, each for an equal share of the walk; ``face_boxes`` (optional, one per
    photo, in that photo's pixels) place the face for the ground truth and the crop.
    During ``occlusions`` a pillar (drawn in the background all along) is in front of the
    passer, hiding them whole. ``enrolled`` is ground truth: whether the person is enrolled.
    """

    identity: str
    photos: list[Path]
    enter_s: float
    exit_s: float
    start: tuple[float, float] = (-0.05, 0.45)
    end: tuple[float, float] = (1.05, 0.5)
    start_height: float = 200.0
    end_height: float = 360.0
    occlusions: list[Interval] = field(default_factory=list)
    gaps: list[Interval] = field(default_factory=list)
    face_boxes: list[Box] | None = None
    enrolled: bool = False

    def __post_init__(self) -> None:
        self.photos = [Path(p) for p in self.photos]
        if not self.photos:
            raise ConfigError(f"passer {self.identity!r} has no photos")
        if not self.exit_s > self.enter_s:
            raise ConfigError(f"passer {self.identity!r}: exit_s must be after enter_s")
        if min(self.start_height, self.end_height) < 8:
            raise ConfigError(f"passer {self.identity!r}: heights must be >= 8 pixels")
        if self.face_boxes is not None and len(self.face_boxes) != len(self.photos):
            raise ConfigError(f"passer {self.identity!r}: one face box per photo")
        self.start = (float(self.start[0]), float(self.start[1]))
        self.end = (float(self.end[0]), float(self.end[1]))
        self.occlusions = _intervals(self.occlusions)
        self.gaps = _intervals(self.gaps)
        if self.face_boxes is not None:
            self.face_boxes = [_box4(b) for b in self.face_boxes]

    @classmethod
    def of(cls, person: Person, enter_s: float, exit_s: float, **kwargs: Any) -> Passer:
        """A passer showing ``person``'s video photos (with their face boxes)."""
        return cls(
            identity=person.identity,
            photos=list(person.video_photos),
            face_boxes=list(person.face_boxes),
            enrolled=person.enrolled,
            enter_s=enter_s,
            exit_s=exit_s,
            **kwargs,
        )

    def drawn(self, t: float) -> bool:
        """Whether the passer is in the picture at time ``t`` (maybe off screen)."""
        return self.enter_s <= t < self.exit_s and not any(a <= t < b for a, b in self.gaps)

    def occluded(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.occlusions)

    def progress(self, t: float) -> float:
        return float(np.clip((t - self.enter_s) / (self.exit_s - self.enter_s), 0.0, 1.0))

    def photo_index(self, t: float) -> int:
        return min(int(self.progress(t) * len(self.photos)), len(self.photos) - 1)

    def rect(self, t: float, width: int, height: int) -> tuple[int, int, int, int]:
        """The picture's box (x0, y0, x1, y1), integer pixels, possibly beyond the frame."""
        p = self.progress(t)
        cx = (self.start[0] + (self.end[0] - self.start[0]) * p) * width
        cy = (self.start[1] + (self.end[1] - self.start[1]) * p) * height
        h = max(8, round(self.start_height + (self.end_height - self.start_height) * p))
        w = max(6, round(h * PORTRAIT_ASPECT))
        x0, y0 = round(cx - w / 2.0), round(cy - h / 2.0)
        return x0, y0, x0 + w, y0 + h

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["photos"] = [str(p) for p in self.photos]
        return d


@dataclass(frozen=True)
class PlacedPasser:
    """Where a passer is in one frame: the picture's box, the face's box (both x1, y1, x2,
    y2 pixels of the frame, possibly beyond it), which photo, and whether the face is
    visible (drawn, at least 90% inside the frame, at most 20% covered)."""

    index: int  # the passer's index in the scene
    identity: str
    enrolled: bool
    photo: int
    rect: tuple[int, int, int, int]
    face_box: Box
    occluded: bool
    visible: bool


def _area(b: Sequence[float]) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def _inter(a: Sequence[float], b: Sequence[float]) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


@dataclass
class Scene:
    """A camera's view: ``passers`` over a static background drawn from ``seed``.

    Frame ``i`` shows the scene at ``t = i / fps``; there are ``round(duration_s * fps)``
    frames. ``noise`` is the sensor noise's standard deviation (grey levels).
    """

    duration_s: float
    passers: list[Passer]
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    seed: int = 0
    noise: float = 2.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ConfigError("scene width and height must be even and >= 16 (yuv420p)")
        if not self.fps > 0 or not self.duration_s > 0:
            raise ConfigError("scene fps and duration_s must be positive")

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def time(self, index: int) -> float:
        return index / self.fps

    def pillars(self) -> list[tuple[int, int]]:
        """The pillars' horizontal extents (x0, x1): one per occlusion, wide enough to hide
        the passer throughout it."""
        out = []
        for p in self.passers:
            for a, b in p.occlusions:
                i0, i1 = int(np.ceil(a * self.fps - 1e-9)), int(np.ceil(b * self.fps - 1e-9))
                rects = [
                    p.rect(self.time(i), self.width, self.height)
                    for i in range(i0, max(i1, i0 + 1))
                ]
                x0 = max(0, min(r[0] for r in rects) - 12)
                x1 = min(self.width, max(r[2] for r in rects) + 12)
                out.append((x0, max(x0, x1)))  # empty when off screen
        return out

    def layout(self, index: int) -> list[PlacedPasser]:
        """Every passer drawn in frame ``index``, back to front (smaller = farther first)."""
        t = self.time(index)
        drawn = [(i, p) for i, p in enumerate(self.passers) if p.drawn(t)]
        rects = {i: p.rect(t, self.width, self.height) for i, p in drawn}
        drawn.sort(key=lambda ip: (rects[ip[0]][3] - rects[ip[0]][1], ip[0]))
        pillars = self.pillars()
        active = [
            (x0, 0, x1, self.height)
            for (x0, x1), occ in zip(pillars, self._occlusion_list(), strict=True)
            if occ[0] <= t < occ[1]
        ]
        frame = (0, 0, self.width, self.height)
        out = []
        for k, (i, p) in enumerate(drawn):
            r = rects[i]
            photo = p.photo_index(t)
            fb = self._face_fraction(p, photo)
            w, h = r[2] - r[0], r[3] - r[1]
            face = (r[0] + fb[0] * w, r[1] + fb[1] * h, r[0] + fb[2] * w, r[1] + fb[3] * h)
            area = max(_area(face), 1e-9)
            covers = [rects[j] for j, _ in drawn[k + 1 :]] + active
            covered = max((_inter(face, c) for c in covers), default=0.0) / area
            visible = _inter(face, frame) / area >= _IN_FRAME and covered <= _MAX_COVERED
            out.append(
                PlacedPasser(
                    index=i,
                    identity=p.identity,
                    enrolled=p.enrolled,
                    photo=photo,
                    rect=r,
                    face_box=face,
                    occluded=p.occluded(t),
                    visible=visible,
                )
            )
        return out

    def faces_at(self, t: float) -> list[PlacedPasser]:
        """:meth:`layout` of the frame shown at time ``t``."""
        return self.layout(min(max(round(t * self.fps), 0), self.n_frames - 1))

    def _occlusion_list(self) -> list[Interval]:
        return [occ for p in self.passers for occ in p.occlusions]

    def _face_fraction(self, p: Passer, photo: int) -> Box:
        box = p.face_boxes[photo] if p.face_boxes is not None else None
        return _face_in_crop(_photo_size(p.photos[photo]), box)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passers"] = [p.to_dict() for p in self.passers]
        return d

    def to_json(self, **kwargs: Any) -> str:
        """The scene as JSON (photo paths as strings); :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        d = json.loads(text)
        d["passers"] = [
            Passer(**{**p, "start": tuple(p["start"]), "end": tuple(p["end"])})
            for p in d["passers"]
        ]
        return cls(**d)


@functools.lru_cache(maxsize=1024)
def _photo_size(path: Path) -> tuple[int, int]:
    """(H, W) of a photo, read from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise DataError(f"cannot read photo {path}: {e}") from e
    return h, w


def truth(scene: Scene) -> list[dict[str, Any]]:
    """The ground truth of each passer: ``identity``, ``enrolled``, ``enter_s``, ``exit_s``,
    ``occlusions``, ``gaps`` and ``visible``: the intervals ``[first, last]`` (times of the
    first and the last frame) during which the face is visible (see :class:`PlacedPasser`),
    plus ``visible_s`` (their total, in frames / fps) and ``first_visible_s``."""
    frames: list[list[int]] = [[] for _ in scene.passers]
    for i in range(scene.n_frames):
        for placed in scene.layout(i):
            if placed.visible:
                frames[placed.index].append(i)
    out = []
    for p, idx in zip(scene.passers, frames, strict=True):
        runs: list[list[int]] = []
        for i in idx:
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        out.append(
            {
                "identity": p.identity,
                "enrolled": p.enrolled,
                "enter_s": p.enter_s,
                "exit_s": p.exit_s,
                "occlusions": [list(o) for o in p.occlusions],
                "gaps": [list(g) for g in p.gaps],
                "visible": [[scene.time(a), scene.time(b)] for a, b in runs],
                "visible_s": len(idx) / scene.fps,
                "first_visible_s": scene.time(idx[0]) if idx else None,
            }
        )
    return out


# -- rendering -------------------------------------------------------------------------------


def _background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """A static, textured room: wall and floor gradients, a door, posters, a skirting."""
    import cv2  # heavy: cv2

    w, h = scene.width, scene.height
    wall = rng.uniform(120, 200, 3)
    floor_c = rng.uniform(60, 120, 3)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    img = wall * (0.85 + 0.25 * y) * (0.95 + 0.1 * x)
    horizon = int(h * rng.uniform(0.72, 0.8))
    fy = np.linspace(0.0, 1.0, h - horizon, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(img, (h, w, 3)).copy()
    img[horizon:] = floor_c * (0.8 + 0.4 * fy) * (0.95 + 0.1 * x)
    img = img.astype(np.float32)
    for _ in range(int(rng.integers(5, 9))):  # posters, windows, cupboards
        rw, rh = int(rng.integers(w // 20, w // 6)), int(rng.integers(h // 12, h // 4))
        x0, y0 = int(rng.integers(0, w - rw)), int(rng.integers(h // 20, horizon - rh))
        color = rng.uniform(30, 230, 3).astype(np.float32)
        cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), color.tolist(), -1)
        cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), (color * 0.6).tolist(), 3)
    dx = int(rng.integers(w // 3, 2 * w // 3))  # a door frame
    cv2.rectangle(img, (dx, int(h * 0.12)), (dx + w // 8, horizon), (70.0, 60.0, 50.0), 10)
    cv2.line(img, (0, horizon), (w, horizon), (40.0, 40.0, 40.0), 4)
    texture = rng.normal(0.0, 6.0, (h // 8, w // 8, 1)).astype(np.float32)
    img += cv2.resize(texture, (w, h), interpolation=cv2.INTER_CUBIC)[:, :, None]
    for x0, x1 in scene.pillars():  # pillars: grey, lit from the left
        shade = np.linspace(1.1, 0.75, x1 - x0, dtype=np.float32)[None, :, None]
        img[:, x0:x1] = 128.0 * shade * (0.9 + 0.2 * y)
        img[:, x0 : x0 + 3] = 60.0
        img[:, x1 - 3 : x1] = 60.0
    return np.clip(img, 0, 255).astype(np.uint8)


def _ramp(n: int, feather: float) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.clip((np.minimum(i, n - 1 - i) + 1.0) / feather, 0.0, 1.0)


def _load_picture(p: Passer, photo: int) -> np.ndarray:
    from marginface.imaging import read_image

    image = read_image(p.photos[photo])
    box = p.face_boxes[photo] if p.face_boxes is not None else None
    x0, y0, x1, y1 = _portrait_crop(image.shape[:2], box)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def render_frames(scene: Scene, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
    """The scene's frames, RGB uint8 (H, W, 3), each a new array; with ``indices``, only
    those frames (in increasing order, duplicates once): the same pixels as in the full run."""
    import cv2  # heavy: cv2

    if indices is None:
        wanted: Iterable[int] = range(scene.n_frames)
    else:
        wanted = sorted({int(i) for i in indices})
        if wanted and (wanted[0] < 0 or wanted[-1] >= scene.n_frames):
            raise ConfigError(f"frame indices must be in [0, {scene.n_frames})")

    rng = np.random.default_rng(scene.seed)
    bg = _background(scene, rng)
    n_noise = 7
    noise = [
        rng.normal(0.0, scene.noise, (scene.height, scene.width, 3)).clip(-127, 127).astype(np.int8)
        for _ in range(n_noise)
    ]
    noisy = [np.clip(bg.astype(np.int16) + n, 0, 255).astype(np.uint8) for n in noise]
    pictures: dict[tuple[int, int], np.ndarray] = {}
    pillars = scene.pillars()
    occlusions = scene._occlusion_list()
    W, H = scene.width, scene.height
    for i in wanted:
        t = scene.time(i)
        k = i % n_noise
        frame = noisy[k].copy()
        for placed in scene.layout(i):
            p = scene.passers[placed.index]
            x0, y0, x1, y1 = placed.rect
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            key = (placed.index, placed.photo)
            if key not in pictures:
                pictures[key] = _load_picture(p, placed.photo)
            w, h = x1 - x0, y1 - y0
            pic = cv2.resize(
                pictures[key],
                (w, h),
                interpolation=cv2.INTER_AREA if h < pictures[key].shape[0] else cv2.INTER_LINEAR,
            )
            feather = max(3.0, 0.08 * w)
            alpha = (_ramp(h, feather)[:, None] * _ramp(w, feather)[None, :])[..., None]
            sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
            under = frame[cy0:cy1, cx0:cx1].astype(np.float32)
            top = pic[sl].astype(np.float32) + noise[k][cy0:cy1, cx0:cx1]
            blended = under + (top - under) * alpha[sl]
            frame[cy0:cy1, cx0:cx1] = np.clip(blended, 0, 255).astype(np.uint8)
        for (x0, x1), (a, b) in zip(pillars, occlusions, strict=True):
            if a <= t < b:  # the pillar in front: the background there, over everyone
                frame[:, x0:x1] = noisy[k][:, x0:x1]
        yield frame


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise ConfigError("the ffmpeg command line tool is needed to encode video; install it")
    return exe


def render(
    scene: Scene,
    path: str | Path,
    *,
    crf: int = 23,
    preset: str = "veryfast",
    gop_s: float = 2.0,
) -> Path:
    """Encode the scene as H.264 (yuv420p) in an mp4 at ``path`` by piping raw RGB frames to
    ``ffmpeg`` (libx264); a key frame at least every ``gop_s`` seconds, so that a client
    joining a stream of it (RTSP) starts soon. Returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        _ffmpeg(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{scene.width}x{scene.height}",
        "-r",
        f"{scene.fps:g}",
        "-i",
        "-",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(int(crf)),
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(max(1, round(gop_s * scene.fps))),
        "-movflags",
        "+faststart",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for frame in render_frames(scene):
            proc.stdin.write(np.ascontiguousarray(frame).data)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise DataError(f"ffmpeg could not encode {out}: {err.strip()[-500:]}")
    return out


# -- the standard scenes ---------------------------------------------------------------------

#: Lanes: (start centre, end centre, start height, end height) for left-to-right walks; a
#: right-to-left walk mirrors x. "far" passers are higher in the frame and smaller.
_LANES: dict[str, tuple[tuple[float, float], tuple[float, float], float, float]] = {
    "near": ((-0.06, 0.6), (1.06, 0.66), 260.0, 400.0),
    "far": ((-0.05, 0.3), (1.05, 0.32), 180.0, 250.0),
    "mid": ((-0.05, 0.45), (1.05, 0.5), 210.0, 360.0),
}


def _walk(
    person: Person,
    enter_s: float,
    exit_s: float,
    lane: str = "mid",
    leftward: bool = False,
    **kwargs: Any,
) -> Passer:
    start, end, h0, h1 = _LANES[lane]
    if leftward:
        start, end = (1.0 - start[0], start[1]), (1.0 - end[0], end[1])
    return Passer.of(
        person, enter_s, exit_s, start=start, end=end, start_height=h0, end_height=h1, **kwargs
    )


def standard_scenes(
    data_dir: str | Path,
    people: People | None = None,
    *,
    seed: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 25.0,
) -> dict[str, Scene]:
    """The named scenes shared by the tests and the benchmark (:data:`STANDARD_SCENES`):

    * ``single``: one enrolled person walks in and out (8 s);
    * ``two_at_once``: two enrolled people in view together, in two lanes (10 s);
    * ``occlusion``: an enrolled person hidden 0.5 s behind a pillar mid-walk (10 s): one track;
    * ``gap_revisit``: an enrolled person vanishes for 5.5 s and comes back (18 s): one visit
      when re-appearance within the window continues it;
    * ``stranger``: someone not enrolled walks through (8 s);
    * ``door``: 60 s of 9 passers (6 enrolled, 3 strangers), two pairs in view together, one
      short occlusion; nobody passes twice.

    ``people`` defaults to :func:`choose_people` ``(data_dir, 6, 3, seed)``.
    """
    if people is None:
        people = choose_people(data_dir, 6, 3, seed)
    if len(people.enrolled) < 6 or len(people.strangers) < 3:
        raise ConfigError("standard_scenes needs at least 6 enrolled people and 3 strangers")
    e, s = people.enrolled, people.strangers

    def scene(name: str, duration: float, passers: list[Passer], k: int) -> Scene:
        return Scene(
            duration_s=duration,
            passers=passers,
            seed=seed * 100 + k,
            name=name,
            width=width,
            height=height,
            fps=fps,
        )

    return {
        "single": scene("single", 8.0, [_walk(e[0], 0.5, 7.5, "mid")], 1),
        "two_at_once": scene(
            "two_at_once",
            10.0,
            [
                _walk(e[1], 0.5, 9.0, "far"),
                _walk(e[2], 1.0, 9.5, "near", leftward=True),
            ],
            2,
        ),
        "occlusion": scene(
            "occlusion",
            10.0,
            [
                _walk(e[3], 0.5, 9.5, "mid", occlusions=[(4.8, 5.3)]),
            ],
            3,
        ),
        "gap_revisit": scene(
            "gap_revisit",
            18.0,
            [
                _walk(e[4], 0.5, 17.0, "mid", gaps=[(6.5, 12.0)]),
            ],
            4,
        ),
        "stranger": scene("stranger", 8.0, [_walk(s[0], 0.5, 7.5, "mid", leftward=True)], 5),
        "door": scene(
            "door",
            60.0,
            [
                _walk(e[0], 1.0, 8.0, "near"),
                _walk(s[1], 6.0, 13.0, "far", leftward=True),
                _walk(e[4], 14.0, 21.0, "near"),
                _walk(e[5], 15.0, 22.0, "far", leftward=True),
                _walk(s[2], 24.0, 31.0, "mid"),
                _walk(e[1], 33.0, 40.0, "near", leftward=True, occlusions=[(36.3, 36.8)]),
                _walk(e[2], 42.0, 49.0, "near"),
                _walk(s[0], 43.0, 50.0, "far", leftward=True),
                _walk(e[3], 52.0, 59.0, "mid"),
            ],
            6,
        ),
    }
