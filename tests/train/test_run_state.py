"""The run state: one object that checkpoints save and a resume restores, exactly."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marginface.errors import ModelError
from marginface.train import Trainer, load_train_config, train
from marginface.train.checkpoint import FORMAT, RunState, find_latest

from .test_engine import base_overrides


def test_run_state_round_trips_through_a_saved_file(tmp_path: Path) -> None:
    state = RunState(
        step=7,
        epoch=1,
        batch_in_epoch=3,
        seconds=12.5,
        skipped=2,
        last_loss=1.25,
        samples_per_second=99.0,
        epoch_losses=[3.0, 2.5],
        epoch_loss_sum=4.0,
        epoch_samples=48,
        last_verify={"accuracy": 0.75},
        verified_at=4,
    )
    torch.save(state.to_dict(), tmp_path / "s.pt")
    assert RunState.from_dict(torch.load(tmp_path / "s.pt", weights_only=False)) == state
    assert RunState.from_dict({"step": 3, "from_a_later_release": 1}) == RunState(step=3)
    assert math.isnan(RunState().last_loss) and RunState().verified_at == -1


def _losses(output: Path) -> list[tuple[str, str]]:
    with (output / "metrics.csv").open() as fh:
        return [(r[0], r[4]) for r in csv.reader(fh) if r[2:4] == ["train", "loss"]]


@pytest.mark.slow
@pytest.mark.parametrize("preload", ["none", "device"])
def test_a_resumed_run_repeats_the_uninterrupted_one(
    small_subset: tuple[Path, Path], tmp_path: Path, preload: str
) -> None:
    """Stopped twice (mid-epoch, then on an epoch's last step) and resumed: every step's loss,
    every epoch's mean loss, the run state and the weights equal one uninterrupted run's."""
    extra = {
        "epochs": 3,
        "log.every_steps": 1,
        "data.preload": preload,
        "optim.name": "adamw",
        "optim.lr": 0.01,
        "schedule.kind": "onecycle",
        "schedule.warmup_epochs": 1,
    }
    straight_cfg = load_train_config(None, base_overrides(small_subset[0], tmp_path / "a", **extra))
    straight = train(straight_cfg)
    assert straight.steps == 12 and len(straight.epoch_losses) == 3

    cfg = load_train_config(None, base_overrides(small_subset[0], tmp_path / "b", **extra))
    for stop in (3, 8):
        trainer = Trainer(cfg, resume=stop != 3)
        trainer.stop_after = stop
        part = trainer.run()
        assert part.interrupted and part.steps == stop
        assert trainer.state.step == stop and trainer.state.epoch == (stop - 1) // 4
    resumed = Trainer(cfg, resume=True)
    epochs_seen: list[int] = []
    resumed.on_epoch_end = lambda state: epochs_seen.append(state.epoch)
    result = resumed.run()
    # The second epoch's last step ended the previous session; the epoch closes in this one.
    assert epochs_seen == [2, 3]
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    assert result.epoch_losses == straight.epoch_losses
    assert result.last_loss == straight.last_loss
    wa = load_file(str(tmp_path / "a" / "weights.safetensors"))
    wb = load_file(str(tmp_path / "b" / "weights.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
    saved = torch.load(find_latest(tmp_path / "b") / "trainer.pt", weights_only=False)
    assert saved["format"] == FORMAT
    run = RunState.from_dict(saved["run"])
    assert (run.step, run.epoch, run.batch_in_epoch) == (12, 3, 0)
    assert run.epoch_losses == straight.epoch_losses


def test_a_checkpoint_of_the_previous_format_still_resumes(
    small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    """Checkpoints written before the run state had a name (format 1: the position at the top
    level) resume; a format this release does not know is a clear ModelError."""
    extra = {"steps": 6, "data.augment": "none"}
    train(load_train_config(None, base_overrides(small_subset[0], tmp_path / "a", **extra)))
    cfg = load_train_config(None, base_overrides(small_subset[0], tmp_path / "b", **extra))
    trainer = Trainer(cfg)
    trainer.stop_after = 3
    trainer.run()
    path = find_latest(tmp_path / "b") / "trainer.pt"
    new = torch.load(path, weights_only=False)
    run = new.pop("run")
    old = {
        **new,
        "format": "marginface-checkpoint/1",
        "skipped": run["skipped"],
        "seconds": run["seconds"],
        **{k: run[k] for k in ("step", "epoch", "batch_in_epoch")},
    }
    torch.save(old, path)
    assert train(cfg, resume=True).steps == 6
    wa = load_file(str(tmp_path / "a" / "weights.safetensors"))
    wb = load_file(str(tmp_path / "b" / "weights.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)

    saved = torch.load(find_latest(tmp_path / "b") / "trainer.pt", weights_only=False)
    torch.save(
        {**saved, "format": "marginface-checkpoint/99"}, find_latest(tmp_path / "b") / "trainer.pt"
    )
    with pytest.raises(ModelError, match="format 'marginface-checkpoint/99'"):
        train(cfg, resume=True)
