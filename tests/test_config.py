"""``format_validation_error``: the one text of a validation error (configs, settings, cards,
camera and source options, the watch command's options)."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from marginface.config import StrictModel, format_validation_error


class _Inner(StrictModel):
    low: int = Field(1, ge=1, le=50)
    high: int = Field(5, le=50)


class _Outer(StrictModel):
    rate: float = Field(1.0, gt=0.0)
    inner: _Inner = Field(default_factory=_Inner)


def _error(**data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    return info.value


def test_each_problem_by_its_key_path_and_unknown_keys_by_name() -> None:
    exc = _error(rate=0, inner={"low": 0, "colour": "red"})
    assert format_validation_error(exc) == (
        "rate: Input should be greater than 0; inner.low: Input should be greater than or "
        "equal to 1; unknown key 'inner.colour'"
    )


def test_names_show_what_the_user_typed_and_repeats_are_said_once() -> None:
    names = {"inner.low": "--n", "inner.high": "--n", "rate": "--rate"}
    exc = _error(inner={"low": 60, "high": 60})
    assert format_validation_error(exc, names) == "--n: Input should be less than or equal to 50"
    assert format_validation_error(_error(rate=-1), names).startswith("--rate: ")
