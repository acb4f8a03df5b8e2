"""onnxruntime sessions in their fast configuration: the PReLU rewrite is exact and selective."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from marginface.embed.runtimes import onnx_session, rewrite_prelu


def _small_net_bytes() -> bytes:
    """Conv + PReLU (slopes in [-0.5, 1]), conv + PReLU with one slope above 1, conv + scalar
    PReLU: the first two are rewritten, the scalar one is left alone."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.PReLU(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.PReLU(8),
        nn.Conv2d(8, 4, 1),
        nn.PReLU(1),
    ).eval()
    with torch.no_grad():
        net[1].weight.uniform_(-0.5, 1.0)
        net[3].weight.uniform_(0.0, 0.5)
        net[3].weight[2] = 1.5
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 16, 16),),
            buffer,
            input_names=["input"],
            output_names=["out"],
            dynamic_axes={"input": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def test_rewrite_is_exact_for_any_per_channel_slope():
    import onnx

    source = _small_net_bytes()
    model = onnx.load_from_string(source)
    assert sum(n.op_type == "PRelu" for n in model.graph.node) == 3
    assert rewrite_prelu(model) == 2
    assert sum(n.op_type == "PRelu" for n in model.graph.node) == 1
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    plain = onnx_session(source, optimize=False).run(None, {"input": x})[0]
    fast = onnx_session(source).run(None, {"input": x})[0]
    assert np.abs(fast).max() > 0.1
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)


def test_exported_mobilefacenet_file_is_untouched_but_sessions_are_rewritten(exported):
    import onnx

    model = onnx.load(str(exported.onnx_path))
    n_prelu = sum(n.op_type == "PRelu" for n in model.graph.node)
    assert n_prelu >= 30  # the file keeps standard PReLU nodes for other runtimes
    assert rewrite_prelu(model) == n_prelu
    assert not any(n.op_type == "PRelu" for n in model.graph.node)
    x = np.random.default_rng(1).standard_normal((3, 3, 112, 112)).astype(np.float32)
    plain = onnx_session(exported.onnx_path, optimize=False, threads=2).run(None, {"input": x})[0]
    fast = onnx_session(exported.onnx_path, threads=2, spinning=True).run(None, {"input": x})[0]
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [b"", b"not an onnx model"])
def test_unreadable_models_still_fail_as_model_errors(bad):
    from marginface.errors import ModelError

    with pytest.raises(ModelError, match="cannot load"):
        onnx_session(bad)


def test_export_folds_batch_norm_into_the_convolutions(exported):
    import onnx

    ops = [n.op_type for n in onnx.load(str(exported.onnx_path)).graph.node]
    assert ops.count("Conv") >= 40
    # only the embedding's BatchNorm1d (after the linear layer) may remain
    assert ops.count("BatchNormalization") <= 1
