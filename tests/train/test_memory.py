"""One training loop: the demo and the feature plots train through the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from marginface.backbones import TinyNet
from marginface.plots.data import load_identities
from marginface.plots.features import LossSpec, TrainSettings, train_features
from marginface.train import trainer
from marginface.train.memory import train_arrays
from marginface.train.schedule import build_scheduler


@pytest.fixture()
def steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[type, int]]:
    """Every trainer step, as (backbone class, batch size)."""
    seen: list[tuple[type, int]] = []
    step = trainer.Trainer._train_step

    def counting(
        self: trainer.Trainer,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None,
    ) -> torch.Tensor:
        assert self.model is not None
        seen.append((type(self.model.backbone), int(images.shape[0])))
        return step(self, images, labels, indices)

    monkeypatch.setattr(trainer.Trainer, "_train_step", counting)
    return seen


def test_the_feature_plots_train_through_the_trainer(steps: list[tuple[type, int]]) -> None:
    data = load_identities("digits", num_identities=3, per_identity=12, image_size=16)
    settings = TrainSettings(epochs=3, batch_size=16, width=4, holdout=3)
    reports: list[tuple[str, int, float]] = []
    run = train_features(
        data,
        LossSpec("cosface", {"scale": 8.0, "margin": 0.1}),
        settings,
        progress=lambda label, epoch, loss: reports.append((label, epoch, loss)),
    )
    # 27 training photos in batches of 16: one full batch and the shorter last one, per epoch.
    assert [n for _, n in steps] == [16, 11] * 3
    assert {cls for cls, _ in steps} == {TinyNet}
    assert [(label, epoch) for label, epoch, _ in reports] == [("cosface", e) for e in (1, 2, 3)]
    assert [loss for _, _, loss in reports] == run.losses and len(run.losses) == 3
    steps.clear()
    triplet = train_features(data, LossSpec("triplet", {"margin": 0.2}), settings)
    assert [n for _, n in steps] == [16, 16] * 3  # P×K batches, as many as random ones
    assert not triplet.directions_are_weights


@pytest.mark.slow
def test_the_demo_trains_through_the_trainer(steps: list[tuple[type, int]]) -> None:
    from marginface.demo import run_demo

    results, source = run_demo(None, ("arcface",), epochs=1)  # no ORL: the digits fallback
    assert source.startswith("scikit-learn digits")
    assert {cls for cls, _ in steps} == {TinyNet} and {n for _, n in steps} == {64}
    assert len(steps) == 1437 // 64  # the 8 training digits' photos, in full batches
    assert results[0].loss == "arcface" and 0.0 <= results[0].auc <= 1.0


def test_train_arrays_is_quiet_and_keeps_no_files(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    run = train_arrays(
        {
            "backbone": {"name": "tiny", "embedding_dim": 4, "kwargs": {"widths": [4]}},
            "data": {"input_size": [16, 16]},
            "batch_size": 8,
            "epochs": 2,
            "loss": {"name": "softmax"},
        },
        images,
        np.arange(24) % 3,
    )
    assert capsys.readouterr().out == ""
    assert run.result.steps == 6 and len(run.result.epoch_losses) == 2
    assert not run.backbone.training and not run.result.output.exists()


def test_one_cycle_is_pytorchs_with_the_warm_up_as_its_rise() -> None:
    from marginface.train.config import ScheduleConfig

    def lrs(make: object) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05, momentum=0.9)
        sched = make(opt)  # type: ignore[operator]
        out = []
        for _ in range(180):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    ours = lrs(
        lambda o: build_scheduler(o, ScheduleConfig(kind="onecycle", warmup_epochs=9), 180, 3)
    )
    torchs = lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.05, total_steps=180, pct_start=0.15)
    )
    assert ours == torchs
    one = lrs(
        lambda o: build_scheduler(o, ScheduleConfig(kind="onecycle", warmup_steps=1), 180, 3)
    )  # PyTorch alone divides by zero here
    assert math.isclose(one[0], 0.05, rel_tol=1e-3) and one[-1] < 1e-5
