"""Open-set identification (``eval identify``): gallery draws, the nested search against a
naive reference, FNIR at FPIR and its resolvability rule, the CLI's
errors, and a small run on real aligned crops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from marginface.card import ImpostorTail
from marginface.decision.vote import vote_neighbours
from marginface.errors import ConfigError, DataError
from marginface.eval.embeddings import EmbeddingCache, EmbedOptions
from marginface.eval.identification import (
    BEST_FACE,
    TOP2_MEAN,
    OpenSetProtocol,
    default_gallery_sizes,
    draw_galleries,
    identify_folder,
    search_galleries,
)
from marginface.eval.openset import held_out, measure_impostors
from marginface.eval.search_metrics import fnir_at_fpir, fnir_fpir_curve

runner = CliRunner()


def _app() -> typer.Typer:
    from marginface.cli.eval import register

    app = typer.Typer()
    register(app)
    return app


def _tail(dataset: str, holdout: float = 0.0) -> ImpostorTail:
    """A small impostor table measured on random embeddings (a stand-in for a calibration)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return measure_impostors(
        x, [f"c{i // 4}" for i in range(400)], dataset=dataset, holdout=holdout
    )


# -- draws ------------------------------------------------------------------------------------
COUNTS = {f"id{i:03d}": 1 + (i * 7) % 6 for i in range(200)}  # 1..6 photos each


def test_draws_are_nested_reproducible_and_never_enrol_non_mated() -> None:
    draws = draw_galleries(COUNTS, [10, 50], [1, 3], seed=4, repeats=3)
    assert draws == draw_galleries(COUNTS, [50, 10], [3, 1], seed=4, repeats=3)
    assert draws[0].galleries != draw_galleries(COUNTS, [10, 50], [1, 3], seed=5)[0].galleries
    assert draws[0].galleries != draws[1].galleries  # repeats are independent draws
    for d in draws:
        for k in (1, 3):
            assert len(d.gallery(k, 50)) == 50 and d.gallery(k, 10) == d.gallery(k, 50)[:10]
            assert all(COUNTS[n] >= k for n in d.gallery(k, 50))
        # the K=3 gallery follows the same random order, skipping identities with < 3 photos
        order = d.galleries[1]
        k3 = [n for n in order if COUNTS[n] >= 3]
        assert list(d.galleries[3][: len(k3)]) == k3[: len(d.galleries[3])]
        assert not set(d.non_mated) & d.enrolled
        assert set(d.non_mated) | d.enrolled == set(COUNTS)


def test_draws_respect_the_calibration_hold_out() -> None:
    held = [n for n in COUNTS if held_out(n, 0.3)]
    assert 30 < len(held) < 90
    for d in draw_galleries(COUNTS, [20, 100], [1], seed=0, repeats=2, held_out_fraction=0.3):
        assert list(d.non_mated) == held  # every held-out identity, in natural order
        assert not set(held) & d.enrolled


def test_draw_errors_and_default_sizes() -> None:
    with pytest.raises(DataError, match="gallery size 150 with 3 photo"):
        draw_galleries(COUNTS, [150], [1, 3])
    with pytest.raises(DataError, match="not held out from calibration"):
        draw_galleries(COUNTS, [199], [1], held_out_fraction=0.3)
    with pytest.raises(DataError, match="no identity is left for non-mated"):
        draw_galleries(COUNTS, [200], [1])
    assert default_gallery_sizes(COUNTS, [1]) == (10, 100)  # half of 200 identities
    assert default_gallery_sizes(COUNTS, [6]) == (10, 33)  # 33 identities have 6 photos
    held_side = sum(not held_out(n, 0.3) for n in COUNTS)  # all of them may be enrolled
    assert 100 < held_side < 200
    assert default_gallery_sizes(COUNTS, [1], 0.3) == (10, 100, held_side)
    with pytest.raises(ConfigError):
        OpenSetProtocol(photos_per_subject=(0,))
    with pytest.raises(ConfigError):
        OpenSetProtocol(gallery_sizes=(10, 0))
    with pytest.raises(ConfigError):
        OpenSetProtocol(repeats=0)
    with pytest.raises(ConfigError, match="target FPIR"):
        OpenSetProtocol(target_fpirs=("2",))


