"""Train a small CNN with a 2-d or 3-d embedding once per loss, and collect its features.

This reproduces the toy experiments of the NormFace, SphereFace, CosFace and ArcFace papers on a
handful of real identities: the features of every image are embedded on the circle (2-d) or the
sphere (3-d), and their angular statistics (:mod:`marginface.plots.metrics`) measure what each
loss does. Runs are deterministic for a given seed: fixed initialisation, fixed batch order,
deterministic algorithms, and a fixed number of threads.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginface.errors import ConfigError
from marginface.losses import LambdaSchedule, create, is_head
from marginface.plots.data import FaceSubset
from marginface.plots.metrics import AngularStats, angular_stats, class_centres

__all__ = [
    "DEFAULT_LOSSES",
    "FeatureRun",
    "LossSpec",
    "SmallCNN",
    "TrainSettings",
    "cosface_sweep_specs",
    "deterministic",
    "mean_summary",
    "train_features",
    "train_many",
    "train_repeats",
]


@dataclass(frozen=True)
class LossSpec:
    """A loss to train with: registry ``name``, keyword arguments, and a display ``label``."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name


# Scales and margins for a 2-d/3-d embedding and ~8 classes. With a 2-d embedding the C class
# directions are at best 360°/C apart, so CosFace's margin must stay below 1 - cos(360°/C)
# (0.29 for 8 classes): far below the paper's C/(C-1) bound, which assumes dim ≥ C - 1.
_SPHERE_LAMBDA = LambdaSchedule(base=1000.0, gamma=0.5, power=1.0, lambda_min=1.0)
DEFAULT_LOSSES: tuple[LossSpec, ...] = (
    LossSpec("softmax", {}, "Softmax"),
    LossSpec("normface", {"scale": 16.0}, "NormFace (s=16)"),
    LossSpec("sphereface", {"margin": 4, "lambda_schedule": _SPHERE_LAMBDA}, "SphereFace (m=4)"),
    LossSpec("cosface", {"scale": 16.0, "margin": 0.2}, "CosFace (s=16, m=0.2)"),
    LossSpec("arcface", {"scale": 16.0, "margin": 0.3}, "ArcFace (s=16, m=0.3)"),
    LossSpec("triplet", {"margin": 0.2, "mining": "semihard"}, "Triplet (α=0.2, semi-hard)"),
)


def cosface_sweep_specs(
    margins: Sequence[float] = (0.0, 0.1, 0.2, 0.35), scale: float = 16.0
) -> list[LossSpec]:
    """CosFace specs for each margin (m = 0 is NormFace)."""
    return [
        LossSpec("cosface", {"scale": scale, "margin": float(m)}, f"CosFace m={m:g}")
        for m in margins
    ]


