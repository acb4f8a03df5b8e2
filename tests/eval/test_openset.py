"""The open-set operating point: the impostor table measured (eval), and thresholds read from it
for a target FPIR (marginface.decision) that predict what galleries of the population measure."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.card import ModelCard
from marginface.decision.operating_point import (
    GalleryComposition,
    expected_fpir,
    far_threshold,
    operating_point,
    require_impostors,
)
from marginface.errors import ModelError
from marginface.eval.openset import _exceedances, held_out, measure_impostors, same_person


def _population(
    n_ids: int, photos: int, dim: int = 24, spread: float = 0.8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Embeddings of ``n_ids`` identities (a centre each, noisy photos), some identities
    closer to the crowd than others, as real probes are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    crowd = rng.standard_normal(dim)
    crowd /= np.linalg.norm(crowd)
    pull = rng.uniform(0.0, 0.9, size=(n_ids, 1))  # some people look like everyone
    centres = centres + pull * crowd
    x = np.repeat(centres, photos, axis=0) + spread * rng.standard_normal(
        (n_ids * photos, dim)
    ) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"id{i:04d}" for i in range(n_ids) for _ in range(photos)]
    return x.astype(np.float32), labels


def _simulated_fpir(
    x: np.ndarray, labels: list[str], size: int, faces: int, threshold: float, draws: int, seed: int
) -> float:
    """Monte-Carlo FPIR: random galleries of ``size`` subjects (their first ``faces`` photos),
    every photo of the other identities searched."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(labels)
    names = np.unique(ids)
    hits = total = 0
    for _ in range(draws):
        chosen = rng.choice(names, size=size, replace=False)
        rows = np.concatenate([np.flatnonzero(ids == n)[:faces] for n in chosen])
        probes = x[~np.isin(ids, chosen)]
        best = (probes @ x[rows].T).max(axis=1)
        hits += int((best >= threshold).sum())
        total += len(probes)
    return hits / total


@pytest.fixture(scope="module")
def population() -> tuple[np.ndarray, list[str]]:
    return _population(400, 5)


@pytest.fixture(scope="module")
def tail(population):  # type: ignore[no-untyped-def]
    x, labels = population
    # these synthetic people are pulled towards one "crowd" face: keep them all apart
    return measure_impostors(x, labels, dataset="synthetic", chunk=256, same_person=1.01)


def test_exceedances_match_a_naive_count() -> None:
    rng = np.random.default_rng(1)
    scores = rng.uniform(-1, 1, size=(7, 50))
    scores[0, :3] = -np.inf
    grid = np.linspace(-0.5, 0.9, 15)
    naive = np.array([[int((row >= t).sum()) for t in grid] for row in scores])
    assert np.array_equal(_exceedances(scores, grid), naive)


def test_table_shape(tail) -> None:  # type: ignore[no-untyped-def]
    assert tail.identities == 400 and tail.probes == 2000
    assert tail.comparisons == 2000 * 399
    assert len(tail.log10_fpir) == len(tail.thresholds)
    assert all(len(row) == len(tail.gallery_sizes) for row in tail.log10_fpir)
    assert tail.thresholds == sorted(tail.thresholds)
    assert sorted(tail.log10_fpir_by_faces) == ["2", "3", "5"]
    # FPIR grows with the gallery and with the faces per subject, and falls with the threshold
    for table in (tail.log10_fpir, *tail.log10_fpir_by_faces.values()):
        t = np.asarray(table)
        assert np.all(np.diff(t, axis=1) >= -1e-9)
        assert np.all(np.diff(t, axis=0) <= 1e-9)
    assert np.all(np.asarray(tail.log10_fpir_by_faces["3"]) >= np.asarray(tail.log10_fpir) - 1e-9)


@pytest.mark.parametrize(("size", "faces"), [(10, 1), (100, 1), (300, 1), (50, 3), (200, 3)])
def test_expected_fpir_predicts_simulated_galleries(
    population, tail, size: int, faces: int
) -> None:  # type: ignore[no-untyped-def]
    """The tables (one per number of faces per subject) predict what random
    galleries of the same population measure, within a factor of 1.5, at thresholds that
    give FPIRs from a few percent to a few tenths."""
    x, labels = population
    comp = GalleryComposition.uniform(size, faces)
    for target in (0.3, 0.05):
        point = operating_point(tail, target, comp)
        measured = _simulated_fpir(x, labels, size, faces, point.threshold, draws=8, seed=size)
        assert point.expected_fpir == pytest.approx(target, rel=0.05)
        assert target / 1.5 <= measured <= target * 1.5, (size, faces, target, measured)


