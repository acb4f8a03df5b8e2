"""Loading insightface-style weight files and guessing their architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from marginface import backbones
from marginface.errors import ModelError


@pytest.mark.parametrize(
    ("name", "dim", "kwargs"),
    [
        ("iresnet18", 512, {}),
        ("iresnet34", 128, {}),
        ("mbf", 512, {}),
        ("mbf", 256, {"input_size": (112, 96)}),
    ],
)
def test_infer_architecture_from_state_dict(name: str, dim: int, kwargs: dict) -> None:
    with torch.device("meta"):
        model = backbones.create(name, embedding_dim=dim, **kwargs)
    guess = backbones.infer_architecture(model.state_dict())
    assert guess["name"] == name and guess["embedding_dim"] == dim
    if "input_size" in kwargs:
        assert guess["kwargs"]["input_size"] == kwargs["input_size"]


def test_infer_rejects_unknown_weights() -> None:
    with pytest.raises(ModelError, match="cannot tell the architecture"):
        backbones.infer_architecture({"foo.weight": torch.zeros(3)})


def test_load_backbone_pth_with_ddp_prefix_and_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = backbones.create("mbf", embedding_dim=128).eval()
    state = model.state_dict()
    # insightface saves a plain state dict; DDP checkpoints carry a ``module.`` prefix.
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "backbone.pth")
    loaded = backbones.load_backbone(tmp_path / "backbone.pth")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    again = backbones.load_backbone(
        tmp_path / "w.safetensors", name="mobilefacenet", embedding_dim=128
    )
    assert all(
        torch.equal(a, b) for a, b in zip(again.state_dict().values(), state.values(), strict=True)
    )
    with pytest.raises(ModelError, match="do not fit 'iresnet18'"):
        backbones.load_backbone(tmp_path / "w.safetensors", name="r18")
    with pytest.raises(ModelError, match="weights file not found"):
        backbones.load_backbone(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read weights"):
        backbones.load_backbone(tmp_path / "junk.pth")
