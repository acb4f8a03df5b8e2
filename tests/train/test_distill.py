"""Distillation: the loss term learns, the teacher file follows the data set's order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.errors import DataError
from marginface.train import load_train_config, train
from marginface.train.distill import (
    DistillHead,
    compute_teacher_embeddings,
    labels_fingerprint,
    load_teacher,
    teacher_meta_path,
)


def test_distill_loss_decreases_on_a_toy_case() -> None:
    torch.manual_seed(0)
    student = torch.randn(256, 32)
    teacher = student @ torch.randn(32, 8)  # reachable by a linear projection
    head = DistillHead(32, 8)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    with torch.no_grad():
        first = float(head(student, teacher))
    for _ in range(150):
        loss = head(student, teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(head(student, teacher))
    assert first > 0.5 and last < 0.05 * first


def test_teacher_file_follows_dataset_order(
    small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    from marginface.data import open_dataset
    from marginface.embed import load_embedder

    train_csv, _ = small_subset
    out = tmp_path / "teacher.npy"
    meta = compute_teacher_embeddings(train_csv, out, limit=10, batch_size=4)
    arr = np.load(out)
    assert arr.shape == (10, 128) and arr.dtype == np.float16
    assert meta["n"] == 10 and json.loads(teacher_meta_path(out).read_text())["dim"] == 128
    ds = open_dataset(train_csv)
    ref = load_embedder("sface").embed(np.stack([ds.load_image(i) for i in (0, 7)]))
    np.testing.assert_allclose(arr[[0, 7]].astype(np.float32), ref, atol=2e-3)
    with pytest.raises(DataError, match="training set has"):
        load_teacher(out, ds)  # 10 rows for a larger data set


def test_training_with_distillation(small_subset: tuple[Path, Path], tmp_path: Path) -> None:
    from marginface.data import open_dataset

    train_csv, _ = small_subset
    ds = open_dataset(train_csv)
    rng = np.random.default_rng(0)
    teacher = tmp_path / "t.npy"
    np.save(teacher, rng.standard_normal((len(ds), 12)).astype(np.float16))
    teacher_meta_path(teacher).write_text(
        json.dumps({"labels_fingerprint": labels_fingerprint(ds.labels)})
    )
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
        "output": tmp_path / "run",
        "steps": 3,
        "log.progress": False,
        "log.tensorboard": False,
        "distill.teacher": teacher,
        "distill.weight": 2.0,
        "data.preload": "device",
    }
    cfg = load_train_config(None, [f"{k}={v}" for k, v in over.items()])
    res = train(cfg)
    assert res.steps == 3 and np.isfinite(res.last_loss)
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["training"]["distill"]["weight"] == 2.0
    # a teacher for another order of the same images is refused
    teacher_meta_path(teacher).write_text(json.dumps({"labels_fingerprint": "0" * 16}))
    with pytest.raises(DataError, match="another order"):
        load_teacher(teacher, ds)
