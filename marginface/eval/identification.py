"""The identification protocol: gallery/probe splits, embedding, closed- and open-set reports.

Splits:

* **from a folder of identities** (``<root>/<subject>/<image>``, images in natural order):
  the first image of each subject goes to the gallery, the rest are probes. Subjects with a
  single image have no probe; with ``distractors=True`` they join the gallery as distractors.
  With ``unknown_fraction > 0`` that share of subjects (chosen with ``seed``) is kept out of the
  gallery entirely: all their images become *non-mated* probes for the open-set protocol.
* **from explicit lists** (CSV ``path,subject``): probes whose subject is not in the gallery
  are non-mated.

Failed images: a gallery image that fails is left out of the gallery (listed); a probe that
fails counts as a miss (mated: never identified; non-mated: no false alarm) and is listed.
"""

from __future__ import annotations

import csv
import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marginface.embed import Embedder
from marginface.errors import DataError
from marginface.eval.embeddings import EmbeddingCache, EmbedOptions, embed_images
from marginface.eval.identify import (
    DEFAULT_FPIRS,
    cmc,
    dir_at_fpir,
    knn_vote,
    open_set_rates,
    subject_ranks,
)
from marginface.eval.pairs import ImageRef

__all__ = [
    "IMAGE_EXTENSIONS",
    "IdentificationSplit",
    "identify",
    "split_from_folder",
    "split_from_lists",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff", ".gif"}
)


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class IdentificationSplit:
    """Gallery entries and probes, each an image with a subject name."""

    gallery: list[tuple[ImageRef, str]] = field(default_factory=list)
    probes: list[tuple[ImageRef, str]] = field(default_factory=list)
    distractors: int = 0  # gallery entries of subjects without probes
    description: str = ""

    @property
    def gallery_subjects(self) -> set[str]:
        return {s for _, s in self.gallery}

    def summary(self) -> dict[str, Any]:
        subjects = self.gallery_subjects
        mated = sum(1 for _, s in self.probes if s in subjects)
        return {
            "gallery_images": len(self.gallery),
            "gallery_subjects": len(subjects),
            "distractors": self.distractors,
            "probes": len(self.probes),
            "mated_probes": mated,
            "non_mated_probes": len(self.probes) - mated,
            "split": self.description,
        }


def _ref(path: Path) -> ImageRef:
    p = path.expanduser().resolve()
    return ImageRef(key=str(p), path=p)


