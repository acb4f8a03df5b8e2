"""``marginface train``: overrides, one-line errors, the exported model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from marginface.card import ModelCard
from marginface.cli.train import register
from marginface.errors import ConfigError


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps "train" a sub-command
        """Nothing."""

    return app


@pytest.mark.slow
def test_cli_trains_and_exports_a_model_dir(
    small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    train_csv, pairs = small_subset
    config = tmp_path / "cfg.yaml"
    config.write_text(f"""
data: {{train: {train_csv}, input_size: [32, 32], workers: 0}}
backbone: {{name: tiny, embedding_dim: 16, kwargs: {{widths: [4, 8]}}}}
loss: {{name: cosface, kwargs: {{scale: 16}}, sample_rate: 0.5}}
amp: none
channels_last: false
steps: 2
batch_size: 16
output: {tmp_path / "run"}
log: {{progress: false}}
verify: {{pairs: {pairs}, flip: false}}
""")
    result = CliRunner().invoke(
        _app(), ["train", str(config), "--set", "optim.lr=0.05", "--set", "name=tiny-test"]
    )
    assert result.exit_code == 0, result.output
    assert "finished after 2 steps" in result.output
    run = tmp_path / "run"
    card = ModelCard.load(run)
    assert card.name == "tiny-test" and card.architecture == "tiny"
    assert card.embedding_dim == 16
    assert card.preprocessing.input_size == (32, 32)
    assert card.training["optim"]["lr"] == 0.05
    assert card.training["loss"]["name"] == "cosface"
    metrics = next(iter(card.metrics.values()))
    assert 0.0 <= metrics["accuracy"] <= 1.0
    weights = load_file(str(run / card.weights))
    assert "fc.weight" in weights and weights["fc.weight"].shape[0] == 16
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,kind,name,value" and any(",train,loss," in x for x in lines)
    assert (run / "tensorboard").is_dir()
    # The run's folder is a model directory the pipeline loads, 112x112 crops resized as trained.
    from marginface.embed import load_embedder

    emb = load_embedder(run).embed(np.full((3, 112, 112, 3), 128, np.uint8))
    assert emb.shape == (3, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_cli_config_typo_raises_config_error(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("data: {train: x}\nbatch_sise: 8\n")
    result = CliRunner().invoke(_app(), ["train", str(config)])
    assert isinstance(result.exception, ConfigError)
    assert "unknown key 'batch_sise'" in str(result.exception)


def test_example_configs_are_valid() -> None:
    from marginface.train import load_train_config

    root = Path(__file__).resolve().parents[2] / "configs"
    names = {p.stem for p in root.glob("*.yaml")}
    expected = {
        "softmax_mbf",
        "normface_mbf",
        "sphereface_mbf",
        "cosface_mbf",
        "arcface_mbf",
        "combined_mbf",
        "triplet_mbf",
        "arcface_center_mbf",
        "subcenter_arcface_mbf",
        "tiny_cpu",
    }
    assert expected <= names
    for name in expected:
        cfg = load_train_config(root / f"{name}.yaml")
        if name != "tiny_cpu":
            assert (cfg.backbone.name, cfg.backbone.embedding_dim) == ("mbf", 512)
            assert (cfg.seed, cfg.epochs, cfg.batch_size, cfg.optim.lr) == (0, 20, 512, 0.1)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("data: {train: x}\nloss: {name: triplet}\n", "needs data.sampler: pk"),
        ("data: {train: x}\nloss: {name: arcface, extra: [{name: softmax}]}\n", "loss.extra"),
        ("data: {train: x}\namp: fp32\n", "amp"),
    ],
)
def test_config_rejects_inconsistent_settings(tmp_path: Path, text: str, needle: str) -> None:
    from marginface.train import load_train_config

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_train_config(path)


def test_cli_train_table_pools_results_files(tmp_path: Path) -> None:
    import json

    rows = [
        {
            "name": "arc",
            "config": "c.yaml",
            "loss": "arcface",
            "seed": s,
            "status": "done",
            "accuracy": acc,
            "std": 1.0,
            "machine": "CPU",
        }
        for s, acc in ((0, 90.0), (1, 92.0))
    ]
    paths = []
    for i, row in enumerate(rows):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps({"dev": {}, "overrides": [f"seed={i}"], "rows": [row]}))
        paths.append(str(p))
    out = tmp_path / "docs" / "table.md"
    res = CliRunner().invoke(_app(), ["train-table", *paths, "--table", str(out)])
    assert res.exit_code == 0, res.output
    assert "| 1 | arc | 91.00 ± 1.00 | 0: 90.00, 1: 92.00 |" in out.read_text()
