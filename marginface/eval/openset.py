"""Open-set calibration: measuring a model's impostor behaviour for its card.

A search compares a stranger with every enrolled subject and falsely identifies them when
*any* subject passes, and comparisons are not independent: some probes resemble many people,
and they account for most false alarms. So the model's impostor behaviour is measured once,
per probe (:func:`measure_impostors`): for each probe face of many calibration identities, the
share ``p(t)`` of other subjects whose score reaches each threshold ``t``. For a gallery of
``N`` one-face subjects drawn from the same population the expected FPIR is the average over
probes of ``1 - (1 - p(t))**N``: that is stored in the model card as a table over thresholds
and gallery sizes (:class:`marginface.card.ImpostorTail`). The same table is measured for
subjects of 2, 3 and 5 faces (on identities with at least that many photos).

Reading the table (the threshold that meets a target FPIR for a gallery, the FPIR a threshold
gives it) is identification's decision and lives in :mod:`marginface.decision.operating_point`.
:func:`held_out` is the one hash rule for the identities calibration never sees;
:func:`same_person` the rule that joins identities that are one person.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from marginface.card import ImpostorTail
from marginface.decision.operating_point import far_threshold
from marginface.decision.rates import far_key
from marginface.errors import DataError

__all__ = [
    "FACE_COUNTS",
    "GALLERY_SIZES",
    "SAME_PERSON",
    "describe",
    "held_out",
    "measure_impostors",
    "same_person",
]

#: Gallery sizes (subjects) of the card's table; beyond the last one the table is extrapolated.
GALLERY_SIZES: tuple[int, ...] = (
    1,
    2,
    3,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    10_000_000,
)

#: Faces per subject with a table of their own (other counts interpolate; larger ones
#: extrapolate in proportion from the last).
FACE_COUNTS: tuple[int, ...] = (2, 3, 5)

_STEP = 0.005  # threshold grid step (cosine)
_FLOOR = -12.0  # log10 written for "no impostor reached this threshold"


# -- measuring ---------------------------------------------------------------------------------
def held_out(identity: str, fraction: float) -> bool:
    """Whether an identity is in the hold-out share ``fraction`` (a fixed hash rule, so every
    tool agrees on which identities calibration never saw)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(identity.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < fraction


def _exceedances(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``(P, T)``: per row, how many scores reach each threshold of the ascending ``grid``."""
    p, _ = scores.shape
    bins = np.searchsorted(grid, scores, side="right")  # thresholds each score reaches
    flat = (np.arange(p)[:, None] * (grid.size + 1) + bins).ravel()
    hist = np.bincount(flat, minlength=p * (grid.size + 1)).reshape(p, grid.size + 1)
    # scores reaching threshold i are those whose bin index is > i
    return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]


def _subject_scores(probes: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """Each probe's score against each pool subject: the best of the subject's ``k`` faces
    (``pool`` holds ``k`` consecutive rows per subject)."""
    s = probes @ pool.T
    if k > 1:
        s = s.reshape(len(probes), -1, k).max(axis=2)
    return s


def _expected_fpir_sum(p: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``(T, S)``: summed over probes, ``1 - (1 - p)^N`` for each threshold's share ``p`` of
    subjects passed (``(P, T)``) and each gallery size ``N``."""
    log_miss = np.log1p(-np.minimum(p, 1 - 1e-12))
    return -np.expm1(log_miss[:, :, None] * sizes[None, None, :]).sum(axis=0)


def _log_rows(fpir: np.ndarray) -> list[list[float]]:
    with np.errstate(divide="ignore"):
        log = np.where(fpir > 0, np.log10(np.maximum(fpir, 1e-300)), _FLOOR)
    return [[round(float(max(v, _FLOOR)), 4) for v in row] for row in log]


#: Two identities whose mean embeddings are at least this similar are taken for one person
#: (label noise of large face sets; see :func:`measure_impostors`).
SAME_PERSON = 0.6


def same_person(
    embeddings: np.ndarray, identities: Sequence[str], bound: float = SAME_PERSON
) -> dict[str, int]:
    """A group number per identity: identities whose photos look like one person's (mean
    embeddings with cosine >= ``bound``) share a group. Evaluations use it so that a search of
    a person filed under two identities is not counted as a stranger's."""
    ids = np.asarray([str(i) for i in identities])
    names, codes = np.unique(ids, return_inverse=True)
    group, _ = _same_person_groups(
        np.asarray(embeddings, dtype=np.float32), codes, names.size, bound
    )
    return {str(n): int(g) for n, g in zip(names, group, strict=True)}


def _same_person_groups(
    x: np.ndarray, codes: np.ndarray, n: int, bound: float
) -> tuple[np.ndarray, int]:
    """A group per identity: identities whose mean embeddings have cosine >= ``bound`` share
    one (union-find); also how many identity pairs were joined."""
    centres = np.zeros((n, x.shape[1]), dtype=np.float64)
    np.add.at(centres, codes, x)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    pairs = 0
    for a in range(0, n, 2048):
        sim = centres[a : a + 2048] @ centres.T
        for i, j in zip(*np.nonzero(sim >= bound), strict=True):
            if a + i < j:
                pairs += 1
                ri, rj = root(a + int(i)), root(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)]), pairs


