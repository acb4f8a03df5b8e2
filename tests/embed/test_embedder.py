"""Embedders: loading every supported format, preprocessing, batching, flip TTA, bad models."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.card import ModelCard
from marginface.embed import builtin_names, infer_insightface_architecture, load_embedder
from marginface.embed.loader import resolve_builtin
from marginface.errors import ConfigError, ImageError, ModelError

from .conftest import make_model_dir


def _torch_reference(model_dir, crops: np.ndarray) -> np.ndarray:
    import torch
    from safetensors.torch import load_file

    from marginface.backbones import create

    card = ModelCard.load(model_dir)
    module = create(card.architecture, card.embedding_dim).eval()
    module.load_state_dict(load_file(str(model_dir / card.weights)))
    x = (crops.astype(np.float32) - 127.5) / 127.5
    with torch.no_grad():
        out = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_model_directory_embeddings(tiny_model_dir, dev_crops):
    emb = load_embedder(tiny_model_dir)
    assert emb.embedding_dim == 64 and emb.name == "test-tiny"
    out = emb.embed(dev_crops, batch_size=3)
    assert out.shape == (8, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, _torch_reference(tiny_model_dir, dev_crops), atol=1e-5)
    # batching does not change the result
    np.testing.assert_allclose(out, emb.embed(dev_crops, batch_size=8), atol=1e-5)
    # the card file and the weights file also work as specs
    np.testing.assert_allclose(
        load_embedder(tiny_model_dir / "model.json").embed(dev_crops[:2]), out[:2], atol=1e-6
    )


def test_flip_tta_sums_image_and_mirror(tiny_model_dir, dev_crops):
    emb = load_embedder(tiny_model_dir)
    raw = emb._raw(dev_crops)
    raw_flip = emb._raw(np.ascontiguousarray(dev_crops[:, :, ::-1]))
    expected = raw + raw_flip
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    out = emb.embed(dev_crops, flip=True, batch_size=5)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert not np.allclose(out, emb.embed(dev_crops), atol=1e-3)
    # flip TTA is mirror-invariant
    np.testing.assert_allclose(emb.embed(dev_crops[:, :, ::-1], flip=True), out, atol=1e-5)


def test_bgr_card_reverses_channels(tmp_path, dev_crops):
    folder = make_model_dir(tmp_path / "m")
    rgb = load_embedder(folder).embed(dev_crops[:2])
    card = ModelCard.load(folder)
    card.preprocessing.color = "BGR"
    card.save(folder)
    bgr_model = load_embedder(folder)
    np.testing.assert_allclose(
        bgr_model.embed(np.ascontiguousarray(dev_crops[:2, :, :, ::-1])), rgb, atol=1e-5
    )


def test_embedding_size_disagreeing_with_card(tmp_path):
    folder = make_model_dir(tmp_path / "bad", dim=64, card_dim=128)
    with pytest.raises(ModelError, match=r"embedding size|128"):
        load_embedder(folder)


def test_missing_and_corrupt_model_files(tmp_path, tiny_model_dir):
    with pytest.raises(ModelError, match=r"not found.*built-in"):
        load_embedder(tmp_path / "nothing-here")
    (tiny_model_dir / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match=r"corrupt|unreadable"):
        load_embedder(tiny_model_dir)
    (tiny_model_dir / "weights.safetensors").unlink()
    with pytest.raises(ModelError, match="not found"):
        load_embedder(tiny_model_dir)
    (tiny_model_dir / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        load_embedder(tiny_model_dir)
    bad_onnx = tmp_path / "broken.onnx"
    bad_onnx.write_bytes(b"definitely not protobuf" * 4)
    with pytest.raises(ModelError, match="cannot load"):
        load_embedder(bad_onnx)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_embedder(empty)
    with pytest.raises(ConfigError):
        load_embedder("sface", runtime="tensorflow")


def test_wrong_crops_are_refused(tiny_model_dir):
    emb = load_embedder(tiny_model_dir)
    with pytest.raises(ImageError, match="112x112"):
        emb.embed(np.zeros((2, 100, 100, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        emb.embed(np.zeros((2, 112, 112, 3), dtype=np.float32))
    assert emb.embed(np.zeros((0, 112, 112, 3), dtype=np.uint8)).shape == (0, 64)


def test_onnx_without_card_uses_insightface_convention(
    tmp_path, mbf_model_dir, exported, dev_crops
):
    card = ModelCard.load(mbf_model_dir)
    path = tmp_path / "plain" / "w600k_like.onnx"
    path.parent.mkdir()
    path.write_bytes(exported.onnx_path.read_bytes())  # no card beside it
    emb = load_embedder(path)
    assert emb.card.architecture == "onnx" and emb.embedding_dim == 128
    assert "insightface convention" in emb.card.notes
    np.testing.assert_allclose(
        emb.embed(dev_crops), _torch_reference(mbf_model_dir, dev_crops), atol=1e-4
    )
    # a sidecar card wins
    card.model_copy(update={"name": "sidecar", "weights": path.name, "format": "onnx"}).save(
        path.with_suffix(".json")
    )
    assert load_embedder(path).name == "sidecar"


@pytest.mark.slow
def test_insightface_backbone_pth(tmp_path, dev_crops):
    import torch

    from marginface.backbones import create

    torch.manual_seed(1)
    module = create("mbf", 128).eval()
    path = tmp_path / "ms1mv3_mbf" / "backbone.pth"
    path.parent.mkdir()
    torch.save({f"module.{k}": v for k, v in module.state_dict().items()}, path)  # DDP prefix
    emb = load_embedder(path)
    assert emb.card.architecture == "mbf" and emb.embedding_dim == 128
    x = (dev_crops[:2].astype(np.float32) - 127.5) / 127.5
    with torch.no_grad():
        ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(emb.embed(dev_crops[:2]), ref, atol=1e-5)


@pytest.mark.parametrize(
    ("blocks", "arch"),
    [
        ((2, 2, 2, 2), "iresnet18"),
        ((3, 4, 6, 3), "iresnet34"),
        ((3, 4, 14, 3), "iresnet50"),
        ((3, 13, 30, 3), "iresnet100"),
    ],
)
def test_iresnet_depth_is_inferred_from_keys(blocks, arch):
    state = {
        "conv1.weight": np.zeros((64, 3, 3, 3)),
        "features.weight": np.zeros(512),
        "fc.weight": np.zeros((512, 512 * 7 * 7)),
    }
    for i, n in enumerate(blocks, 1):
        for j in range(n):
            state[f"layer{i}.{j}.conv1.weight"] = np.zeros(1)
    assert infer_insightface_architecture(state) == arch
    with pytest.raises(ModelError):
        infer_insightface_architecture({"layer1.0.conv1.weight": 0, "layer2.0.x": 0})


def test_builtin_names():
    assert {"sface", "default"} <= set(builtin_names())
    assert resolve_builtin("default") == "sface"
    assert resolve_builtin("no-such-model") is None
    emb = load_embedder("default")
    assert emb.name == "sface" and emb.embedding_dim == 128
    assert emb.card.preprocessing.color == "RGB" and emb.card.license == "Apache-2.0"


@pytest.mark.parametrize("architecture", ["mbf_small", "iresnet18"])
def test_inference_preparation_keeps_embeddings(tmp_path, dev_crops, architecture):
    """BN folding + frozen channels-last weights match the plain module; bf16 stays close."""
    from marginface.embed.inference import prepare_for_inference
    from marginface.embed.runtimes import TorchEmbedder

    folder = make_model_dir(tmp_path / "m", architecture, 128)
    reference = _torch_reference(folder, dev_crops)
    fast = load_embedder(folder)
    assert isinstance(fast, TorchEmbedder) and fast.precision == "fp32"
    assert fast._net is not fast.module  # prepared, not the training module
    # micro-batches of 16 inside one call of 8+8+3 crops give the same result as one at a time
    crops = np.concatenate([dev_crops, dev_crops, dev_crops[:3]])
    out = fast.embed(crops, batch_size=19)
    np.testing.assert_allclose(out[:8], reference, atol=1e-5)
    np.testing.assert_allclose(out[8:16], reference, atol=1e-5)
    np.testing.assert_allclose(fast.embed(dev_crops[:1]), reference[:1], atol=1e-5)
    half = load_embedder(folder, precision="bf16")
    cos = np.sum(half.embed(dev_crops) * reference, axis=1)
    assert cos.min() > 0.999 and "bf16" in repr(half)
    # the training module is left untouched
    module = fast.module
    assert not module.training
    assert any(isinstance(m, __import__("torch").nn.BatchNorm2d) for m in module.modules())
    assert prepare_for_inference(module, (112, 112)) is not module


def test_precision_errors(tmp_path, mbf_model_dir, exported):
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        load_embedder(mbf_model_dir, precision="fp8")
    with pytest.raises(ConfigError, match="needs runtime 'torch'"):
        load_embedder(mbf_model_dir, runtime="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="ONNX model and runs in fp32"):
        load_embedder(exported.onnx_path, precision="bf16")
    with pytest.raises(ConfigError, match="ONNX model and runs in fp32"):
        load_embedder("sface", precision="bf16")


def test_onnxruntime_thread_options_reach_the_session(exported):
    def spin(emb) -> str:
        options = emb.session.get_session_options()
        return options.get_session_config_entry("session.intra_op.allow_spinning")

    quiet = load_embedder(exported.onnx_path, threads=1)
    fast = load_embedder(exported.onnx_path, spinning=True)
    assert spin(quiet) == "0" and spin(fast) == "1"
    assert quiet.session.get_session_options().intra_op_num_threads == 1
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(quiet.embed(crops), fast.embed(crops), atol=1e-5)