@dataclass(frozen=True)
class TrainSettings:
    """How each loss is trained (the same network, data order and seed for every loss)."""

    dim: int = 2
    epochs: int = 60
    batch_size: int = 20
    lr: float = 0.05
    weight_decay: float = 5e-4
    width: int = 16
    seed: int = 0
    threads: int = 1
    flip: bool = True
    shift: int = 0
    holdout: int = 3
    optimizer: str = "sgd"
    head_lr_mult: float = 1.0

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ConfigError(f"the embedding dimension must be at least 2, got {self.dim}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("epochs must be ≥ 1 and batch_size ≥ 2")
        if self.lr <= 0 or self.width < 1 or self.threads < 1:
            raise ConfigError("lr, width and threads must be positive")


@dataclass
class FeatureRun:
    """The outcome of training with one loss: features, directions, statistics, timing."""

    spec: LossSpec
    features: np.ndarray  # (N, D) raw embeddings
    labels: np.ndarray  # (N,)
    directions: np.ndarray  # (C, D) unit class weight rows (class centres for triplet)
    directions_are_weights: bool
    stats: AngularStats  # on the training images
    accuracy: float  # on the training images
    seconds: float
    losses: list[float]
    held_out: np.ndarray | None = None  # (N,) 1 for photos never trained on
    held_out_stats: AngularStats | None = None
    held_out_accuracy: float | None = None

    seed: int = 0

    @property
    def normalised(self) -> np.ndarray:
        f = self.features.astype(np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    def summary(self) -> dict[str, Any]:
        return {
            "loss": self.spec.name,
            "label": self.spec.title,
            "kwargs": {
                k: v if isinstance(v, int | float | str) else repr(v)
                for k, v in self.spec.kwargs.items()
            },
            "seed": self.seed,
            "train": {**self.stats.as_dict(), "accuracy": round(self.accuracy, 4)},
            "held_out": None
            if self.held_out_stats is None
            else {
                **self.held_out_stats.as_dict(),
                "accuracy": round(float(self.held_out_accuracy or 0.0), 4),
            },
            "final_loss": round(self.losses[-1], 5) if self.losses else None,
            "seconds": round(self.seconds, 2),
        }


class SmallCNN(nn.Module):
    """Three conv-BN-PReLU-pool stages, pooling to 2×2, a linear layer and a non-affine
    BatchNorm1d giving the ``dim``-dimensional embedding (the same network for every loss)."""

    def __init__(self, dim: int = 2, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for mult in (1, 2, 4):
            out = width * mult
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.PReLU(out),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(channels * 4, dim, bias=False)
        # Non-affine BN: zero-mean, unit-variance coordinates. Without it (or with a learnt
        # shift) the normalised heads collapse the 2-d features onto a line in these small runs.
        self.features = nn.BatchNorm1d(dim, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.fc(torch.flatten(self.pool(self.body(x)), 1)))


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1) -> Iterator[None]:
    """Seed torch, use deterministic algorithms and ``threads`` threads; restore on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
            torch.set_num_threads(old_threads)


def held_out_mask(labels: np.ndarray, holdout: int) -> np.ndarray:
    """1 for the last ``holdout`` images of each class (never trained on), else 0."""
    mask = np.zeros(len(labels), dtype=np.int64)
    if holdout <= 0:
        return mask
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if len(idx) <= holdout:
            raise ConfigError(f"class {k} has {len(idx)} images; cannot hold out {holdout}")
        mask[idx[-holdout:]] = 1
    return mask


def _random_shift(x: Tensor, pixels: int, gen: torch.Generator) -> Tensor:
    """Translate each image by up to ``pixels`` in x and y (edge padding)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pixels, pixels, pixels, pixels), mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (x.shape[0], 2), generator=gen)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def _build_loss(spec: LossSpec, num_classes: int, dim: int) -> nn.Module:
    try:
        if is_head(spec.name):
            return create(spec.name, num_classes=num_classes, embedding_dim=dim, **spec.kwargs)
        return create(spec.name, **spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build loss {spec.name!r} with {spec.kwargs}: {exc}") from exc


def train_features(
    data: FaceSubset,
    spec: LossSpec,
    settings: TrainSettings = TrainSettings(),
    progress: Callable[[str, int, float], None] | None = None,
) -> FeatureRun:
    """Train :class:`SmallCNN` + ``spec``'s loss on ``data``; embed every image (no flip).

    The last ``settings.holdout`` photos of each identity are never trained on; statistics and
    accuracy are reported separately for the training photos and for those held-out photos.
    ``progress(label, epoch, loss)`` is called after each epoch.
    """
    start = time.perf_counter()
    images = torch.from_numpy(np.ascontiguousarray(data.images))
    labels = torch.from_numpy(np.ascontiguousarray(data.labels))
    train_mask = torch.from_numpy(held_out_mask(data.labels, settings.holdout) == 0)
    train_idx = torch.nonzero(train_mask).flatten()
    n_all = images.shape[0]
    n = int(train_idx.numel())
    with deterministic(settings.seed, settings.threads):
        net = SmallCNN(settings.dim, settings.width, images.shape[1])
        loss_fn = _build_loss(spec, data.num_classes, settings.dim)
        if getattr(loss_fn, "normalize_weight", False):
            # Unit-norm rows: with insightface's std 0.01 the angular step of a normalised row
            # is ~10⁴× the learning rate at first, which scrambles 2-d/3-d toy runs.
            with torch.no_grad():
                loss_fn.weight.copy_(F.normalize(torch.randn_like(loss_fn.weight), dim=-1))
        head_lr = settings.lr * settings.head_lr_mult
        params = [
            {"params": list(net.parameters())},
            {"params": list(loss_fn.parameters()), "lr": head_lr},
        ]
        if settings.optimizer == "adam":
            opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            opt = torch.optim.SGD(
                params,
                lr=settings.lr,
                momentum=0.9,
                weight_decay=settings.weight_decay,
                nesterov=True,
            )
        steps_per_epoch = math.ceil(n / settings.batch_size)
        total = settings.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[settings.lr, head_lr], total_steps=total, pct_start=0.15
        )
        gen = torch.Generator().manual_seed(settings.seed)
        history: list[float] = []
        net.train()
        loss_fn.train()
        for epoch in range(settings.epochs):
            order = train_idx[torch.randperm(n, generator=gen)]
            flips = torch.rand(n_all, generator=gen) < 0.5
            running = 0.0
            for i in range(0, n, settings.batch_size):
                idx = order[i : i + settings.batch_size]
                if idx.numel() < 2:
                    continue
                x = images[idx]
                if settings.flip:
                    x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(-1), x)
                if settings.shift:
                    x = _random_shift(x, settings.shift, gen)
                loss = loss_fn(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += float(loss.detach()) * idx.numel()
            history.append(running / n)
            if not math.isfinite(history[-1]):
                raise ConfigError(f"training with {spec.title} diverged (loss {history[-1]})")
            if progress is not None:
                progress(spec.title, epoch + 1, history[-1])
        net.eval()
        with torch.no_grad():
            feats = torch.cat([net(images[i : i + 256]) for i in range(0, n_all, 256)])
            feats_np = feats.double().numpy()
            labels_np = data.labels.copy()
            train_np = train_mask.numpy()
            if is_head(spec.name):
                directions = F.normalize(loss_fn.weight.detach().double(), dim=-1).numpy()
                predicted = loss_fn.logits(feats).argmax(1)
                is_weights = True
            else:
                # Metric loss: classify by the nearest centre of the *training* photos.
                directions = class_centres(
                    feats_np[train_np], labels_np[train_np], data.num_classes
                )
                sims = F.normalize(feats.double(), dim=1) @ torch.from_numpy(directions).t()
                predicted = sims.argmax(1)
                is_weights = False
            correct = (predicted == labels).numpy()
    held = ~train_np
    has_held = bool(held.any())
    return FeatureRun(
        spec=spec,
        features=feats_np,
        labels=labels_np,
        directions=directions,
        directions_are_weights=is_weights,
        stats=angular_stats(feats_np[train_np], labels_np[train_np]),
        accuracy=float(correct[train_np].mean()),
        seconds=time.perf_counter() - start,
        losses=history,
        held_out=held.astype(np.int64) if has_held else None,
        held_out_stats=angular_stats(feats_np[held], labels_np[held]) if has_held else None,
        held_out_accuracy=float(correct[held].mean()) if has_held else None,
        seed=settings.seed,
    )


def _worker(args: tuple[FaceSubset, LossSpec, TrainSettings]) -> FeatureRun:
    data, spec, settings = args
    return train_features(data, spec, settings)


def train_repeats(
    data: FaceSubset,
    specs: Sequence[LossSpec],
    settings: TrainSettings = TrainSettings(),
    repeats: int = 1,
    *,
    workers: int = 1,
    progress: Callable[[str, int, float], None] | None = None,
) -> list[list[FeatureRun]]:
    """``repeats`` runs per spec, with seeds ``settings.seed``, ``settings.seed + 1``, …;
    one list of runs per spec. Runs use ``workers`` processes (results do not depend on it)."""
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    jobs = [
        (data, spec, replace(settings, seed=settings.seed + r))
        for spec in specs
        for r in range(repeats)
    ]
    if workers <= 1 or len(jobs) <= 1:
        flat = [train_features(d, spec, st, progress) for d, spec, st in jobs]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            flat = pool.map(_worker, jobs, chunksize=1)
    return [flat[i * repeats : (i + 1) * repeats] for i in range(len(specs))]


def train_many(
    data: FaceSubset,
    specs: Sequence[LossSpec],
    settings: TrainSettings = TrainSettings(),
    *,
    workers: int = 1,
    progress: Callable[[str, int, float], None] | None = None,
) -> list[FeatureRun]:
    """One run per spec (seed ``settings.seed``), in ``workers`` processes."""
    grouped = train_repeats(data, specs, settings, 1, workers=workers, progress=progress)
    return [runs[0] for runs in grouped]


def mean_summary(runs: Sequence[FeatureRun]) -> dict[str, Any]:
    """The repeats of one spec: angles and accuracies averaged over seeds, and each run's own."""
    if not runs:
        raise ConfigError("no runs to summarise")

    def average(part: str) -> dict[str, float] | None:
        rows = [run.summary()[part] for run in runs]
        if any(row is None for row in rows):
            return None
        return {k: round(float(np.mean([row[k] for row in rows])), 4) for k in rows[0]}

    first = runs[0].summary()
    return {
        "loss": first["loss"],
        "label": first["label"],
        "kwargs": first["kwargs"],
        "seeds": [run.seed for run in runs],
        "train": average("train"),
        "held_out": average("held_out"),
        "seconds": round(sum(run.seconds for run in runs), 2),
        "per_seed": [run.summary() for run in runs],
    }