def measure_impostors(
    embeddings: np.ndarray,
    identities: Sequence[str],
    *,
    dataset: str,
    excluded: str = "",
    holdout: float = 0.0,
    same_person: float = SAME_PERSON,
    max_probes: int | None = None,
    seed: int = 0,
    chunk: int = 1024,
    progress: bool = False,
) -> ImpostorTail:
    """Measure the impostor table of a model from embeddings of many identities.

    ``embeddings[i]`` (L2-normalised) shows ``identities[i]``; rows of one identity are in the
    order their photos should be enrolled. Every face is a probe (or ``max_probes`` chosen
    with ``seed``) searched against every *other* identity: as one-face subjects (their first
    photo) for the main table, and with ``k`` faces (their first ``k``, identities with at
    least ``k`` photos) for the table of each count in :data:`FACE_COUNTS`.

    Large face sets file some people under two identities. Two identities whose mean
    embeddings have a cosine of at least ``same_person`` (the photos of one person, split in
    two, reach it for 19 in 20 identities of celeba-train-112; other people almost never) are
    taken for one person and not compared with each other: left in, such pairs make up most of
    the extreme tail (207 of the 253 comparisons above SFace's FAR 1e-6 threshold there).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    ids = np.asarray([str(i) for i in identities], dtype=object)
    if x.ndim != 2 or len(x) != len(ids):
        raise DataError("embeddings must be (N, dim) with one identity per row")
    names, codes = np.unique(ids.astype(str), return_inverse=True)
    if names.size < 3:
        raise DataError(f"impostor calibration needs many identities, got {names.size}")
    first: dict[int, list[int]] = {}
    for row, c in enumerate(codes):
        first.setdefault(int(c), []).append(row)
    group, merged = _same_person_groups(x, codes, names.size, same_person)
    rng = np.random.default_rng(seed)
    probe_rows = np.arange(len(x))
    if max_probes is not None and max_probes < len(x):
        probe_rows = np.sort(rng.choice(len(x), size=max_probes, replace=False))

    # the grid: from the median impostor score up to just above the highest
    sample = rng.choice(len(x), size=min(len(x), 2000), replace=False)
    s = x[sample] @ x[sample].T
    same = group[codes[sample]][:, None] == group[codes[sample]][None, :]
    lo = math.floor(float(np.median(s[~same])) / _STEP) * _STEP

    def pool_of(k: int) -> tuple[np.ndarray, np.ndarray]:
        subj = np.asarray([c for c, rows in sorted(first.items()) if len(rows) >= k])
        rows = np.concatenate([first[int(c)][:k] for c in subj]) if subj.size else np.array([])
        return subj, rows.astype(np.int64)

    subj1, rows1 = pool_of(1)
    # up to the top of the cosine range; trimmed just above the highest impostor at the end
    grid = np.round(np.arange(lo, 1.0 + _STEP / 2, _STEP), 6)
    top = -1.0
    sizes = np.asarray(GALLERY_SIZES, dtype=np.float64)

    fpir_sum = np.zeros((grid.size, sizes.size))
    far_hits = np.zeros(grid.size)
    comparisons = 0
    fpir_sum_k = {k: np.zeros((grid.size, sizes.size)) for k in FACE_COUNTS}
    probes_k = dict.fromkeys(FACE_COUNTS, 0)
    pools = {k: pool_of(k) for k in FACE_COUNTS}
    starts: Iterable[int] = range(0, probe_rows.size, chunk)
    if progress:
        starts = tqdm(starts, desc="impostors", unit="chunk")
    for a in starts:
        pr = probe_rows[a : a + chunk]
        pc = group[codes[pr]]
        sc = _subject_scores(x[pr], x[rows1], 1)
        own = pc[:, None] == group[subj1][None, :]
        sc[own] = -np.inf
        top = max(top, float(sc.max()))
        others = subj1.size - own.sum(axis=1)  # subjects each probe is compared with
        hits = _exceedances(sc, grid)  # (P, T)
        far_hits += hits.sum(axis=0)
        comparisons += int(others.sum())
        fpir_sum += _expected_fpir_sum(hits / others[:, None], sizes)
        for k, (subj_k, rows_k) in pools.items():
            if subj_k.size < 3:
                continue
            own_k = pc[:, None] == group[subj_k][None, :]
            many = _subject_scores(x[pr], x[rows_k], k)
            many[own_k] = -np.inf
            others_k = subj_k.size - own_k.sum(axis=1)
            fpir_sum_k[k] += _expected_fpir_sum(_exceedances(many, grid) / others_k[:, None], sizes)
            probes_k[k] += len(pr)

    keep = grid <= math.ceil((top + _STEP) / _STEP) * _STEP + 1e-9
    grid, fpir_sum, far_hits = grid[keep], fpir_sum[keep], far_hits[keep]
    fpir_sum_k = {k: v[keep] for k, v in fpir_sum_k.items()}
    fpir = fpir_sum / probe_rows.size
    with np.errstate(divide="ignore"):
        log_far = np.where(
            far_hits > 0, np.log10(np.maximum(far_hits / comparisons, 1e-300)), _FLOOR
        )
    by_faces: dict[str, list[list[float]]] = {}
    for k in FACE_COUNTS:
        if probes_k[k]:
            by_faces[str(k)] = _log_rows(fpir_sum_k[k] / probes_k[k])
    return ImpostorTail(
        dataset=dataset,
        identities=int(names.size),
        probes=int(probe_rows.size),
        comparisons=comparisons,
        excluded="; ".join(
            part
            for part in (
                excluded,
                (
                    f"{merged} identity pairs whose mean embeddings have cosine >= {same_person:g} "
                    "taken for one person (not compared with each other)"
                )
                if merged
                else "",
            )
            if part
        ),
        holdout=holdout,
        thresholds=[float(v) for v in grid],
        gallery_sizes=[int(v) for v in sizes],
        log10_fpir=_log_rows(fpir),
        log10_fpir_by_faces=by_faces,
        log10_far=[round(float(v), 4) for v in log_far],
        floor=_FLOOR,
        max_impostor=round(top, 6),
    )


def describe(tail: ImpostorTail) -> dict[str, Any]:
    """A short summary of a card's impostor table (for reports and ``calibrate``)."""
    fars = {}
    for f in ("1e-3", "1e-4", "1e-5", "1e-6"):
        th = far_threshold(tail, f)
        fars[far_key(f)] = th
    return {
        "dataset": tail.dataset,
        "identities": tail.identities,
        "probes": tail.probes,
        "comparisons": tail.comparisons,
        "excluded": tail.excluded,
        "max_impostor": tail.max_impostor,
        "far_thresholds": fars,
    }