# -- the search against a naive reference ------------------------------------------------------
def _naive(x, faces, probes, truth, usable, n, k):
    """Per probe, in plain Python: subject scores, decisions, ranks and the vote."""
    out = {BEST_FACE: ([], [], [], []), TOP2_MEAN: ([], [], [], []), f"knn{k}": ([], [], [], [])}
    for p, t, ok in zip(probes, truth, usable, strict=True):
        if not (t < 0 or t < n):
            continue
        sims = [[float(np.clip(x[p] @ x[f], -1, 1)) for f in faces[s] if f >= 0] for s in range(n)]
        scores = {
            BEST_FACE: [max(v) if v else -math.inf for v in sims],
            TOP2_MEAN: [
                sum(sorted(v)[-2:]) / len(sorted(v)[-2:]) if v else -math.inf for v in sims
            ],
        }
        for rule, sub in scores.items():
            if t >= 0:
                rival = max([v for j, v in enumerate(sub) if j != t], default=-math.inf)
                correct = ok and sub[t] > -math.inf and sub[t] >= rival
                out[rule][0].append(max(sub[t], rival) if ok else -math.inf)
                out[rule][1].append(correct)
                out[rule][2].append(
                    1 + sum(v > sub[t] for v in sub)
                    if correct or (ok and sub[t] > -math.inf)
                    else math.inf
                )
            else:
                out[rule][3].append(max(sub) if ok else -math.inf)
        subj = [s for s in range(n) for f in faces[s] if f >= 0]
        flat = [v for s in range(n) for v in sims[s]]
        _, ranked = vote_neighbours(subj, flat, k=k)
        win = ranked[0]
        if t >= 0:
            out[f"knn{k}"][0].append(win.best if ok else -math.inf)
            out[f"knn{k}"][1].append(ok and win.subject == t)
        else:
            out[f"knn{k}"][3].append(win.best if ok else -math.inf)
    return out


def test_search_equals_a_naive_reference_with_ties_pads_and_failures() -> None:
    rng = np.random.default_rng(7)
    # small dyadic vectors: every dot product is exact in float32, and many are tied
    x = (rng.integers(-1, 2, size=(120, 8)) / 4).astype(np.float32)
    faces = rng.permutation(60)[:36].reshape(12, 3)
    faces[3, 2] = -1  # a subject with two faces
    faces[5] = [-1, -1, -1]  # a subject whose enrolment failed entirely
    probes = np.arange(60, 120)
    truth = rng.integers(-1, 12, size=60)
    usable = rng.random(60) > 0.1
    found = search_galleries(x, faces, probes, truth, usable, [4, 12], k=4, chunk=7)
    for n in (4, 12):
        ref = _naive(x, faces, probes, truth, usable, n, 4)
        for rule in (BEST_FACE, TOP2_MEAN, "knn4"):
            got = found[n][rule]
            np.testing.assert_array_equal(got.mated_scores, ref[rule][0])
            np.testing.assert_array_equal(got.mated_correct, ref[rule][1])
            np.testing.assert_array_equal(got.nonmated_scores, ref[rule][3])
        np.testing.assert_array_equal(found[n][BEST_FACE].mated_ranks, ref[BEST_FACE][2])
    # one face per subject: the vote and the top-2 mean are the best face, not repeated
    one = search_galleries(x, faces[:, :1], probes, truth, usable, [12])
    assert set(one[12]) == {BEST_FACE}


# -- FNIR at FPIR ---------------------------------------------------------------------------------
def test_fnir_at_fpir_and_the_resolvability_rule() -> None:
    rng = np.random.default_rng(3)
    nonmated = rng.uniform(0, 1, 999)
    mated = rng.uniform(0.5, 1.5, 300)
    correct = rng.random(300) > 0.05
    res = fnir_at_fpir(mated, correct, nonmated)
    assert res["1e-1"].fnir is not None and res["1e-2"].fnir is None
    assert res["1e-2"].reason == ("not resolvable: needs at least 1000 non-mated searches, has 999")
    assert "10000" in res["1e-3"].reason
    th = res["1e-1"].threshold
    assert res["1e-1"].false_positives == int(np.sum(nonmated >= th)) == 99  # floor(0.1 * 999)
    assert res["1e-1"].fnir == pytest.approx(1 - np.mean(correct & (mated >= th)))
    assert fnir_at_fpir(mated, correct, np.r_[nonmated, 0.5])["1e-2"].fnir is not None
    # the curve: FPIR and FNIR at each non-mated score, checked point by point
    t, fpir, fnir = fnir_fpir_curve(mated, correct, nonmated[:50])
    for ti, fi, ni in zip(t, fpir, fnir, strict=True):
        assert fi == pytest.approx(np.mean(nonmated[:50] >= ti))
        assert ni == pytest.approx(1 - np.mean(correct & (mated >= ti)))
    assert np.all(np.diff(fpir) > 0) and np.all(np.diff(fnir) <= 0)
    # each point is what fnir_at_fpir reports at that FPIR (the same threshold placement)
    t, fpir, fnir = fnir_fpir_curve(mated, correct, nonmated)
    i = int(np.flatnonzero(np.isclose(fpir, res["1e-1"].observed_fpir))[0])
    assert (t[i], fnir[i]) == (res["1e-1"].threshold, pytest.approx(res["1e-1"].fnir))


