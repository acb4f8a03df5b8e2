"""A short CPU training run on real faces runs the whole path and reports what it measured.

100 identities × 10 images of ``celeba-train-112`` (32×32, a tiny network), verification on
300 pairs of 40 other identities (10 identity-disjoint folds) before and after training. How
much the held-out accuracy rises is an outcome that threads and library versions move: it is
printed and reported in docs/training.md ("A short CPU run"), not asserted. What must hold every
time: the training loss falls (the optimiser works on its own training data), verification
runs at the start and the end, and the card records the final figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.card import ModelCard
from marginface.train import load_train_config, train

from .conftest import make_subset


@pytest.mark.slow
def test_short_cpu_run_learns(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_csv, pairs = make_subset(
        shared_data, tmp_path / "data", n_train=100, n_test=40, per_id=10
    )
    cfg = load_train_config(
        None,
        [
            f"data.train={train_csv}",
            "data.input_size=[32, 32]",
            "data.workers=0",
            "data.augment=flip",
            "backbone.name=tiny",
            "backbone.embedding_dim=64",
            "backbone.kwargs={widths: [8, 16, 32]}",
            "loss.name=normface",
            "loss.kwargs={scale: 16}",
            "optim.name=adamw",
            "optim.lr=0.003",
            "optim.weight_decay=0.01",
            "amp=none",
            "channels_last=false",
            "epochs=8",
            "batch_size=50",
            f"output={tmp_path / 'run'}",
            f"verify.pairs={pairs}",
            "verify.at_start=true",
            "verify.at_epoch_end=false",
            "verify.flip=true",
            "log.progress=false",
            "log.tensorboard=false",
            "checkpoint.every_steps=100000",
            "checkpoint.at_epoch_end=false",
            "seed=0",
        ],
    )
    result = train(cfg)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    before = float(lines[0].split(": ")[-1].split(" ±")[0]) / 100
    after = result.metrics["accuracy"]
    with capsys.disabled():
        print(
            f"\nheld-out verification accuracy: untrained {100 * before:.1f} %, "
            f"after {result.steps} steps {100 * after:.1f} % "
            f"(TAR@FAR=1e-2 {result.metrics['tar@far=1e-2']:.3f}, "
            f"{result.seconds:.0f} s)"
        )
    assert len(lines) >= 2 and 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    losses = result.epoch_losses
    assert len(losses) == 8 and losses[-1] < 0.9 * losses[0], losses
    card = ModelCard.load(tmp_path / "run")
    assert card.metrics and abs(next(iter(card.metrics.values()))["accuracy"] - after) < 1e-9
