"""Entry point for the DDP equality test: ``torchrun ... ddp_worker.py CONFIG [k=v ...]``.

It registers ``test_nobn``, a tiny network without BatchNorm (batch statistics depend on how a
batch is split across ranks, and SyncBatchNorm needs GPUs), then runs the normal trainer.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from marginface.backbones import is_model, register_model


class NoBN(nn.Module):
    """Two strided convolutions, pooling and a linear embedding layer."""

    def __init__(self, embedding_dim: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act1 = nn.PReLU(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.PReLU(16)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(16 * 16, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def register() -> None:
    if not is_model("test_nobn"):
        register_model("test_nobn")(lambda embedding_dim=32, **kw: NoBN(embedding_dim, **kw))


def main(argv: list[str]) -> None:
    from marginface.train import load_train_config, train

    register()
    torch.set_num_threads(1)
    cfg = load_train_config(argv[0], argv[1:])
    train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
