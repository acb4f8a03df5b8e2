"""Camera streams measured on real footage against the truth written by eye (``*.json`` here).

Shared by the tests (``tests/streams/test_real_footage.py``) and the benchmark
(``bench/streams_real.py``):

* :func:`load_truth` reads a clip's truth; :func:`joined` makes a clip of several clips one
  after another with FFmpeg (a **shot cut** at each join) and its truth;
* :func:`enrol_people` enrols people of the clips into a gallery from a few frames of one clip
  (their boxes in the truth), beside celeba-dev distractors;
* :func:`run_clip` runs a :class:`~marginface.streams.camera.CameraWorker` over a clip (read as
  a file at ``fps``) and keeps every processed frame's tracks (the ``--tracks-jsonl`` record)
  and every event;
* :func:`score` compares them with the truth: tracks carrying two people, named-box precision,
  recall of enrolled people on frontal faces of at least 40 px, visits per person, visits from
  things that are not faces.

A system box is matched to the truth box of the same frame it overlaps most (IoU >= 0.3);
boxes of non-faces (labels ``x:...``) are things, not people.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marginface.align.detection import box_iou

HERE = Path(__file__).resolve().parent
CLIPS = HERE.parents[2].parent / "shared" / "data" / "video-real"
MIN_IOU = 0.3
#: Enrolled people's faces counted for recall: frontal and at least this many pixels.
RECALL_MIN_SIZE = 40


def load_truth(name: str) -> dict[str, Any]:
    """The truth of ``name`` (a clip's stem), with ``path`` (the clip) and ``label_of`` (the
    clip-qualified label of each person: ``clip:label``)."""
    truth = json.loads((HERE / f"{name}.json").read_text())
    truth["path"] = CLIPS / truth["clip"]
    truth["name"] = name
    return truth


def identities() -> dict[str, str]:
    """``clip:label`` -> identity, for people who appear in several clips (else the
    ``clip:label`` itself)."""
    table = json.loads((HERE / "identities.json").read_text())
    return {member: ident for ident, members in table.items() for member in members}


def identity(clip: str, label: str) -> str:
    """The person behind a clip's label, across clips."""
    key = f"{clip}:{label}"
    return identities().get(key, key)


