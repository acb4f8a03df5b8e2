"""ROC, AUC, EER, TAR@FAR and k-fold accuracy against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score, roc_curve

from marginface.errors import DataError
from marginface.eval.metrics import (
    accuracy_at,
    auc,
    best_threshold,
    eer,
    far_key,
    is_resolvable,
    kfold_accuracy,
    roc,
    tar_at_far,
    threshold_at_far,
)


def _random_scores(seed: int, n: int = 2000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    s = rng.normal(0.0, 0.15, n) + 0.35 * y
    if ties:
        s = np.round(s, 2)
    return s, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_equal_sklearn(seed: int, ties: bool) -> None:
    s, y = _random_scores(seed, ties=ties)
    curve = roc(s, y)
    fpr, tpr, th = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(curve.tpr, tpr, atol=1e-12)
    np.testing.assert_allclose(curve.thresholds[1:], th[1:])
    assert np.isinf(curve.thresholds[0])
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(curve) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_eer_equals_the_sklearn_roc_crossing(seed: int) -> None:
    s, y = _random_scores(seed, n=3000)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # the classic recipe: where FAR == FRR on the linearly interpolated sklearn ROC
    reference = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    rate, th = eer(s, y)
    assert rate == pytest.approx(reference, abs=1e-6)
    # near the returned threshold, FAR and FRR are both close to the EER
    far = np.mean(s[~y] >= th)
    frr = np.mean(s[y] < th)
    assert abs(far - rate) < 0.01 and abs(frr - rate) < 0.01


def test_perfect_separation() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    assert auc(s, y) == 1.0
    rate, _ = eer(s, y)
    assert rate == 0.0
    t, acc = best_threshold(s, y)
    assert acc == 1.0 and 0.2 < t < 0.7
    assert t == pytest.approx(0.45)


def test_best_threshold_known_answer() -> None:
    # one positive below one negative: best accuracy 5/6 at several thresholds; median is taken
    s = np.array([0.9, 0.8, 0.3, 0.5, 0.1, 0.0])
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    t, acc = best_threshold(s, y)
    assert acc == pytest.approx(5 / 6)
    assert accuracy_at(s, y, t) == pytest.approx(5 / 6)
    # 5/6 is reached at t in (0.1, 0.3] (0.5 misclassified) and in (0.5, 0.8] (0.3 missed)
    assert t in (pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.65))


def test_kfold_uses_other_folds_threshold() -> None:
    # Fold 0's own best threshold would be 0.55, but folds 1 and 2 both say "0.35 < t < 0.45".
    s = np.array([0.5, 0.6, 0.4, 0.3, 0.9, 0.5, 0.4, 0.3, 0.9, 0.5, 0.4, 0.3])
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.repeat([0, 1, 2], 4)
    s[0], s[2] = 0.44, 0.42  # fold 0: a positive at 0.44, a negative at 0.42
    res = kfold_accuracy(s, y, folds)
    assert [f.fold for f in res.folds] == [0, 1, 2]
    # folds 1 and 2 (train for fold 0): pos {0.9, 0.5, 0.9, 0.5}, neg {0.4, 0.3, 0.4, 0.3}
    # -> best threshold is the midpoint 0.45; applied to fold 0: 0.44 (pos) is rejected.
    assert res.folds[0].threshold == pytest.approx(0.45)
    assert res.folds[0].accuracy == pytest.approx(0.75)
    assert res.folds[0].train_accuracy == 1.0
    assert res.folds[1].accuracy == 1.0 and res.folds[2].accuracy == 1.0
    assert res.mean == pytest.approx((0.75 + 1 + 1) / 3)
    assert res.std == pytest.approx(np.std([0.75, 1, 1]))
    # the held-out fold never influences its own threshold
    s2 = s.copy()
    s2[:4] = [0.0, 0.0, 1.0, 1.0]
    assert kfold_accuracy(s2, y, folds).folds[0].threshold == pytest.approx(0.45)


def test_kfold_needs_two_folds() -> None:
    with pytest.raises(DataError):
        kfold_accuracy(np.array([0.1, 0.9]), np.array([0, 1], bool), np.array([0, 0]))


def test_threshold_and_tar_at_far() -> None:
    neg = np.linspace(0.0, 0.999, 1000)  # 1000 distinct negatives
    pos = np.array([0.9985, 0.9995, 0.5, 0.99])
    s = np.r_[pos, neg]
    y = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    # FAR 1e-3 over 1000 negatives: one false accept allowed -> t between 0.998 and 0.999
    th = threshold_at_far(neg, 1e-3)
    assert 0.998 < th < 0.999
    assert np.sum(neg >= th) == 1
    res = tar_at_far(s, y)
    assert set(res) == {"1e-1", "1e-2", "1e-3", "1e-4"}
    assert res["1e-3"].tar == pytest.approx(0.5)
    assert res["1e-3"].observed_far == pytest.approx(1e-3)
    assert res["1e-4"].tar is None and "10000" in (res["1e-4"].reason or "")
    assert res["1e-1"].observed_far <= 0.1
    assert res["1e-1"].tar == pytest.approx(0.75)  # t ~ 0.8995: only 0.5 is rejected


def test_threshold_at_far_with_ties_never_exceeds_target() -> None:
    neg = np.array([0.9, 0.9, 0.9, 0.5] + [0.1] * 96)
    th = threshold_at_far(neg, 1e-2)  # one false accept allowed, but the top three tie
    assert np.mean(neg >= th) <= 1e-2
    assert th > 0.9


def test_resolvability_rule() -> None:
    assert is_resolvable(1000, "1e-3")
    assert not is_resolvable(999, "1e-3")
    assert is_resolvable(3000, 1e-3) and not is_resolvable(3000, 1e-4)
    assert far_key(0.001) == "1e-3" and far_key("1e-2") == "1e-2" and far_key(0.05) == "5e-2"
    with pytest.raises(DataError):
        threshold_at_far(np.zeros(10), 1e-3)
    with pytest.raises(DataError):
        far_key(2.0)


def test_bad_inputs() -> None:
    with pytest.raises(DataError):
        roc(np.array([0.1, 0.2]), np.array([1, 1], bool))
    with pytest.raises(DataError):
        roc(np.array([0.1, np.nan]), np.array([1, 0], bool))
    with pytest.raises(DataError):
        roc(np.array([0.1]), np.array([1, 0], bool))
