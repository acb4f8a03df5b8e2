"""Training-time augmentation and the crop -> tensor transform.

Augmentation runs on the CPU in DataLoader workers with albumentations. The final step turns an
RGB ``uint8`` crop into a ``(3, H, W)`` float32 tensor normalised as a model card's
:class:`~marginface.card.Preprocessing` says (``(x - 127.5) / 127.5``, RGB, 112×112 by
default).

Probabilities are per image. ``AugmentConfig.preset("flip")`` is what insightface's
arcface_torch uses (horizontal flip only); ``"strong"`` adds scale/shift jitter, colour
jitter, grayscale, blur and JPEG re-compression for small or noisy data sets.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator

from marginface.card import Preprocessing
from marginface.config import StrictModel, format_validation_error
from marginface.errors import ConfigError

__all__ = [
    "AUGMENT_PRESETS",
    "AugmentConfig",
    "FaceTransform",
    "build_transform",
    "resolve_augment",
    "to_tensor",
]


class AugmentConfig(StrictModel):
    """What to apply and with which probability (0 disables a step)."""

    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    shift_scale: float = Field(0.0, ge=0, le=1, description="probability of affine jitter")
    scale_limit: float = Field(0.05, ge=0, lt=1, description="scale factor in 1 ± limit")
    shift_limit: float = Field(0.04, ge=0, lt=0.5, description="shift, fraction of size")
    rotate_limit: float = Field(0.0, ge=0, le=45, description="rotation in ± degrees")
    color_jitter: float = Field(0.0, ge=0, le=1, description="probability of colour jitter")
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.2, ge=0, le=1)
    hue: float = Field(0.02, ge=0, le=0.5)
    grayscale: float = Field(0.0, ge=0, le=1, description="probability of grayscale")
    blur: float = Field(0.0, ge=0, le=1, description="probability of Gaussian blur")
    blur_limit: tuple[int, int] = (3, 5)
    jpeg: float = Field(0.0, ge=0, le=1, description="probability of JPEG re-compression")
    jpeg_quality: tuple[int, int] = (40, 95)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        lo, hi = self.blur_limit
        if lo < 3 or hi < lo or lo % 2 == 0 or hi % 2 == 0:
            raise ValueError("blur_limit must be two odd kernel sizes >= 3, low <= high")
        qlo, qhi = self.jpeg_quality
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError("jpeg_quality must satisfy 1 <= low <= high <= 100")
        return self

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """The named preset: ``none``, ``flip`` (insightface's default) or ``strong``."""
        try:
            values = AUGMENT_PRESETS[name]
        except KeyError:
            raise ConfigError(
                f"unknown augmentation preset {name!r}; choose one of {sorted(AUGMENT_PRESETS)}"
            ) from None
        return cls(**values)

    @property
    def is_identity(self) -> bool:
        """True when no step can fire."""
        return not any(
            (self.hflip, self.shift_scale, self.color_jitter, self.grayscale, self.blur, self.jpeg)
        )


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {"hflip": 0.0},
    "flip": {"hflip": 0.5},
    "strong": {
        "hflip": 0.5,
        "shift_scale": 0.5,
        "color_jitter": 0.5,
        "grayscale": 0.1,
        "blur": 0.1,
        "jpeg": 0.3,
    },
}


def resolve_augment(value: str | dict[str, Any] | AugmentConfig | None) -> AugmentConfig:
    """Accept a preset name, a mapping of fields, a config, or None (= ``none``)."""
    if value is None:
        return AugmentConfig.preset("none")
    if isinstance(value, AugmentConfig):
        return value
    if isinstance(value, str):
        return AugmentConfig.preset(value)
    try:
        return AugmentConfig.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"augmentation: {format_validation_error(exc)}") from None


