"""``open_dataset``: the training set at a path, whatever its format.

It lives above both formats' modules (``datasets`` for folders and CSV lists, ``recordio`` for
InsightFace's RecordIO shards, which builds on ``datasets``), so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from marginface.data.datasets import CsvListDataset, FaceDataset, ImageFolderDataset, LabelMap
from marginface.data.recordio import RecordIODataset, find_shards
from marginface.errors import DataError

__all__ = ["open_dataset"]


def open_dataset(
    path: str | Path,
    transform: Callable[[np.ndarray], Any] | None = None,
    label_map: LabelMap | None = None,
) -> FaceDataset:
    """Open any supported training set by looking at ``path``.

    * a ``.csv`` file: :class:`CsvListDataset`;
    * a ``.rec`` file, a folder holding ``train.rec``, or a prefix with ``PREFIX.rec`` or
      ``PREFIX-00000.rec`` shards: :class:`~marginface.data.recordio.RecordIODataset`;
    * a folder of identity folders: :class:`ImageFolderDataset`.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return CsvListDataset(path, transform=transform, label_map=label_map)
    if path.is_dir() and (path / "train.rec").is_file():
        return RecordIODataset(path / "train", transform=transform, label_map=label_map)
    if path.suffix.lower() in (".rec", ".idx") or find_shards(path):
        return RecordIODataset(path, transform=transform, label_map=label_map)
    if not path.exists():
        raise DataError(
            f"data not found: {path} (expected a folder of identity folders, a .csv "
            "list, or RecordIO .rec/.idx files)"
        )
    return ImageFolderDataset(path, transform=transform, label_map=label_map)
