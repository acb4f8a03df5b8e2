"""MobileFaceNet as in insightface's arcface_torch (``mbf``).

Module structure and parameter names follow ``arcface_torch/backbones/mobilefacenet.py``
(defaults ``num_features=512, blocks=(1, 4, 6, 2), scale=2``), so its released
``backbone.pth`` loads with ``strict=True``. ``input_size`` other than 112×112 changes only
the kernel of the global depthwise convolution (GDC). ``fp16`` behaves as in
:mod:`marginface.backbones.iresnet`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from marginface.backbones.registry import register_model

__all__ = ["GDC", "ConvBlock", "DepthWise", "LinearBlock", "MobileFaceNet", "Residual"]


class Flatten(nn.Module):
    """``(B, C, 1, 1) -> (B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.size(0), -1)


class ConvBlock(nn.Module):
    """Conv (no bias) + BN + PReLU."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: tuple[int, int] = (1, 1),
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(
                in_c, out_c, kernel, groups=groups, stride=stride, padding=padding, bias=False
            ),
            nn.BatchNorm2d(num_features=out_c),
            nn.PReLU(num_parameters=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv (no bias) + BN, no activation."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: tuple[int, int] = (1, 1),
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(num_features=out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand, depthwise k×k, 1×1 linear project, optional residual."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        residual: bool = False,
        kernel: tuple[int, int] = (3, 3),
        stride: tuple[int, int] = (2, 2),
        padding: tuple[int, int] = (1, 1),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, out_c=groups, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
            ConvBlock(groups, groups, groups=groups, kernel=kernel, padding=padding, stride=stride),
            LinearBlock(groups, out_c, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """A stack of residual :class:`DepthWise` blocks."""

    def __init__(
        self,
        c: int,
        num_block: int,
        groups: int,
        kernel: tuple[int, int] = (3, 3),
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *[DepthWise(c, c, True, kernel, stride, padding, groups) for _ in range(num_block)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution + linear + BatchNorm1d embedding head."""

    def __init__(self, embedding_size: int, kernel: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, groups=512, kernel=kernel, stride=(1, 1), padding=(0, 0)),
            Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet backbone producing ``num_features``-dimensional embeddings."""

    def __init__(
        self,
        fp16: bool = False,
        num_features: int = 512,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
        input_size: tuple[int, int] = (112, 112),
    ) -> None:
        super().__init__()
        self.scale = scale
        self.fp16 = fp16
        self.num_features = num_features
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.layers = nn.ModuleList()
        self.layers.append(
            ConvBlock(3, 64 * self.scale, kernel=(3, 3), stride=(2, 2), padding=(1, 1))
        )
        if blocks[0] == 1:
            self.layers.append(
                ConvBlock(
                    64 * self.scale,
                    64 * self.scale,
                    kernel=(3, 3),
                    stride=(1, 1),
                    padding=(1, 1),
                    groups=64,
                )
            )
        else:
            self.layers.append(
                Residual(
                    64 * self.scale,
                    num_block=blocks[0],
                    groups=128,
                    kernel=(3, 3),
                    stride=(1, 1),
                    padding=(1, 1),
                ),
            )
        self.layers.extend(
            [
                DepthWise(
                    64 * self.scale,
                    64 * self.scale,
                    kernel=(3, 3),
                    stride=(2, 2),
                    padding=(1, 1),
                    groups=128,
                ),
                Residual(
                    64 * self.scale,
                    num_block=blocks[1],
                    groups=128,
                    kernel=(3, 3),
                    stride=(1, 1),
                    padding=(1, 1),
                ),
                DepthWise(
                    64 * self.scale,
                    128 * self.scale,
                    kernel=(3, 3),
                    stride=(2, 2),
                    padding=(1, 1),
                    groups=256,
                ),
                Residual(
                    128 * self.scale,
                    num_block=blocks[2],
                    groups=256,
                    kernel=(3, 3),
                    stride=(1, 1),
                    padding=(1, 1),
                ),
                DepthWise(
                    128 * self.scale,
                    128 * self.scale,
                    kernel=(3, 3),
                    stride=(2, 2),
                    padding=(1, 1),
                    groups=512,
                ),
                Residual(
                    128 * self.scale,
                    num_block=blocks[3],
                    groups=256,
                    kernel=(3, 3),
                    stride=(1, 1),
                    padding=(1, 1),
                ),
            ]
        )
        self.conv_sep = ConvBlock(
            128 * self.scale, 512, kernel=(1, 1), stride=(1, 1), padding=(0, 0)
        )
        kernel = (math.ceil(self.input_size[0] / 16), math.ceil(self.input_size[1] / 16))
        self.features = GDC(num_features, kernel=kernel)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp16:
            dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                for func in self.layers:
                    x = func(x)
            x = x.float()
        else:
            for func in self.layers:
                x = func(x)
        x = self.conv_sep(x)
        return self.features(x)


@register_model("mbf", aliases=("mobilefacenet",), sized=True)
def mbf(embedding_dim: int = 512, **kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet (insightface arcface_torch ``mbf``: blocks (1, 4, 6, 2), scale 2)."""
    kwargs.setdefault("num_features", embedding_dim)
    if kwargs["num_features"] != embedding_dim:
        raise TypeError("give either embedding_dim or num_features, not two different values")
    return MobileFaceNet(**kwargs)


@register_model("mbf_small", aliases=("mobilefacenet_paper",), sized=True)
def mbf_small(embedding_dim: int = 512, **kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet at the paper's size (Chen et al. 2018: ~0.22 G multiply-adds): blocks
    (1, 4, 6, 2), scale 1; half of ``mbf``'s work, 1.2 M parameters with a 512-d output."""
    kwargs.setdefault("num_features", embedding_dim)
    if kwargs["num_features"] != embedding_dim:
        raise TypeError("give either embedding_dim or num_features, not two different values")
    kwargs.setdefault("scale", 1)
    return MobileFaceNet(**kwargs)


@register_model("mbf_large", aliases=("mobilefacenet_large",), sized=True)
def mbf_large(embedding_dim: int = 512, **kwargs: Any) -> MobileFaceNet:
    """MobileFaceNet-large (arcface_torch ``mbf_large``: blocks (2, 8, 12, 4), scale 4)."""
    kwargs.setdefault("num_features", embedding_dim)
    kwargs.setdefault("blocks", (2, 8, 12, 4))
    kwargs.setdefault("scale", 4)
    return MobileFaceNet(**kwargs)
