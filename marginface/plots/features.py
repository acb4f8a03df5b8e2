"""Train the tiny network with a 2-d or 3-d embedding once per loss, and collect its features.

This reproduces the toy experiments of the NormFace, SphereFace, CosFace and ArcFace papers on a
handful of real identities: the features of every image are embedded on the circle (2-d) or the
sphere (3-d), and their angular statistics (:mod:`marginface.plots.metrics`) measure what each
loss does. The network is the registry's ``tiny`` (widths ``w, 2w, 4w``, pooled to 2×2, a
non-affine embedding BatchNorm) and it is trained by the package's trainer
(:func:`marginface.train.memory.train_arrays`), as ``marginface train`` would train it: the
settings become a training config. Runs are deterministic for a given seed: fixed
initialisation, fixed batch order, deterministic algorithms, and a fixed number of threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from marginface.data import LabelMap
from marginface.errors import ConfigError
from marginface.losses import LambdaSchedule, is_head
from marginface.plots.data import FaceSubset
from marginface.plots.metrics import AngularStats, angular_stats, class_centres
from marginface.train.checkpoint import RunState
from marginface.train.memory import embed_arrays, train_arrays

__all__ = [
    "DEFAULT_LOSSES",
    "FeatureRun",
    "LossSpec",
    "TrainSettings",
    "cosface_sweep_specs",
    "deterministic",
    "mean_summary",
    "run_config",
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
    """How each loss is trained (the same network, data order and seed for every loss).

    :func:`run_config` turns them into the trainer's config: the ``tiny`` backbone of widths
    ``width, 2·width, 4·width``; SGD (Nesterov, momentum 0.9) or AdamW; the one-cycle schedule
    rising over the first 15 % of the steps; the last, shorter batch of an epoch trained too;
    flips (and ``shift``-pixel translations) per sample; random batches, or P×K batches of the
    same count for the triplet loss.
    """

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


def _trainer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Loss arguments as plain values (a config holds data, not objects)."""
    return {
        k: dataclasses.asdict(v) if isinstance(v, LambdaSchedule) else v for k, v in kwargs.items()
    }


def _pk_k(batch_size: int, identities: int) -> int:
    """Images per identity of a P×K batch: the fewest that fit the identities there are."""
    for k in range(2, batch_size + 1):
        if batch_size % k == 0 and batch_size // k <= identities:
            return k
    raise ConfigError(f"a P×K batch of {batch_size} cannot be made of {identities} identities")


def run_config(
    spec: LossSpec, settings: TrainSettings, *, image_size: int, images: int, identities: int
) -> dict[str, Any]:
    """The training config (a :class:`~marginface.train.TrainConfig` mapping) of one run on
    ``images`` photos of ``identities`` people, ``image_size`` pixels square."""
    w = settings.width
    augment: str | dict[str, Any] = "flip" if settings.flip else "none"
    if settings.shift:
        augment = {
            "hflip": 0.5 if settings.flip else 0.0,
            "shift_scale": 1.0,
            "shift_limit": settings.shift / image_size,
            "scale_limit": 0.0,
        }
    data: dict[str, Any] = {
        "input_size": [image_size, image_size],
        "augment": augment,
        "drop_last": False,
        "preload": "none" if settings.shift else "device",
    }
    if not is_head(spec.name):  # the triplet loss: identity-balanced batches, as many
        data.update(
            sampler="pk",
            pk_k=_pk_k(settings.batch_size, identities),
            pk_min_images=1,
            pk_batches_per_epoch=math.ceil(images / settings.batch_size),
        )
    return {
        "data": data,
        "backbone": {
            "name": "tiny",
            "embedding_dim": settings.dim,
            "kwargs": {"widths": [w, 2 * w, 4 * w], "pool": 2, "affine_features": False},
        },
        # Unit-norm class rows: with insightface's std 0.01 the angular step of a normalised
        # row is ~10⁴× the learning rate at first, which scrambles 2-d/3-d toy runs.
        "loss": {"name": spec.name, "kwargs": _trainer_kwargs(spec.kwargs), "init": "unit"},
        "optim": {
            "name": "adamw" if settings.optimizer == "adam" else "sgd",
            "lr": settings.lr,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": settings.weight_decay,
            "head_lr_scale": settings.head_lr_mult,
            "grad_clip": None,
        },
        "schedule": {"kind": "onecycle", "warmup_epochs": 0.15 * settings.epochs},
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
    }


def _pixels(images: np.ndarray) -> np.ndarray:
    """``(N, 3, S, S)`` floats in ``[-1, 1]`` -> ``(N, S, S, 3)`` uint8 RGB (exact for images
    that came from uint8, as :func:`~marginface.plots.data.load_identities` makes them)."""
    u8 = np.clip(np.rint((np.asarray(images, dtype=np.float64) + 1.0) * 127.5), 0, 255)
    return np.ascontiguousarray(u8.astype(np.uint8).transpose(0, 2, 3, 1))


def train_features(
    data: FaceSubset,
    spec: LossSpec,
    settings: TrainSettings = TrainSettings(),
    progress: Callable[[str, int, float], None] | None = None,
) -> FeatureRun:
    """Train the tiny network + ``spec``'s loss on ``data``; embed every image (no flip).

    The last ``settings.holdout`` photos of each identity are never trained on; statistics and
    accuracy are reported separately for the training photos and for those held-out photos.
    ``progress(label, epoch, loss)`` is called after each epoch.
    """
    start = time.perf_counter()
    pixels = _pixels(data.images)
    labels = torch.from_numpy(np.ascontiguousarray(data.labels))
    train_np = held_out_mask(data.labels, settings.holdout) == 0
    config = run_config(
        spec,
        settings,
        image_size=pixels.shape[1],
        images=int(train_np.sum()),
        identities=data.num_classes,
    )

    def epoch_done(state: RunState) -> None:
        if progress is not None:
            progress(spec.title, state.epoch, state.epoch_losses[-1])

    with deterministic(settings.seed, settings.threads):
        run = train_arrays(
            config,
            pixels[train_np],
            data.labels[train_np],
            label_map=LabelMap(data.names),
            name=data.source,
            on_epoch_end=epoch_done,
        )
        feats = embed_arrays(run.backbone, pixels, run.preprocessing)
        feats_np = feats.double().numpy()
        labels_np = data.labels.copy()
        head = run.model.pfc.head if run.model.pfc is not None else None
        with torch.no_grad():
            if head is not None:
                directions = F.normalize(head.weight.detach().double(), dim=-1).numpy()
                predicted = head.logits(feats).argmax(1)
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
        losses=list(run.result.epoch_losses),
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
