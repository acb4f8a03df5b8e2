"""Open-set identification (1:N), evaluated and decided in NIST FRVT 1:N vocabulary.

A *mated* search is a photo of an enrolled person, a *non-mated* search a photo of a person who
is not enrolled. At a threshold ``t`` the gallery returns its top subject when that subject
scores ``>= t``:

* FPIR (false positive identification rate): the share of non-mated searches that return any
  subject;
* FNIR (false negative identification rate): the share of mated searches that do not return the
  right subject (wrong top subject, or the right one below ``t``).

Galleries from a folder of identities (``<root>/<identity>/<image>``, natural order), built by
:func:`draw_galleries`, explicit and reproducible:

* each draw (``repeats`` of them, seeded by ``(seed, repeat)``) puts the identities in a random
  order; the gallery of ``N`` subjects with ``K`` photos each enrols the first ``N`` identities
  of that order with at least ``K`` usable photos, each with its first ``K`` usable photos, so
  the galleries of one draw are *nested* (``10`` subjects are the first ten of ``100``) and
  their curves comparable;
* mated searches: every other photo of the enrolled subjects;
* non-mated searches: every photo of identities that no gallery of the draw enrols. When the
  folder is the one the model card's impostor table was calibrated on
  (``card.impostors.dataset``), non-mated identities are exactly those that calibration held out
  (:func:`marginface.eval.openset.held_out`) and galleries come from the others, so the
  operating points are validated on strangers the calibration never saw.

Explicit lists (:func:`split_from_lists`, CSV ``path,subject``) give one gallery as listed;
probes of subjects outside it are non-mated.

Subject scores (:data:`RULES`): a subject's score is the best of its faces (``best_face``, the
rule the gallery's thresholds and the card's impostor table assume); with several faces per
subject the mean of its two best faces (``top2_mean``) and the gallery's k-NN vote
(``knnK``, :func:`marginface.decision.vote.knn_vote`) are evaluated too.

Failed images: a photo without a usable face is never enrolled (the first ``K`` *usable* photos
are); as a search it counts as a miss (mated) or as no false positive (non-mated).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marginface.card import ImpostorTail
from marginface.decision.operating_point import (
    GalleryComposition,
    operating_point,
    require_impostors,
)
from marginface.decision.rates import far_key, parse_far
from marginface.decision.vote import knn_vote
from marginface.embed import Embedder
from marginface.errors import ConfigError, DataError, ModelError
from marginface.eval.embeddings import EmbeddingCache, EmbedOptions, ImageEmbeddings, embed_images
from marginface.eval.openset import SAME_PERSON, describe, held_out, same_person
from marginface.eval.pairs import ImageRef
from marginface.eval.search_metrics import (
    MIN_FALSE_POSITIVES,
    REPORTED_FPIRS,
    cmc,
    fnir_at_fpir,
    fnir_fpir_curve,
    open_set_rates,
)

__all__ = [
    "BEST_FACE",
    "IMAGE_EXTENSIONS",
    "TOP2_MEAN",
    "IdentificationSplit",
    "OpenSetDraw",
    "OpenSetProtocol",
    "RuleOutcome",
    "default_gallery_sizes",
    "draw_galleries",
    "identify_folder",
    "identify_lists",
    "image_ref",
    "scan_identities",
    "search_galleries",
    "split_from_lists",
]

#: The subject score the gallery decides with: the best of the subject's faces.
BEST_FACE = "best_face"
#: The mean of the subject's two best faces (its one face when it has one).
TOP2_MEAN = "top2_mean"

#: Target FPIRs of the operating points taken from the card's impostor table.
TARGET_FPIRS: tuple[str, ...] = ("1e-2", "1e-3")

_FAILED_POLICY = (
    "a photo without a usable face is never enrolled (each subject's first K usable photos "
    "are); as a search it counts as a miss (mated) or as no false positive (non-mated)"
)

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


def image_ref(path: Path) -> ImageRef:
    """The reference of an image file, keyed (and cached) by its absolute path."""
    p = path.expanduser().resolve()
    return ImageRef(key=str(p), path=p)


def scan_identities(root: str | Path) -> dict[str, list[Path]]:
    """The images of each identity of ``<root>/<identity>/<image>``, identities and images in
    natural order (``2`` before ``10``); identities without images are left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"identity folder not found: {root}")
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
    return subjects


