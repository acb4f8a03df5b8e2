"""Improved ResNets (IResNet-18/34/50/100/200) as in insightface's arcface_torch.

Module structure and parameter names follow ``arcface_torch/backbones/iresnet.py`` exactly, so
its released ``backbone.pth`` files load with ``strict=True``. Differences that do not touch the
state dict:

* ``fp16=True`` runs the convolutional body under autocast (float16 on CUDA, bfloat16 on
  CPU) and the final ``fc``/``features`` in float32, like insightface. With ``fp16=False`` the
  model does *not* disable an autocast context opened by the caller (insightface's does).
* ``input_size`` other than 112×112 changes only the input width of ``fc``.
* Gradient checkpointing is a per-model flag instead of a module-level global.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from marginface.backbones.registry import register_model

__all__ = ["IBasicBlock", "IResNet", "conv1x1", "conv3x3"]

LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3×3 convolution with padding, no bias."""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class IBasicBlock(nn.Module):
    """BN-conv-BN-PReLU-conv(stride)-BN residual block with an optional downsample branch."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("IBasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("dilation > 1 is not supported in IBasicBlock")
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride
        self.use_checkpoint = False

    def forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.use_checkpoint:
            return checkpoint(self.forward_impl, x, use_reentrant=False)
        return self.forward_impl(x)


def _autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


class IResNet(nn.Module):
    """IResNet body + BN + dropout + ``fc`` + ``features`` (BatchNorm1d) embedding head."""

    fc_scale = 7 * 7

    def __init__(
        self,
        block: type[IBasicBlock],
        layers: tuple[int, ...] | list[int],
        dropout: float = 0.0,
        num_features: int = 512,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        fp16: bool = False,
        input_size: tuple[int, int] = (112, 112),
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.extra_gflops = 0.0
        self.fp16 = fp16
        self.inplanes = 64
        self.dilation = 1
        self.num_features = num_features
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation should be None or a 3-element list, "
                f"got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=2)
        self.layer2 = self._make_layer(
            block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0]
        )
        self.layer3 = self._make_layer(
            block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1]
        )
        self.layer4 = self._make_layer(
            block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2]
        )
        self.bn2 = nn.BatchNorm2d(512 * block.expansion, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout)
        h, w = (math.ceil(s / 16) for s in self.input_size)
        self.fc = nn.Linear(512 * block.expansion * h * w, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)
        self.set_gradient_checkpointing(gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each residual block in the backward pass to save activation memory."""
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                m.use_checkpoint = enabled

    def _make_layer(
        self,
        block: type[IBasicBlock],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion, eps=1e-05),
            )
        layers = [
            block(
                self.inplanes,
                planes,
                stride,
                downsample,
                self.groups,
                self.base_width,
                previous_dilation,
            )
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                )
            )
        return nn.Sequential(*layers)

    def forward_body(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional body up to the flattened, dropped-out feature map."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.prelu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        return self.dropout(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp16:
            with torch.autocast(device_type=x.device.type, dtype=_autocast_dtype(x.device)):
                x = self.forward_body(x)
            x = x.float()
        else:
            x = self.forward_body(x)
        x = self.fc(x)
        return self.features(x)


def _iresnet(arch: str, embedding_dim: int, **kwargs: Any) -> IResNet:
    kwargs.setdefault("num_features", embedding_dim)
    if kwargs["num_features"] != embedding_dim:
        raise TypeError("give either embedding_dim or num_features, not two different values")
    return IResNet(IBasicBlock, LAYERS[arch], **kwargs)


@register_model("iresnet18", aliases=("r18",), sized=True)
def iresnet18(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-18 (insightface arcface_torch ``r18``)."""
    return _iresnet("iresnet18", embedding_dim, **kwargs)


@register_model("iresnet34", aliases=("r34",), sized=True)
def iresnet34(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-34 (insightface arcface_torch ``r34``)."""
    return _iresnet("iresnet34", embedding_dim, **kwargs)


@register_model("iresnet50", aliases=("r50",), sized=True)
def iresnet50(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-50 (insightface arcface_torch ``r50``)."""
    return _iresnet("iresnet50", embedding_dim, **kwargs)


@register_model("iresnet100", aliases=("r100",), sized=True)
def iresnet100(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-100 (insightface arcface_torch ``r100``)."""
    return _iresnet("iresnet100", embedding_dim, **kwargs)


@register_model("iresnet200", aliases=("r200",), sized=True)
def iresnet200(embedding_dim: int = 512, **kwargs: Any) -> IResNet:
    """IResNet-200 (insightface arcface_torch ``r200``)."""
    return _iresnet("iresnet200", embedding_dim, **kwargs)
