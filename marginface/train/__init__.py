"""Training face-embedding models: config, Partial FC, DDP engine, checkpoints, export.

* :class:`TrainConfig` / :func:`load_train_config`: the typed YAML configuration.
* :func:`train` / :class:`Trainer`: the engine (``marginface train CONFIG.yaml``; one process
  or ``torchrun``).
* :class:`PartialFC`: sampled and model-parallel class centres around any margin head.
* :class:`PairVerifier`: verification on a pairs file during training.
"""

from marginface.train.config import TrainConfig, load_train_config
from marginface.train.partial_fc import PartialFC, shard_range
from marginface.train.trainer import Trainer, TrainResult, train
from marginface.train.verify import PairVerifier, VerifyResult

__all__ = [
    "PairVerifier",
    "PartialFC",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "VerifyResult",
    "load_train_config",
    "shard_range",
    "train",
]
