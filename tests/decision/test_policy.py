"""The identification policy: one precedence rule (request > setting > gallery > default, an
explicit threshold before any target FPIR), the operating point of each outcome, the 1:1
threshold and the vote the policy decides with."""

from __future__ import annotations

import itertools

import pytest

from marginface.card import Calibration, ModelCard
from marginface.decision import (
    DEFAULT_FPIR,
    DEFAULT_K,
    GalleryComposition,
    IdentificationPolicy,
    Target,
    expected_fpir,
    operating_point,
    resolve_target,
    resolve_threshold,
)
from marginface.errors import GalleryError
from tests.impostor_tables import log_linear_tail

# Each level's value, in the order the precedence rule takes them.
LEVELS = (
    ("request threshold", 0.41, Target(0.41, None, "request")),
    ("setting threshold", 0.42, Target(0.42, None, "setting")),
    ("request fpir", "1e-3", Target(None, "1e-3", "request")),
    ("setting fpir", "1e-4", Target(None, "1e-4", "setting")),
    ("gallery fpir", "1e-5", Target(None, "1e-5", "gallery")),
)


def _named(given: tuple[bool, ...]) -> str:
    return "+".join(name for on, (name, _, _) in zip(given, LEVELS, strict=True) if on) or "none"


@pytest.mark.parametrize(
    "given", list(itertools.product((False, True), repeat=len(LEVELS))), ids=_named
)
def test_every_combination_takes_the_first_level_given(given: tuple[bool, ...]) -> None:
    values = [value if on else None for on, (_, value, _) in zip(given, LEVELS, strict=True)]
    request_threshold, setting_threshold, request_fpir, setting_fpir, stored = values
    reads: list[int] = []

    def stored_fpir() -> str | None:
        reads.append(1)
        return stored

    policy = IdentificationPolicy(fpir=setting_fpir, threshold=setting_threshold)
    target = resolve_target(policy, stored_fpir, threshold=request_threshold, fpir=request_fpir)
    expected = next(
        (t for on, (_, _, t) in zip(given, LEVELS, strict=True) if on),
        Target(None, DEFAULT_FPIR, "default"),
    )
    assert target == expected
    assert policy.target(stored_fpir, threshold=request_threshold, fpir=request_fpir) == expected
    # the gallery's stored target is read (a database query) only when nothing above decided
    assert len(reads) == (2 if not any(given[:4]) else 0)


def test_without_a_gallery_the_default_target_follows_the_settings() -> None:
    assert resolve_target(IdentificationPolicy()) == Target(None, "1e-2", "default")
    assert resolve_target(IdentificationPolicy(fpir=0.05)) == Target(None, "5e-2", "setting")
    assert IdentificationPolicy().target(lambda: None).origin == "default"


def test_targets_are_canonical_and_bad_ones_are_refused() -> None:
    assert IdentificationPolicy(fpir=0.001).fpir == "1e-3"
    assert IdentificationPolicy(fpir="0.01").fpir == "1e-2"
    assert resolve_target(IdentificationPolicy(), fpir=0.0001).fpir == "1e-4"
    assert resolve_target(IdentificationPolicy(), lambda: "0.1").fpir == "1e-1"
    for bad in ("2", "0", "often", 1.0):
        with pytest.raises(GalleryError, match="a target FPIR must be a rate in"):
            IdentificationPolicy(fpir=bad)
        with pytest.raises(GalleryError, match="a target FPIR must be a rate in"):
            resolve_target(IdentificationPolicy(), fpir=bad)
    for bad_threshold in (1.5, -1.01):
        with pytest.raises(GalleryError, match="outside the cosine range"):
            resolve_target(IdentificationPolicy(), threshold=bad_threshold)
        with pytest.raises(GalleryError, match="outside the cosine range"):
            resolve_target(IdentificationPolicy(threshold=bad_threshold))


def test_the_policy_is_one_immutable_value() -> None:
    policy = IdentificationPolicy(fpir="1e-3", threshold=None, k=7, far="1e-4")
    assert policy == IdentificationPolicy(fpir=0.001, k=7, far="1e-4")
    assert IdentificationPolicy().k == DEFAULT_K == 5
    with pytest.raises(AttributeError):
        policy.k = 3


def _card(**update: object) -> ModelCard:
    card = ModelCard(
        name="m",
        architecture="mbf",
        embedding_dim=8,
        calibration=Calibration(thresholds={"1e-3": 0.31, "1e-4": 0.44}),
    )
    return card.model_copy(update=update)


def test_each_target_becomes_an_operating_point() -> None:
    tail = log_linear_tail(0.4)
    card = _card(impostors=tail)
    comp = GalleryComposition.uniform(20, 2)
    fpir = Target(None, "1e-3", "request").point(card, comp)
    assert fpir == operating_point(tail, "1e-3", comp)
    assert (fpir.source, fpir.target_fpir, fpir.gallery_subjects, fpir.gallery_faces) == (
        "fpir",
        1e-3,
        20,
        40,
    )
    fixed = Target(0.3, None, "setting").point(card, comp)
    assert (fixed.threshold, fixed.source, fixed.target_fpir) == (0.3, "threshold", None)
    assert fixed.expected_fpir == expected_fpir(tail, 0.3, comp)  # what the card predicts
    # no impostor table: an explicit threshold is used as given, a target FPIR is refused
    bare = _card()
    assert Target(0.3, None, "request").point(bare, comp).expected_fpir is None
    assert Target(0.3, None, "request").point(None, comp).threshold == 0.3
    with pytest.raises(GalleryError, match=r"calibrate .*--impostors"):
        Target(None, "1e-2", "default").point(bare, comp)


def test_the_verification_threshold_request_then_policy_then_card() -> None:
    card = _card()
    assert IdentificationPolicy().verification_threshold(card) == 0.31  # the card's default FAR
    assert IdentificationPolicy(far="1e-4").verification_threshold(card) == 0.44
    assert IdentificationPolicy(threshold=0.2).verification_threshold(card) == 0.2
    assert IdentificationPolicy(threshold=0.2).verification_threshold(card, 0.1) == 0.1
    assert resolve_threshold(card, None, "1e-4") == 0.44
    with pytest.raises(GalleryError, match="no decision threshold"):
        IdentificationPolicy().verification_threshold(None)
    with pytest.raises(GalleryError, match="no calibrated threshold"):
        resolve_threshold(_card(calibration=None))
    with pytest.raises(GalleryError, match="model 'm'"):
        IdentificationPolicy(far="1e-6").verification_threshold(card)
    with pytest.raises(GalleryError, match="outside the cosine range"):
        resolve_threshold(card, 2.0)


def test_the_policy_decides_with_the_vote_among_its_k_nearest() -> None:
    subjects = ["a", "b", "b", "b"]
    scores = [0.80, 0.70, 0.69, 0.68]
    winner, ranked = IdentificationPolicy(k=4).decide(subjects, scores, 0.5)
    assert winner is not None and winner.subject == "b" and winner.votes == 3
    winner, ranked = IdentificationPolicy(k=1).decide(subjects, scores, 0.5)  # nearest only
    assert winner is not None and winner.subject == "a" and len(ranked) == 1
    winner, _ = IdentificationPolicy(k=4).decide(subjects, scores, 0.9)
    assert winner is None  # below the threshold: unknown
