"""Identification's policy: what a search decides at, built once and handed to every part
that identifies (the gallery, the recogniser, the cameras).

An :class:`IdentificationPolicy` holds the *settings*: a target FPIR or an explicit cosine
threshold, ``k`` (the neighbours of the k-NN vote, the rule every search decides with) and
the 1:1 false-accept rate of verification. :func:`resolve_target` is the one place where a
request, the settings, the gallery's stored target and the default meet; :meth:`Target.point`
turns the outcome into the :class:`OperatingPoint` of a gallery as it is now.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from marginface.card import ModelCard
from marginface.decision.operating_point import (
    DEFAULT_FPIR,
    GalleryComposition,
    OperatingPoint,
    expected_fpir,
    far_threshold,
    operating_point,
    require_impostors,
)
from marginface.decision.rates import far_key
from marginface.decision.vote import VoteResult, vote_neighbours
from marginface.errors import DataError, GalleryError, ModelError

__all__ = [
    "DEFAULT_K",
    "IdentificationPolicy",
    "Origin",
    "Target",
    "fpir_key",
    "one_to_one_threshold",
    "resolve_target",
    "resolve_threshold",
]

#: Neighbours fetched per query for the k-NN vote.
DEFAULT_K = 5

#: Which level gave a search its target: the request, the settings (the policy), the target
#: stored with the gallery, or the default.
Origin = Literal["request", "setting", "gallery", "default"]


def fpir_key(fpir: str | float) -> str:
    """A target FPIR's canonical key (``0.01`` -> ``"1e-2"``); :class:`GalleryError` when it is
    not a rate in (0, 1)."""
    try:
        return far_key(fpir)
    except DataError:
        raise GalleryError(f"a target FPIR must be a rate in (0, 1), got {fpir!r}") from None


def _cosine(threshold: float) -> float:
    t = float(threshold)
    if not -1.0 <= t <= 1.0:
        raise GalleryError(f"threshold {t} is outside the cosine range [-1, 1]")
    return t


def resolve_threshold(
    card: ModelCard | None, threshold: float | None = None, far: str | None = None
) -> float:
    """The 1:1 (verification) threshold: ``threshold`` if given, else the card's calibrated one
    for ``far`` (default: the card's ``default_far``).

    Raises :class:`GalleryError` when neither exists: a model without calibration is never used
    with a silent magic number.
    """
    if threshold is not None:
        return _cosine(threshold)
    if card is None:
        raise GalleryError(
            "no decision threshold: give one explicitly (e.g. --threshold 0.35) or use a model "
            "whose card has a calibration (marginface calibrate)"
        )
    if card.calibration is None or not card.calibration.thresholds:
        raise GalleryError(
            f"model {card.name!r} has no calibrated threshold in its card: run "
            "`marginface calibrate` on a verification set, or give a threshold explicitly"
        )
    try:
        return float(card.calibration.threshold(far))
    except ModelError as exc:
        raise GalleryError(f"model {card.name!r}: {exc}") from None


def one_to_one_threshold(card: ModelCard | None, far: str) -> float:
    """The model's 1:1 threshold at false-accept rate ``far`` for rules that compare faces with
    faces rather than search the gallery (a camera track's faces, a stranger's visits): the
    card's calibrated threshold, else the one its impostor table resolves. GalleryError when
    the card has neither."""
    key = far_key(far)
    if card is not None and card.calibration is not None and key in card.calibration.thresholds:
        return float(card.calibration.thresholds[key])
    found = far_threshold(card.impostors, key) if card is not None and card.impostors else None
    if found is None:
        name = repr(card.name) if card is not None else "without a card"
        raise GalleryError(
            f"the model {name} has no 1:1 threshold at FAR {key} (no calibration or impostor "
            "table reaching it): calibrate it with marginface calibrate"
        )
    return float(found)


@dataclass(frozen=True)
class Target:
    """What a search's threshold comes from: an explicit cosine ``threshold``, else the target
    FPIR ``fpir`` (a canonical key; exactly one of the two is set), and the level that gave it."""

    threshold: float | None
    fpir: str | None
    origin: Origin

    def point(self, card: ModelCard | None, composition: GalleryComposition) -> OperatingPoint:
        """The operating point for a gallery of this ``composition``: an explicit threshold as
        given (the card's impostor table, when there is one, says what FPIR it gives this
        gallery), else the threshold meeting the target FPIR
        (:func:`~marginface.decision.operating_point.operating_point`). A target FPIR with a
        card lacking the impostor table is :class:`GalleryError` saying how to calibrate it."""
        comp = composition
        if self.threshold is not None:
            tail = card.impostors if card is not None else None
            expected = expected_fpir(tail, self.threshold, comp) if tail is not None else None
            return OperatingPoint(
                self.threshold, "threshold", None, expected, comp.subjects, comp.faces
            )
        assert self.fpir is not None  # one of the two, by construction in resolve_target
        try:
            tail = require_impostors(card)
        except ModelError as exc:
            raise GalleryError(str(exc)) from None
        return operating_point(tail, self.fpir, comp)


@dataclass(frozen=True)
class IdentificationPolicy:
    """How searches decide, as configured (the service's settings, the CLI's options).

    ``fpir``: the target false positive identification rate (None: the gallery's stored
    target, else :data:`~marginface.decision.operating_point.DEFAULT_FPIR`); ``threshold``: an
    explicit cosine threshold for identification and verification, which overrides every
    target FPIR (experts: its false-alarm rate grows with the gallery); ``k``: the neighbours
    fetched per query, who vote (:meth:`decide`); ``far``: verification's (1:1) false-accept
    rate, whose calibrated threshold the card gives (None: the card's ``default_far``).

    Immutable: one object is built from the settings and handed to the gallery, the
    recogniser and the cameras, so they cannot disagree. A target FPIR is kept as its
    canonical key; one that is not a rate in (0, 1) is :class:`GalleryError`.
    """

    fpir: str | None = None
    threshold: float | None = None
    k: int = DEFAULT_K
    far: str | None = None

    def __post_init__(self) -> None:
        if self.fpir is not None:
            object.__setattr__(self, "fpir", fpir_key(self.fpir))

    def target(
        self,
        stored_fpir: Callable[[], str | None] | None = None,
        *,
        threshold: float | None = None,
        fpir: str | float | None = None,
    ) -> Target:
        """:func:`resolve_target` with this policy as the settings."""
        return resolve_target(self, stored_fpir, threshold=threshold, fpir=fpir)

    def verification_threshold(
        self, card: ModelCard | None, threshold: float | None = None
    ) -> float:
        """The 1:1 threshold: the request's ``threshold``, else this policy's, else the card's
        calibrated one at :attr:`far` (:func:`resolve_threshold`)."""
        return resolve_threshold(
            card, threshold if threshold is not None else self.threshold, self.far
        )

    def decide(
        self, subjects: Sequence[Hashable], scores: Sequence[float], threshold: float | None
    ) -> tuple[VoteResult | None, list[VoteResult]]:
        """The rule: the k-NN vote (:func:`~marginface.decision.vote.vote_neighbours`) among a
        query's ``k`` nearest faces (``subjects[i]`` and ``scores[i]`` of each), accepted at
        ``threshold``: ``(winner or None, candidates)``."""
        return vote_neighbours(subjects, scores, threshold, k=self.k)


def resolve_target(
    policy: IdentificationPolicy,
    stored_fpir: Callable[[], str | None] | None = None,
    *,
    threshold: float | None = None,
    fpir: str | float | None = None,
) -> Target:
    """The one precedence rule of identification's operating point.

    An explicit threshold overrides every target FPIR; among each kind, the request comes
    before the settings. In order, the first that is given decides:

    1. the request's ``threshold``;
    2. the settings' threshold (``policy.threshold``);
    3. the request's target ``fpir``;
    4. the settings' target FPIR (``policy.fpir``);
    5. the target stored with the gallery (``stored_fpir()``, called only when nothing above
       decided: it reads the database);
    6. :data:`~marginface.decision.operating_point.DEFAULT_FPIR`.

    A threshold outside [-1, 1] or a target that is not a rate in (0, 1) is
    :class:`GalleryError`.
    """
    if threshold is not None:
        return Target(_cosine(threshold), None, "request")
    if policy.threshold is not None:
        return Target(_cosine(policy.threshold), None, "setting")
    if fpir is not None:
        return Target(None, fpir_key(fpir), "request")
    if policy.fpir is not None:
        return Target(None, policy.fpir, "setting")
    stored = stored_fpir() if stored_fpir is not None else None
    if stored is not None:
        return Target(None, fpir_key(stored), "gallery")
    return Target(None, DEFAULT_FPIR, "default")
