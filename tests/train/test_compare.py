"""The loss comparison runner, pre-aligned dev crops, and the device-preloaded loader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from marginface.train import load_train_config
from marginface.train.compare import (
    CompareRow,
    evaluate_crops,
    flag_ties,
    load_dev_crops,
    merge_results,
    prepare_dev_crops,
    render_table,
    run_comparison,
    table_from_results,
)
from marginface.train.distributed import init_distributed
from marginface.train.trainer import TrainData, build_data

TINY = {
    "data": {"augment": "flip", "input_size": [32, 32], "workers": 0},
    "backbone": {"name": "tiny", "embedding_dim": 16, "kwargs": {"widths": [4, 8]}},
    "optim": {"name": "sgd", "lr": 0.05},
    "amp": "none",
    "channels_last": False,
    "steps": 3,
    "batch_size": 16,
    "seed": 1,
    "log": {"progress": False, "tensorboard": False},
    "checkpoint": {"every_steps": 1000, "at_epoch_end": False},
    "verify": {"at_epoch_end": False},
}


@pytest.fixture(scope="module")
def dev_crops(small_subset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pre-aligned crops of the small pair set (aligned photos run through detection too)."""
    _, pairs = small_subset
    out = tmp_path_factory.mktemp("crops") / "dev.npz"
    prepare_dev_crops(pairs, out, progress=False)
    return out


def test_compare_writes_table_with_all_columns(
    small_subset: tuple[Path, Path], dev_crops: Path, tmp_path: Path
) -> None:
    train_csv, _ = small_subset
    paths = []
    for name, loss in (
        ("arcface_mbf", {"name": "arcface", "kwargs": {"scale": 16, "margin": 0.3}}),
        ("cosface_mbf", {"name": "cosface", "kwargs": {"scale": 16, "margin": 0.2}}),
    ):
        cfg = {**TINY, "data": {**TINY["data"], "train": str(train_csv)}, "loss": loss}
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(cfg))
        paths.append(p)
    table = tmp_path / "docs" / "table.md"
    rows = run_comparison(paths, tmp_path / "out", dev_crops, overrides=["steps=2"], table=table)
    assert [r.name for r in rows] == ["arcface", "cosface"]
    for r in rows:
        assert r.status == "done", r.error
        assert 0 <= r.accuracy <= 100 and r.std >= 0
        for tar in (r.tar_1e2, r.tar_1e3):  # None: too few impostor pairs for that FAR
            assert tar is None or 0.0 <= tar <= 1.0
        assert r.steps == 2 and r.epochs > 0 and r.wall_seconds > 0
        assert r.machine.startswith("CPU")
        assert (tmp_path / "out" / f"{r.name}_mbf" / "model.json").is_file()
    text = table.read_text()
    for col in (
        "dev accuracy (%)",
        "TAR@FAR=1e-2",
        "TAR@FAR=1e-3",
        "epochs",
        "wall time (s)",
        "machine",
    ):
        assert col in text
    assert "arcface" in text and "cosface" in text and " ± " in text
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["status"] for r in saved["rows"]] == ["done", "done"]


def test_ties_are_flagged() -> None:
    rows = [
        CompareRow("a", "", "arcface", 0, "done", 90.0, 2.0),
        CompareRow("b", "", "cosface", 0, "done", 89.0, 1.5),
        CompareRow("c", "", "softmax", 0, "done", 80.0, 1.0),
    ]
    flag_ties(rows)
    assert rows[0].ties == ["b"] and rows[1].ties == ["a"] and rows[2].ties == []
    text = render_table(rows)
    assert text.count("needs second seed") == 2
    assert text.index("| a |") < text.index("| b |") < text.index("| c |")


def _results(path: Path, rows: list[CompareRow], overrides: list[str]) -> Path:
    from dataclasses import asdict

    path.write_text(
        json.dumps(
            {
                "format": "marginface-compare/1",
                "flip": False,
                "overrides": overrides,
                "dev": {"pairs": "p.txt", "n_pairs": 6000, "n_failed": 9},
                "rows": [asdict(r) for r in rows],
            }
        )
    )
    return path


