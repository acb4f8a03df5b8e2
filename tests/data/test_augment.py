"""Augmentation config, presets and the crop -> tensor transform."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from marginface.card import Preprocessing
from marginface.config import load_config
from marginface.data import (
    AugmentConfig,
    ImageFolderDataset,
    build_transform,
    resolve_augment,
    to_tensor,
)
from marginface.errors import ConfigError


@pytest.fixture(scope="module")
def face(celeba_subset: Path) -> np.ndarray:
    return ImageFolderDataset(celeba_subset)[0][0]


def test_to_tensor_normalises_rgb_and_bgr() -> None:
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 255  # red
    img[..., 2] = 0
    x = to_tensor(img)
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert torch.all(x[0] == 1.0) and torch.all(x[1] == -1.0) and torch.all(x[2] == -1.0)
    bgr = to_tensor(img, Preprocessing(color="BGR", mean=0.0, std=255.0))
    assert torch.all(bgr[2] == 1.0) and torch.all(bgr[0] == 0.0)
    small = to_tensor(np.full((50, 40, 3), 127, np.uint8), Preprocessing(input_size=(32, 24)))
    assert small.shape == (3, 32, 24)
    assert torch.allclose(small, torch.full_like(small, -0.5 / 127.5))


def test_presets_and_validation() -> None:
    assert AugmentConfig.preset("none").is_identity
    flip = AugmentConfig.preset("flip")
    assert flip.hflip == 0.5 and flip.color_jitter == 0 and flip.jpeg == 0
    strong = AugmentConfig.preset("strong")
    assert strong.shift_scale > 0 and strong.color_jitter > 0 and strong.grayscale > 0
    assert strong.blur > 0 and strong.jpeg > 0
    assert resolve_augment("strong") == strong and resolve_augment(None).is_identity
    assert resolve_augment({"hflip": 0.2, "blur": 1.0}).blur == 1.0
    with pytest.raises(ConfigError, match="unknown augmentation preset 'heavy'"):
        resolve_augment("heavy")
    with pytest.raises(ConfigError, match="unknown key 'flip'"):
        resolve_augment({"flip": 0.5})
    with pytest.raises(ConfigError, match="hflip"):
        resolve_augment({"hflip": 1.5})
    with pytest.raises(ConfigError, match="odd kernel sizes"):
        resolve_augment({"blur_limit": [4, 6]})


def test_config_loads_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "aug.yaml").write_text("hflip: 0.3\njpeg: 0.5\njpeg_quality: [60, 90]\n")
    cfg = load_config(AugmentConfig, tmp_path / "aug.yaml", ["grayscale=0.2"])
    assert cfg.hflip == 0.3 and cfg.jpeg_quality == (60, 90) and cfg.grayscale == 0.2


def test_flip_always_and_never(face: np.ndarray) -> None:
    always = build_transform({"hflip": 1.0})(face)
    never = build_transform("none")(face)
    assert torch.equal(never, to_tensor(face))
    assert torch.equal(always, torch.flip(never, dims=[2]))


@pytest.mark.parametrize(
    "step",
    [
        {"shift_scale": 1.0},
        {"color_jitter": 1.0},
        {"grayscale": 1.0},
        {"blur": 1.0},
        {"jpeg": 1.0, "jpeg_quality": (10, 20)},
    ],
)
def test_each_step_changes_the_image_and_keeps_the_format(face: np.ndarray, step: dict) -> None:
    base = to_tensor(face)
    out = build_transform({"hflip": 0.0, **step})(face)
    assert out.shape == base.shape and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert (out - base).abs().mean() > 0.005
    if "grayscale" in step:
        assert torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(
            out[1], out[2], atol=1e-6
        )


def test_strong_preset_is_random_but_seeded(face: np.ndarray) -> None:
    torch.manual_seed(1)
    t1 = build_transform("strong")
    a = [t1(face) for _ in range(4)]
    assert any(not torch.equal(a[0], x) for x in a[1:])
    torch.manual_seed(1)
    t2 = pickle.loads(pickle.dumps(build_transform("strong")))  # picklable for workers
    b = [t2(face) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_entropy_alone_fixes_a_samples_augmentation(face: np.ndarray) -> None:
    """The trainer's rule: a sample's augmentation follows from ``(seed, epoch, index)``, not
    from the process, the worker or what the transform did before."""
    t = build_transform("strong")
    first = t(face, (0, 1, 2))
    t(face, (5, 5, 5))
    torch.manual_seed(123)
    other = pickle.loads(pickle.dumps(build_transform("strong")))
    assert torch.equal(t(face, (0, 1, 2)), first)
    assert torch.equal(other(face, (0, 1, 2)), first)
    assert not torch.equal(t(face, (0, 2, 2)), first)
