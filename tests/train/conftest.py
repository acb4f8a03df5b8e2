"""Fixtures for training tests: small real subsets of ``celeba-train-112`` (CSV lists only;
the images stay in ``../shared/data``)."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest


def make_subset(
    shared_data: Path,
    out: Path,
    *,
    n_train: int,
    n_test: int,
    per_id: int,
    test_per_id: int = 10,
    pairs_per_fold: int = 15,
    min_images: int = 20,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``train.csv`` (``path,label``) of ``n_train`` identities and a ``pairs.csv`` of
    ``n_test`` other identities (10 identity-disjoint folds). Returns both paths."""
    root = shared_data / "celeba-train-112"
    ids = sorted(d for d in os.listdir(root) if (root / d).is_dir())
    big = [d for d in ids if len(os.listdir(root / d)) >= min_images]
    train_ids, test_ids = big[:n_train], big[n_train : n_train + n_test]
    out.mkdir(parents=True, exist_ok=True)
    train_csv = out / "train.csv"
    with train_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        for d in train_ids:
            for name in sorted(os.listdir(root / d))[:per_id]:
                w.writerow([str(root / d / name), f"id{d}"])
    rng = random.Random(seed)
    images = {
        d: [str(root / d / n) for n in sorted(os.listdir(root / d))[:test_per_id]] for d in test_ids
    }
    per_fold = max(2, len(test_ids) // 10)
    rows = []
    for fold in range(10):
        group = test_ids[fold * per_fold : (fold + 1) * per_fold]
        for _ in range(pairs_per_fold):
            d = rng.choice(group)
            a, b = rng.sample(images[d], 2)
            rows.append([a, b, 1, fold])
            d1, d2 = rng.sample(group, 2)
            rows.append([rng.choice(images[d1]), rng.choice(images[d2]), 0, fold])
    pairs_csv = out / "pairs.csv"
    with pairs_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path1", "path2", "same", "fold"])
        w.writerows(rows)
    return train_csv, pairs_csv


@pytest.fixture(scope="session")
def small_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 identities × 6 images for the fast mechanics tests, plus a pairs file."""
    return make_subset(
        shared_data,
        tmp_path_factory.mktemp("small"),
        n_train=12,
        n_test=20,
        per_id=6,
        test_per_id=4,
        pairs_per_fold=4,
    )