def test_second_seeds_are_pooled_per_configuration(tmp_path: Path) -> None:
    first = _results(
        tmp_path / "s0.json",
        [
            CompareRow("arc", "", "arcface", 0, "done", 90.0, 2.0, 0.8, 0.5, 1.5, wall_seconds=100),
            CompareRow("cos", "", "cosface", 0, "done", 89.0, 1.5, 0.7, 0.4, 1.5, wall_seconds=120),
            CompareRow("soft", "", "softmax", 0, "done", 80.0, 1.0, 0.5, 0.2, 1.5),
            CompareRow("tri", "", "triplet", 0, "skipped", error="time budget"),
        ],
        ["epochs=1.5"],
    )
    second = _results(
        tmp_path / "s1.json",
        [
            CompareRow("arc", "", "arcface", 1, "done", 92.0, 1.0, 0.9, 0.6, 1.5, wall_seconds=110),
            CompareRow("cos", "", "cosface", 1, "done", 87.0, 2.5, 0.6, 0.3, 1.5, wall_seconds=100),
        ],
        ["epochs=1.5", "seed=1"],
    )
    rows, headers = merge_results([first, second])
    assert sorted((r.name, r.seed) for r in rows) == [
        ("arc", 0),
        ("arc", 1),
        ("cos", 0),
        ("cos", 1),
        ("soft", 0),
        ("tri", 0),
    ]
    assert len(headers) == 2
    text = table_from_results([first, second], title="t")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")][2:]
    # arc: mean 91.00 ± 1.50 over seeds 0, 1; cos: 88.00 ± 2.00; |91 - 88| > 1.5: no tie now
    assert lines[0].startswith("| 1 | arc | 91.00 ± 1.50 | 0: 90.00, 1: 92.00 | 0.850 | 0.550 |")
    assert "| 105 |" in lines[0] and "second seed" not in text
    assert lines[1].startswith("| 2 | cos | 88.00 ± 2.00 | 0: 89.00, 1: 87.00 |")
    assert lines[2].startswith("| 3 | soft | 80.00 ± 1.00 | 0 |")
    assert lines[3].startswith("| – | tri |") and "skipped: time budget" in lines[3]
    assert "seed=1" in text and "6000 pairs" in text
    # with seed 0 alone, arc and cos tie and need a second seed
    assert table_from_results([first]).count("needs second seed") == 2


def test_merge_rejects_a_file_that_is_not_results(tmp_path: Path) -> None:
    from marginface.errors import DataError

    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"not a train-compare results\.json"):
        merge_results([bad])


@pytest.mark.slow
def test_crops_agree_with_full_pipeline(dev_crops: Path, tmp_path: Path) -> None:
    """Scores from the stored crops equal ``marginface.eval``'s on the raw images (SFace)."""
    from marginface.embed import load_embedder
    from marginface.eval.embeddings import EmbedOptions
    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import score_pairs

    dev = load_dev_crops(dev_crops)
    assert dev.ok.sum() > 0 and dev.crops[dev.ok].std() > 10
    # a sub-pair set of the first 6 pairs, scored both ways
    keep = np.arange(6)
    rows = [[dev.names[dev.left[i]], dev.names[dev.right[i]], int(dev.issame[i]), 0] for i in keep]
    sub = tmp_path / "sub.csv"
    with sub.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path1", "path2", "same", "fold"])
        w.writerows(rows)
    emb = load_embedder("sface")
    full = score_pairs(load_pairs(sub), emb, EmbedOptions(aligned=False), progress=False, workers=1)
    ours = evaluate_crops(emb, dev)["scores"]
    np.testing.assert_allclose(full.scores, np.array(ours)[keep], atol=1e-4)


