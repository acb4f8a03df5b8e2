"""The tiny network: fast CPU tests, smoke-training runs, the demo and the feature plots.

It accepts any input of at least 16×16 pixels: the feature map is pooled to a fixed grid
(``pool``, 4×4 by default) before the embedding layer, so spatial layout is kept while the
size stays independent of the input. Not for real use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from marginface.backbones.iresnet import IBasicBlock, conv1x1
from marginface.backbones.registry import register_model

__all__ = ["TinyNet"]


class TinyNet(nn.Module):
    """Stem conv + a few :class:`IBasicBlock` stages + ``fc`` + ``features`` BatchNorm1d.

    ``affine_features=False`` gives the embedding BatchNorm no learnt scale and shift:
    zero-mean, unit-variance coordinates. The 2-d and 3-d feature plots need it; with a learnt
    shift the normalised heads collapse such small embeddings onto a line.
    """

    def __init__(
        self,
        num_features: int = 128,
        widths: tuple[int, ...] = (16, 32, 64),
        dropout: float = 0.0,
        fp16: bool = False,
        pool: int = 4,
        gradient_checkpointing: bool = False,
        affine_features: bool = True,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one stage")
        self.fp16 = fp16
        self.num_features = num_features
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU(widths[0])
        stages = []
        inplanes = widths[0]
        for planes in widths:
            downsample = nn.Sequential(conv1x1(inplanes, planes, 2), nn.BatchNorm2d(planes))
            stages.append(IBasicBlock(inplanes, planes, 2, downsample))
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.bn2 = nn.BatchNorm2d(inplanes)
        self.pool = nn.AdaptiveAvgPool2d((pool, pool))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(inplanes * pool * pool, num_features)
        self.features = nn.BatchNorm1d(num_features, affine=affine_features)
        self.set_gradient_checkpointing(gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each residual block in the backward pass to save activation memory."""
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                m.use_checkpoint = enabled

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional body up to the flattened, dropped-out feature map."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.bn2(self.layers(x))
        return self.dropout(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp16:
            dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                x = self.forward_body(x)
            x = x.float()
        else:
            x = self.forward_body(x)
        return self.features(self.fc(x))


@register_model("tiny", aliases=("tinynet",))
def tiny(embedding_dim: int = 128, **kwargs: Any) -> TinyNet:
    """Three-stage tiny IResNet-style network for tests (≈0.1 M parameters)."""
    kwargs.setdefault("num_features", embedding_dim)
    if kwargs["num_features"] != embedding_dim:
        raise TypeError("give either embedding_dim or num_features, not two different values")
    return TinyNet(**kwargs)
