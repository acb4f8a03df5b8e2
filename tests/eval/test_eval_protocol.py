"""The verification and identification protocols on synthetic faces: failures, cache, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.eval.embeddings import (
    CACHE_ENV,
    EmbeddingCache,
    EmbedOptions,
    default_cache_dir,
    embed_images,
    model_fingerprint,
)
from marginface.eval.identification import OpenSetProtocol, identify_lists, split_from_lists
from marginface.eval.pairs import ImageRef, read_lfw_pairs
from marginface.eval.plots import plot_cmc, plot_fnir_fpir, verification_plots
from marginface.eval.verify import FAILED_PAIR_SCORE, verify

PNG = b"\x89PNG\r\n\x1a\n"


def _pairs(tmp_path: Path, faces: tuple[Path, dict[str, list[Path]]], write_lfw_pairs):
    root, files = faces
    pairs = write_lfw_pairs(files, tmp_path / "pairs.txt", root)
    return read_lfw_pairs(pairs, root, ext=".png")


def test_verify_report_failures_and_cache(
    tmp_path: Path, faces, write_lfw_pairs, embedder_factory
) -> None:
    PatternEmbedder = embedder_factory
    ps = _pairs(tmp_path, faces, write_lfw_pairs)
    # plant a corrupt image that the pairs use
    bad = ps.images[ps.left[0]].path
    bad.write_bytes(b"not an image at all")
    emb = PatternEmbedder()
    cache = EmbeddingCache(tmp_path / "cache")
    opts = EmbedOptions(aligned=True)
    report, scored = verify(ps, emb, opts, cache=cache, progress=False, workers=2)
    for key in (
        "accuracy_mean",
        "accuracy_std",
        "threshold",
        "auc",
        "eer",
        "tar_at_far",
        "model",
        "pairs",
        "n_pairs",
        "failed_images",
    ):
        assert key in report
    assert report["n_pairs"] == 24 and report["model"] == "pattern"
    assert report["failed_images"] == [
        {"image": str(bad), "reason": report["failed_images"][0]["reason"]}
    ]
    assert report["failed_images"][0]["reason"].startswith("unreadable")
    # every pair that uses the bad image is scored -1 and counted
    uses_bad = (ps.left == ps.left[0]) | (ps.right == ps.left[0])
    assert np.all(scored.scores[uses_bad] == FAILED_PAIR_SCORE)
    assert report["n_failed_pairs"] == int(uses_bad.sum())
    # synthetic subjects are easy: the good pairs separate perfectly
    good = ~uses_bad
    assert scored.scores[good & ps.issame].min() > scored.scores[good & ~ps.issame].max()
    assert report["accuracy_mean"] >= 90.0
    from sklearn.metrics import roc_auc_score

    assert report["auc"] == pytest.approx(roc_auc_score(ps.issame, scored.scores), abs=1e-6)
    # the failed matched pairs are the only errors of the best threshold
    n_failed_matched = int((uses_bad & ps.issame).sum())
    assert report["accuracy_at_threshold"] == pytest.approx(
        100 * (1 - n_failed_matched / ps.n_pairs), abs=1e-3
    )
    # 12 mismatched pairs resolve FAR 1e-1 only
    assert report["tar_at_far"]["1e-1"] == pytest.approx(1 - n_failed_matched / 12)
    assert [report["tar_at_far"][k] for k in ("1e-2", "1e-3", "1e-4")] == [None] * 3
    assert "needs at least 100 mismatched pairs, has 12" in report["tar_at_far_reasons"]["1e-2"]
    n_images = len(ps.images)
    assert emb.n_embedded == n_images - 1
    assert report["embedding"]["computed"] == n_images

    # second run: everything from the cache (failures too), identical scores
    emb2 = PatternEmbedder()
    report2, scored2 = verify(ps, emb2, opts, cache=cache, progress=False)
    assert emb2.n_embedded == 0
    assert report2["embedding"]["from_cache"] == n_images
    assert report2["embedding"]["computed"] == 0
    np.testing.assert_allclose(scored2.scores, scored.scores, atol=1e-6)
    assert report2["failed_images"] == report["failed_images"]

    # a touched file is re-embedded; a different option (flip) is a different namespace
    good_path = ps.images[ps.right[-1]].path
    good_path.write_bytes(good_path.read_bytes())
    import os

    os.utime(good_path, ns=(1, 1))
    emb3 = PatternEmbedder()
    verify(ps, emb3, opts, cache=cache, progress=False)
    assert emb3.n_embedded == 1
    emb4 = PatternEmbedder()
    verify(ps, emb4, EmbedOptions(aligned=True, flip=True), cache=cache, progress=False)
    assert emb4.n_embedded == 2 * (n_images - 1)  # flip doubles the crops

    # plots are real PNGs
    files = verification_plots(report, scored.scores, ps.issame, tmp_path / "plots")
    for f in files.values():
        assert Path(f).read_bytes()[:8] == PNG


def test_detect_and_align_path_reports_no_face(
    tmp_path: Path, faces, embedder_factory, centre_detector
) -> None:
    from PIL import Image

    PatternEmbedder = embedder_factory
    root, files = faces
    black = root / "person_00" / "person_00_0001.png"
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(black)
    refs = [ImageRef(key=str(p), path=p) for ps in files.values() for p in ps]
    res = embed_images(
        refs,
        PatternEmbedder(),
        EmbedOptions(detector="centre"),
        detector=centre_detector,
        progress=False,
    )
    idx = next(i for i, r in enumerate(refs) if r.path == black)
    assert res.failures == {idx: "no face found"}
    assert np.all(res.embeddings[idx] == 0)
    norms = np.linalg.norm(res.embeddings[res.ok], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # the detect-and-align path equals the aligned path here (landmarks == template)
    aligned = embed_images(refs, PatternEmbedder(), EmbedOptions(aligned=True), progress=False)
    np.testing.assert_allclose(res.embeddings[res.ok], aligned.embeddings[res.ok], atol=0.05)
    # an --aligned run on a non-crop image names the problem
    big = tmp_path / "big.png"
    Image.fromarray(np.full((200, 150, 3), 128, np.uint8)).save(big)
    r = embed_images(
        [ImageRef(key=str(big), path=big)],
        PatternEmbedder(),
        EmbedOptions(aligned=True),
        progress=False,
    )
    assert r.failures[0].startswith("not an aligned crop: 150x200")


def test_pair_similarities_failed_pairs_clip_and_divergence() -> None:
    """The one pair scoring of eval verify, calibrate, training-time verification and
    train-eval."""
    from marginface.errors import DataError
    from marginface.eval.verify import pair_similarities

    e = np.array([[1.0, 0.0], [0.6, 0.8], [1.0000001, 0.0], [0.0, 1.0]], dtype=np.float32)
    ok = np.array([True, True, True, False])
    left, right = np.array([0, 0, 1, 3]), np.array([1, 2, 3, 0])
    scores, failed = pair_similarities(e, ok, left, right)
    assert failed.tolist() == [False, False, True, True]
    np.testing.assert_allclose(scores, [0.6, 1.0, FAILED_PAIR_SCORE, FAILED_PAIR_SCORE], atol=1e-6)
    assert scores.dtype == np.float64 and scores.max() <= 1.0  # clipped
    e[1] = np.nan
    with pytest.raises(DataError, match="not finite"):
        pair_similarities(e, ok, left, right)


def test_crop_preparation_sizes_limits_and_failures(centre_detector) -> None:
    """The one crop preparation: aligned crops of the template's or the input's size, resized
    to the input size; photos through the aligner's score and size rules."""
    from marginface.card import Preprocessing
    from marginface.eval.embeddings import CropPreparer, aligned_sizes, prepare_crops

    pre = Preprocessing(input_size=(56, 56))
    assert aligned_sizes(pre) == {(112, 112), (56, 56)}
    rng = np.random.default_rng(0)
    refs = [
        ImageRef(key=f"a{i}", data=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for i, (h, w) in enumerate([(112, 112), (56, 56), (200, 150)])
    ]
    crops, failures = prepare_crops(refs, pre, EmbedOptions(aligned=True), workers=2)
    assert crops.shape == (3, 56, 56, 3)
    assert list(failures) == [2] and failures[2].startswith(
        "not an aligned crop: 150x200, the model expects 56x56 or 112x112"
    )
    np.testing.assert_array_equal(crops[1], refs[1].data)
    assert not crops[2].any()
    # photos: the aligner's score and size rules apply (the centre "face" scores 0.99)
    photo = ImageRef(key="p", data=np.full((60, 60, 3), 128, np.uint8))
    assert CropPreparer(Preprocessing(), EmbedOptions(), centre_detector)(photo).shape == (
        112,
        112,
        3,
    )
    strict = CropPreparer(Preprocessing(), EmbedOptions(score_threshold=0.995), centre_detector)
    assert strict(photo) == "no face found"
    large = CropPreparer(Preprocessing(), EmbedOptions(min_face_size=61.0), centre_detector)
    assert "image is 60x60 pixels, too small to hold a face" in large(photo)


def test_cache_location_and_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder_factory
) -> None:
    PatternEmbedder = embedder_factory
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "marginface"
    a, b = PatternEmbedder(), PatternEmbedder()
    assert model_fingerprint(a) == model_fingerprint(b)
    from marginface.card import Calibration

    b.card.calibration = Calibration(thresholds={"1e-3": 0.3})
    assert model_fingerprint(a) == model_fingerprint(b)  # calibrating keeps the cache
    b.card.preprocessing.mean = 0.0
    assert model_fingerprint(a) != model_fingerprint(b)  # preprocessing changes it
    cache = EmbeddingCache(tmp_path / "c2")
    cache.put("ns", [("k1", np.ones(3, np.float32)), ("k2", "no face found")])
    got = cache.get("ns", ["k1", "k2", "k3"])
    assert got["k2"] == "no face found" and list(got["k1"]) == [1, 1, 1] and "k3" not in got
    assert cache.clear("ns") == 2


