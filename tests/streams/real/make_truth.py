"""How the ground truth of the real clips was made (a tool, not a test).

The clips in ``../shared/data/video-real`` come without labels. The truth was made in two steps:

1. ``propose CLIP OUT``: every decoded frame is searched for faces (YuNet on the full frame,
   upscaled ``--upscale`` times for the 480x270 clips, score >= 0.45, ONet landmarks); each
   detection gets its aligned crop, SFace embedding, quality and MTCNN ONet face probability;
   detections are linked into *tracklets* across consecutive frames only when they overlap
   (IoU > 0.35) and look alike (cosine > 0.3; faces with eyes under 14 px apart are linked by
   overlap alone). Tracklets are cut generously: merging them is the labeller's job. Review
   pages (a row of crops per tracklet, grouped by a clustering of their mean embeddings) and
   context tiles are written to OUT.
2. ``build OUT``: the labels in :data:`LABELS` (written by a person looking at the review
   pages and at the frames) turn the tracklets into the truth file ``<clip>.json`` beside this
   script.

A truth file holds ``people`` (label -> description), ``non_faces`` (label -> what was taken
for a face), and ``boxes``: one row per detection, ``[frame, label, x1, y1, x2, y2, face,
frontal]``, where ``label`` is a person or ``x:<non-face>``; ``face`` is 1 when the box shows
the person's face (by eye per tracklet, and ONet's face probability >= 0.5 on that box: not the
back or side of a head, hair, an ear); ``frontal`` is 1 for a face whose landmarks say it is
turned less than about 30 degrees (|yaw| <= 0.3 eye distances, pitch 0.25-0.8).
``identities.json`` says which people of different clips are one person.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from marginface.align.detection import box_iou

HERE = Path(__file__).resolve().parent
CLIPS = HERE.parents[2].parent / "shared" / "data" / "video-real"

#: Red hair of A taken for a face (the top of his head, sometimes his forehead).
A_HAIR = [12, 15, 19, 21, 23, 24, 28, 29, 42, 43, 44, 50, 51, 52, 60, 65, 69, 77]
CREST = [8, 9, 11, 13, 16, 17, 18, 20, 22, 25, 30, 37, 39, 45, 47, 48, 49, 53, 55, 56, 57, 58]
CREST += [61, 63, 64, 66, 67, 70, 71, 72, 73, 74]

#: Per clip: people, non-faces, and each proposed tracklet's (label, shows a face).
LABELS: dict[str, dict[str, Any]] = {
    "crowd-entrance": {
        "upscale": 1.0,
        "people": {
            "A": "red-haired young man, black jacket, walks towards the camera (left of centre)",
            "B": "boy in a blue hoodie, walks towards the camera (centre)",
            "C": "grey-haired man with glasses, dark coat (behind B)",
            "D": "woman with curly hair in a red coat (behind B; turns away and back)",
            "E": "man with glasses in a black puffer jacket (behind C from about 1 s)",
            "F": "white-haired woman in black and red, far left",
            "G": "woman with a scarf crossing from right to left in the foreground, in profile",
            "H": "dark-haired man leaving at the right edge, in profile, first 0.2 s",
            "I": "woman on the phone at the right, behind the others",
            "J": "bald old man at the right, from about 2.6 s",
            "K": "old man with glasses in a beige coat, far left, first second",
            "L": "balding man in a beige coat by the door, small",
            "M": "grey-haired woman seen from behind (right)",
            "N": "blonde woman seen from behind",
        },
        "non_faces": {
            "crest": "the lion and unicorn of the Royal Opera House crest",
            "door": "reflections in the glass door",
        },
        "tracklets": {
            **{t: ("A", 1) for t in (2, 78)},
            **{t: ("A", 0) for t in A_HAIR},
            4: ("B", 1),
            0: ("C", 1),
            41: ("C", 1),
            1: ("D", 1),
            76: ("D", 1),
            **{t: ("D", 0) for t in (36, 40, 54, 62)},
            26: ("E", 1),
            38: ("E", 1),
            5: ("F", 1),
            **{t: ("G", 1) for t in (3, 31, 32, 34)},
            7: ("H", 1),
            14: ("H", 1),
            10: ("I", 1),
            79: ("I", 1),
            59: ("J", 1),
            6: ("K", 1),
            27: ("L", 1),
            33: ("L", 1),
            35: ("M", 0),
            46: ("N", 0),
            **{t: ("x:crest", 0) for t in CREST},
            68: ("x:door", 0),
            75: ("x:door", 0),
        },
    },
    "one-by-one-backs": {
        "upscale": 1.0,
        "people": {},
        "passers": 7,
        "passers_note": "seven people walk away from the camera one after another (a blonde "
        "woman in grey, a man in a black jacket, a blonde woman in black, a man in a black "
        "T-shirt, a dark-haired woman in grey, a curly-haired man, a man in a grey shirt); "
        "none shows the camera a face (the blonde woman turns her head sideways for a moment)",
        "non_faces": {"back": "backs and sides of heads, ears, necks and hair"},
        "default": ("x:back", 0),
        "tracklets": {},
    },
    "intel-face-demographics-walking": {
        "upscale": 2.0,
        "people": {
            "P": "woman in a white dress (left)",
            "Q": "man with glasses in a black and white vest (right)",
        },
        "non_faces": {"vest": "the pattern of Q's vest"},
        "tracklets": {0: ("P", 1), 1: ("Q", 1), 2: ("x:vest", 0), 3: ("x:vest", 0)},
    },
    "intel-face-demographics-walking-and-pause": {
        "upscale": 2.0,
        "people": {
            "R": "woman with long dark hair (left); woman1",
            "S": "bald man with glasses and a beard (centre)",
            "T": "blonde woman with glasses (right)",
        },
        "non_faces": {},
        "tracklets": {0: ("R", 1), 1: ("S", 1), 2: ("T", 1)},
    },
    "intel-classroom": {
        "upscale": 2.0,
        "people": {
            "U1": "student at the back left",
            "U2": "student at the front right",
            "U3": "student at the front left",
            "U4": "student at the back right",
        },
        "non_faces": {"edge": "an object at the left edge"},
        "tracklets": {
            0: ("U1", 1),
            1: ("U2", 1),
            2: ("U3", 1),
            3: ("U4", 1),
            **{t: ("x:edge", 0) for t in (4, 5, 6, 7)},
        },
    },
    "intel-head-pose-face-detection-female": {
        "upscale": 1.0,
        "people": {"V": "woman with long dark hair turning her head; woman1"},
        "non_faces": {},
        "tracklets": {0: ("V", 1)},
    },
    "intel-head-pose-face-detection-male": {
        "upscale": 1.0,
        "people": {"W": "man in a blue T-shirt; man1"},
        "non_faces": {},
        "tracklets": {0: ("W", 1)},
    },
    "intel-head-pose-face-detection-female-and-male": {
        "upscale": 1.0,
        "people": {
            "X": "woman with long dark hair (left); woman1",
            "Y": "man in a blue T-shirt (right); man1",
        },
        "non_faces": {},
        "tracklets": {1: ("X", 1), 0: ("Y", 1)},
    },
}

#: People of different clips who are one person (checked by eye and by SFace: 0.74-0.81).
IDENTITIES = {
    "woman1": [
        "intel-head-pose-face-detection-female:V",
        "intel-head-pose-face-detection-female-and-male:X",
        "intel-face-demographics-walking-and-pause:R",
    ],
    "man1": [
        "intel-head-pose-face-detection-male:W",
        "intel-head-pose-face-detection-female-and-male:Y",
    ],
}


def propose(clip: Path, out: Path, upscale: float) -> None:
    """Step 1: detections, tracklets and review pages (see the module's docstring)."""
    import av
    import cv2

    from marginface.align.quality import face_quality
    from marginface.embed import Pipeline

    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_names(
        detector="yunet", detector_options={"max_side": 4096, "score_threshold": 0.45}
    )
    rows: list[dict[str, Any]] = []
    crops, frames = [], []
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            image = frame.to_ndarray(format="rgb24")
            frames.append(image)
            work = image
            if upscale != 1.0:
                work = cv2.resize(
                    image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC
                )
            detections = [d.scaled(1.0 / upscale) for d in pipe.detector.detect(work)]
            for det in detections:
                crop = pipe.aligner.crop(image, det.landmarks)
                crops.append(crop)
                quality = face_quality(det.landmarks, det.score, crop)
                rows.append(
                    {
                        "frame": index,
                        "box": [round(float(v), 1) for v in det.box],
                        "score": round(det.score, 3),
                        "onet": round(float(det.face_prob or 0.0), 3),
                        "landmarks": np.round(det.landmarks, 1).tolist(),
                        "quality": quality.to_dict(),
                    }
                )
    emb = pipe.embedder.embed(np.stack(crops)) if crops else np.zeros((0, 128), np.float32)
    tracklet = [-1] * len(rows)
    last: dict[int, int] = {}
    next_id = 0
    by_frame: dict[int, list[int]] = {}
    for k, r in enumerate(rows):
        by_frame.setdefault(r["frame"], []).append(k)
    for index in range(len(frames)):
        pairs = []
        for k in by_frame.get(index, []):
            for t, j in last.items():
                if rows[j]["frame"] < index - 3:
                    continue
                overlap = box_iou(np.array(rows[k]["box"]), np.array(rows[j]["box"]))
                small = min(rows[k]["quality"]["size"], rows[j]["quality"]["size"]) < 14
                if overlap > 0.35 and (float(emb[k] @ emb[j]) > 0.3 or small):
                    pairs.append((overlap, k, t))
        pairs.sort(reverse=True)
        used_k: set[int] = set()
        used_t: set[int] = set()
        for _, k, t in pairs:
            if k not in used_k and t not in used_t:
                tracklet[k] = t
                used_k.add(k)
                used_t.add(t)
        for k in by_frame.get(index, []):
            if tracklet[k] < 0:
                tracklet[k], next_id = next_id, next_id + 1
            last[tracklet[k]] = k
    for k, r in enumerate(rows):
        r["tracklet"] = tracklet[k]
    (out / "detections.json").write_text(json.dumps(rows))
    np.save(out / "emb.npy", emb)
    _review_pages(out, rows, np.stack(crops) if crops else np.zeros((0, 112, 112, 3)), emb)


def _review_pages(
    out: Path, rows: list[dict[str, Any]], crops: np.ndarray, emb: np.ndarray
) -> None:
    """One row of up to seven crops per tracklet, grouped by agglomerative clustering of the
    tracklets' mean embeddings (never two tracklets seen in one frame)."""
    import cv2

    by: dict[int, list[int]] = {}
    for k, r in enumerate(rows):
        by.setdefault(r["tracklet"], []).append(k)
    means = {}
    for t, ks in by.items():
        m = emb[ks].mean(axis=0)
        means[t] = m / max(float(np.linalg.norm(m)), 1e-12)
    frames = {t: {rows[k]["frame"] for k in ks} for t, ks in by.items()}
    clusters = [[t] for t in sorted(by)]
    while True:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                if any(frames[a] & frames[b] for a in clusters[i] for b in clusters[j]):
                    continue
                v = min(float(means[a] @ means[b]) for a in clusters[i] for b in clusters[j])
                if v > 0.4 and (best is None or v > best[0]):
                    best = (v, i, j)
        if best is None:
            break
        clusters[best[1]] += clusters.pop(best[2])
    strips = []
    for cluster in clusters:
        for t in cluster:
            ks = by[t]
            pick = [ks[round(x)] for x in np.linspace(0, len(ks) - 1, min(7, len(ks)))]
            strip = np.full((112, 112 * 8, 3), 40, np.uint8)
            for n, k in enumerate(pick):
                strip[:, 112 * (n + 1) : 112 * (n + 2)] = crops[k]
            first, final = rows[ks[0]], rows[ks[-1]]
            text = [f"T{t}", f"f{first['frame']}-{final['frame']}", f"n{len(ks)}"]
            text += [f"x{int(first['box'][0])}", f"y{int(first['box'][1])}"]
            for n, line in enumerate(text):
                cv2.putText(strip, line, (4, 16 + 17 * n), 0, 0.5, (255, 255, 0), 1)
            strips.append(strip)
        strips.append(np.full((6, 112 * 8, 3), 255, np.uint8))
    for n in range(0, len(strips), 12):
        page = np.concatenate(strips[n : n + 12])
        cv2.imwrite(str(out / f"review{n // 12}.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))


def build(clip: Path, work: Path) -> dict[str, Any]:
    """Step 2: the truth file of ``clip`` from its proposal in ``work`` and :data:`LABELS`."""
    import av

    name = clip.stem
    spec = LABELS[name]
    rows = json.loads((work / "detections.json").read_text())
    boxes = []
    for r in rows:
        label, face = spec["tracklets"].get(r["tracklet"], spec.get("default", (None, 0)))
        if label is None:
            raise SystemExit(f"{name}: tracklet T{r['tracklet']} has no label")
        q = r["quality"]
        face = int(face and r["onet"] >= 0.5)
        frontal = int(face and abs(q["yaw"]) <= 0.3 and 0.25 <= q["pitch"] <= 0.8)
        boxes.append([r["frame"], label, *[round(v) for v in r["box"]], face, frontal])
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        size = [stream.codec_context.width, stream.codec_context.height]
        rate = float(stream.average_rate)
        count = sum(1 for _ in container.decode(video=0))
    truth = {
        "clip": clip.name,
        "frames": count,
        "fps": rate,
        "size": size,
        "people": spec["people"],
        "non_faces": spec["non_faces"],
        "boxes": boxes,
    }
    for key in ("passers", "passers_note"):
        if key in spec:
            truth[key] = spec[key]
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("propose", help="detections, tracklets and review pages of one clip")
    p.add_argument("clip")
    p.add_argument("out", type=Path)
    p.add_argument("--upscale", type=float, default=None)
    b = sub.add_parser("build", help="write the truth files from the proposals in WORK/<clip>")
    b.add_argument("work", type=Path)
    args = parser.parse_args()
    if args.command == "propose":
        clip = Path(args.clip) if "/" in args.clip else CLIPS / f"{args.clip}.mp4"
        upscale = args.upscale or LABELS.get(clip.stem, {}).get("upscale", 1.0)
        propose(clip, args.out, upscale)
        return
    for name in LABELS:
        truth = build(CLIPS / f"{name}.mp4", args.work / name)
        lines = ",\n".join("    " + json.dumps(b) for b in truth.pop("boxes"))
        head = json.dumps(truth, indent=2, ensure_ascii=False)[:-2]
        (HERE / f"{name}.json").write_text(f'{head},\n  "boxes": [\n{lines}\n  ]\n}}\n')
        print(f"{name}: written")
    (HERE / "identities.json").write_text(json.dumps(IDENTITIES, indent=2) + "\n")


if __name__ == "__main__":
    main()
