"""Open-set decision rules beyond one threshold: do they lower FNIR at the same FPIR?

Each candidate rule is compared with the gallery's rule (a subject's score is its best face's;
the best subject is named when its score reaches the threshold) at FPIR 1e-1, 1e-2 and 1e-3,
thresholds set on the non-mated searches of the same run. A rule is worth keeping only if it
lowers FNIR at the same FPIR on both sets:

* ``celeba-train-112`` aligned crops (``--aligned`` protocol): 1,000 enrolled people (one photo
  each) from the identities the built-in card's impostor calibration used, probes of their
  other photos (mated) and every photo of the held-out identities (non-mated);
* ``celeba-dev`` raw photos through the default pipeline (detector, alignment): galleries of
  40 of its 60 identities, drawn ``--draws`` times, the other 20 as strangers.

Rules:

* **cohort normalisation**: a probe's scores minus its mean score against a cohort of impostor
  faces (the standard remedy for probes that resemble everyone): the top-``K`` of 2,000
  individual faces, z-scores (T-norm), and the mean of all calibration faces (a single "crowd"
  vector, which ships no individual's face);
* **quality gating**: probes whose face is small, blurred, turned away or unsure are answered
  "unknown" (``marginface.align.quality``); only on celeba-dev, where faces are detected.

    .venv/bin/python bench/decision_rules.py            # ~3 min with embeddings cached
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from marginface.align.quality import face_quality
from marginface.embed import Pipeline, load_embedder
from marginface.eval.embeddings import EmbeddingCache, EmbedOptions, embed_images
from marginface.eval.identification import image_ref, scan_identities
from marginface.eval.openset import held_out

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FPIRS = (1e-1, 1e-2, 1e-3)


def fnir_at(
    mated_best: np.ndarray, mated_right: np.ndarray, nonmated_best: np.ndarray
) -> list[float]:
    """FNIR at each FPIR of :data:`FPIRS`, the threshold set on the non-mated searches."""
    out = []
    ordered = np.sort(nonmated_best)[::-1]
    for f in FPIRS:
        t = np.nextafter(ordered[int(f * ordered.size)], np.inf)
        out.append(float(1 - np.mean(mated_right & (mated_best >= t))))
    return out


def row(name: str, values: list[float], base: list[float] | None = None) -> str:
    cells = " ".join(f"{100 * v:6.2f}" for v in values)
    gain = (
        ""
        if base is None
        else "   " + " ".join(f"{100 * (v - b):+6.2f}" for v, b in zip(values, base, strict=True))
    )
    return f"  {name:42s} {cells}{gain}"


def celeba_train(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    embedder = load_embedder("sface")
    tail = embedder.card.impostors
    holdout = tail.holdout if tail is not None else 0.2
    ids = scan_identities(DATA / "celeba-train-112")
    refs, labels = [], []
    for name, files in ids.items():
        for f in files:
            refs.append(image_ref(f))
            labels.append(name)
    emb = embed_images(
        refs, embedder, EmbedOptions(aligned=True), cache=EmbeddingCache(), progress=False
    )
    x, lab = emb.embeddings[emb.ok].astype(np.float32), np.asarray(labels)[emb.ok]
    names = np.unique(lab)
    outside = np.array([held_out(n, holdout) for n in names])
    rng = np.random.default_rng(args.seed)
    inside = rng.permutation(names[~outside])
    gallery, cohort = inside[:1000], inside[1000:3000]
    first: dict[str, int] = {}
    for i, n in enumerate(lab):
        first.setdefault(str(n), i)
    g = x[[first[n] for n in gallery]]
    c = x[[first[n] for n in cohort]]
    crowd = x[np.isin(lab, inside[1000:])].mean(axis=0)  # every calibration face not enrolled
    gallery_set = set(gallery.tolist())
    mated = np.array([i for i, n in enumerate(lab) if n in gallery_set and i != first[n]])
    nonmated = np.flatnonzero(np.isin(lab, names[outside]))
    truth = np.searchsorted(gallery, lab[mated], sorter=np.argsort(gallery))
    truth = np.argsort(gallery)[truth]
    sm, sn = x[mated] @ g.T, x[nonmated] @ g.T
    cm = np.sort(x[mated] @ c.T, axis=1)[:, ::-1]
    cn = np.sort(x[nonmated] @ c.T, axis=1)[:, ::-1]
    right = sm.argmax(axis=1) == truth
    print(
        f"\nceleba-train-112 (aligned): 1,000 enrolled, {mated.size:,} mated and "
        f"{nonmated.size:,} non-mated searches (held-out identities); FNIR % at FPIR "
        f"{', '.join(f'{f:g}' for f in FPIRS)}, then the change in points"
    )
    base = fnir_at(sm.max(1), right, sn.max(1))
    print(row("best face (the gallery's rule)", base))
    for k in (10, 50, 200):
        mu_m, mu_n = cm[:, :k].mean(1, keepdims=True), cn[:, :k].mean(1, keepdims=True)
        print(
            row(
                f"minus mean of top-{k} of 2,000 cohort faces",
                fnir_at((sm - mu_m).max(1), right, (sn - mu_n).max(1)),
                base,
            )
        )
    for k in (50, 2000):
        mu_m, mu_n = cm[:, :k].mean(1, keepdims=True), cn[:, :k].mean(1, keepdims=True)
        sd_m, sd_n = cm[:, :k].std(1, keepdims=True), cn[:, :k].std(1, keepdims=True)
        print(
            row(
                f"T-norm, top-{k} cohort faces",
                fnir_at(((sm - mu_m) / sd_m).max(1), right, ((sn - mu_n) / sd_n).max(1)),
                base,
            )
        )
    for a in (0.5, 1.0, 1.5):
        shift_m, shift_n = a * (x[mated] @ crowd), a * (x[nonmated] @ crowd)
        print(
            row(
                f"minus {a:g} x similarity to the crowd mean",
                fnir_at(sm.max(1) - shift_m, right, sn.max(1) - shift_n),
                base,
            )
        )
    return crowd, c


def celeba_dev(args: argparse.Namespace, crowd: np.ndarray, cohort: np.ndarray) -> None:
    ids = scan_identities(DATA / "celeba-dev")
    pipe = Pipeline.from_names("default", "yunet", selection="central")
    names, emb, quality = [], [], []
    t = time.perf_counter()
    for name, files in ids.items():
        for f in files:
            faces = list(pipe.embed_image(f))
            if faces:
                face = faces[0]
                names.append(name)
                emb.append(face.embedding)
                quality.append(face_quality(face.landmarks, face.score, face.crop))
    x, lab = np.vstack(emb).astype(np.float64), np.asarray(names)
    size = np.array([q.size for q in quality])
    sharp = np.array([q.sharpness for q in quality])
    yaw = np.abs([q.yaw for q in quality])
    det = np.array([q.detection_score for q in quality])
    print(
        f"\nceleba-dev (raw photos, detected, central face): {len(lab)} faces embedded in "
        f"{time.perf_counter() - t:.0f} s; 40 enrolled (first photo), 20 strangers, "
        f"{args.draws} draws; FNIR % at FPIR {', '.join(f'{f:g}' for f in FPIRS)}"
    )
    uniq = np.unique(lab)

    def run(keep: np.ndarray, shift: np.ndarray) -> list[float]:
        rng = np.random.default_rng(args.seed)
        mb, mr, nb = [], [], []
        for _ in range(args.draws):
            perm = rng.permutation(uniq)
            gal = perm[:40]
            g_rows = np.array([np.flatnonzero(lab == n)[0] for n in gal])
            enrolled = np.zeros(len(lab), bool)
            enrolled[g_rows] = True
            m_rows = np.flatnonzero(np.isin(lab, gal) & ~enrolled)
            n_rows = np.flatnonzero(~np.isin(lab, gal))
            s = x[m_rows] @ x[g_rows].T
            mb.append(np.where(keep[m_rows], s.max(1) - shift[m_rows], -np.inf))
            mr.append(gal[s.argmax(1)] == lab[m_rows])
            sn = (x[n_rows] @ x[g_rows].T).max(1) - shift[n_rows]
            nb.append(np.where(keep[n_rows], sn, -np.inf))
        return fnir_at(np.concatenate(mb), np.concatenate(mr), np.concatenate(nb))

    everyone, none = np.ones(len(lab), bool), np.zeros(len(lab))
    base = run(everyone, none)
    print(row("best face (the gallery's rule)", base))
    print(row("minus 1 x similarity to the crowd mean", run(everyone, x @ crowd), base))
    top = np.sort(x @ cohort.T.astype(np.float64), axis=1)[:, ::-1]
    print(
        row("minus mean of top-50 of 2,000 cohort faces", run(everyone, top[:, :50].mean(1)), base)
    )
    gates = [(f"gate: eyes >= {v:g} px apart", size >= v) for v in (12, 16, 20)]
    gates += [(f"gate: |yaw| <= {v:g}", yaw <= v) for v in (0.2, 0.3)]
    gates += [
        (f"gate: sharpness >= {v:.0f} (p{p})", sharp >= v)
        for p, v in ((2, np.percentile(sharp, 2)), (5, np.percentile(sharp, 5)))
    ]
    gates += [(f"gate: detection score >= {v:g}", det >= v) for v in (0.8, 0.9)]
    for name, keep in gates:
        print(row(f"{name} ({100 * (1 - keep.mean()):.0f}% refused)", run(keep, none), base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=300, help="celeba-dev gallery draws")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    crowd, cohort = celeba_train(args)
    celeba_dev(args, crowd, cohort)
    print(f"\nload average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