def test_identification_lists(tmp_path: Path, faces, embedder_factory) -> None:
    PatternEmbedder = embedder_factory
    root, files = faces
    names = sorted(files)
    g = tmp_path / "gallery.csv"
    p = tmp_path / "probes.csv"
    g.write_text(
        "path,subject\n" + "".join(f"{files[n][0].relative_to(root)},{n}\n" for n in names[:6])
    )
    p.write_text("".join(f"{f.relative_to(root)},{n}\n" for n in names for f in files[n][1:]))
    split = split_from_lists(g, p, root)
    s = split.summary()
    assert s["gallery_subjects"] == 6 and s["mated_probes"] == 18 and s["non_mated_probes"] == 6
    report, curves = identify_lists(
        split, PatternEmbedder(), EmbedOptions(aligned=True), OpenSetProtocol(k=1), progress=False
    )
    result = report["results"][0]
    assert report["mode"] == "lists" and report["gallery_subject_names"] == names[:6]
    assert report["non_mated_subject_names"] == names[6:]
    assert (result["mated_searches"], result["non_mated_searches"]) == (18, 6)
    assert result["rules"]["best_face"]["rank1"] == 1.0
    assert set(result["rules"]) == {"best_face"}  # one face per subject
    assert (
        plot_cmc({"x": curves["configs"][0]["cmc"]}, tmp_path / "cmc.png").read_bytes()[:8] == PNG
    )
    fpir, fnir = curves["configs"][0]["curve"]
    assert (
        plot_fnir_fpir(
            {"x": (fpir, fnir)}, tmp_path / "f.png", points={"x": [(0.5, 0.1, "1e-2")]}
        ).read_bytes()[:8]
        == PNG
    )
    # several faces per subject (a second listed photo): the vote and the top-2 mean too
    g.write_text("".join(f"{f.relative_to(root)},{n}\n" for n in names[:6] for f in files[n][:2]))
    report, _ = identify_lists(
        split_from_lists(g, p, root), PatternEmbedder(), EmbedOptions(aligned=True), progress=False
    )
    assert set(report["results"][0]["rules"]) == {"best_face", "top2_mean", "knn5"}
    assert report["results"][0]["gallery_faces"] == 12
