"""The training engine: DDP equality, exact resume, export, and its error messages."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from marginface.card import ModelCard
from marginface.errors import ConfigError, DataError, ModelError
from marginface.train import Trainer, load_train_config, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def base_overrides(train_csv: Path, out: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "data.train": train_csv,
        "data.input_size": "[32, 32]",
        "data.workers": 0,
        "data.augment": "flip",
        "backbone.name": "tiny",
        "backbone.embedding_dim": 16,
        "backbone.kwargs": "{widths: [4, 8]}",
        "loss.name": "arcface",
        "loss.kwargs": "{scale: 16, margin: 0.3}",
        "amp": "none",
        "channels_last": False,
        "batch_size": 16,
        "output": out,
        "log.progress": False,
        "log.tensorboard": False,
        "checkpoint.every_steps": 1000,
        "verify.at_epoch_end": False,
        "seed": 3,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def pfc_weight(output: Path, step: int, world: int = 1) -> torch.Tensor:
    ckpt = output / "checkpoints" / f"step_{step:08d}"
    parts = [
        torch.load(ckpt / f"rank{r:05d}.pt", weights_only=False)["pfc"]["head"]["weight"]
        for r in range(world)
    ]
    return torch.cat(parts)


@pytest.mark.slow
def test_resume_continues_exactly(small_subset: tuple[Path, Path], tmp_path: Path) -> None:
    train_csv, _ = small_subset
    extra = {
        "steps": 6,
        "loss.sample_rate": 0.5,
        "optim.name": "adamw",
        "optim.lr": 0.01,
        "schedule.warmup_steps": 2,
    }
    straight = load_train_config(None, base_overrides(train_csv, tmp_path / "a", **extra))
    res = train(straight)
    assert res.steps == 6 and not res.interrupted

    split = load_train_config(None, base_overrides(train_csv, tmp_path / "b", **extra))
    trainer = Trainer(split)
    trainer.stop_after = 3  # as if Ctrl-C arrived during step 3 (mid-epoch: 4 steps/epoch)
    first = trainer.run()
    assert first.interrupted and first.steps == 3
    assert not (tmp_path / "b" / "weights.safetensors").exists()
    second = train(split, resume=True)
    assert second.steps == 6 and not second.interrupted

    wa = load_file(str(tmp_path / "a" / "weights.safetensors"))
    wb = load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(
        pfc_weight(tmp_path / "a", 6), pfc_weight(tmp_path / "b", 6), rtol=0, atol=1e-6
    )


def test_resume_without_checkpoint_says_so(small_subset: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = load_train_config(None, base_overrides(small_subset[0], tmp_path / "none", steps=1))
    with pytest.raises(ModelError, match="no checkpoint found"):
        train(cfg, resume=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ddp_two_processes_equal_one(small_subset: tuple[Path, Path], tmp_path: Path) -> None:
    train_csv, _ = small_subset
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": str(train_csv)}}))
    common = [
        "backbone.name=test_nobn",
        "backbone.kwargs={}",
        "steps=3",
        "optim.grad_clip=1.0",
        "loss.extra=[{name: center, weight: 0.01}]",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = base_overrides(train_csv, tmp_path / "one", batch_size=16) + common
    two = base_overrides(train_csv, tmp_path / "two", batch_size=8) + common
    worker = str(HERE / "ddp_worker.py")
    subprocess.run(
        [sys.executable, worker, str(cfg), *one], check=True, env=env, cwd=ROOT, timeout=300
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            worker,
            str(cfg),
            *two,
        ],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    w1 = load_file(str(tmp_path / "one" / "weights.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "weights.safetensors"))
    init = torch.load(
        tmp_path / "one" / "checkpoints" / "step_00000003" / "trainer.pt", weights_only=False
    )
    moved = 0.0
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6, msg=key)
        moved += float((w1[key] - init["net"]["backbone." + key]).abs().sum())
    assert moved == 0.0  # the checkpoint of the last step holds the exported weights
    head1 = pfc_weight(tmp_path / "one", 3, world=1)
    head2 = pfc_weight(tmp_path / "two", 3, world=2)
    assert head1.shape == head2.shape
    torch.testing.assert_close(head2, head1, rtol=1e-5, atol=1e-6)


def test_config_typo_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: {train: x}\noptim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="unknown loss 'arcfase'"):
        load_train_config(None, ["data.train=x", "loss.name=arcfase"])


def test_missing_data_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    cfg = load_train_config(None, base_overrides(missing, tmp_path / "out", steps=1))
    with pytest.raises(DataError, match="no_such_folder"):
        train(cfg)


def test_unreadable_image_is_skipped_and_reported(
    small_subset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    lines = small_subset[0].read_text().splitlines()
    label = lines[0].split(",")[1]
    listing = tmp_path / "with_bad.csv"
    listing.write_text("\n".join([f"{bad},{label}", *lines]) + "\n")
    cfg = load_train_config(
        None, base_overrides(listing, tmp_path / "out", epochs=1, **{"data.augment": "none"})
    )
    result = train(cfg)
    assert result.skipped_samples == 1
    out = capsys.readouterr().out
    assert "skipped 1 unreadable samples" in out and "broken.jpg" in out
    card = ModelCard.load(tmp_path / "out")
    assert card.training["data"]["skipped_images"] == 1


def test_backbone_is_built_for_data_input_size(
    small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    """MobileFaceNet's GDC kernel depends on the input: 48×48 crops need a 3×3 kernel, and the
    exported card must rebuild the same network."""
    from marginface.embed import load_embedder

    out = tmp_path / "mbf48"
    cfg = load_train_config(
        None,
        base_overrides(
            small_subset[0],
            out,
            steps=1,
            **{
                "data.input_size": "[48, 48]",
                "backbone.name": "mbf_small",
                "backbone.kwargs": "{}",
            },
        ),
    )
    assert train(cfg).steps == 1
    card = ModelCard.load(out / "model.json")
    assert card.architecture_kwargs["input_size"] == [48, 48]
    from marginface.backbones import takes_input_size

    assert takes_input_size("mbf_small") and takes_input_size("r50")
    assert not takes_input_size("tiny")
    embedder = load_embedder(out, runtime="torch")
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    emb = embedder.embed(crops)
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_backbone_input_size_disagreeing_with_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"disagrees with data\.input_size"):
        load_train_config(
            None,
            base_overrides(
                tmp_path / "x.csv",
                tmp_path / "out",
                steps=1,
                **{"backbone.kwargs": "{input_size: [64, 64]}"},
            ),
        )


COMPARISON_CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*_mbf.yaml"))


@pytest.mark.parametrize("name", COMPARISON_CONFIGS)
def test_every_comparison_config_trains(
    name: str, small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    """Each issue-8 config, with its own loss, sampler and extra terms, trains two steps on a
    tiny network (its backbone, sizes and schedule overridden) and exports a loadable model."""
    from marginface.embed import load_embedder

    assert len(COMPARISON_CONFIGS) == 9
    out = tmp_path / "run"
    cfg = load_train_config(
        ROOT / "configs" / name,
        [
            f"data.train={small_subset[0]}",
            "data.input_size=[32, 32]",
            "data.workers=0",
            "backbone.name=tiny",
            "backbone.embedding_dim=16",
            "backbone.kwargs={widths: [4, 8]}",
            "amp=none",
            "channels_last=false",
            "compile=false",
            "batch_size=16",
            "steps=2",
            f"output={out}",
            "verify.pairs=null",
            "log.progress=false",
            "log.tensorboard=false",
            "checkpoint.every_steps=1000",
            "checkpoint.at_epoch_end=false",
        ],
    )
    assert train(cfg).steps == 2
    emb = load_embedder(out, runtime="torch").embed(np.zeros((2, 112, 112, 3), np.uint8))
    assert emb.shape == (2, 16) and np.all(np.isfinite(emb))


def test_a_batch_with_no_readable_image_stops_the_run(
    small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    """An all-unreadable batch is an error, never a silent second step on the previous batch.
    2 readable images among 8 in batches of 2: at least two batches hold no readable image, and
    with seed 1 the first batch is readable (so the old "repeat the last batch" passed)."""
    rows = small_subset[0].read_text().splitlines()
    lines = [rows[0], next(r for r in rows if r.split(",")[1] != rows[0].split(",")[1])]
    broken = []
    for i in range(6):
        bad = tmp_path / f"broken{i}.jpg"
        bad.write_bytes(b"\xff\xd8 this is not a JPEG")
        broken.append(f"{bad},{lines[i % 2].split(',')[1]}")
    listing = tmp_path / "mostly_bad.csv"
    listing.write_text("\n".join([*lines, *broken]) + "\n")
    cfg = load_train_config(
        None,
        base_overrides(
            listing, tmp_path / "out", epochs=1, batch_size=2, seed=1, **{"data.augment": "none"}
        ),
    )
    with pytest.raises(DataError, match="whole batch was unreadable"):
        train(cfg)
