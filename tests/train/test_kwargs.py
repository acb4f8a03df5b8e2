"""Constructor arguments in a training config are checked before any image is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from marginface.data import FaceDataset
from marginface.errors import ConfigError
from marginface.train import load_train_config, train, trainer
from marginface.train.config import train_config

from .test_engine import base_overrides


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the training set or decoding any image fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was touched before the config was checked")

    monkeypatch.setattr(trainer, "open_dataset", refuse)
    monkeypatch.setattr(FaceDataset, "load_image", refuse)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "loss.kwargs={scale: 16, margn: 0.3}",
            r"loss\.kwargs: arcface takes no argument 'margn'; "
            r"it takes .*easy_margin, margin, scale",
        ),
        (
            "backbone.kwargs={widht: [4, 8]}",
            r"backbone\.kwargs: backbone 'tiny': invalid arguments "
            r"\['widht'\]; it takes .*pool, widths",
        ),
        (
            "loss.extra=[{name: center, weight: 0.1, kwargs: {normalise: true}}]",
            r"loss\.extra\[0\]\.kwargs: center takes no argument 'normalise'; it takes normalize",
        ),
        ("loss.kwargs={margin: -0.5}", r"loss\.kwargs: margin must be non-negative"),
    ],
)
def test_a_typo_in_kwargs_fails_before_the_data_is_read(
    no_decoding: None, tmp_path: Path, override: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_train_config(None, [*base_overrides(tmp_path / "x.csv", tmp_path / "out"), override])


def test_the_trainer_checks_kwargs_again_before_opening_the_data(
    no_decoding: None, small_subset: tuple[Path, Path], tmp_path: Path
) -> None:
    """A config changed in code (``model_copy`` does not validate) is checked by the trainer
    before it opens the data set; so is a mapping given to ``train_config``."""
    good = load_train_config(None, base_overrides(small_subset[0], tmp_path / "out", steps=1))
    bad_loss = good.model_copy(
        update={"loss": good.loss.model_copy(update={"kwargs": {"scale": 16, "margn": 0.3}})}
    )
    with pytest.raises(ConfigError, match="takes no argument 'margn'"):
        train(bad_loss)
    bad_net = good.model_copy(
        update={"backbone": good.backbone.model_copy(update={"kwargs": {"widht": [4, 8]}})}
    )
    with pytest.raises(ConfigError, match=r"invalid arguments \['widht'\]"):
        train(bad_net)
    with pytest.raises(ConfigError, match=r"training config: .*takes no argument 'margn'"):
        train_config({"data": {"train": "x"}, "loss": {"kwargs": {"margn": 0.3}}})
