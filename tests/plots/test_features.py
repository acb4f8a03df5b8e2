"""Training runs: deterministic, and reproducing what the papers claim on real faces."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from marginface.errors import ConfigError, DataError
from marginface.plots.data import load_identities
from marginface.plots.features import (
    DEFAULT_LOSSES,
    LossSpec,
    TrainSettings,
    cosface_sweep_specs,
    train_features,
    train_many,
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


@pytest.mark.slow
def test_papers_claims_on_real_faces(shared_data: Path) -> None:
    """On ORL (8 identities, seed 0): CosFace's angular gap grows with m across the sweep
    (3-d), and every margin run is at least as well separated as NormFace (2-d)."""
    data = load_identities("orl", data_root=shared_data, num_identities=8)
    sweep = train_many(data, cosface_sweep_specs(), TrainSettings(dim=3), workers=2)
    gaps = [run.stats.angular_gap for run in sweep]
    intra = [run.stats.mean_intra_angle for run in sweep]
    assert all(b > a for a, b in itertools.pairwise(gaps)), gaps
    assert all(b < a for a, b in itertools.pairwise(intra)), intra
    assert all(run.accuracy == 1.0 for run in sweep)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        "measured: on 8 ORL identities the 2-d Softmax features are tighter (1.2°) than CosFace's "
        "(2.0°) and ArcFace's (2.3°); only SphereFace (0.8°) beats it. The paper claim does not "
        "reproduce in this memorising small-data regime. strict: flags the day it does."
    ),
)
def test_margin_losses_are_tighter_than_softmax(shared_data: Path) -> None:
    data = load_identities("orl", data_root=shared_data, num_identities=8)
    specs = [s for s in DEFAULT_LOSSES if s.name in ("softmax", "cosface")]
    runs = {
        r.spec.name: r.stats.mean_intra_angle
        for r in train_many(data, specs, TrainSettings(), workers=2)
    }
    for name in ("cosface",):
        assert runs[name] < runs["softmax"], runs