# -- the protocol ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenSetProtocol:
    """What an open-set evaluation measures; every field is reported.

    ``gallery_sizes`` (subjects; None: :func:`default_gallery_sizes`) and
    ``photos_per_subject`` apply to folders; ``repeats`` independent draws from ``seed`` are
    pooled. ``k`` is the k-NN vote's neighbours, ``target_fpirs`` the operating points taken
    from the card's impostor table, ``threshold`` an extra explicit operating point.
    """

    gallery_sizes: tuple[int, ...] | None = None
    photos_per_subject: tuple[int, ...] = (1,)
    seed: int = 0
    repeats: int = 1
    k: int = 5
    target_fpirs: tuple[str, ...] = TARGET_FPIRS
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.gallery_sizes is not None and (
            not self.gallery_sizes or min(self.gallery_sizes) < 1
        ):
            raise ConfigError(
                f"gallery sizes must be at least 1 subject, got {list(self.gallery_sizes)}"
            )
        if not self.photos_per_subject or min(self.photos_per_subject) < 1:
            raise ConfigError(
                f"photos per subject must be at least 1, got {list(self.photos_per_subject)}"
            )
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1, got {self.repeats}")
        if self.k < 1:
            raise ConfigError(f"the k-NN vote needs k >= 1, got {self.k}")
        try:
            for f in self.target_fpirs:
                parse_far(f)
        except DataError as exc:
            raise ConfigError(f"target FPIR: {exc}") from None
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"a cosine threshold lies in [-1, 1], got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "gallery_sizes": None if self.gallery_sizes is None else list(self.gallery_sizes),
            "photos_per_subject": list(self.photos_per_subject),
            "seed": self.seed,
            "repeats": self.repeats,
            "k": self.k,
            "target_fpirs": [far_key(f) for f in self.target_fpirs],
            "threshold": self.threshold,
        }


# -- galleries and non-mated identities -------------------------------------------------------
@dataclass(frozen=True)
class OpenSetDraw:
    """One random draw: each ``K``'s enrolment order and the never-enrolled identities.

    ``galleries[K]`` lists the subjects of the largest gallery with ``K`` photos each, in
    enrolment order; the gallery of ``N`` subjects is its first ``N`` (nested galleries).
    """

    repeat: int
    galleries: Mapping[int, tuple[str, ...]]
    non_mated: tuple[str, ...]

    def gallery(self, photos: int, size: int) -> tuple[str, ...]:
        """The subjects of the ``size``-subject gallery with ``photos`` photos each."""
        return self.galleries[photos][:size]

    @property
    def enrolled(self) -> set[str]:
        """Every identity some gallery of this draw enrols."""
        return {n for g in self.galleries.values() for n in g}


def _gallery_side(
    names: Sequence[str], held_out_fraction: float | None
) -> tuple[list[str], list[str] | None]:
    """``(identities galleries may enrol, fixed non-mated identities or None)``."""
    if held_out_fraction is None:
        return list(names), None
    held = [n for n in names if held_out(n, held_out_fraction)]
    return [n for n in names if not held_out(n, held_out_fraction)], held


