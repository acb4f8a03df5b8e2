"""A small end-to-end demonstration of the margin losses on real faces.

A tiny network is trained once per loss on the first identities of the ORL face database
(grey photos, 40 people × 10) and evaluated on the people it never saw, by verification over all
pairs of their photos: learned similarity generalises to new identities without retraining.
Without the ORL folder it falls back to scikit-learn's handwritten digits, which need no data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from marginface.errors import DataError

__all__ = ["DemoResult", "load_demo_data", "run_demo"]

DEFAULT_LOSSES = ("softmax", "normface", "cosface", "arcface")
# Scales and margins that suit a tiny network and a few dozen classes.
LOSS_OPTIONS: dict[str, dict] = {
    "normface": {"scale": 16.0},
    "sphereface": {"margin": 2,
                   "lambda_schedule": {"base": 100.0, "gamma": 0.1, "lambda_min": 1.0}},
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
    """Images ``(N, 3, size, size)`` float32 in [-1, 1], labels ``(N,)``, and the source name."""
    orl = data_root / "orl" if data_root is not None else None
    if orl is not None and orl.is_dir():
        import cv2

        images, labels = [], []
        people = sorted((p for p in orl.iterdir() if p.is_dir()),
                        key=lambda p: int(p.name.lstrip("s") or 0))
        for label, person in enumerate(people):
            for path in sorted(person.glob("*.pgm")):
                img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                if img is None:
                    raise DataError(f"unreadable image in the demo data: {path}")
                images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
                labels.append(label)
        if not images:
            raise DataError(f"no .pgm images under {orl}")
        x = np.stack(images).astype(np.float32)
        source = "ORL faces"
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = np.stack([np.kron(im, np.ones((4, 4))) for im in digits.images]).astype(np.float32)
        x = x / 16.0 * 255.0
        labels = digits.target
        source = "scikit-learn digits (no ORL folder found)"
    x = (x - 127.5) / 127.5
    x = np.repeat(x[:, None], 3, axis=1)
    return x, np.asarray(labels, dtype=np.int64), source


def _train(loss_name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
           dim: int) -> torch.nn.Module:
    from marginface.backbones import create as create_backbone
    from marginface.data import PKSampler
    from marginface.losses import create as create_loss
    from marginface.losses import is_head

    torch.manual_seed(seed)
    net = create_backbone("tiny", embedding_dim=dim)
    classes = int(y.max()) + 1
    options = dict(LOSS_OPTIONS.get(loss_name, {}))
    if is_head(loss_name):
        loss = create_loss(loss_name, num_classes=classes, embedding_dim=dim, **options)
    else:
        loss = create_loss(loss_name, **options)
    params = list(net.parameters()) + list(loss.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = max(1, len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1,
                                                total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    sampler = PKSampler(y.tolist(), p=16, k=4, seed=seed, batches_per_epoch=steps_per_epoch)
    net.train()
    loss.train()
    for epoch in range(epochs):
        if loss_name == "triplet":  # identity-balanced P×K batches
            sampler.set_epoch(epoch)
            batches = [list(b) for b in sampler]
        else:
            perm = torch.randperm(len(y), generator=generator)
            batches = [perm[i * 64:(i + 1) * 64].tolist() for i in range(steps_per_epoch)]
        for idx in batches:
            xb = x[idx]
            if torch.rand((), generator=generator) < 0.5:
                xb = xb.flip(3)
            opt.zero_grad(set_to_none=True)
            loss(net(xb), y[idx]).backward()
            opt.step()
            sched.step()
    return net.eval()


def run_demo(data_root: Path | None = None, losses: tuple[str, ...] = DEFAULT_LOSSES,
             epochs: int = 10, seed: int = 0, held_out: float = 0.25) -> tuple[list[DemoResult],
                                                                                str]:
    """Train on most identities, verify on the held-out ones; one result per loss."""
    from marginface.eval.metrics import auc, best_threshold, eer, roc, tar_at_far

    torch.set_num_threads(max(1, torch.get_num_threads()))
    images, labels, source = load_demo_data(data_root)
    people = np.unique(labels)
    n_test = max(2, round(len(people) * held_out))
    test_people = people[-n_test:]
    train_mask = ~np.isin(labels, test_people)
    x_train = torch.from_numpy(images[train_mask])
    y_train = torch.from_numpy(labels[train_mask])
    x_test = torch.from_numpy(images[~train_mask])
    y_test = labels[~train_mask]
    iu = np.triu_indices(len(y_test), k=1)
    issame = (y_test[:, None] == y_test[None, :])[iu]
    results = []
    for name in losses:
        start = time.perf_counter()
        net = _train(name, x_train, y_train, epochs, seed, dim=64)
        with torch.no_grad():
            emb = F.normalize(net(x_test) + net(x_test.flip(3)), dim=1).numpy()
        sims = (emb @ emb.T)[iu]
        curve = roc(sims, issame)
        _, acc = best_threshold(sims, issame)
        centres = {c: emb[y_test == c].mean(0) for c in np.unique(y_test)}
        angles = [np.degrees(np.arccos(np.clip(
            e @ centres[c] / np.linalg.norm(centres[c]), -1, 1))) for e, c in zip(emb, y_test,
                                                                                 strict=True)]
        tar = tar_at_far(sims, issame, ("1e-2",))["1e-2"].tar
        results.append(DemoResult(
            loss=name, auc=auc(curve), eer=eer(curve)[0], accuracy=acc,
            tar_at_far_1e2=float("nan") if tar is None else tar,
            intra_angle_deg=float(np.mean(angles)), seconds=time.perf_counter() - start))
    return results, source


def as_dicts(results: list[DemoResult]) -> list[dict]:
    """Plain dictionaries, for JSON output."""
    return [asdict(r) for r in results]