def test_independent_comparisons_would_be_wrong(population, tail) -> None:  # type: ignore[no-untyped-def]
    """Probes that resemble many people make the independence formula 1-(1-FAR)^N too
    pessimistic: the table is what keeps the operating point usable."""
    comp = GalleryComposition.uniform(300)
    point = operating_point(tail, 0.05, comp)
    far = 10 ** float(np.interp(point.threshold, tail.thresholds, tail.log10_far))
    independent = 1 - (1 - far) ** 300
    assert independent > 1.3 * 0.05


def test_operating_point_follows_the_gallery(tail) -> None:  # type: ignore[no-untyped-def]
    small = operating_point(tail, "1e-2", GalleryComposition.uniform(10))
    large = operating_point(tail, "1e-2", GalleryComposition.uniform(1000))
    three = operating_point(tail, "1e-2", GalleryComposition.uniform(10, 3))
    strict = operating_point(tail, "1e-3", GalleryComposition.uniform(10))
    assert small.threshold < large.threshold
    assert small.threshold < three.threshold
    assert small.threshold < strict.threshold
    assert (large.gallery_subjects, three.gallery_faces) == (1000, 30)
    mixed = GalleryComposition.of_counts([1] * 10 + [3] * 10)
    assert mixed.subjects == 20 and mixed.faces == 40
    between = operating_point(tail, "1e-2", mixed).threshold
    assert (
        small.threshold
        < between
        < operating_point(tail, "1e-2", GalleryComposition.uniform(20, 3)).threshold
    )
    # a gallery far beyond the table extrapolates and says so
    huge = operating_point(tail, "1e-3", GalleryComposition.uniform(50_000_000))
    assert huge.note
    assert operating_point(tail, "1e-2", GalleryComposition()).gallery_subjects == 0
    assert expected_fpir(tail, 0.0, GalleryComposition()) == 0.0


def test_far_threshold_matches_the_pairs(population, tail) -> None:  # type: ignore[no-untyped-def]
    x, labels = population
    ids = np.asarray(labels)
    first = np.unique(ids, return_index=True)[1]
    s = x @ x[first].T
    impostor = s[ids[:, None] != ids[first][None, :]]
    th = far_threshold(tail, "1e-3")
    assert th is not None
    assert np.mean(impostor >= th) == pytest.approx(1e-3, rel=0.2)
    assert far_threshold(tail, "1e-9") is None


def test_a_card_without_impostors_refuses_to_guess() -> None:
    card = ModelCard(name="m", architecture="mbf", embedding_dim=8)
    with pytest.raises(ModelError, match=r"marginface calibrate .*--impostors"):
        require_impostors(card)


def test_held_out_is_a_fixed_share() -> None:
    names = [str(i) for i in range(5000)]
    share = np.mean([held_out(n, 0.2) for n in names])
    assert 0.18 < share < 0.22
    assert [held_out(n, 0.2) for n in names[:50]] == [held_out(n, 0.2) for n in names[:50]]
    assert not any(held_out(n, 0.0) for n in names[:50])


def test_one_person_filed_under_two_identities_is_not_an_impostor() -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((60, 24))
    x = np.repeat(centres / np.linalg.norm(centres, axis=1, keepdims=True), 4, axis=0)
    x = x + 0.3 * rng.standard_normal(x.shape) / np.sqrt(24)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"id{i:04d}" for i in range(60) for _ in range(4)]
    relabelled = [("id0001" if lab == "id0000" and i % 2 else lab) for i, lab in enumerate(labels)]
    # id0001's own photos and half of id0000's photos now share a label; id0000 keeps the rest
    apart = measure_impostors(x, relabelled, dataset="s", same_person=1.01)
    merged = measure_impostors(x, relabelled, dataset="s")
    assert "1 identity pairs" in merged.excluded and not apart.excluded
    # the 2 photos left as id0000 and the 6 filed as id0001 are no longer compared as strangers
    assert merged.comparisons == apart.comparisons - 8


def test_same_person_groups_identities_with_alike_photos() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 16))
    photos = np.vstack(
        [
            a + 0.1 * rng.standard_normal((3, 16)),
            a + 0.1 * rng.standard_normal((2, 16)),
            b + 0.1 * rng.standard_normal((3, 16)),
        ]
    )
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    groups = same_person(photos, ["x"] * 3 + ["x-again"] * 2 + ["y"] * 3)
    assert groups["x"] == groups["x-again"] != groups["y"]
