"""Training runs of the feature plots: seeded runs reproduce exactly, held-out photos stay out.

What the runs *show* (margin losses tighter than Softmax on unseen photos, CosFace's clusters
tightening with m) is a measured outcome that a thread count or a library version can move:
it is reported with its command in docs/losses.md, not asserted here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from marginface.errors import ConfigError, DataError
from marginface.plots.data import load_identities
from marginface.plots.features import (
    LossSpec,
    TrainSettings,
    mean_summary,
    train_features,
    train_repeats,
)

QUICK = TrainSettings(epochs=2, batch_size=16, width=4)


def test_digits_fallback_needs_no_shared_data() -> None:
    data = load_identities("digits", num_identities=3, per_identity=12, image_size=16)
    assert data.images.shape == (36, 3, 16, 16)
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    assert np.array_equal(np.bincount(data.labels), [12, 12, 12])


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data source"):
        load_identities("nope")
    with pytest.raises(DataError, match="not found"):
        load_identities("orl", data_root=tmp_path)
    with pytest.raises(ConfigError):
        TrainSettings(dim=1)


def test_runs_are_deterministic_and_seed_dependent() -> None:
    data = load_identities("digits", num_identities=3, per_identity=12, image_size=16)
    spec = LossSpec("arcface", {"scale": 8.0, "margin": 0.2})
    a = train_features(data, spec, QUICK)
    b = train_features(data, spec, QUICK)
    c = train_features(data, spec, TrainSettings(epochs=2, batch_size=16, width=4, seed=1))
    assert np.array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)
    assert a.features.shape == (36, 2) and a.directions.shape == (3, 2)
    np.testing.assert_allclose(np.linalg.norm(a.directions, axis=1), 1.0)


def test_held_out_photos_are_never_trained_on_and_measured_apart() -> None:
    data = load_identities("digits", num_identities=3, per_identity=12, image_size=16)
    spec = LossSpec("cosface", {"scale": 8.0, "margin": 0.1})
    settings = TrainSettings(epochs=2, batch_size=16, width=4, holdout=3)
    (runs,) = train_repeats(data, [spec], settings, repeats=2)
    assert [r.seed for r in runs] == [0, 1]
    held = runs[0].held_out
    assert held is not None and held.reshape(3, 12)[:, -3:].all() and held.sum() == 9
    # Replacing the held-out photos by noise changes nothing on the training photos.
    images = data.images.copy()
    images[held == 1] = np.random.default_rng(0).uniform(-1, 1, images[held == 1].shape)
    noisy = dataclasses.replace(data, images=images)
    other = train_features(noisy, spec, settings)
    train = held == 0
    np.testing.assert_array_equal(other.features[train], runs[0].features[train])
    assert other.stats == runs[0].stats and other.held_out_stats != runs[0].held_out_stats
    row = mean_summary(runs)
    assert row["seeds"] == [0, 1] and len(row["per_seed"]) == 2
    for part, stats in (("train", "stats"), ("held_out", "held_out_stats")):
        expected = np.mean([getattr(r, stats).mean_intra_angle for r in runs])
        assert row[part]["mean_intra_angle"] == pytest.approx(expected, abs=1e-3)
