"""The training configuration: one typed, validated model loaded from YAML.

``load_train_config("configs/arcface_mbf.yaml", ["optim.lr=0.05"])`` returns a
:class:`TrainConfig` (:func:`train_config` does the same for a mapping built in code); an
unknown or misspelt key is a :class:`~marginface.errors.ConfigError` that names it. That holds
inside ``backbone.kwargs`` and ``loss.kwargs`` too: the constructor arguments are checked when
the config is read, before any image is decoded. Every section has defaults, so a config only
states what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from marginface.backbones.registry import accepted_kwargs, check_kwargs
from marginface.config import StrictModel, format_validation_error, load_config
from marginface.data.augment import resolve_augment
from marginface.errors import ConfigError
from marginface.losses import create, is_head

__all__ = [
    "AmpMode",
    "BackboneConfig",
    "CheckpointConfig",
    "DataConfig",
    "DistillConfig",
    "LogConfig",
    "LossConfig",
    "LossTerm",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "VerifyConfig",
    "check_model_kwargs",
    "load_train_config",
    "train_config",
]

AmpMode = Literal["none", "bf16", "fp16"]


class DataConfig(StrictModel):
    """Where the training faces are and how they are fed."""

    train: Path = Field(description="identity folder, .csv list, or RecordIO .rec / prefix")
    name: str = Field("", description="a name for the card (default: the folder name)")
    augment: str | dict[str, Any] = Field(
        "flip", description="augmentation preset (none | flip | strong) or AugmentConfig fields"
    )
    input_size: tuple[int, int] = Field((112, 112), description="(height, width) fed to the net")
    color: Literal["RGB", "BGR"] = "RGB"
    mean: float = 127.5
    std: float = 127.5
    sampler: Literal["random", "pk"] = Field(
        "random", description="random batches, or P identities x K images (triplet loss)"
    )
    pk_k: int = Field(4, ge=2, description="images per identity in a P×K batch")
    pk_min_images: int = Field(2, ge=1, description="identities with fewer images are skipped")
    pk_batches_per_epoch: int | None = Field(
        None,
        ge=1,
        description="P×K batches per epoch and rank (default: each eligible "
        "identity once per epoch)",
    )
    drop_last: bool = Field(
        True,
        description="random sampler: drop the last, shorter batch of "
        "an epoch (false trains it, unless it holds one "
        "sample)",
    )
    workers: int = Field(4, ge=0, description="DataLoader worker processes per rank")
    prefetch_factor: int = Field(4, ge=1)
    pin_memory: bool = True
    preload: Literal["none", "device"] = Field(
        "none",
        description="device: decode every image once into a uint8 tensor on the "
        "training device (GPU memory) and flip there; no DataLoader workers. "
        "Same batch order by seed; augment must be none or flip",
    )

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 16 or v[1] < 16:
            raise ValueError("input_size must be at least 16×16")
        return v


class BackboneConfig(StrictModel):
    """The embedding network: a ``marginface.backbones`` registry name."""

    name: str = "mbf"
    embedding_dim: int = Field(512, gt=0)
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra constructor arguments (e.g. dropout)"
    )
    sync_bn: bool = Field(False, description="SyncBatchNorm under DDP (GPU only)")


class LossTerm(StrictModel):
    """One term of the training loss: ``weight · loss``."""

    name: str = Field(description="registry name in marginface.losses (arcface, center, ...)")
    weight: float = Field(1.0, gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="constructor arguments")


class LossConfig(StrictModel):
    """The main loss (a classification head or ``triplet``) plus optional auxiliary terms.

    ``extra`` terms may be ``center`` (centre loss on the embeddings) or ``interclass`` (pushes
    the sampled class centres of the head apart).
    """

    name: str = "arcface"
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="head arguments, e.g. {scale: 64, margin: 0.5}"
    )
    extra: list[LossTerm] = Field(default_factory=list)
    sample_rate: float = Field(
        1.0, gt=0, le=1, description="Partial FC: fraction of class centres per step"
    )
    init: Literal["normal", "unit"] = Field(
        "normal",
        description="class centres of a head that normalises them: normal (std 0.01, "
        "insightface) or unit (random unit rows; 2-d/3-d toy runs)",
    )

    @model_validator(mode="after")
    def _check_names(self) -> LossConfig:
        try:
            head = is_head(self.name)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not head and self.name.lower() != "triplet":
            raise ValueError(
                f"loss.name must be a classification head or 'triplet', got "
                f"{self.name!r} (use loss.extra for {self.name!r})"
            )
        for term in self.extra:
            key = term.name.lower()
            if key not in ("center", "interclass"):
                raise ValueError(
                    f"loss.extra supports 'center' and 'interclass', got {term.name!r}"
                )
            if key == "interclass" and not head:
                raise ValueError("the 'interclass' term needs a classification head")
        return self

    @property
    def is_triplet(self) -> bool:
        return self.name.lower() == "triplet"


class OptimConfig(StrictModel):
    """Optimiser and its hyper-parameters."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    head_lr_scale: float = Field(1.0, gt=0, description="head learning rate = lr × this")
    head_weight_decay: float | None = Field(None, ge=0, description="default: weight_decay")
    grad_clip: float | None = Field(
        5.0,
        gt=0,
        description="max global L2 norm of the "
        "backbone's gradients (insightface: 5); null disables",
    )