def joined(names: Sequence[str], out: Path, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Clips played one after another (H.264, at the first clip's size and frame rate unless
    ``size`` is given): a shot cut at each join. Returns the joined clip's truth (frames
    renumbered, labels qualified by their clip) with ``cuts`` (the first frame of each clip
    after the first)."""
    truths = [load_truth(n) for n in names]
    w, h = size or tuple(truths[0]["size"])
    fps = truths[0]["fps"]
    inputs: list[str] = []
    chains = []
    for k, t in enumerate(truths):
        inputs += ["-i", str(t["path"])]
        chains.append(f"[{k}:v]scale={w}:{h},fps={fps},setsar=1[v{k}]")
    graph = ";".join(chains) + ";" + "".join(f"[v{k}]" for k in range(len(truths)))
    graph += f"concat=n={len(truths)}:v=1[out]"
    if not out.exists():
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph),
                *("-map", "[out]", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"),
                str(out),
            ],
            check=True,
        )
    boxes, cuts, offset = [], [], 0
    for k, t in enumerate(truths):
        if k:
            cuts.append(offset)
        sx, sy = w / t["size"][0], h / t["size"][1]
        frames = round(t["frames"] * fps / t["fps"])
        for b in t["boxes"]:
            frame = offset + round(b[0] * fps / t["fps"])
            label = b[1] if b[1].startswith("x:") else f"{t['name']}:{b[1]}"
            x1, y1, x2, y2 = b[2] * sx, b[3] * sy, b[4] * sx, b[5] * sy
            boxes.append([frame, label, x1, y1, x2, y2, b[6], b[7]])
        offset += frames
    return {
        "clip": out.name,
        "name": out.stem,
        "path": out,
        "frames": offset,
        "fps": fps,
        "size": [w, h],
        "boxes": boxes,
        "cuts": cuts,
        "qualified": True,
    }


def _person(truth: dict[str, Any], label: str) -> str:
    """A box label as a person across clips (``x:...`` labels stay things)."""
    if label.startswith("x:"):
        return label
    if truth.get("qualified"):
        clip, _, bare = label.partition(":")
        return identity(clip, bare)
    return identity(truth["name"], label)


# -- enrolment ------------------------------------------------------------------------------------
#: Who is enrolled, from which clip, and which of their truth boxes (frame numbers) give the
#: photos. Each is a person of another clip too where the clips allow it (woman1, man1).
ENROLMENT: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "woman1": ("intel-head-pose-face-detection-female-and-male", "X", (0, 20, 45)),
    "man1": ("intel-head-pose-face-detection-female-and-male", "Y", (5, 30, 50)),
    "crowd A": ("crowd-entrance", "A", (2, 20, 60)),
    "crowd B": ("crowd-entrance", "B", (5, 40, 80)),
    "crowd C": ("crowd-entrance", "C", (3, 70, 95)),
    "crowd E": ("crowd-entrance", "E", (50, 70, 90)),
    "crowd F": ("crowd-entrance", "F", (30, 50, 70)),
}


def enrolment_subject(person: str) -> str:
    """The subject name an enrolled person gets (``identity(...)`` of the enrolment clip)."""
    clip, label, _ = ENROLMENT[person]
    return identity(clip, label)


def _frames(path: Path, wanted: Iterable[int]) -> dict[int, np.ndarray]:
    import av

    want = set(wanted)
    out = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in want:
                out[index] = frame.to_ndarray(format="rgb24")
            if len(out) == len(want):
                break
    return out


def enrol_people(gallery: Any, pipeline: Any, distractors: Sequence[Path] = ()) -> dict[str, str]:
    """Enrol every person of :data:`ENROLMENT` (the face in their truth box of each listed
    frame, nearest frame where the box is missing) and each distractor folder (celeba-dev
    identities, three photos each). Returns subject id -> person (identity)."""
    from marginface.gallery import Recognizer

    subjects: dict[str, str] = {}
    for person, (clip, label, frames) in ENROLMENT.items():
        truth = load_truth(clip)
        mine = {b[0]: b for b in truth["boxes"] if b[1] == label and b[6]}
        chosen = [min(mine, key=lambda f, want=want: abs(f - want)) for want in frames]
        images = _frames(truth["path"], chosen)
        crops = []
        for f in chosen:
            box = np.asarray(mine[f][2:6], dtype=np.float32)
            dets = [
                d for d in pipeline.detector.detect(images[f]) if box_iou(d.box, box) >= MIN_IOU
            ]
            if dets:
                best = max(dets, key=lambda d: box_iou(d.box, box))
                crops.append(pipeline.aligner.crop(images[f], best.landmarks))
        if not crops:
            raise RuntimeError(f"{person}: no face found in the enrolment frames")
        emb = pipeline.embedder.embed(np.stack(crops))
        subject = gallery.subjects.create(identity(clip, label), embeddings=emb)
        subjects[subject.id] = identity(clip, label)
    rec = Recognizer(gallery, pipeline)
    for folder in distractors:
        photos = sorted(folder.glob("*.jpg"))[:3]
        try:
            result = rec.enroll(f"distractor {folder.name}", photos)
        except Exception:  # a folder whose photos disagree: skip it
            continue
        subjects[result.subject.id] = f"distractor {folder.name}"
    return subjects


# -- running --------------------------------------------------------------------------------------
@dataclass
class Run:
    """What a camera worker did on one clip."""

    records: list[dict[str, Any]] = field(default_factory=list)  # one per processed frame
    events: list[Any] = field(default_factory=list)  # VisitEvent
    status: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def run_clip(
    path: Path,
    pipeline: Any,
    gallery: Any,
    settings: Any = None,
    *,
    fps: float = 5.0,
    sinks: Sequence[Any] = (),
) -> Run:
    """Process ``path`` as a file camera at ``fps`` with :class:`CameraWorker` (``settings``:
    :class:`CameraSettings`, default the defaults at ``fps``; ``sinks``: more event sinks, such
    as a recorder)."""
    import threading
    import time

    from marginface.streams.camera import CameraSettings, CameraWorker
    from marginface.streams.sources import open_source

    if settings is None:
        settings = CameraSettings(fps=fps)
    else:
        settings = settings.model_copy(update={"fps": fps})
    run = Run()
    worker = CameraWorker(path.stem, pipeline, gallery, settings, sinks=[run.events.append, *sinks])
    source = open_source(path, fps=settings.fps)

    def on_frame(frame: Any, events: list[Any]) -> None:
        record = worker.latest_tracks()
        if record is not None:
            run.records.append(record)

    started = time.perf_counter()
    try:
        worker.run(source, threading.Event(), on_frame=on_frame)
    finally:
        source.close()
    run.seconds = time.perf_counter() - started
    run.status = worker.status()
    return run


# -- scoring --------------------------------------------------------------------------------------
def match(truth: dict[str, Any], record: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    """Each system track of one processed frame with the truth box it overlaps most (IoU >=
    :data:`MIN_IOU`, each truth box used once, best overlaps first), or None."""
    frame_boxes = truth.setdefault("_by_frame", {})
    if not frame_boxes:
        for b in truth["boxes"]:
            frame_boxes.setdefault(b[0], []).append(b)
    boxes = frame_boxes.get(record["frame"], [])
    pairs = sorted(
        (
            (box_iou(track["box"], b[2:6]), i, j)
            for i, track in enumerate(record["tracks"])
            for j, b in enumerate(boxes)
        ),
        reverse=True,
    )
    found: dict[int, Any] = {}
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < MIN_IOU:
            break
        if i not in found and j not in used:
            found[i] = boxes[j]
            used.add(j)
    return [(track, found.get(i)) for i, track in enumerate(record["tracks"])]


def score(truth: dict[str, Any], run: Run, subjects: dict[str, str]) -> dict[str, Any]:
    """The figures of one run against its truth (see the module's docstring). ``subjects``:
    subject id -> person, from :func:`enrol_people`."""
    enrolled = set(subjects.values())
    track_people: dict[int, Counter[str]] = defaultdict(Counter)
    named = named_right = named_unmatched = 0
    wrong: list[tuple[int, int, str, str]] = []
    for record in run.records:
        for track, box in match(truth, record):
            person = _person(truth, box[1]) if box is not None else None
            if person is not None:
                track_people[track["track_id"]][person] += 1
            if track["state"] != "known":
                continue
            if person is None:
                named_unmatched += 1
                continue
            named += 1
            who = subjects.get(track["subject_id"], "?")
            if who == person:
                named_right += 1
            else:
                wrong.append((record["frame"], track["track_id"], who, person))
    # recall: frontal faces of enrolled people, at least RECALL_MIN_SIZE, in processed frames
    seen = recalled = 0
    processed = {r["frame"]: r for r in run.records}
    for b in truth["boxes"]:
        person = _person(truth, b[1])
        if person not in enrolled or not b[7] or min(b[4] - b[2], b[5] - b[3]) < RECALL_MIN_SIZE:
            continue
        record = processed.get(b[0])
        if record is None:
            continue
        seen += 1
        for track, box in match(truth, record):
            if (
                box is b
                and track["state"] == "known"
                and subjects.get(track["subject_id"]) == person
            ):
                recalled += 1
                break
    two = {
        tid: dict(c)
        for tid, c in track_people.items()
        if len([p for p in c if not p.startswith("x:")]) > 1
    }
    mixed = {tid: dict(c) for tid, c in track_people.items() if len(c) > 1}
    # visits: each arrived visit, by the person most of its tracks' boxes show
    visit_tracks: dict[str, set[int]] = defaultdict(set)
    for e in run.events:
        visit_tracks[e.uid].add(e.track_id)
    visits: Counter[str] = Counter()
    for e in run.events:
        if e.kind != "arrived":
            continue
        people: Counter[str] = Counter()
        for tid in visit_tracks[e.uid]:
            people.update(track_people.get(tid, {}))
        visits[people.most_common(1)[0][0] if people else "(no truth)"] += 1
    real = {p: n for p, n in visits.items() if not p.startswith("x:") and p != "(no truth)"}
    return {
        "clip": truth["name"],
        "processed_frames": len(run.records),
        "tracks": len(track_people),
        "tracks_two_people": len(two),
        "tracks_two_people_detail": two,
        "tracks_person_and_thing": len(mixed) - len(two),
        "named_boxes": named,
        "named_right": named_right,
        "named_precision": named_right / named if named else None,
        "named_wrong_examples": wrong[:10],
        "named_without_truth": named_unmatched,
        "recall_faces": seen,
        "recall_named": recalled,
        "recall": recalled / seen if seen else None,
        "visits": dict(visits),
        "visits_real_people": sum(real.values()),
        "people_with_visits": len(real),
        "visits_not_faces": sum(n for p, n in visits.items() if p.startswith("x:")),
        "visits_without_truth": visits.get("(no truth)", 0),
        "events": Counter(e.kind for e in run.events),
        "seconds": round(run.seconds, 2),
        "status": dict(run.status),
    }
