"""Knowledge distillation from a teacher embedder (e.g. the SFace baseline).

This is ordinary, documented knowledge distillation (Hinton et al. 2015; for face embeddings
e.g. "embedding distillation" as in ShrinkTeaNet, EKD): the teacher only provides *targets*
computed from marginface's own training crops, and the student is still trained on
``celeba-train-112`` alone. No evaluation image is ever seen by either side.

1. :func:`compute_teacher_embeddings` (``marginface train-teacher DATA OUT.npy``) embeds every
   training crop, in the data set's order (the order of ``open_dataset(DATA)``, e.g. the
   RecordIO shards' order), with the teacher and writes a ``(N, D_t)`` float16 ``.npy`` plus a
   ``.json`` sidecar (count, label fingerprint, teacher name) used to check the alignment.
2. The trainer's ``distill: {teacher: OUT.npy, weight: w}`` adds
   ``w · (1 − cos(P·student, teacher))`` per sample, with ``P`` a learned linear map from the
   student's dimension to the teacher's (512 → 128 for SFace), see :class:`DistillHead`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from marginface.data import FaceDataset, open_dataset
from marginface.data.augment import resize_to
from marginface.embed import load_embedder
from marginface.errors import DataError

__all__ = [
    "DistillHead",
    "compute_teacher_embeddings",
    "labels_fingerprint",
    "load_teacher",
    "teacher_meta_path",
]


def labels_fingerprint(labels: np.ndarray) -> str:
    """A short hash of a data set's label sequence (identifies its order)."""
    arr = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    return hashlib.sha1(arr.tobytes()).hexdigest()[:16]


def teacher_meta_path(path: str | Path) -> Path:
    """The ``.json`` sidecar of a teacher ``.npy``."""
    p = Path(path)
    return p.with_name(p.name[:-4] + ".json" if p.name.endswith(".npy") else p.name + ".json")


class DistillHead(nn.Module):
    """``1 − cos(P·student, teacher)`` averaged over the batch, ``P`` learned (no bias)."""

    def __init__(self, student_dim: int, teacher_dim: int, *, projection: bool = True) -> None:
        super().__init__()
        if not projection and student_dim != teacher_dim:
            raise DataError(
                f"distill.projection: false needs equal dimensions, but the "
                f"student has {student_dim} and the teacher {teacher_dim}"
            )
        self.proj: nn.Module = (
            nn.Linear(student_dim, teacher_dim, bias=False) if projection else nn.Identity()
        )

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        s = nn.functional.normalize(self.proj(student.float()), dim=1)
        t = nn.functional.normalize(teacher.float(), dim=1)
        return (1.0 - (s * t).sum(dim=1)).mean()


def load_teacher(path: str | Path, dataset: FaceDataset) -> Tensor:
    """The teacher matrix for ``dataset``; :class:`DataError` unless it is aligned with it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"distill.teacher: {p} not found (write it with 'marginface train-teacher DATA {p}')"
        )
    try:
        arr = np.load(p, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"distill.teacher: cannot read {p}: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != len(dataset):
        raise DataError(
            f"distill.teacher: {p} has shape {arr.shape}, but the training set has "
            f"{len(dataset)} images; recompute it for this data set"
        )
    meta_path = teacher_meta_path(p)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        want = meta.get("labels_fingerprint")
        if want and want != labels_fingerprint(dataset.labels):
            raise DataError(
                f"distill.teacher: {p} was computed on another order of images "
                "(label fingerprint differs); recompute it for this data set"
            )
    out = torch.from_numpy(np.asarray(arr, dtype=np.float16).copy())
    if not torch.isfinite(out.float()).all():
        raise DataError(f"distill.teacher: {p} holds NaN or infinite values")
    return out


def compute_teacher_embeddings(
    data: str | Path,
    out: str | Path,
    *,
    teacher: str = "sface",
    limit: int | None = None,
    batch_size: int = 64,
    flip: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed every training crop of ``data`` with ``teacher``; write ``out`` (.npy) + .json.

    Rows follow ``open_dataset(data)``'s order. An image that cannot be decoded gets a zero
    row (a constant term, no gradient; the trainer skips such images anyway). ``limit`` embeds
    only the first images (for tests). Returns the sidecar's content.
    """
    dataset = open_dataset(data)
    embedder = load_embedder(teacher)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    dim = int(embedder.embedding_dim)
    result = np.zeros((n, dim), dtype=np.float16)
    failed = 0
    t0 = time.perf_counter()
    h, w = embedder.input_size
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        crops, rows = [], []
        for i in range(lo, hi):
            try:
                crops.append(dataset.load_image(i))
                rows.append(i)
            except Exception:  # an unreadable crop keeps its zero row
                failed += 1
        if crops:
            batch = np.stack([resize_to(c, (h, w)) if c.shape[:2] != (h, w) else c for c in crops])
            result[rows] = embedder.embed(batch, flip=flip, batch_size=batch_size)
        if progress is not None:
            progress(hi, n)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, result)
    tmp.replace(out)
    seconds = time.perf_counter() - t0
    labels = np.asarray(dataset.labels)[:n]
    meta = {
        "format": "marginface-teacher/1",
        "teacher": teacher,
        "teacher_name": embedder.name,
        "dim": dim,
        "n": n,
        "of": len(dataset),
        "data": str(data),
        "labels_fingerprint": labels_fingerprint(labels),
        "flip": flip,
        "failed": failed,
        "dtype": "float16",
        "seconds": round(seconds, 1),
        "images_per_second": round(n / seconds, 1) if seconds > 0 else None,
    }
    teacher_meta_path(out).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