# -- the protocol on synthetic faces -------------------------------------------------------------
def test_identify_folder_counts_holdout_and_failures(
    tmp_path: Path, make_faces, embedder_factory
) -> None:
    from PIL import Image

    root = tmp_path / "faces-set"
    files = make_faces(root, n_subjects=40, per_subject=4, seed=2)
    first = sorted(files)[0]
    Image.new("RGB", (50, 50), "white").save(root / first / f"{first}_0000.png")  # fails
    emb = embedder_factory()
    emb.card.impostors = _tail("faces-set", holdout=0.25)
    protocol = OpenSetProtocol(
        gallery_sizes=(5, 20), photos_per_subject=(1, 2), repeats=2, seed=1, threshold=0.9
    )
    report, curves = identify_folder(
        root, emb, EmbedOptions(aligned=True), protocol, progress=False
    )
    held = sorted(n for n in files if held_out(n, 0.25))
    assert report["non_mated_source"].startswith("held out from calibration")
    assert report["gallery_source"].startswith("in-sample")
    for d in report["draws"]:
        assert sorted(d["non_mated_identities"]) == held
        assert not set(held) & set(d["enrolment_order"]["1"])
    rows = {(r["gallery_size"], r["photos_per_subject"]): r for r in report["results"]}
    assert set(rows) == {(5, 1), (20, 1), (5, 2), (20, 2)}
    non_mated_photos = sum(len(files[n]) + (n == first) for n in held)
    for (n, k), r in rows.items():
        assert r["non_mated_searches"] == 2 * non_mated_photos
        assert r["gallery_faces"] == n * k
        # mated: every photo of the enrolled subjects except the K enrolment photos
        expected = sum(
            len(files[s]) + (s == first) - k
            for d in report["draws"]
            for s in d["enrolment_order"][str(k)][:n]
        )
        assert r["mated_searches"] == expected
        assert set(r["rules"]) == ({BEST_FACE} if k == 1 else {BEST_FACE, TOP2_MEAN, "knn5"})
        ops = r["operating_points"]
        assert [o["target_fpir"] for o in ops] == ["1e-2", "1e-3", None]
        for o in ops:
            assert o["false_positives"] <= o["non_mated_searches"] == r["non_mated_searches"]
        assert r["rules"][BEST_FACE]["rank1"] == 1.0  # synthetic subjects are separable
    assert [f["image"].endswith(f"{first}_0000.png") for f in report["failed_images"]] == [True]
    assert {c["label"] for c in curves["configs"]} == {
        "N=5, K=1",
        "N=20, K=1",
        "N=5, K=2",
        "N=20, K=2",
    }
    # without an impostor table: the reason, and the rest of the report
    emb.card.impostors = None
    report, _ = identify_folder(root, emb, EmbedOptions(aligned=True), protocol, progress=False)
    assert "no impostor calibration" in report["operating_points_error"]
    assert report["non_mated_source"] == "no impostor calibration in the card"
    assert [o["source"] for o in report["results"][0]["operating_points"]] == ["explicit threshold"]


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_errors(tmp_path: Path, tiny_model: Path, faces) -> None:
    root, _ = faces
    base = [
        "eval",
        "identify",
        "--model",
        str(tiny_model),
        "--aligned",
        "-q",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "r.json"),
    ]
    cases = [
        (["--root", str(tmp_path / "missing")], DataError, "identity folder not found"),
        (["--root", str(root), "--gallery-size", "9"], DataError, "only 8 identities"),
        (["--root", str(root), "--photos-per-subject", "0"], ConfigError, "at least 1"),
        (["--root", str(root), "--gallery-size", "2,x"], ConfigError, "whole numbers"),
        (["--root", str(root), "--repeats", "0"], ConfigError, "repeats"),
        (
            ["--root", str(root), "--gallery-size", "4", "--gallery", "g.csv"],
            ConfigError,
            "not both",
        ),
        (
            [
                "--gallery",
                str(tmp_path / "g.csv"),
                "--probes",
                str(tmp_path / "p.csv"),
                "--gallery-size",
                "4",
            ],
            ConfigError,
            "apply to --root",
        ),
        ([], ConfigError, "give --root"),
    ]
    for extra, error, text in cases:
        res = runner.invoke(_app(), [*base, *extra])
        assert isinstance(res.exception, error), (extra, res.output)
        assert text in str(res.exception), (extra, str(res.exception))
    assert not (tmp_path / "r.json").exists()