def test_training_verification_prepares_crops_as_eval_verify(
    shared_data: Path, tmp_path: Path
) -> None:
    """Training-time verification, ``train-dev-crops`` and ``eval verify`` prepare the same
    crops, with the aligner's score and size rules (which training-time verification used to
    skip: it aligned celeb_7407_0030's 18-px face, and took celeb_7339_0026's largest box,
    a false detection scoring 0.52, instead of the real face)."""
    from marginface.card import Preprocessing
    from marginface.eval.embeddings import EmbedOptions, prepare_crops
    from marginface.eval.pairs import load_pairs
    from marginface.train.verify import PairVerifier

    dev = shared_data / "celeba-dev"
    small, false_box, good = (
        "celeb_7407/celeb_7407_0030.jpg",
        "celeb_7339/celeb_7339_0026.jpg",
        "celeb_7339/celeb_7339_0001.jpg",
    )
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path1", "path2", "same", "fold"])
        w.writerows([[dev / false_box, dev / good, 1, 0], [dev / small, dev / good, 0, 1]])
    verifier = PairVerifier(pairs, preprocessing=Preprocessing(), flip=False)
    assert not verifier.aligned
    keys = [Path(ref.key).name for ref in verifier.pairs.images]
    assert verifier.failures == {
        keys.index(Path(small).name): "no face: every detected face is below the minimum face size"
    }
    crops, failures = prepare_crops(load_pairs(pairs).images, Preprocessing(), EmbedOptions())
    dc = prepare_dev_crops(pairs, tmp_path / "dev.npz", progress=False)
    assert failures == dc.reasons == verifier.failures
    np.testing.assert_array_equal(verifier.crops, crops)
    np.testing.assert_array_equal(dc.crops, crops)
    # the real face (the best-scoring detection), not the larger false box
    from marginface.align import align_face, load_detector, read_image

    image = read_image(dev / false_box)
    detections = load_detector("yunet").detect(image)
    assert max(d.area for d in detections) > max(detections, key=lambda d: d.score).area
    real = max(detections, key=lambda d: d.score)
    np.testing.assert_array_equal(
        crops[keys.index(Path(false_box).name)], align_face(image, real.landmarks)
    )


def _trainer(train_csv: Path, out: Path, **extra: object) -> TrainData:
    over = {
        "data.train": train_csv,
        "data.input_size": "[32, 32]",
        "data.workers": 0,
        "backbone.name": "tiny",
        "backbone.embedding_dim": 16,
        "backbone.kwargs": "{widths: [4, 8]}",
        "amp": "none",
        "channels_last": False,
        "batch_size": 16,
        "output": out,
        "seed": 5,
        "steps": 4,
    }
    over.update(extra)
    cfg = load_train_config(None, [f"{k}={v}" for k, v in over.items()])
    return build_data(cfg, init_distributed("cpu"))


def _batches(t: TrainData, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b.images.cpu(), b.labels.cpu()) for b in t.loader(epoch)]


@pytest.mark.parametrize("augment", ["none", "flip"])
def test_preload_gives_the_normal_batches(
    small_subset: tuple[Path, Path], tmp_path: Path, augment: str
) -> None:
    train_csv, _ = small_subset
    normal = _trainer(train_csv, tmp_path / "a", **{"data.augment": augment})
    pre = _trainer(train_csv, tmp_path / "b", **{"data.augment": augment, "data.preload": "device"})
    flips = []
    for epoch in (0, 1):
        a, b = _batches(normal, epoch), _batches(pre, epoch)
        assert len(a) == len(b) == normal.steps_per_epoch
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(ya, yb)  # same order of samples
            if augment == "none":
                torch.testing.assert_close(xa, xb)
            else:  # each image is the normal one or its mirror
                same = (xa - xb).abs().flatten(1).amax(1) < 1e-5
                mirror = (xa.flip(3) - xb).abs().flatten(1).amax(1) < 1e-5
                assert bool((same | mirror).all())
                flips.append(mirror & ~same)
    if flips:
        rate = torch.cat(flips).float().mean().item()
        assert 0.2 < rate < 0.8
        again = _trainer(
            train_csv, tmp_path / "c", **{"data.augment": augment, "data.preload": "device"}
        )
        for (xb, _), (xc, _) in zip(_batches(pre, 0), _batches(again, 0), strict=True):
            assert torch.equal(xb, xc)  # deterministic by seed


def test_preload_rejects_strong_augment(small_subset: tuple[Path, Path]) -> None:
    from marginface.errors import ConfigError

    with pytest.raises(ConfigError, match="preload"):
        load_train_config(
            None, [f"data.train={small_subset[0]}", "data.preload=device", "data.augment=strong"]
        )