def _build_albumentations(cfg: AugmentConfig, seed: int | None) -> Any:
    # Imported here: albumentations is slow to import and only augmenting processes need it.
    # It asks PyPI for a newer version at import time unless told not to; a training run
    # must not touch the network (nor wait up to 2 s per worker for it).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A  # optional: albumentations (marginface[train])
    import cv2  # heavy: cv2

    steps: list[Any] = []
    if cfg.shift_scale > 0:
        steps.append(
            A.Affine(
                scale=(1.0 - cfg.scale_limit, 1.0 + cfg.scale_limit),
                translate_percent=(-cfg.shift_limit, cfg.shift_limit),
                rotate=(-cfg.rotate_limit, cfg.rotate_limit),
                border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.shift_scale,
            )
        )
    if cfg.hflip > 0:
        steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.color_jitter > 0:
        steps.append(
            A.ColorJitter(
                brightness=(1 - cfg.brightness, 1 + cfg.brightness),
                contrast=(1 - cfg.contrast, 1 + cfg.contrast),
                saturation=(1 - cfg.saturation, 1 + cfg.saturation),
                hue=(-cfg.hue, cfg.hue),
                p=cfg.color_jitter,
            )
        )
    if cfg.grayscale > 0:
        steps.append(A.ToGray(num_output_channels=3, p=cfg.grayscale))
    if cfg.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=cfg.blur_limit, p=cfg.blur))
    if cfg.jpeg > 0:
        steps.append(
            A.ImageCompression(compression_type="jpeg", quality_range=cfg.jpeg_quality, p=cfg.jpeg)
        )
    return A.Compose(steps, seed=seed)


def to_tensor(image: np.ndarray, preprocessing: Preprocessing | None = None) -> Any:
    """RGB ``uint8`` ``(H, W, 3)`` -> float32 ``(3, H, W)`` tensor, ``(x - mean) / std``.

    The image is resized to ``preprocessing.input_size`` when it differs, and its channels are
    reversed when the preprocessing asks for BGR.
    """
    import cv2  # a third of a second to import: only processes that resize images pay it

    pre = preprocessing or Preprocessing()
    image = resize_to(image, pre.input_size)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if pre.color == "BGR":
        image = image[:, :, ::-1]
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    chw -= pre.mean
    chw /= pre.std
    return torch.from_numpy(chw)


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``(height, width)`` when needed (area filter to shrink, linear to grow)."""
    import cv2  # slow to import; see to_tensor

    h, w = image.shape[:2]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return image
    interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (tw, th), interpolation=interp)


class FaceTransform:
    """Picklable callable: RGB crop -> resized, augmented, normalised ``(3, H, W)`` tensor.

    The albumentations pipeline is built lazily in each process. Called with ``entropy`` (the
    trainer passes ``(seed, epoch, index)``), a sample's augmentation is drawn from those
    integers alone: the same whichever worker loads it, however many ranks there are, and
    after a resume in mid-epoch. Called without, the pipeline draws from its own stream, seeded
    from ``torch.initial_seed()`` in each process (PyTorch sets that per DataLoader worker from
    the main process's generator), so ``torch.manual_seed`` makes augmentation reproducible.
    """

    def __init__(
        self, augment: AugmentConfig | None = None, preprocessing: Preprocessing | None = None
    ) -> None:
        self.augment = augment or AugmentConfig.preset("none")
        self.preprocessing = preprocessing or Preprocessing()
        self._pipeline: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"] = None
        return state

    def __call__(self, image: np.ndarray, entropy: tuple[int, ...] | None = None) -> Any:
        image = resize_to(image, self.preprocessing.input_size)
        if not self.augment.is_identity:
            if self._pipeline is None:
                self._pipeline = _build_albumentations(
                    self.augment, seed=torch.initial_seed() % 2**32
                )
            if entropy is not None:
                seed = np.random.SeedSequence(list(entropy)).generate_state(1)[0]
                self._pipeline.set_random_seed(int(seed))
            image = self._pipeline(image=image)["image"]
        return to_tensor(image, self.preprocessing)

    def __repr__(self) -> str:
        return f"FaceTransform(augment={self.augment!r}, preprocessing={self.preprocessing!r})"


def build_transform(
    augment: str | dict[str, Any] | AugmentConfig | None = "flip",
    preprocessing: Preprocessing | None = None,
) -> FaceTransform:
    """A transform for training (``augment`` preset/config) or evaluation (``augment=None``)."""
    return FaceTransform(resolve_augment(augment), preprocessing)
