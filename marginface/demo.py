"""A small end-to-end demonstration of the margin losses on real faces.

A tiny network is trained once per loss on the first identities of the ORL face database
(grey photos, 40 people × 10) and evaluated on the people it never saw, by verification over all
pairs of their photos: learned similarity generalises to new identities without retraining.
Without the ORL folder it falls back to scikit-learn's handwritten digits, which need no data.
The networks are the registry's ``tiny``, trained by the package's trainer
(:func:`marginface.train.memory.train_arrays`) from a training config (:func:`demo_config`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F

from marginface.data import load_image
from marginface.errors import DataError
from marginface.eval.metrics import auc, best_threshold, eer, roc, tar_at_far
from marginface.losses import is_head
from marginface.train.memory import ArrayRun, embed_arrays, train_arrays

__all__ = ["DemoResult", "demo_config", "load_demo_data", "run_demo"]

DEFAULT_LOSSES = ("softmax", "normface", "cosface", "arcface")
# Scales and margins that suit a tiny network and a few dozen classes.
LOSS_OPTIONS: dict[str, dict] = {
    "normface": {"scale": 16.0},
    "sphereface": {
        "margin": 2,
        "lambda_schedule": {"base": 100.0, "gamma": 0.1, "lambda_min": 1.0},
    },
    "cosface": {"scale": 16.0, "margin": 0.35},
    "arcface": {"scale": 16.0, "margin": 0.35},
    "combined": {"scale": 16.0, "m1": 1.0, "m2": 0.2, "m3": 0.1},
    "subcenter_arcface": {"scale": 16.0, "margin": 0.35, "subcenters": 2},
    "triplet": {"margin": 0.2, "mining": "semihard"},
}


@dataclass
class DemoResult:
    """Verification of unseen identities after training with one loss."""

    loss: str
    auc: float
    eer: float
    accuracy: float
    tar_at_far_1e2: float
    intra_angle_deg: float
    seconds: float


def load_demo_data(data_root: Path | None, size: int = 32) -> tuple[np.ndarray, np.ndarray, str]:
    """Images ``(N, size, size, 3)`` uint8 RGB, labels ``(N,)``, and the source name."""
    import cv2  # resizing only; the images are decoded by marginface.data.load_image

    orl = data_root / "orl" if data_root is not None else None
    if orl is not None and orl.is_dir():
        images, labels = [], []
        people = sorted(
            (p for p in orl.iterdir() if p.is_dir()), key=lambda p: int(p.name.lstrip("s") or 0)
        )
        for label, person in enumerate(people):
            for path in sorted(person.glob("*.pgm")):
                images.append(
                    cv2.resize(load_image(path), (size, size), interpolation=cv2.INTER_AREA)
                )
                labels.append(label)
        if not images:
            raise DataError(f"no .pgm images under {orl}")
        x = np.stack(images)
        source = "ORL faces"
    else:
        from sklearn.datasets import load_digits  # the fallback only: a heavy import

        digits = load_digits()
        big = np.stack([np.kron(im, np.ones((size // 8, size // 8))) for im in digits.images])
        x = np.repeat(np.rint(big / 16.0 * 255.0).astype(np.uint8)[..., None], 3, axis=3)
        labels = digits.target
        source = "scikit-learn digits (no ORL folder found)"
    return x, np.asarray(labels, dtype=np.int64), source


def demo_config(
    loss_name: str, *, epochs: int, seed: int, dim: int, image_size: int = 32, images: int = 0
) -> dict[str, Any]:
    """The training config (a :class:`~marginface.train.TrainConfig` mapping) of one loss:
    SGD 0.1 with the one-cycle schedule, batches of 64 (P×K, 16 × 4, for the triplet loss, as
    many per epoch as random batches of ``images``), flips, ``tiny`` with a ``dim``-d output."""
    data: dict[str, Any] = {"input_size": [image_size, image_size], "augment": "flip"}
    if not is_head(loss_name):  # identity-balanced P×K batches
        data.update(
            sampler="pk", pk_k=4, pk_min_images=1, pk_batches_per_epoch=max(1, images // 64)
        )
    return {
        "data": data,
        "backbone": {"name": "tiny", "embedding_dim": dim},
        "loss": {"name": loss_name, "kwargs": dict(LOSS_OPTIONS.get(loss_name, {}))},
        "optim": {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "grad_clip": None,
        },
        "schedule": {"kind": "onecycle", "warmup_epochs": 0.3 * epochs},
        "epochs": epochs,
        "batch_size": 64,
        "seed": seed,
    }


def _train(
    loss_name: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, dim: int
) -> ArrayRun:
    config = demo_config(
        loss_name, epochs=epochs, seed=seed, dim=dim, image_size=x.shape[1], images=len(y)
    )
    return train_arrays(config, x, y, name="demo")


def run_demo(
    data_root: Path | None = None,
    losses: tuple[str, ...] = DEFAULT_LOSSES,
    epochs: int = 10,
    seed: int = 0,
    held_out: float = 0.25,
) -> tuple[list[DemoResult], str]:
    """Train on most identities, verify on the held-out ones; one result per loss."""
    images, labels, source = load_demo_data(data_root)
    people = np.unique(labels)
    n_test = max(2, round(len(people) * held_out))
    test_people = people[-n_test:]
    train_mask = ~np.isin(labels, test_people)
    x_train, y_train = images[train_mask], labels[train_mask]
    x_test = images[~train_mask]
    y_test = labels[~train_mask]
    iu = np.triu_indices(len(y_test), k=1)
    issame = (y_test[:, None] == y_test[None, :])[iu]
    results = []
    for name in losses:
        start = time.perf_counter()
        run = _train(name, x_train, y_train, epochs, seed, dim=64)
        both = embed_arrays(run.backbone, x_test, run.preprocessing) + embed_arrays(
            run.backbone, x_test[:, :, ::-1], run.preprocessing
        )
        emb = F.normalize(both, dim=1).numpy()
        sims = (emb @ emb.T)[iu]
        curve = roc(sims, issame)
        _, acc = best_threshold(sims, issame)
        centres = {c: emb[y_test == c].mean(0) for c in np.unique(y_test)}
        angles = [
            np.degrees(np.arccos(np.clip(e @ centres[c] / np.linalg.norm(centres[c]), -1, 1)))
            for e, c in zip(emb, y_test, strict=True)
        ]
        tar = tar_at_far(sims, issame, ("1e-2",))["1e-2"].tar
        results.append(
            DemoResult(
                loss=name,
                auc=auc(curve),
                eer=eer(curve)[0],
                accuracy=acc,
                tar_at_far_1e2=float("nan") if tar is None else tar,
                intra_angle_deg=float(np.mean(angles)),
                seconds=time.perf_counter() - start,
            )
        )
    return results, source


def as_dicts(results: list[DemoResult]) -> list[dict]:
    """Plain dictionaries, for JSON output."""
    return [asdict(r) for r in results]
