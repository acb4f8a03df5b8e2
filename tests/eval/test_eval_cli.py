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

runner = CliRunner()


def _app() -> typer.Typer:
    from marginface.cli.eval import register

    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def crops(shared_data: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """12 identities x 3 aligned crops (read in place), a CSV with 36 matched and 120
    mismatched pairs, and gallery/probe lists."""
    train = shared_data / "celeba-train-112"
    ids = [d for d in sorted(train.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= 3][
        :12
    ]
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
    res = runner.invoke(
        _app(),
        [
            "eval",
            "verify",
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["n_pairs"] == 156 and report["model"] == "tiny-test"
    assert report["n_failed_images"] == 0 and report["failed_images"] == []
    assert report["tar_at_far"]["1e-1"] is not None and report["tar_at_far"]["1e-3"] is None
    assert "accuracy" in res.output and "not resolvable" in res.output
    assert (tmp_path / "plots" / "roc.png").is_file()
    assert (tmp_path / "plots" / "similarity_histogram.png").is_file()
    assert report["embedding"]["computed"] == 36

    # a model without an impostor table says so in identification, and reports the rest
    res = runner.invoke(
        _app(),
        [
            "eval",
            "identify",
            "--gallery",
            str(gallery),
            "--probes",
            str(probes),
            "--out",
            str(tmp_path / "id0.json"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "no impostor calibration" in res.output
    assert json.loads((tmp_path / "id0.json").read_text())["results"][0]["operating_points"] == []

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

    # identification measures at an explicit threshold (1:1 thresholds do not set FPIR)
    res = runner.invoke(
        _app(),
        [
            "eval",
            "identify",
            "--gallery",
            str(gallery),
            "--probes",
            str(probes),
            "--out",
            str(tmp_path / "id.json"),
            "--threshold",
            str(cal.thresholds["1e-2"]),
            "--plots",
            str(tmp_path / "idplots"),
            *common,
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "id.json").read_text())
    assert rep["mated_probes"] == 16 and rep["non_mated_probes"] == 8
    assert rep["embedding"]["computed"] == 0  # every crop came from the cache
    result = rep["results"][0]
    assert set(result["rules"]) == {"best_face"}  # one photo per subject: the vote is the same
    at = result["operating_points"][0]
    assert at["threshold"] == pytest.approx(cal.thresholds["1e-2"], abs=1e-6)
    assert at["non_mated_searches"] == 8 and 0 <= at["false_positives"] <= 8
    assert (tmp_path / "idplots" / "cmc.png").is_file()
    assert (tmp_path / "idplots" / "fnir_fpir.png").is_file()


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
    res = runner.invoke(
        _app(),
        [
            "eval",
            "verify",
            "--pairs",
            str(binf),
            "--model",
            str(tiny_model),
            "--aligned",
            "--no-cache",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["pairs_format"] == "bin" and report["n_pairs"] == 40 and report["n_folds"] == 10
    # bf16 scores the same pairs almost identically; an unknown precision is a ConfigError
    out16 = tmp_path / "bin16.json"
    res = runner.invoke(
        _app(),
        [
            "eval",
            "verify",
            "--pairs",
            str(binf),
            "--model",
            str(tiny_model),
            "--aligned",
            "--no-cache",
            "--out",
            str(out16),
            "-q",
            "--precision",
            "bf16",
        ],
    )
    assert res.exit_code == 0, res.output
    report16 = json.loads(out16.read_text())
    assert abs(report16["auc"] - report["auc"]) < 0.02
    res = runner.invoke(
        _app(),
        [
            "eval",
            "verify",
            "--pairs",
            str(binf),
            "--model",
            str(tiny_model),
            "--aligned",
            "--precision",
            "fp8",
        ],
    )
    assert isinstance(res.exception, ConfigError) and "fp8" in str(res.exception)

    # a malformed pairs file is a DataError naming the line
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t1\nname\t1\t2\nname\t1\n")
    res = runner.invoke(
        _app(),
        [
            "eval",
            "verify",
            "--pairs",
            str(bad),
            "--root",
            str(tmp_path),
            "--model",
            str(tiny_model),
        ],
    )
    assert isinstance(res.exception, DataError) and "bad.txt:3:" in str(res.exception)
    # an unknown model is a ModelError
    res = runner.invoke(
        _app(), ["calibrate", "--pairs", str(pairs), "--model", str(tmp_path / "nope")]
    )
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


def _two_people(big: Path, small: Path, out: Path) -> None:
    """One photo of two people: ``big`` at the left edge, ``small`` shrunk in the middle, so
    that the largest face is not the central one."""
    from PIL import Image

    a, b = (Image.open(p).convert("RGB") for p in (big, small))
    b = b.resize((round(b.width * 0.55), round(b.height * 0.55)))
    width, height = 2 * a.width + b.width + 20, max(a.height, b.height)
    canvas = Image.new("RGB", (width, height), (40, 40, 40))
    canvas.paste(a, (0, 0))
    canvas.paste(b, ((width - b.width) // 2, (height - b.height) // 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=92)


def test_lfw_pairs_default_to_the_central_face(tmp_path: Path, shared_data: Path) -> None:
    """Without --face an LFW pairs.txt compares the face each photo is centred on (LFW's
    protocol), recorded in the report and the summary; --face largest still overrides it."""
    import dataclasses
    import shutil

    from marginface.eval.pairs import load_pairs
    from marginface.eval.verify import default_face_selection

    dev = shared_data / "celeba-dev"
    stranger = dev / "celeb_7211" / "celeb_7211_0001.jpg"
    root = tmp_path / "lfw"
    for name, person in (("pa", "celeb_7205"), ("pb", "celeb_7206")):
        (root / name).mkdir(parents=True)
        shutil.copy(dev / person / f"{person}_0001.jpg", root / name / f"{name}_0001.jpg")
        # the person, small and central, beside a larger stranger (the same in both photos)
        _two_people(stranger, dev / person / f"{person}_0006.jpg", root / name / f"{name}_0002.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\npa\t1\t2\npa\t1\tpb\t2\npb\t1\t2\npa\t2\tpb\t2\n")
    pair_set = load_pairs(pairs, root)
    assert default_face_selection(pair_set) == "central"
    assert default_face_selection(dataclasses.replace(pair_set, format="csv")) == "largest"

    reports = {}
    for face in (None, "largest"):
        out = tmp_path / f"{face}.json"
        args = [
            "eval",
            "verify",
            "--pairs",
            str(pairs),
            "--root",
            str(root),
            "--model",
            "sface",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-q",
            "--out",
            str(out),
        ]
        res = runner.invoke(_app(), args + (["--face", face] if face else []))
        assert res.exit_code == 0, res.output
        reports[face] = (json.loads(out.read_text()), res.output)
    report, output = reports[None]
    assert report["options"]["face_selection"] == "central"
    assert report["options"]["face_selection_default"] is True
    assert "faces: the central face of each photo (the default for lfw pairs" in output
    assert report["auc"] == 1.0  # each person against themselves
    report, output = reports["largest"]
    assert report["options"]["face_selection"] == "largest"
    assert report["options"]["face_selection_default"] is False
    assert "faces: the largest face of each photo (--face)" in output
    assert report["auc"] < 0.5  # the stranger against themselves, the person against them