def default_gallery_sizes(
    photo_counts: Mapping[str, int],
    photos_per_subject: Sequence[int],
    held_out_fraction: float | None = None,
) -> tuple[int, ...]:
    """10, 100, 1000, ... subjects below the largest gallery that fits, then that one.

    The largest is every identity that may be enrolled with the most photos asked for (the
    calibration's identities when non-mated ones are held out), else half the identities, so
    the other half is left for non-mated searches.
    """
    side, fixed = _gallery_side(list(photo_counts), held_out_fraction)
    cap = sum(photo_counts[n] >= max(photos_per_subject) for n in side)
    if fixed is None:
        cap = min(cap, len(photo_counts) // 2)
    if cap < 1:
        raise DataError(
            f"no identity has {max(photos_per_subject)} photos to enrol while "
            "others are left for non-mated searches"
        )
    sizes = [10**e for e in range(1, 12) if 10**e < cap]
    return (*sizes, cap)


def draw_galleries(
    photo_counts: Mapping[str, int],
    gallery_sizes: Sequence[int],
    photos_per_subject: Sequence[int],
    *,
    seed: int = 0,
    repeats: int = 1,
    held_out_fraction: float | None = None,
) -> list[OpenSetDraw]:
    """The draws of an open-set evaluation (see the module docstring).

    ``photo_counts`` maps each identity, in natural order, to its number of usable photos.
    With ``held_out_fraction`` (the card's ``impostors.holdout``, when the folder is the
    calibration set) non-mated identities are those :func:`held_out` keeps out of calibration,
    in every draw, and galleries are drawn from the rest; otherwise every identity that the
    draw's largest galleries do not enrol is non-mated. :class:`DataError` when a gallery size
    exceeds the identities with enough photos or no identity is left for non-mated searches.
    """
    names = list(photo_counts)
    side, fixed = _gallery_side(names, held_out_fraction)
    top = max(gallery_sizes)
    where = " (not held out from calibration)" if fixed is not None else ""
    for k in sorted(set(photos_per_subject)):
        available = sum(photo_counts[n] >= k for n in side)
        if available < top:
            raise DataError(
                f"gallery size {top} with {k} photo(s) per subject: only {available} "
                f"identities{where} have at least {k} photo(s)"
            )
    if fixed is not None and not fixed:
        raise DataError(
            f"no identity is held out from calibration (held_out fraction "
            f"{held_out_fraction:g}) for non-mated searches"
        )
    draws = []
    for repeat in range(repeats):
        rng = np.random.default_rng([seed, repeat])
        order = [side[i] for i in rng.permutation(len(side))]
        galleries = {
            k: tuple([n for n in order if photo_counts[n] >= k][:top])
            for k in sorted(set(photos_per_subject))
        }
        if fixed is not None:
            non_mated = tuple(fixed)
        else:
            enrolled = {n for g in galleries.values() for n in g}
            non_mated = tuple(n for n in names if n not in enrolled)
            if not non_mated:
                raise DataError(
                    f"no identity is left for non-mated searches: galleries of {top} subjects "
                    f"enrol all {len(names)} identities; choose smaller --gallery-size"
                )
        draws.append(OpenSetDraw(repeat, galleries, non_mated))
    return draws


# -- searching --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleOutcome:
    """The searches of one gallery decided by one subject-score rule.

    ``mated_scores`` is the top candidate's score and ``mated_correct`` whether it is the right
    subject (a failed photo: ``-inf`` and False); ``mated_ranks`` the right subject's rank (the
    best-face rule only; ``inf`` when it cannot be found); ``nonmated_scores`` the top
    candidate's score of each non-mated search.
    """

    mated_scores: np.ndarray
    mated_correct: np.ndarray
    nonmated_scores: np.ndarray
    mated_ranks: np.ndarray | None = None
    #: the identity of each non-mated search (for intervals that respect that one person's
    #: photos are not independent searches); None when unknown
    nonmated_identities: np.ndarray | None = None

    @staticmethod
    def pool(parts: Sequence[RuleOutcome]) -> RuleOutcome:
        """Several draws' searches as one set."""
        ranks = [p.mated_ranks for p in parts]
        ids = [p.nonmated_identities for p in parts]
        return RuleOutcome(
            np.concatenate([p.mated_scores for p in parts]),
            np.concatenate([p.mated_correct for p in parts]),
            np.concatenate([p.nonmated_scores for p in parts]),
            None
            if any(r is None for r in ranks)
            else np.concatenate([r for r in ranks if r is not None]),
            None
            if any(i is None for i in ids)
            else np.concatenate([i for i in ids if i is not None]),
        )


def _rule_names(faces_per_subject: int, k: int) -> list[str]:
    return [BEST_FACE] + ([TOP2_MEAN, f"knn{k}"] if faces_per_subject >= 2 else [])


def _decide(
    sub: np.ndarray, truth: np.ndarray, ok: np.ndarray, n: int, ranks: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Top-subject decisions against the first ``n`` subjects of ``sub`` (probe × subject
    scores): mated scores, correctness and ranks, and non-mated scores."""
    part = sub[:, :n]
    mated = np.flatnonzero((truth >= 0) & (truth < n))
    rows = np.arange(mated.size)
    t = truth[mated]
    own = part[mated, t]
    others = part[mated]
    others[rows, t] = -np.inf
    rival = others.max(axis=1) if n > 1 else np.full(mated.size, -np.inf)
    good = ok[mated] & np.isfinite(own)
    correct = good & (own >= rival)  # a tie goes to the probe, as in subject_ranks
    m_scores = np.where(ok[mated], np.maximum(own, rival), -np.inf)
    rank = None
    if ranks:
        rank = 1.0 + (part[mated] > own[:, None]).sum(axis=1)
        rank[~good] = np.inf
    nonmated = truth < 0
    n_scores = np.where(ok[nonmated], part[nonmated].max(axis=1), -np.inf)
    return m_scores.astype(np.float64), correct, rank, n_scores.astype(np.float64)


def search_galleries(
    embeddings: np.ndarray,
    faces: np.ndarray,
    probes: np.ndarray,
    truth: np.ndarray,
    usable: np.ndarray,
    sizes: Sequence[int],
    *,
    k: int = 5,
    chunk: int = 2048,
) -> dict[int, dict[str, RuleOutcome]]:
    """Search every probe against the nested galleries ``faces[:N]`` for each ``N`` in
    ``sizes``, under each subject-score rule.

    ``faces`` is ``(S, F)``: the rows of ``embeddings`` (L2-normalised) of each subject's faces,
    ``-1`` where a subject has fewer. ``probes`` are rows of ``embeddings``; ``truth`` gives
    each probe's subject (an index into ``faces``) or ``-1`` for a non-mated search, and
    ``usable`` False for a failed photo. For gallery ``N`` the mated searches are the probes of
    its subjects (``0 <= truth < N``) and the non-mated ones every probe with ``truth == -1``.

    Probe × gallery scores are computed ``chunk`` probes at a time; all decisions are array
    operations (no loop per probe).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[0] == 0:
        raise DataError("the gallery is empty")
    n_subjects, width = faces.shape
    sizes = sorted({int(n) for n in sizes})
    if sizes[0] < 1 or sizes[-1] > n_subjects:
        raise DataError(f"gallery sizes {sizes} do not fit {n_subjects} subjects")
    probes = np.asarray(probes, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    usable = np.asarray(usable, dtype=bool)
    flat = faces.ravel()
    valid = flat >= 0
    gallery = x[np.where(valid, flat, 0)]
    face_subject = np.repeat(np.arange(n_subjects), width)
    rules = _rule_names(width, k)
    parts: dict[int, dict[str, list[tuple[Any, ...]]]] = {n: {r: [] for r in rules} for n in sizes}
    for a in range(0, probes.size, chunk):
        t, ok = truth[a : a + chunk], usable[a : a + chunk]
        s = np.clip(x[probes[a : a + chunk]] @ gallery.T, -1.0, 1.0)
        s[:, ~valid] = -np.inf
        s3 = s.reshape(len(t), n_subjects, width)
        # each subject's two best faces, one face column at a time (faster than reducing
        # over the short last axis)
        first = s3[:, :, 0].copy()
        second = np.full_like(first, -np.inf)
        for j in range(1, width):
            second = np.maximum(second, np.minimum(first, s3[:, :, j]))
            first = np.maximum(first, s3[:, :, j])
        subject_scores = {BEST_FACE: first}
        if width >= 2:
            subject_scores[TOP2_MEAN] = np.where(np.isfinite(second), (first + second) / 2, first)
        for n in sizes:
            for rule, sub in subject_scores.items():
                parts[n][rule].append(_decide(sub, t, ok, n, ranks=rule == BEST_FACE))
            if width >= 2:
                cols = np.flatnonzero(valid[: n * width])
                vote = knn_vote(s[:, cols], face_subject[cols], k=k)
                winner = vote.subject.astype(np.int64)
                best = vote.similarity
                mated = np.flatnonzero((t >= 0) & (t < n))
                nonmated = t < 0
                parts[n][f"knn{k}"].append(
                    (
                        np.where(ok[mated], best[mated], -np.inf),
                        ok[mated] & (winner[mated] == t[mated]),
                        None,
                        np.where(ok[nonmated], best[nonmated], -np.inf),
                    )
                )
    out: dict[int, dict[str, RuleOutcome]] = {}
    for n in sizes:
        out[n] = {}
        for rule in rules:
            chunks = parts[n][rule]
            if not chunks:  # no probes at all
                empty = np.zeros(0)
                out[n][rule] = RuleOutcome(
                    empty, empty.astype(bool), empty, empty if rule == BEST_FACE else None
                )
                continue
            ranks = [c[2] for c in chunks]
            out[n][rule] = RuleOutcome(
                np.concatenate([c[0] for c in chunks]).astype(np.float64),
                np.concatenate([c[1] for c in chunks]).astype(bool),
                np.concatenate([c[3] for c in chunks]).astype(np.float64),
                None if ranks[0] is None else np.concatenate(ranks),
            )
    return out


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
            out.append((image_ref(base / row[0]), row[1]))
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


# -- running and reporting --------------------------------------------------------------------
def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _wilson(hits: int, n: int, z: float = 1.96) -> list[float] | None:
    """95 % Wilson score interval of a rate measured as ``hits / n``."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(f"{max(0.0, centre - half):.3g}"), float(f"{min(1.0, centre + half):.3g}")]


def _calibration_overlap(
    folder: str | None, tail: ImpostorTail | None
) -> tuple[float | None, str, str]:
    """``(held-out fraction to draw non-mated identities with, or None; what the non-mated
    searches are to the card's impostor calibration; what the gallery identities are)``."""
    if tail is None:
        return None, "no impostor calibration in the card", "no impostor calibration in the card"
    if folder is None:
        return (
            None,
            f"explicit lists: overlap with the calibration on {tail.dataset} not checked",
            "explicit lists",
        )
    if tail.dataset != folder:
        text = f"independent of calibration (the card's impostor table is from {tail.dataset})"
        return None, text, text
    if tail.holdout > 0:
        return (
            tail.holdout,
            f"held out from calibration: the {tail.holdout:g} of {folder}'s identities that "
            "marginface.eval.openset.held_out keeps out of the card's impostor table",
            f"in-sample: identities of {folder} the card's impostor table was measured on",
        )
    text = (
        f"in-sample: the card's impostor table was measured on every identity of {folder} "
        "(no hold-out)"
    )
    return None, text, text


@dataclass
class _Config:
    """One gallery (size × photos per subject) and its searches, pooled over draws."""

    size: int
    photos: int | None  # None: as listed
    composition: GalleryComposition
    outcomes: dict[str, list[RuleOutcome]] = field(default_factory=dict)
    #: the different photos searched as non-mated over all draws (None: every search is one)
    distinct_nonmated: set[int] | None = None


def _curve_points(outcome: RuleOutcome) -> dict[str, list[float | None]] | None:
    """The FNIR/FPIR curve at FPIR 1e-6, 10^-5.75, ... (where there are enough searches)."""
    if outcome.mated_scores.size == 0 or outcome.nonmated_scores.size == 0:
        return None
    t, fpir, fnir = fnir_fpir_curve(
        outcome.mated_scores, outcome.mated_correct, outcome.nonmated_scores
    )
    levels = [10 ** (e / 4) for e in range(-24, 1)]
    out: dict[str, list[float | None]] = {"fpir": [], "fnir": [], "threshold": []}
    for level in levels:
        i = int(np.searchsorted(fpir, level * (1 + 1e-9), side="right")) - 1
        if i < 0:
            continue
        out["fpir"].append(_r(fpir[i]))
        out["fnir"].append(_r(fnir[i]))
        out["threshold"].append(_r(t[i]))
    return out


def _measure_at(outcome: RuleOutcome, threshold: float) -> dict[str, Any]:
    """FPIR (with counts) and FNIR of one rule at one threshold."""
    n = int(outcome.nonmated_scores.size)
    fp = int(np.sum(outcome.nonmated_scores >= threshold))
    tpir, fpir = open_set_rates(
        outcome.mated_scores, outcome.mated_correct, outcome.nonmated_scores, threshold
    )
    return {
        "measured_fpir": _r(fpir) if n else None,
        "false_positives": fp,
        "non_mated_searches": n,
        "measured_fpir_95ci": _wilson(fp, n),
        "measured_fpir_95ci_identities": _identity_bootstrap(
            outcome.nonmated_scores >= threshold, outcome.nonmated_identities
        ),
        "fnir": _r(1.0 - tpir) if outcome.mated_scores.size else None,
    }


def _identity_bootstrap(
    hits: np.ndarray, identities: np.ndarray | None, rounds: int = 2000, seed: int = 0
) -> list[float] | None:
    """95 % interval of a rate when searches come in groups of one person's photos: the
    identities are resampled, not the searches. Photos of one stranger who looks like someone
    enrolled mostly all pass, so the binomial interval (:func:`_wilson`) is far too narrow."""
    if identities is None or hits.size == 0 or identities.size != hits.size:
        return None
    names, codes = np.unique(identities.astype(str), return_inverse=True)
    fp = np.bincount(codes, weights=hits.astype(np.float64), minlength=names.size)
    n = np.bincount(codes, minlength=names.size).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, names.size, size=(rounds, names.size))
    rates = fp[pick].sum(axis=1) / n[pick].sum(axis=1)
    lo, hi = np.percentile(rates, [2.5, 97.5])
    return [float(f"{lo:.3g}"), float(f"{hi:.3g}")]


def _config_report(
    cfg: _Config, tail: ImpostorTail | None, protocol: OpenSetProtocol
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One gallery's metrics and operating points, and its curves for the plots."""
    pooled = {rule: RuleOutcome.pool(parts) for rule, parts in cfg.outcomes.items()}
    best = pooled[BEST_FACE]
    n_mated, n_non = int(best.mated_scores.size), int(best.nonmated_scores.size)
    rules: dict[str, Any] = {}
    for rule, o in pooled.items():
        points = fnir_at_fpir(
            o.mated_scores,
            o.mated_correct,
            o.nonmated_scores,
            REPORTED_FPIRS,
            distinct=None if cfg.distinct_nonmated is None else len(cfg.distinct_nonmated),
        )
        rules[rule] = {
            "rank1": _r(float(np.mean(o.mated_correct))) if n_mated else None,
            "fnir_at_fpir": {k: _r(p.fnir) for k, p in points.items()},
            "fnir_at_fpir_thresholds": {k: _r(p.threshold) for k, p in points.items()},
            "fnir_at_fpir_reasons": {k: p.reason for k, p in points.items() if p.reason},
            "curve": _curve_points(o),
        }
    top = max(1, min(20, cfg.size))
    cmc_curve = (
        cmc(best.mated_ranks, max_rank=top) if (n_mated and best.mated_ranks is not None) else None
    )
    if cmc_curve is not None:
        rules[BEST_FACE]["cmc"] = [_r(v) for v in cmc_curve]
        rules[BEST_FACE]["rank5"] = _r(cmc_curve[4]) if top >= 5 else None

    operating: list[dict[str, Any]] = []
    thresholds: list[tuple[dict[str, Any], float]] = []
    if tail is not None:
        for target in protocol.target_fpirs:
            op = operating_point(tail, target, cfg.composition)
            entry = {
                "source": "card impostor table",
                "target_fpir": far_key(target),
                **{
                    k: v
                    for k, v in op.to_dict().items()
                    if k in ("threshold", "expected_fpir", "note")
                },
            }
            thresholds.append((entry, op.threshold))
    if protocol.threshold is not None:
        thresholds.append(
            (
                {
                    "source": "explicit threshold",
                    "target_fpir": None,
                    "threshold": _r(protocol.threshold),
                },
                protocol.threshold,
            )
        )
    for entry, th in thresholds:
        at = _measure_at(best, th)
        ratio = None
        if entry["target_fpir"] is not None and at["measured_fpir"] is not None:
            ratio = _r(at["measured_fpir"] / parse_far(entry["target_fpir"]), 3)
        entry |= at | {"ratio_to_target": ratio}
        entry["other_rules"] = {
            rule: {
                k: v
                for k, v in _measure_at(o, th).items()
                if k in ("measured_fpir", "false_positives", "fnir")
            }
            for rule, o in pooled.items()
            if rule != BEST_FACE
        }
        operating.append(entry)

    report = {
        "gallery_size": cfg.size,
        "photos_per_subject": cfg.photos,
        "gallery_faces": cfg.composition.faces,
        "mated_searches": n_mated,
        "non_mated_searches": n_non,
        "rules": rules,
        "operating_points": operating,
    }
    label = f"N={cfg.size:,}" + (f", K={cfg.photos}" if cfg.photos is not None else "")
    curves: dict[str, Any] = {
        "label": label,
        "cmc": cmc_curve,
        "curve": None,
        "points": [
            (e["measured_fpir"], e["fnir"], e["target_fpir"])
            for e in operating
            if e["measured_fpir"]
        ],
    }
    if n_mated and n_non:
        _, fpir, fnir = fnir_fpir_curve(best.mated_scores, best.mated_correct, best.nonmated_scores)
        curves["curve"] = (fpir, fnir)
    return report, curves


def _impostor_table(embedder: Embedder) -> tuple[ImpostorTail | None, str | None]:
    try:
        return require_impostors(embedder.card), None
    except ModelError as exc:
        return None, str(exc)


def _finish(
    configs: list[_Config],
    embedder: Embedder,
    protocol: OpenSetProtocol,
    tail: ImpostorTail | None,
    tail_error: str | None,
    head: dict[str, Any],
    emb: ImageEmbeddings,
    images: Sequence[ImageRef],
    search_seconds: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    results, curves = [], []
    for cfg in configs:
        r, c = _config_report(cfg, tail, protocol)
        results.append(r)
        curves.append(c)
    report = {
        "model": getattr(embedder, "name", embedder.card.name),
        **head,
        "protocol": protocol.to_dict(),
        "rules": {
            BEST_FACE: "the subject's best face (the gallery's rule; the card's impostor "
            "table assumes it)",
            TOP2_MEAN: "mean of the subject's two best faces (K >= 2)",
            f"knn{protocol.k}": "the gallery's k-NN vote over faces, thresholded on the "
            "winner's best face (K >= 2)",
        },
        "fnir_min_false_positives": MIN_FALSE_POSITIVES,
        "fnir_at_fpir_rule": (
            f"reported only with at least {MIN_FALSE_POSITIVES}/FPIR "
            f"non-mated searches (at least {MIN_FALSE_POSITIVES} false "
            "positives); FNIR counts wrong top subjects and right ones below "
            "the threshold"
        ),
        "impostor_calibration": describe(tail) | {"holdout": tail.holdout}
        if tail is not None
        else None,
        "operating_points_error": tail_error,
        "results": results,
        "failed_images": [
            {"image": images[i].key, "reason": r} for i, r in sorted(emb.failures.items())
        ],
        "failed_image_policy": _FAILED_POLICY,
        "embedding": {
            "n_images": len(images),
            "from_cache": emb.n_cached,
            "computed": emb.n_computed,
            "seconds": round(emb.seconds, 3),
        },
        "search_seconds": round(search_seconds, 3),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return report, {"configs": curves}


def identify_folder(
    root: str | Path,
    embedder: Embedder,
    options: EmbedOptions | None = None,
    protocol: OpenSetProtocol | None = None,
    *,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open-set identification on a folder of identities: the report and the curves to plot.

    Galleries and searches as :func:`draw_galleries` builds them; every photo of the folder is
    embedded once (from the cache when it can). Gallery sizes that exceed the identities
    available fail before any embedding.
    """
    protocol = protocol or OpenSetProtocol()
    root = Path(root)
    identities = scan_identities(root)
    tail, tail_error = _impostor_table(embedder)
    fraction, non_mated_text, gallery_text = _calibration_overlap(root.name, tail)
    photos = tuple(sorted(set(protocol.photos_per_subject)))
    counts = {n: len(files) for n, files in identities.items()}
    sizes = tuple(
        sorted(set(protocol.gallery_sizes or default_gallery_sizes(counts, photos, fraction)))
    )
    draw_galleries(counts, sizes, photos, held_out_fraction=fraction)  # fail before embedding

    images: list[ImageRef] = []
    rows: dict[str, list[int]] = {}
    for name, files in identities.items():
        rows[name] = list(range(len(images), len(images) + len(files)))
        images += [image_ref(f) for f in files]
    emb = embed_images(images, embedder, options, cache=cache, workers=workers, progress=progress)
    ok = emb.ok
    usable = {n: [i for i in r if ok[i]] for n, r in rows.items()}
    draws = draw_galleries(
        {n: len(u) for n, u in usable.items()},
        sizes,
        photos,
        seed=protocol.seed,
        repeats=protocol.repeats,
        held_out_fraction=fraction,
    )

    # On the calibration's own folder, one person filed under two identities (label noise) is
    # no stranger to the gallery: the same rule the calibration applied. Elsewhere (and for a
    # model too weak for the rule to mean anything) every identity counts.
    groups: dict[str, int] = {}
    if tail is not None and tail.dataset == root.name:
        groups = same_person(
            emb.embeddings[[i for u in usable.values() for i in u]],
            [n for n, u in usable.items() for _ in u],
        )
    left_out: list[list[str]] = []
    start = time.perf_counter()
    configs = {
        (n, k): _Config(n, k, GalleryComposition.uniform(n, k)) for k in photos for n in sizes
    }
    for draw in draws:
        enrolled_groups = {groups[n] for g in draw.galleries.values() for n in g if n in groups}
        twins = [n for n in draw.non_mated if n in groups and groups[n] in enrolled_groups]
        left_out.append(twins)
        non_mated_rows = [
            i for name in draw.non_mated if name not in set(twins) for i in rows[name]
        ]
        non_mated_names = np.asarray(
            [name for name in draw.non_mated if name not in set(twins) for _ in rows[name]],
            dtype=object,
        )
        for k in photos:
            gallery = draw.galleries[k]
            faces = np.array([usable[name][:k] for name in gallery], dtype=np.int64)
            probe_rows: list[int] = []
            truth: list[int] = []
            for s, name in enumerate(gallery):
                enrolled = set(faces[s].tolist())
                mine = [i for i in rows[name] if i not in enrolled]
                probe_rows += mine
                truth += [s] * len(mine)
            probe_rows += non_mated_rows
            truth += [-1] * len(non_mated_rows)
            probes = np.asarray(probe_rows, dtype=np.int64)
            found = search_galleries(
                emb.embeddings, faces, probes, np.asarray(truth), ok[probes], sizes, k=protocol.k
            )
            for n, by_rule in found.items():
                cfg = configs[(n, k)]
                cfg.distinct_nonmated = (cfg.distinct_nonmated or set()) | set(non_mated_rows)
                for rule, outcome in by_rule.items():
                    cfg.outcomes.setdefault(rule, []).append(
                        dataclasses.replace(outcome, nonmated_identities=non_mated_names)
                    )
    seconds = time.perf_counter() - start

    head = {
        "dataset": str(root),
        "mode": "folder",
        "non_mated_source": non_mated_text,
        "gallery_source": gallery_text,
        "identities": {
            "total": len(identities),
            "photos": len(images),
            "non_mated": sorted(
                {len(d.non_mated) - len(t) for d, t in zip(draws, left_out, strict=True)}
            ),
        },
        "draws": [
            {
                "repeat": d.repeat,
                "seed": [protocol.seed, d.repeat],
                "non_mated_identities": [n for n in d.non_mated if n not in set(twins)],
                "non_mated_photos": sum(len(rows[n]) for n in d.non_mated if n not in set(twins)),
                "same_person_left_out": twins,
                "enrolment_order": {str(k): list(g) for k, g in d.galleries.items()},
            }
            for d, twins in zip(draws, left_out, strict=True)
        ],
        "same_person_rule": (
            f"on the card's impostor-calibration folder, a non-mated identity whose photos look "
            f"like the same person as an identity the draw enrols (mean embeddings with cosine "
            f">= {SAME_PERSON:g}, marginface.eval.openset.same_person: one person filed under "
            "two identities, the rule the calibration applied) is left out of the non-mated "
            "searches"
            if groups
            else "not applied (not the calibration's folder)"
        ),
        "gallery_rule": (
            "per draw, identities in a random order (seed, repeat); the gallery of "
            "N subjects with K photos enrols the first N with at least K usable "
            "photos, each with its first K usable photos (nested galleries); mated "
            "searches: their other photos; non-mated searches: every photo of "
            "identities no gallery of the draw enrols"
        ),
    }
    return _finish(
        list(configs.values()), embedder, protocol, tail, tail_error, head, emb, images, seconds
    )


def identify_lists(
    split: IdentificationSplit,
    embedder: Embedder,
    options: EmbedOptions | None = None,
    protocol: OpenSetProtocol | None = None,
    *,
    cache: EmbeddingCache | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open-set identification of explicit lists: one gallery as listed (failed gallery images
    left out), probes of other subjects non-mated; the operating points use the gallery's
    actual composition."""
    protocol = protocol or OpenSetProtocol()
    tail, tail_error = _impostor_table(embedder)
    _, non_mated_text, gallery_text = _calibration_overlap(None, tail)
    images: list[ImageRef] = []
    index: dict[str, int] = {}
    for ref, _ in split.gallery + split.probes:
        if ref.key not in index:
            index[ref.key] = len(images)
            images.append(ref)
    emb = embed_images(images, embedder, options, cache=cache, workers=workers, progress=progress)
    ok = emb.ok
    subjects: dict[str, list[int]] = {}
    for ref, name in split.gallery:
        subjects.setdefault(name, [])
        row = index[ref.key]
        if ok[row] and row not in subjects[name]:
            subjects[name].append(row)
    width = max(len(r) for r in subjects.values())
    if width == 0:
        raise DataError("every gallery image failed; nothing to identify against")
    faces = np.full((len(subjects), width), -1, dtype=np.int64)
    for s, r in enumerate(subjects.values()):
        faces[s, : len(r)] = r
    position = {name: s for s, name in enumerate(subjects)}
    probes = np.array([index[ref.key] for ref, _ in split.probes], dtype=np.int64)
    truth = np.array([position.get(name, -1) for _, name in split.probes], dtype=np.int64)
    start = time.perf_counter()
    found = search_galleries(
        emb.embeddings, faces, probes, truth, ok[probes], [len(subjects)], k=protocol.k
    )
    seconds = time.perf_counter() - start
    cfg = _Config(
        len(subjects),
        None,
        GalleryComposition.of_counts([len(r) for r in subjects.values()]),
        {rule: [o] for rule, o in found[len(subjects)].items()},
    )
    head = {
        "dataset": split.description,
        "mode": "lists",
        "non_mated_source": non_mated_text,
        "gallery_source": gallery_text,
        **split.summary(),
        "gallery_subject_names": list(subjects),
        "non_mated_subject_names": sorted({n for _, n in split.probes if n not in position}),
    }
    return _finish([cfg], embedder, protocol, tail, tail_error, head, emb, images, seconds)
