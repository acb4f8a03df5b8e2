"""Atomic training checkpoints: every file is written to a temporary name, then renamed.

Layout under ``OUTPUT/checkpoints/``::

    step_00001000/trainer.pt        model, optimiser, scheduler, scaler, step, sampler (rank 0)
    step_00001000/rank00000.pt      this rank's RNG states and its Partial FC shard
    latest                          text: the name of the newest complete checkpoint

A checkpoint folder is first written as ``.step_00001000.tmp`` and renamed when every rank has
written its file, then ``latest`` is replaced; an interrupted write never leaves a checkpoint
that ``--resume`` would pick up.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marginface.errors import ModelError

__all__ = ["atomic_save", "checkpoint_dir", "find_latest", "prune", "rng_state",
           "set_rng_state"]

LATEST = "latest"


def checkpoint_dir(output: Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(output) / "checkpoints"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def find_latest(output: Path) -> Path:
    """The newest complete checkpoint folder of a run; :class:`ModelError` when there is none."""
    root = checkpoint_dir(output)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (root / name / "trainer.pt").is_file():
            return root / name
    candidates = sorted(p for p in root.glob("step_*") if (p / "trainer.pt").is_file())
    if not candidates:
        raise ModelError(f"--resume: no checkpoint found in {root} (has this run written one? "
                         "checkpoints are saved every checkpoint.every_steps steps and on Ctrl-C)")
    return candidates[-1]


def load_file(path: Path, what: str) -> dict[str, Any]:
    """``torch.load`` a checkpoint file with a readable error."""
    if not path.is_file():
        raise ModelError(f"checkpoint file missing: {path} ({what})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from None


def prune(output: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (and stale temporary folders)."""
    root = checkpoint_dir(output)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else done:
        shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
