"""``marginface eval verify / identify`` and ``marginface calibrate`` through the CLI, with a tiny
model directory on real aligned CelebA crops (fast), including ``.bin`` input and ``--write``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from marginface.card import ModelCard
from marginface.errors import ConfigError, DataError, ModelError
from marginface.eval.calibrate import UncalibratedThresholdWarning

runner = CliRunner()


def _app() -> typer.Typer:
    from marginface.cli.eval import register

    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from marginface.backbones import create

    torch.manual_seed(0)
    net = create("tiny", embedding_dim=32).eval()
    folder = tmp_path / "tiny_model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(folder / "weights.safetensors"))
    ModelCard(name="tiny-test", architecture="tiny", embedding_dim=32).save(folder)
    return folder


@pytest.fixture
def crops(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """12 identities x 3 aligned crops (read in place), a CSV with 36 matched and 120
    mismatched pairs, and gallery/probe lists."""
    train = shared_data / "celeba-train-112"
    ids = [d for d in sorted(train.iterdir()) if d.is_dir()
           and len(list(d.glob("*.jpg"))) >= 3][:12]
    files = {d.name: sorted(d.glob("*.jpg"))[:3] for d in ids}
    rows = []
    for fs in files.values():
        rows += [f"{fs[0]},{fs[1]},1", f"{fs[0]},{fs[2]},1", f"{fs[1]},{fs[2]},1"]
    names = list(files)
    for i in range(120):
        a, b = names[i % 12], names[(i * 5 + 1 + i // 12) % 12]
        if a == b:
            b = names[(names.index(a) + 1) % 12]
        rows.append(f"{files[a][i % 3]},{files[b][(i + 1) % 3]},0")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path1,path2,same\n" + "\n".join(rows) + "\n")
    gallery = tmp_path / "gallery.csv"
    probes = tmp_path / "probes.csv"
    gallery.write_text("".join(f"{fs[0]},{n}\n" for n, fs in list(files.items())[:8]))
    probes.write_text("".join(f"{f},{n}\n" for n, fs in files.items() for f in fs[1:]))
    return pairs, gallery, probes


def test_verify_calibrate_identify_cli(tmp_path: Path, tiny_model: Path, crops) -> None:
    pairs, gallery, probes = crops
    cache = tmp_path / "cache"
    common = ["--model", str(tiny_model), "--aligned", "--cache-dir", str(cache), "-q"]
    out = tmp_path / "report.json"
    res = runner.invoke(_app(), ["eval", "verify", "--pairs", str(pairs), "--out", str(out),
                                 "--plots", str(tmp_path / "plots"), *common])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["n_pairs"] == 156 and report["model"] == "tiny-test"
    assert report["n_failed_images"] == 0 and report["failed_images"] == []
    assert report["tar_at_far"]["1e-1"] is not None and report["tar_at_far"]["1e-3"] is None
    assert "accuracy" in res.output and "not resolvable" in res.output
    assert (tmp_path / "plots" / "roc.png").is_file()
    assert (tmp_path / "plots" / "similarity_histogram.png").is_file()
    assert report["embedding"]["computed"] == 36

    # an uncalibrated model says so loudly in identification
    res = runner.invoke(_app(), ["eval", "identify", "--gallery", str(gallery), "--probes",
                                 str(probes), "--out", str(tmp_path / "id0.json"), *common])
    assert res.exit_code == 0, res.output
    assert "NOT calibrated" in res.output
    assert "at_threshold" not in json.loads((tmp_path / "id0.json").read_text())["rules"]["knn5"]

    # calibrate without --write leaves the card alone; with --write stores the thresholds
    res = runner.invoke(_app(), ["calibrate", "--pairs", str(pairs), *common])
    assert res.exit_code == 0, res.output
    assert ModelCard.load(tiny_model).calibration is None
    assert "not written" in res.output
    res = runner.invoke(_app(), ["calibrate", "--pairs", str(pairs), "--write", *common])
    assert res.exit_code == 0, res.output
    cal = ModelCard.load(tiny_model).calibration
    assert cal is not None and list(cal.thresholds) == ["1e-2"]  # 120 negatives
    assert cal.default_far == "1e-2" and cal.n_negative_pairs == 120
    assert "1e-3: not resolvable" in res.output

    # identification now uses the calibrated threshold
    res = runner.invoke(_app(), ["eval", "identify", "--gallery", str(gallery), "--probes",
                                 str(probes), "--out", str(tmp_path / "id.json"),
                                 "--plots", str(tmp_path / "idplots"), *common])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "id.json").read_text())
    assert rep["threshold"] == pytest.approx(cal.thresholds["1e-2"], abs=1e-6)
    assert rep["mated_probes"] == 16 and rep["non_mated_probes"] == 8
    assert rep["embedding"]["computed"] == 0  # every crop came from the cache
    assert set(rep["rules"]) == {"nearest", "knn5"}
    assert "false_alarm_rate" in rep["rules"]["knn5"]["at_threshold"]
    assert (tmp_path / "idplots" / "cmc.png").is_file()


def test_bin_input_and_errors(tmp_path: Path, tiny_model: Path, crops) -> None:
    from marginface.align import read_image
    from marginface.data.verification import write_verification_bin

    pairs, _, _ = crops
    lines = pairs.read_text().splitlines()[1:]
    images, issame = [], []
    for line in lines[:20] + lines[-20:]:
        a, b, s = line.split(",")
        images += [read_image(a), read_image(b)]
        issame.append(s == "1")
    binf = write_verification_bin(tmp_path / "mini.bin", images, issame)
    out = tmp_path / "bin.json"
    res = runner.invoke(_app(), ["eval", "verify", "--pairs", str(binf), "--model",
                                 str(tiny_model), "--aligned", "--no-cache", "--out", str(out),
                                 "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["pairs_format"] == "bin" and report["n_pairs"] == 40 and report["n_folds"] == 10
    # bf16 scores the same pairs almost identically; an unknown precision is a ConfigError
    out16 = tmp_path / "bin16.json"
    res = runner.invoke(_app(), ["eval", "verify", "--pairs", str(binf), "--model",
                                 str(tiny_model), "--aligned", "--no-cache", "--out", str(out16),
                                 "-q", "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    report16 = json.loads(out16.read_text())
    assert abs(report16["auc"] - report["auc"]) < 0.02
    res = runner.invoke(_app(), ["eval", "verify", "--pairs", str(binf), "--model",
                                 str(tiny_model), "--aligned", "--precision", "fp8"])
    assert isinstance(res.exception, ConfigError) and "fp8" in str(res.exception)

    # a malformed pairs file is a DataError naming the line
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t1\nname\t1\t2\nname\t1\n")
    res = runner.invoke(_app(), ["eval", "verify", "--pairs", str(bad), "--root", str(tmp_path),
                                 "--model", str(tiny_model)])
    assert isinstance(res.exception, DataError) and "bad.txt:3:" in str(res.exception)
    # an unknown model is a ModelError
    res = runner.invoke(_app(), ["calibrate", "--pairs", str(pairs), "--model",
                                 str(tmp_path / "nope")])
    assert isinstance(res.exception, ModelError)


def test_card_path_for(tmp_path: Path, tiny_model: Path) -> None:
    from marginface.cli.eval import card_path_for
    from marginface.embed.loader import BUILTIN_DIR

    assert card_path_for("sface", None) == BUILTIN_DIR / "sface.json"
    assert card_path_for(str(tiny_model), None) == tiny_model / "model.json"
    onnx = tmp_path / "x.onnx"
    onnx.write_bytes(b"")
    assert card_path_for(str(onnx), None) == tmp_path / "x.json"
    pth = tmp_path / "backbone.pth"
    pth.write_bytes(b"")
    with pytest.raises(ModelError):
        card_path_for(str(pth), None)


def test_explicit_threshold_on_uncalibrated_model_warns(tiny_model: Path) -> None:
    from marginface.eval.calibrate import require_threshold

    card = ModelCard.load(tiny_model)
    with pytest.warns(UncalibratedThresholdWarning):
        assert require_threshold(card, explicit=0.3) == pytest.approx(0.3)
