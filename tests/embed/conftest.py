"""Fixtures for the embedding tests: real crops, the SFace baseline and tiny model folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.card import ModelCard, Preprocessing


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def sface_pipeline():
    from marginface.embed import Pipeline

    return Pipeline.from_names("sface", "yunet")


@pytest.fixture(scope="session")
def dev_crops(shared_data, sface_pipeline) -> np.ndarray:
    """Aligned 112x112 crops of eight celeba-dev photos."""
    paths = sorted((shared_data / "celeba-dev").glob("*/*.jpg"))[::150][:8]
    crops = [sface_pipeline.align(p).crops[0] for p in paths]
    return np.stack(crops)


def make_model_dir(
    folder: Path,
    architecture: str = "tiny",
    dim: int = 64,
    *,
    card_dim: int | None = None,
    seed: int = 0,
) -> Path:
    """A marginface model directory with random weights from the backbone registry."""
    import torch
    from safetensors.torch import save_file

    from marginface.backbones import create

    torch.manual_seed(seed)
    module = create(architecture, dim).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in module.state_dict().items()},
        str(folder / "weights.safetensors"),
    )
    ModelCard(
        name=f"test-{architecture}",
        architecture=architecture,
        embedding_dim=card_dim or dim,
        preprocessing=Preprocessing(),
    ).save(folder)
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path) -> Path:
    return make_model_dir(tmp_path / "tiny-model")


@pytest.fixture(scope="session")
def mbf_model_dir(tmp_path_factory) -> Path:
    """A MobileFaceNet (128-d) model directory with random weights (exportable to ONNX)."""
    return make_model_dir(tmp_path_factory.mktemp("mbf") / "mbf-model", "mbf", 128)


@pytest.fixture(scope="session")
def exported(mbf_model_dir, tmp_path_factory):
    """``mbf_model_dir`` exported to ONNX (plus int8) once per session."""
    from marginface.embed import export_onnx

    out = tmp_path_factory.mktemp("export") / "mbf.onnx"
    return export_onnx(mbf_model_dir, out, int8=True)
