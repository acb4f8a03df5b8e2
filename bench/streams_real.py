"""Camera streams on real footage, measured against the truth written by eye.

Every clip of ``../shared/data/video-real`` (and clips joined with FFmpeg, a shot cut at each
join) is read as a file camera at 2, 5 and 10 frames/s by ``marginface.streams.CameraWorker``
with the default settings. People are enrolled from frames of one clip and looked for in others
(``tests/streams/real/footage.py``: woman1 and man1 of the head-pose clips, five people of
the crowd), beside ``--distractors`` celeba-dev identities. Printed, per clip and in total:

* tracks carrying two people (0 wanted): a track whose boxes match two people's truth boxes;
* named-box precision (>= 0.97 wanted): of the boxes that carry a name, those showing that
  person;
* recall: the share of enrolled people's frontal faces of at least 40 px (processed frames)
  whose box carries their name (>= 0.70 wanted);
* visits per real person (1.0 +- 0.1 wanted on the walking clips), and visits opened by
  things that are not faces (the backs of heads: 0 wanted);
* what the appearance step costs: embeddings per frame, ms of the embedder per frame and per
  face, beside all the work of a frame.

Run: ``python bench/streams_real.py [--fps 2,5,10] [--distractors 40] [--json out.json]``
(about 2 minutes on 2 cores). The load average is printed beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.streams.real.footage: the truth and its scoring

from tests.streams.real import footage  # noqa: E402

CLIPS = [
    "crowd-entrance",
    "intel-face-demographics-walking",
    "intel-face-demographics-walking-and-pause",
    "intel-classroom",
    "intel-head-pose-face-detection-female",
    "intel-head-pose-face-detection-male",
    "intel-head-pose-face-detection-female-and-male",
    "one-by-one-backs",
]
#: Clips joined one after another: a shot cut at each join.
JOINED = [
    ["intel-head-pose-face-detection-female", "intel-head-pose-face-detection-male"],
    ["intel-face-demographics-walking-and-pause", "intel-head-pose-face-detection-female-and-male"],
]
WALKING = {"intel-face-demographics-walking", "intel-face-demographics-walking-and-pause"}


def _row(s: dict[str, Any]) -> str:
    prec = f"{s['named_right']}/{s['named_boxes']}" if s["named_boxes"] else "-"
    rec = f"{s['recall_named']}/{s['recall_faces']}" if s["recall_faces"] else "-"
    per = s["visits_real_people"] / s["people_with_visits"] if s["people_with_visits"] else 0.0
    st = s["status"]
    return (
        f"{s['clip'][:44]:<44} {s['processed_frames']:>6} {s['tracks_two_people']:>4} "
        f"{prec:>9} {rec:>9} {s['people_with_visits']:>6} {per:>6.2f} "
        f"{s['visits_not_faces']:>5} {st['tracks_split']:>5} {st['scene_cuts']:>4} "
        f"{st['ms_per_frame']:>7.1f} {st['embed_ms']:>7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", default="2,5,10", help="processing rates, comma-separated")
    parser.add_argument("--distractors", type=int, default=40, help="celeba-dev identities")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    from marginface.embed import Pipeline
    from marginface.gallery import Gallery

    shared = ROOT.parent / "shared" / "data"
    pipeline = Pipeline.from_names()
    work = Path(tempfile.mkdtemp(prefix="streams-real-"))
    gallery = Gallery.open(work / "gallery.db", card=pipeline.embedder.card)
    dev = sorted(p for p in (shared / "celeba-dev").iterdir() if p.is_dir())
    subjects = footage.enrol_people(gallery, pipeline, dev[: args.distractors])
    print(f"{gallery.subjects.count()} subjects enrolled ({len(footage.ENROLMENT)} from the clips)")
    truths = [footage.load_truth(n) for n in CLIPS]
    truths += [footage.joined(parts, work / f"cut{k}.mp4") for k, parts in enumerate(JOINED)]
    results: dict[str, list[dict[str, Any]]] = {}
    for fps in [float(x) for x in args.fps.split(",")]:
        head = (
            f"{'clip':<44} {'frames':>6} {'two':>4} {'named ok':>9} {'recall':>9} "
            f"{'people':>6} {'v/pers':>6} {'nface':>5} {'split':>5} {'cuts':>4} "
            f"{'ms/fr':>7} {'emb ms':>7}"
        )
        print(f"\n== {fps:g} frames/s (load average {os.getloadavg()[0]:.2f})\n{head}")
        rows = []
        for truth in truths:
            started = time.perf_counter()
            run = footage.run_clip(truth["path"], pipeline, gallery, fps=fps)
            s = footage.score(truth, run, subjects)
            s["wall_s"] = round(time.perf_counter() - started, 2)
            s["embeddings"] = run.status["embeddings"]
            s["embed_s"] = run.status["embed_ms"] * run.status["frames_processed"] / 1000
            s["busy_s"] = run.status["busy_s"]
            rows.append(s)
            print(_row(s))
        results[f"{fps:g}"] = rows
        named = sum(r["named_boxes"] for r in rows)
        right = sum(r["named_right"] for r in rows)
        faces = sum(r["recall_faces"] for r in rows)
        recalled = sum(r["recall_named"] for r in rows)
        walking = [r for r in rows if r["clip"] in WALKING]
        people = sum(r["people_with_visits"] for r in walking)
        visits = sum(r["visits_real_people"] for r in walking)
        frames = sum(r["processed_frames"] for r in rows)
        embeddings = sum(r["embeddings"] for r in rows)
        embed_s = sum(r["embed_s"] for r in rows)
        busy_s = sum(r["busy_s"] for r in rows)
        print(
            f"total: tracks carrying two people {sum(r['tracks_two_people'] for r in rows)}; "
            f"named-box precision {right}/{named} = {right / max(named, 1):.3f}; "
            f"recall {recalled}/{faces} = {recalled / max(faces, 1):.3f}; walking clips "
            f"{visits} visits for {people} people ({visits / max(people, 1):.2f} each); "
            f"visits from non-faces {sum(r['visits_not_faces'] for r in rows)}"
        )
        print(
            f"appearance: {embeddings} embeddings in {frames} frames "
            f"({embeddings / max(frames, 1):.2f} per frame), "
            f"{1000 * embed_s / max(frames, 1):.1f} ms per frame and "
            f"{1000 * embed_s / max(embeddings, 1):.1f} ms per face, of "
            f"{1000 * busy_s / max(frames, 1):.1f} ms per frame in all"
        )
    gallery.close()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
