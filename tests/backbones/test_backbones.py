"""Registry, embedding size, precision, memory format and compile support."""

from __future__ import annotations

import time

import pytest
import torch

from marginface import backbones
from marginface.errors import ConfigError


def test_registry_lists_every_architecture() -> None:
    names = backbones.list_models()
    for name in ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200", "mbf", "tiny"]:
        assert name in names
    with_aliases = backbones.list_models(include_aliases=True)
    for alias in ["r18", "r34", "r50", "r100", "r200", "mobilefacenet"]:
        assert alias in with_aliases and alias not in names
    assert backbones.canonical_name("R50") == "iresnet50"
    assert backbones.model_info("r100")["aliases"] == ["r100"]


def test_mbf_small_is_the_paper_size_mobilefacenet() -> None:
    """Chen et al. 2018: 0.99 M parameters (128-d), 221 M multiply-adds at 112x112."""
    from torch.utils.flop_counter import FlopCounterMode

    model = backbones.create("mobilefacenet_paper", 512).eval()
    assert sum(p.numel() for p in model.parameters()) == 1_200_512
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 112, 112))
    assert 0.21e9 < counter.get_total_flops() / 2 < 0.23e9
    # a released checkpoint of this size is recognised as mbf with scale 1
    from marginface.backbones.weights import infer_architecture

    guess = infer_architecture(model.state_dict())
    assert guess["name"] == "mbf" and guess["kwargs"]["scale"] == 1


def test_unknown_name_and_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet9000'.*iresnet50"):
        backbones.create("resnet9000")
    with pytest.raises(ConfigError, match="embedding_dim"):
        backbones.create("tiny", embedding_dim=0)
    with pytest.raises(ConfigError, match="invalid arguments"):
        backbones.create("tiny", no_such_option=3)


def test_register_model_decorator_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_model("r18")(lambda embedding_dim=512: torch.nn.Identity())


@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_embedding_dim_128(name: str) -> None:
    small = backbones.create(name, embedding_dim=128, input_size=(32, 32)).eval()
    with torch.no_grad():
        out = small(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 128)
    last = "fc.weight" if name == "r18" else "features.layers.2.weight"
    assert small.state_dict()[last].shape[0] == 128
    assert torch.isfinite(out).all()


def test_non_square_input_size() -> None:
    model = backbones.create("r18", embedding_dim=64, input_size=(112, 96)).eval()
    assert model.fc.in_features == 512 * 7 * 6
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 96)).shape == (1, 64)
    mbf = backbones.create("mbf", embedding_dim=64, input_size=(112, 96)).eval()
    with torch.no_grad():
        assert mbf(torch.randn(1, 3, 112, 96)).shape == (1, 64)


@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_bf16_autocast_and_channels_last_match_fp32(name: str) -> None:
    torch.manual_seed(0)
    # 32×32 inputs keep this fast on CPU; the layers are the same as at 112×112.
    model = backbones.create(name, input_size=(32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        cl_model = backbones.create(name, input_size=(32, 32)).eval()
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        cl = cl_model(x.contiguous(memory_format=torch.channels_last))
    assert torch.isfinite(low).all()
    cos = torch.nn.functional.cosine_similarity(low.float(), ref).min().item()
    assert cos > 0.98, cos
    # insightface's init gives large activations; compare relatively.
    assert ((cl - ref).norm() / ref.norm()).item() < 1e-5


def test_fp16_flag_runs_body_in_low_precision_and_returns_fp32() -> None:
    torch.manual_seed(0)
    model = backbones.create("r18", fp16=True, input_size=(32, 32)).eval()
    ref = backbones.create("r18", input_size=(32, 32)).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    seen: list[torch.dtype] = []
    hook = model.layer4.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        out = model(x)
        expected = ref(x)
    hook.remove()
    assert seen == [torch.bfloat16]  # CPU autocast dtype; float16 on CUDA
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out, expected).min() > 0.98


def test_training_step_updates_weights_but_not_frozen_feature_scale() -> None:
    torch.manual_seed(0)
    model = backbones.create("r18", embedding_dim=32, dropout=0.2, input_size=(32, 32)).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = model.conv1.weight.detach().clone()
    out = model(torch.randn(4, 3, 32, 32))
    out.pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.conv1.weight)
    assert not model.features.weight.requires_grad  # as in insightface
    assert torch.all(model.features.weight == 1)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    a = backbones.create("tiny", embedding_dim=16).train()
    b = backbones.create("tiny", embedding_dim=16, gradient_checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    blocks = [m for m in b.modules() if isinstance(m, backbones.IBasicBlock)]
    assert blocks and all(blk.use_checkpoint for blk in blocks)
    x = torch.randn(4, 3, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


@pytest.mark.parametrize("size", [16, 32, 56, 112])
def test_tiny_accepts_any_input_size(size: int) -> None:
    model = backbones.create("tiny", embedding_dim=64).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, 64)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 500_000


def test_torch_compile_tiny_matches_eager() -> None:
    torch.manual_seed(0)
    model = backbones.create("tiny", embedding_dim=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = model(x)
    t0 = time.perf_counter()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(x)
    print(f"compile (aot_eager) took {time.perf_counter() - t0:.1f}s")
    assert torch.allclose(out, eager, atol=1e-5)


def test_fp16_autocast_on_cpu_tiny() -> None:
    # float16 convolutions are slow on CPU, so this uses the tiny network; the GPU path is the
    # same autocast machinery.
    torch.manual_seed(0)
    model = backbones.create("tiny", embedding_dim=32).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.float16):
            half = model(x)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert torch.nn.functional.cosine_similarity(half.float(), ref).min() > 0.99
