"""PyTorch backbones prepared for CPU inference: BatchNorm folded, channels-last, optional bf16.

A backbone straight from training runs each BatchNorm as a separate pass over memory and,
in eager mode, lets oneDNN re-lay-out every convolution's weights on every call. Measured
on 2 Zen 4 cores with the paper-size MobileFaceNet, :func:`prepare_for_inference` turns
~100 faces/s (fp32 eager) into ~250 faces/s (fp32) or ~500 faces/s (bf16, which those cores
compute natively with AVX512-BF16); see ``bench/pipeline.py``.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from marginface.embed.base import PRECISIONS

__all__ = ["bf16_supported", "prepare_for_inference"]


def bf16_supported() -> bool:
    """Whether this CPU computes bf16 convolutions natively (AVX512-BF16 or AMX).

    Elsewhere bf16 still works but is emulated and slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _fold_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every Conv→BatchNorm pair folded into the convolution (eval mode only).

    Falls back to the module unchanged when it cannot be traced symbolically.
    """
    from torch.fx.experimental.optimization import fuse  # heavy: torch.fx

    try:
        return fuse(module, inplace=False)
    except Exception:  # data-dependent control flow: torch.fx cannot trace it
        return module


def prepare_for_inference(
    module: nn.Module, input_size: tuple[int, int], precision: str = "fp32"
) -> nn.Module:
    """A frozen copy of ``module`` for CPU inference on ``(N, 3, H, W)`` float32 batches.

    BatchNorms are folded into their convolutions, weights are stored channels-last in
    ``precision`` and pre-packed for oneDNN (TorchScript freezing). The result takes float32
    input and returns float32 ``(N, D)`` outputs for any ``N``. If freezing is not possible the
    folded eager module is used, wrapped to the same contract. ``module`` is not modified.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    example = torch.zeros(2, 3, *input_size)
    with torch.inference_mode(), warnings.catch_warnings():
        # TorchScript (and torch.fx's optimisation helpers built on it) is deprecated in favour
        # of torch.compile, whose first call compiles for tens of seconds; freezing takes well
        # under a second and runs as fast here.
        warnings.simplefilter("ignore", DeprecationWarning)
        work = _fold_batchnorm(copy.deepcopy(module).float().eval())
        # Module.to takes memory_format (torch's stubs omit it)
        work = work.to(dtype).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        wrapped = _Cast(work, dtype).eval()
        try:
            frozen = torch.jit.freeze(torch.jit.trace(wrapped, example, check_trace=False))
            frozen(example)
            return frozen
        except Exception:
            return wrapped


class _Cast(nn.Module):
    """``float32 NCHW -> module (dtype, channels-last) -> float32 (N, D)``."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x.to(self.dtype).contiguous(memory_format=torch.channels_last))
        if isinstance(out, tuple | list):
            out = out[0]
        return out.float()