def test_cli_user_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from marginface.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            ["eval", "identify", "--root", str(tmp_path / "missing"), "--photos-per-subject", "1,0"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "at least 1" in err and "Traceback" not in err


def test_cli_synthetic_run_writes_report_and_plots(tmp_path: Path, tiny_model: Path, faces) -> None:
    pytest.importorskip("matplotlib")
    root, _ = faces
    out = tmp_path / "id.json"
    res = runner.invoke(
        _app(),
        [
            "eval",
            "identify",
            "--root",
            str(root),
            "--model",
            str(tiny_model),
            "--aligned",
            "-q",
            "--gallery-size",
            "2,4",
            "--photos-per-subject",
            "1,2",
            "--repeats",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["protocol"]["repeats"] == 3 and len(report["draws"]) == 3
    assert "no impostor calibration" in res.output  # the tiny model has no impostor table
    assert "FNIR@1e-2" in res.output and "knn5" in res.output
    assert (tmp_path / "plots" / "fnir_fpir.png").stat().st_size > 5_000
    assert (tmp_path / "plots" / "cmc.png").is_file()


# -- real aligned crops --------------------------------------------------------------------------
def test_real_crops_held_out_from_calibration(shared_data: Path, tmp_path: Path) -> None:
    """A few hundred celeba-train-112 crops under a folder of that name: non-mated identities
    are the ones the (stand-in) calibration held out, and SFace identifies the others."""
    from marginface.embed import load_embedder

    train = shared_data / "celeba-train-112"
    root = tmp_path / "celeba-train-112"  # the calibration set's name: the hold-out applies
    root.mkdir()
    chosen = [
        d for d in sorted(train.iterdir()) if d.is_dir() and 3 <= len(list(d.glob("*.jpg"))) <= 4
    ][:50]
    for d in chosen:
        (root / d.name).symlink_to(d, target_is_directory=True)
    embedder = load_embedder("sface")
    embedder.card = embedder.card.model_copy(update={"impostors": _tail("celeba-train-112", 0.2)})
    report, _ = identify_folder(
        root,
        embedder,
        EmbedOptions(aligned=True),
        OpenSetProtocol(gallery_sizes=(10, 30), photos_per_subject=(1, 2)),
        cache=EmbeddingCache(tmp_path / "cache"),
        progress=False,
    )
    held = sorted(d.name for d in chosen if held_out(d.name, 0.2))
    assert held and sorted(report["draws"][0]["non_mated_identities"]) == held
    assert report["non_mated_source"].startswith("held out from calibration")
    assert report["failed_images"] == []
    best = {
        (r["gallery_size"], r["photos_per_subject"]): r["rules"][BEST_FACE]
        for r in report["results"]
    }
    assert best[(10, 1)]["rank1"] >= 0.8 and best[(30, 2)]["rank1"] >= 0.8
    assert best[(30, 1)]["cmc"][-1] >= best[(30, 1)]["rank1"]
    assert report["search_seconds"] < 5


def test_fpir_interval_resamples_identities() -> None:
    """Searches come in groups of one person's photos that pass or fail together: resampling
    identities gives a wider interval than the binomial one, and none without identities."""
    from marginface.eval.identification import _identity_bootstrap, _wilson

    ids = np.repeat([f"p{i}" for i in range(40)], 25)
    hits = np.isin(ids, ["p0", "p1"])  # two look-alikes: every photo passes
    clustered = _identity_bootstrap(hits, ids)
    binomial = _wilson(int(hits.sum()), hits.size)
    assert clustered is not None and binomial is not None
    assert clustered[0] <= binomial[0] and clustered[1] > 1.5 * binomial[1]
    assert clustered[0] <= hits.mean() <= clustered[1]
    assert _identity_bootstrap(hits, None) is None


def test_resolvability_counts_distinct_searches() -> None:
    """Pooled draws that search the same strangers' photos again (the calibration folder's
    held-out identities, in every draw) do not make a rarer FPIR resolvable."""
    from marginface.eval.search_metrics import fnir_at_fpir

    rng = np.random.default_rng(0)
    nonmated = rng.uniform(0, 0.5, 1200)
    mated = rng.uniform(0.3, 1.0, 200)
    correct = np.ones(200, bool)
    assert fnir_at_fpir(mated, correct, nonmated, ("1e-2",))["1e-2"].fnir is not None
    twice = fnir_at_fpir(mated, correct, nonmated, ("1e-2",), distinct=600)["1e-2"]
    assert twice.fnir is None and "600" in twice.reason
