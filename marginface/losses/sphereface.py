"""SphereFace (A-Softmax): multiplicative angular margin ``ψ(θ)`` with λ annealing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from marginface.losses.base import MarginHead
from marginface.losses.margins import sphereface_psi

__all__ = ["LambdaSchedule", "SphereFace"]


@dataclass(frozen=True)
class LambdaSchedule:
    """λ at training iteration ``t``: ``max(lambda_min, base · (1 + gamma·t)^(-power))``.

    The defaults are those of SphereFace's reference Caffe implementation (base 1000,
    gamma 0.12, power 1, lambda_min 5): the target logit starts almost as plain ``cos θ`` and the
    margin is phased in over the first few thousand iterations, which is what made A-Softmax
    converge. ``lambda_min = 0`` ends at the pure ``ψ(θ)``.
    """

    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    lambda_min: float = 5.0

    def __call__(self, iteration: int) -> float:
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))


class SphereFace(MarginHead):
    """A-Softmax: ``‖W_j‖ = 1``, logits ``‖x‖·cos θ_j``, target ``‖x‖·ψ(θ_y)`` with integer m.

    ``ψ(θ) = (-1)^k·cos(mθ) - 2k`` for ``θ ∈ [kπ/m, (k+1)π/m]``. With a ``lambda_schedule``
    the target is ``‖x‖·(λ·cos θ + ψ(θ)) / (1 + λ)``, λ decaying with the iteration count, which
    is kept in a buffer (so it is checkpointed) and advanced by each training-mode forward.
    ``lambda_schedule=None`` uses the pure ψ (λ = 0).

    ``scale=None`` (the paper) scales by the feature norm; a number uses a fixed scale on
    normalised features instead.
    """

    iteration: Tensor  # a buffer: training-mode forwards so far

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        *,
        margin: int = 4,
        scale: float | None = None,
        lambda_schedule: LambdaSchedule | None = LambdaSchedule(),
        **kwargs: Any,
    ) -> None:
        if int(margin) != margin or margin < 1:
            raise ValueError(f"SphereFace's margin must be a positive integer, got {margin}")
        if scale is not None and scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        super().__init__(num_classes, embedding_dim, **kwargs)
        self.m = int(margin)
        self.scale = None if scale is None else float(scale)
        self.lambda_schedule = lambda_schedule
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def lam(self) -> float:
        """The current λ (0 without a schedule)."""
        if self.lambda_schedule is None:
            return 0.0
        return self.lambda_schedule(int(self.iteration))

    def margin(self, cos: Tensor) -> Tensor:
        return sphereface_psi(cos, self.m, self.lam)

    def scale_for(self, embeddings: Tensor) -> Tensor | float:
        if self.scale is not None:
            return self.scale
        return torch.linalg.vector_norm(embeddings, dim=1)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = super().forward(embeddings, labels)
        if self.training and torch.is_grad_enabled():
            self.iteration += 1
        return loss

    def target_logit(self, theta: Tensor, lam: float | None = None) -> Tensor:
        """``ψ`` (mixed with ``lam``, default the current λ) at unit feature norm."""
        theta = torch.as_tensor(theta, dtype=torch.float64)
        scale = 1.0 if self.scale is None else self.scale
        return scale * sphereface_psi(torch.cos(theta), self.m, self.lam if lam is None else lam)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.m}, scale={self.scale}, lambda={self.lam:g}"
