"""Backbones reproduce insightface arcface_torch's state dicts and outputs exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from marginface import backbones


@pytest.fixture(scope="module")
def parity(shared_reference: Path) -> dict:
    return json.loads((shared_reference / "backbone_parity.json").read_text())


@pytest.fixture(scope="module")
def parity_fill(shared_reference: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "parity_fill", shared_reference / "parity_fill.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(name: str, parity: dict, parity_fill: ModuleType) -> float:
    ref = parity[name]
    model = (
        backbones.create(name, embedding_dim=512, dropout=0.0)
        if name != "mbf"
        else backbones.create(name, embedding_dim=512)
    )
    state = model.state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == ref["state_dict"]
    missing = model.load_state_dict(parity_fill.fill_state_dict(state), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    model.eval()
    with torch.no_grad():
        out = model(parity_fill.parity_input(batch=2))
    expected = torch.tensor(ref["output"], dtype=torch.float32)
    assert out.shape == expected.shape == (2, 512)
    rel = ((out - expected).norm() / expected.norm()).item()
    print(f"{name}: relative error {rel:.2e}")
    assert rel < 1e-5
    return rel


@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_parity_with_insightface(name: str, parity: dict, parity_fill: ModuleType) -> None:
    _check(name, parity, parity_fill)


@pytest.mark.slow
def test_parity_iresnet50(parity: dict, parity_fill: ModuleType) -> None:
    _check("r50", parity, parity_fill)


def test_alias_builds_the_same_architecture(parity: dict) -> None:
    for alias, name in [("r18", "iresnet18"), ("mobilefacenet", "mbf")]:
        a = backbones.create(alias).state_dict()
        b = backbones.create(name).state_dict()
        assert {k: tuple(v.shape) for k, v in a.items()} == {
            k: tuple(v.shape) for k, v in b.items()
        }
    ref_keys = [k for k, _ in parity["r18"]["state_dict"]]
    assert list(backbones.create("iresnet18").state_dict()) == ref_keys


def test_deeper_iresnets_follow_the_same_naming() -> None:
    # r34/r100/r200 share r18/r50's key pattern; only the block counts differ.
    counts = {"iresnet34": (3, 4, 6, 3), "iresnet100": (3, 13, 30, 3)}
    for name, layers in counts.items():
        model = backbones.create(name)
        for i, n in enumerate(layers, 1):
            layer = getattr(model, f"layer{i}")
            assert len(layer) == n
        keys = model.state_dict().keys()
        assert "layer3.0.downsample.0.weight" in keys and "features.running_var" in keys
        assert model.fc.in_features == 512 * 7 * 7
