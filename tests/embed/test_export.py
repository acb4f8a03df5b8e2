"""ONNX export: parity with PyTorch, dynamic batch axis, card sidecar, int8, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.card import ModelCard
from marginface.embed import export_onnx, load_embedder
from marginface.embed.runtimes import onnx_session
from marginface.errors import ModelError


def test_parity_and_dynamic_batch(exported, mbf_model_dir, dev_crops):
    assert exported.max_abs_diff < 1e-4
    session = onnx_session(exported.onnx_path)
    assert session.get_inputs()[0].shape[0] == "batch"
    for n in (1, 3, 5):
        out = session.run(None, {"input": np.zeros((n, 3, 112, 112), np.float32)})[0]
        assert out.shape == (n, 128)
    torch_emb = load_embedder(mbf_model_dir).embed(dev_crops)
    onnx_emb = load_embedder(exported.onnx_path).embed(dev_crops, batch_size=3)
    assert float(np.abs(torch_emb - onnx_emb).max()) < 1e-4


def test_exported_card(exported, mbf_model_dir):
    card = ModelCard.load(exported.card_path)
    original = ModelCard.load(mbf_model_dir)
    assert card.format == "onnx" and card.weights == exported.onnx_path.name
    assert card.embedding_dim == original.embedding_dim
    assert card.preprocessing == original.preprocessing
    assert load_embedder(exported.onnx_path).name == original.name


def test_int8_model(exported, dev_crops):
    assert exported.int8_path is not None and exported.int8_path.is_file()
    assert exported.int8_path.stat().st_size < 0.5 * exported.onnx_path.stat().st_size
    q = load_embedder(exported.int8_path)
    assert q.name.endswith("-int8") and q.card.calibration is None
    out = q.embed(dev_crops)
    assert out.shape == (8, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert exported.int8_min_cosine is not None and exported.int8_min_cosine > 0.5


def test_export_refuses_bad_input(tmp_path, mbf_model_dir):
    with pytest.raises(ModelError, match="not found"):
        export_onnx(tmp_path / "missing", tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="overwrite"):
        export_onnx(mbf_model_dir, mbf_model_dir / "model.onnx")
    from .conftest import make_model_dir

    tiny = make_model_dir(tmp_path / "tiny")  # adaptive pooling the ONNX exporter refuses
    with pytest.raises(ModelError, match="ONNX"):
        export_onnx(tiny, tmp_path / "tiny.onnx")


def test_onnx_card_disagreeing_with_the_model(exported, tmp_path):
    path = tmp_path / "mismatch.onnx"
    path.write_bytes(exported.onnx_path.read_bytes())
    card = ModelCard.load(exported.card_path)
    card.model_copy(update={"embedding_dim": 64, "weights": path.name}).save(
        path.with_suffix(".json")
    )
    with pytest.raises(ModelError, match="embedding_dim=64"):
        load_embedder(path)


@pytest.mark.slow
def test_export_cli_int8_accuracy_change(mbf_model_dir, shared_data, tmp_path):
    """``marginface export --int8 --pairs`` exports, checks parity, quantises, runs the
    evaluation protocol on both models and prints the accuracy change (random weights here:
    the numbers only need to exist)."""
    import typer
    from typer.testing import CliRunner

    from marginface.cli import embed as embed_cli

    dev = shared_data / "celeba-dev"
    people = sorted(p for p in dev.iterdir() if p.is_dir())[:4]
    rows = []
    for k, person in enumerate(people):
        photos = sorted(person.glob("*.jpg"))[:3]
        other = sorted(people[(k + 1) % 4].glob("*.jpg"))[0]
        rows += [
            f"{photos[0]},{photos[1]},1",
            f"{photos[0]},{photos[2]},1",
            f"{photos[1]},{other},0",
            f"{photos[2]},{other},0",
        ]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    app = typer.Typer()
    embed_cli.register(app)
    out = tmp_path / "q" / "m.onnx"
    result = CliRunner().invoke(
        app, ["export", str(mbf_model_dir), "--onnx", str(out), "--int8", "--pairs", str(pairs)]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy change (int8 - float)" in result.output
    assert "max |ONNX - PyTorch|" in result.output
    assert (out.parent / "m.int8.onnx").is_file() and (out.parent / "m.json").is_file()
    assert ModelCard.load(out.parent / "m.int8.json").format == "onnx"