def split_from_folder(
    root: str | Path,
    *,
    distractors: bool = True,
    unknown_fraction: float = 0.0,
    seed: int = 0,
) -> IdentificationSplit:
    """A split from ``<root>/<subject>/<image>`` (see the module docstring for the rules)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"identity folder not found: {root}")
    if not 0.0 <= unknown_fraction < 1.0:
        raise DataError(f"unknown_fraction must lie in [0, 1), got {unknown_fraction}")
    subjects: dict[str, list[Path]] = {}
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
        files = sorted(
            (f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda f: _natural_key(f.name),
        )
        if files:
            subjects[d.name] = files
    if not subjects:
        raise DataError(f"{root}: no identity folders with images (<root>/<subject>/<image>)")
    names = list(subjects)
    n_unknown = round(unknown_fraction * len(names))
    if unknown_fraction > 0 and n_unknown == 0:
        n_unknown = 1
    rng = np.random.default_rng(seed)
    unknown = set(rng.permutation(names)[:n_unknown].tolist()) if n_unknown else set()
    split = IdentificationSplit()
    for name in names:
        files = subjects[name]
        if name in unknown:
            split.probes += [(_ref(f), name) for f in files]
        elif len(files) >= 2:
            split.gallery.append((_ref(files[0]), name))
            split.probes += [(_ref(f), name) for f in files[1:]]
        elif distractors:
            split.gallery.append((_ref(files[0]), name))
            split.distractors += 1
    if not split.gallery:
        raise DataError(f"{root}: no subject can go to the gallery")
    if not split.probes:
        raise DataError(f"{root}: no probes (every subject has a single image)")
    split.description = (
        f"folder {root}: first image of each subject -> gallery, the rest -> probes"
        + (f"; {len(unknown)} subjects ({unknown_fraction:g}) held out as non-mated probes "
           f"(seed {seed})" if unknown else "")
        + (f"; {split.distractors} single-image subjects as distractors" if split.distractors
           else "")
    )
    return split


def _read_list(path: Path, root: Path | None) -> list[tuple[ImageRef, str]]:
    if not path.is_file():
        raise DataError(f"list file not found: {path}")
    base = root or path.parent
    out = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            row = [c.strip() for c in row]
            if not any(row):
                continue
            if lineno == 1 and [c.lower() for c in row[:2]] == ["path", "subject"]:
                continue
            if len(row) != 2 or not row[0] or not row[1]:
                raise DataError(f"{path}:{lineno}: expected 'path,subject', got {row!r}")
            out.append((_ref(base / row[0]), row[1]))
    if not out:
        raise DataError(f"{path}: empty list")
    return out


def split_from_lists(
    gallery: str | Path, probes: str | Path, root: str | Path | None = None
) -> IdentificationSplit:
    """A split from two CSV lists of ``path,subject`` (relative paths against ``root``)."""
    r = Path(root) if root is not None else None
    split = IdentificationSplit(
        gallery=_read_list(Path(gallery), r), probes=_read_list(Path(probes), r)
    )
    probe_subjects = {s for _, s in split.probes}
    split.distractors = sum(1 for _, s in split.gallery if s not in probe_subjects)
    split.description = f"explicit lists: gallery {gallery}, probes {probes}"
    return split


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def identify(
    split: IdentificationSplit,
    embedder: Embedder,
    options: EmbedOptions | None = None,
    *,
    k: int = 5,
    threshold: float | None = None,
    threshold_source: str = "",
    fpirs: tuple[str, ...] = DEFAULT_FPIRS,
    max_rank: int = 20,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run closed- and open-set identification; returns the report and curve data for plots.

    Both decision rules are evaluated: nearest neighbour (``k = 1``) and the gallery's k-NN vote
    (:func:`marginface.eval.identify.knn_vote`). ``threshold`` (normally the card's calibrated
    one) gives the false-alarm and identification rates at the operating point.
    """
    images: list[ImageRef] = []
    index: dict[str, int] = {}
    for ref, _ in split.gallery + split.probes:
        if ref.key not in index:
            index[ref.key] = len(images)
            images.append(ref)
    emb = embed_images(images, embedder, options, cache=cache, workers=workers, progress=progress)
    ok = emb.ok
    g_idx = np.array([index[r.key] for r, _ in split.gallery])
    g_sub = np.array([s for _, s in split.gallery], dtype=object)
    g_keep = ok[g_idx]
    if not g_keep.any():
        raise DataError("every gallery image failed; nothing to identify against")
    g_idx, g_sub = g_idx[g_keep], g_sub[g_keep]
    p_idx = np.array([index[r.key] for r, _ in split.probes])
    p_sub = np.array([s for _, s in split.probes], dtype=object)
    p_ok = ok[p_idx]
    in_gallery = np.isin(p_sub.astype(str), np.unique(g_sub.astype(str)))
    scores = emb.embeddings[p_idx] @ emb.embeddings[g_idx].T
    scores = np.clip(scores.astype(np.float64), -1.0, 1.0)

    n_subjects = int(np.unique(g_sub.astype(str)).size)
    top = max(1, min(max_rank, n_subjects))
    mated = in_gallery
    report_rules: dict[str, Any] = {}
    curves: dict[str, Any] = {"cmc": {}, "open_set": {}}
    for rule, kk in (("nearest", 1), (f"knn{k}", k)):
        if rule == f"knn{k}" and k <= 1:
            continue
        ranks = subject_ranks(scores, g_sub, p_sub, k=kk)
        ranks[~p_ok] = np.inf  # failed probes are misses
        vote = knn_vote(scores, g_sub, k=kk)
        sim = np.where(p_ok, vote.similarity, -np.inf)
        correct = (vote.subject.astype(str) == p_sub.astype(str)) & p_ok
        block: dict[str, Any] = {"k": kk}
        if mated.any():
            curve = cmc(ranks[mated], max_rank=top)
            curves["cmc"][rule] = curve
            block |= {
                "rank1": _r(curve[0]),
                "rank5": _r(curve[min(4, top - 1)]) if top >= 5 else None,
                "cmc": [_r(v) for v in curve],
            }
        if mated.any() and (~mated).any():
            dirs = dir_at_fpir(sim[mated], correct[mated], sim[~mated], fpirs)
            block["dir_at_fpir"] = {key: _r(p.tpir) for key, p in dirs.items()}
            block["dir_thresholds"] = {key: _r(p.threshold) for key, p in dirs.items()}
            block["dir_reasons"] = {key: p.reason for key, p in dirs.items() if p.reason}
            curves["open_set"][rule] = (sim[mated], correct[mated], sim[~mated])
        if threshold is not None:
            tpir, fpir = open_set_rates(sim[mated], correct[mated], sim[~mated], threshold)
            block["at_threshold"] = {
                "threshold": _r(threshold),
                "identification_rate": _r(tpir),
                "false_alarm_rate": _r(fpir),
                "mated_rejected": _r(float(np.mean(sim[mated] < threshold)))
                if mated.any() else None,
            }
        report_rules[rule] = block

    probe_failures = [
        {"image": images[i].key, "reason": emb.failures[i]}
        for i in sorted({int(i) for i in p_idx[~p_ok]})
    ]
    gallery_failures = [
        {"image": images[i].key, "reason": emb.failures[i]}
        for i in sorted({int(i) for i in np.array([index[r.key] for r, _ in split.gallery])
                         [~np.array(g_keep)]})
    ]
    report = {
        "model": getattr(embedder, "name", embedder.card.name),
        **split.summary(),
        "gallery_images_used": int(g_idx.size),
        "gallery_subjects_used": n_subjects,
        "threshold": _r(threshold),
        "threshold_source": threshold_source or None,
        "rules": report_rules,
        "failed_gallery_images": gallery_failures,
        "failed_probe_images": probe_failures,
        "failed_image_policy": (
            "failed gallery images are left out of the gallery; failed probes count as misses "
            "(never identified, never a false alarm)"
        ),
        "embedding": {
            "n_images": len(images),
            "from_cache": emb.n_cached,
            "computed": emb.n_computed,
            "seconds": round(emb.seconds, 3),
        },
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return report, curves