class ScheduleConfig(StrictModel):
    """Linear warm-up, then polynomial or cosine decay, stepped every iteration.

    ``onecycle`` is PyTorch's one-cycle policy instead: the warm-up rises from lr/25 to lr
    (cosine), the rest anneals to lr/25e4, and the momentum (SGD) or beta1 (AdamW) moves
    against the learning rate between 0.85 and 0.95. ``power`` and ``min_lr_ratio`` do not
    apply to it.
    """

    kind: Literal["poly", "cosine", "constant", "onecycle"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_epochs")
    power: float = Field(2.0, gt=0, description="poly: lr·(1 - t/T)^power (insightface: 2)")
    min_lr_ratio: float = Field(0.0, ge=0, lt=1)


class CheckpointConfig(StrictModel):
    """When checkpoints are written and how many are kept."""

    every_steps: int = Field(1000, ge=1)
    keep: int = Field(2, ge=1)
    at_epoch_end: bool = True


class VerifyConfig(StrictModel):
    """Periodic verification on a pairs file (LFW ``pairs.txt``, CSV pairs or ``.bin``)."""

    pairs: Path | None = None
    root: Path | None = Field(None, description="image root (default: the pairs file's folder)")
    aligned: bool | Literal["auto"] = Field(
        "auto",
        description="images are aligned crops (auto: true when every image has the "
        "template size or the file is a .bin)",
    )
    every_steps: int | None = Field(None, ge=1, description="also verify every N steps")
    at_epoch_end: bool = True
    at_start: bool = False
    flip: bool = True
    batch_size: int = Field(128, ge=1)
    name: str = Field("", description="metric name (default: the pairs file's folder name)")


class DistillConfig(StrictModel):
    """Knowledge distillation: pull a projection of the student's embedding to a teacher's.

    ``teacher`` is a ``(N, D_t)`` float16 ``.npy`` of teacher embeddings aligned with the
    training set's order (``marginface train-teacher``); the term added to the loss is
    ``weight · (1 - cos(P·student, teacher))`` with a learned linear map ``P``.
    """

    teacher: Path = Field(description="teacher embeddings .npy (written by train-teacher)")
    weight: float = Field(1.0, gt=0)
    projection: bool = Field(True, description="learn P (needed when the dimensions differ)")


class LogConfig(StrictModel):
    """Progress bar, CSV metrics and TensorBoard."""

    every_steps: int = Field(20, ge=1)
    progress: bool = True
    tensorboard: bool = True
    console: bool = Field(
        True,
        description="print the run's messages (false: quiet, e.g. for "
        "the demo and the plots; errors still raise)",
    )


class TrainConfig(StrictModel):
    """Everything a training run needs; see ``configs/`` for examples."""

    data: DataConfig
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    amp: AmpMode = Field("bf16", description="bf16 | fp16 (with GradScaler) | none")
    channels_last: bool = True
    compile: bool = False
    epochs: float | None = Field(20, gt=0, description="training length in epochs")
    steps: int | None = Field(None, gt=0, description="training length in steps (overrides epochs)")
    batch_size: int = Field(128, ge=2, description="per-rank batch (P×K: P = batch_size / K)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output: Path = Path("runs/default")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    distill: DistillConfig | None = Field(None, description="optional distillation term")
    name: str = Field("", description="model name for the card (default: output folder name)")
    deterministic: bool = False

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("set epochs or steps")
        if self.loss.is_triplet and self.data.sampler != "pk":
            raise ValueError("loss 'triplet' needs data.sampler: pk (P×K batches)")
        if self.data.sampler == "pk" and self.batch_size % self.data.pk_k:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of data.pk_k {self.data.pk_k}"
            )
        given = self.backbone.kwargs.get("input_size")
        if given is not None and _size(given) != list(self.data.input_size):
            raise ValueError(
                f"backbone.kwargs.input_size {given} disagrees with "
                f"data.input_size {list(self.data.input_size)}; set "
                "data.input_size only (the backbone is built for it)"
            )
        check_model_kwargs(self)
        if self.data.preload == "device":
            aug = resolve_augment(self.data.augment)
            if any((aug.shift_scale, aug.color_jitter, aug.grayscale, aug.blur, aug.jpeg)):
                raise ValueError(
                    "data.preload: device supports augment 'none' or 'flip' only "
                    "(flips are done on the device); use preload: none for "
                    "stronger augmentation"
                )
        return self


def check_model_kwargs(cfg: TrainConfig) -> None:
    """:class:`ConfigError` when ``backbone.kwargs`` or a ``loss`` term's ``kwargs`` has a key
    its constructor does not take (naming the key and the ones it takes) or a value the loss
    refuses. Nothing is decoded and nothing big is built, so it runs when a config is read and
    again, cheaply, before the trainer opens the data."""
    try:
        check_kwargs(cfg.backbone.name, cfg.backbone.kwargs)
    except ConfigError as exc:
        raise ConfigError(f"backbone.kwargs: {exc}") from None
    _check_loss_kwargs(cfg.loss.name, cfg.loss.kwargs, "loss.kwargs")
    for i, term in enumerate(cfg.loss.extra):
        _check_loss_kwargs(term.name, term.kwargs, f"loss.extra[{i}].kwargs")


def _check_loss_kwargs(name: str, kwargs: dict[str, Any], where: str) -> None:
    """Build the loss once, small (2 classes, 8-d), with the torch RNG left as it was."""
    sized = (
        {"num_classes": 2, "embedding_dim": 8} if is_head(name) or name.lower() == "center" else {}
    )
    with torch.random.fork_rng(devices=[]):
        try:
            create(name, **sized, **kwargs)
        except TypeError as exc:
            accepted = [
                k for k in accepted_kwargs(type(create(name, **sized))) or () if k not in sized
            ]
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown and accepted:
                raise ConfigError(
                    f"{where}: {name} takes no argument {unknown[0]!r}; it takes "
                    f"{', '.join(accepted)}"
                ) from None
            raise ConfigError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _size(value: Any) -> list[int] | None:
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        return None


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training config from YAML plus ``key.path=value`` overrides.

    Relative data, pairs and output paths are resolved against the current directory, as a
    user typing the command expects. Raises :class:`ConfigError` naming every bad key.
    """
    return _checked(load_config(TrainConfig, path, overrides))


def train_config(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a nested mapping (a config built in code, e.g. by the demo);
    :class:`ConfigError` naming every bad key, as :func:`load_train_config` does."""
    try:
        cfg = TrainConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"training config: {format_validation_error(exc)}") from None
    return _checked(cfg)


def _checked(cfg: TrainConfig) -> TrainConfig:
    if not str(cfg.data.train):
        raise ConfigError("data.train is empty")
    return cfg
