"""Atomic training checkpoints and the run state they carry.

Layout under ``OUTPUT/checkpoints/``::

    step_00001000/trainer.pt        the RunState, model, optimiser, scheduler, scaler, sampler
                                    (rank 0)
    step_00001000/rank00000.pt      this rank's RNG states and its Partial FC shard
    latest                          text: the name of the newest complete checkpoint

A checkpoint folder is first written as ``.step_00001000.tmp`` and renamed when every rank has
written its file, then ``latest`` is replaced; an interrupted write never leaves a checkpoint
that ``--resume`` would pick up.

:class:`RunState` is where a run stands (step, epoch, position in the epoch, loss history,
last verification, time spent): the trainer keeps it in one object, saves it with
:func:`trainer_state` and restores it with :func:`read_run_state`, so what a resume restores is
written down in one place. ``trainer.pt`` files of format 1 (written before the run state had
a name) are read too.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marginface.errors import ModelError

__all__ = [
    "FORMAT",
    "RunState",
    "atomic_save",
    "checkpoint_dir",
    "find_latest",
    "prune",
    "read_run_state",
    "rng_state",
    "set_rng_state",
    "trainer_state",
]

LATEST = "latest"
FORMAT = "marginface-checkpoint/2"
_FORMAT_1 = "marginface-checkpoint/1"


@dataclass
class RunState:
    """Where a training run stands; what a checkpoint records besides the modules' states.

    The networks, optimiser, scheduler, scaler and sampler keep their own ``state_dict``; each
    rank's RNG states and Partial FC shard go to its own file (see the module layout). Nothing
    else is needed to continue a run exactly.
    """

    step: int = 0
    """Optimiser steps done."""
    epoch: int = 0
    """The epoch being trained (0-based)."""
    batch_in_epoch: int = 0
    """Batches of ``epoch`` already trained: where the sampler resumes."""
    seconds: float = 0.0
    """Training wall time of the sessions before this one (a resume adds its own)."""
    skipped: int = 0
    """Samples skipped because their image could not be read."""
    last_loss: float = math.nan
    """Mean training loss over the steps of the last log interval."""
    samples_per_second: float = 0.0
    """Throughput over the last log interval, all ranks together."""
    epoch_losses: list[float] = field(default_factory=list)
    """Mean training loss (per sample) of every finished epoch."""
    epoch_loss_sum: float = 0.0
    """Sum of per-sample losses of the current epoch so far (with ``epoch_samples``)."""
    epoch_samples: int = 0
    last_verify: dict[str, Any] | None = None
    """The last verification result (``VerifyResult.to_dict()``), or None."""
    verified_at: int = -1
    """The step of the last verification (-1: none yet); the same on every rank."""

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for ``torch.save``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """The inverse of :meth:`to_dict`; keys it does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def trainer_state(run: RunState, **parts: Any) -> dict[str, Any]:
    """The content of ``trainer.pt``: the format, the run state and the modules' states."""
    return {"format": FORMAT, "run": run.to_dict(), **parts}


def read_run_state(state: dict[str, Any], path: Path) -> RunState:
    """The :class:`RunState` of a loaded ``trainer.pt`` (format 2, or 1 from older releases)."""
    fmt = state.get("format")
    if fmt == FORMAT:
        return RunState.from_dict(state["run"])
    if fmt == _FORMAT_1:  # the run's position was stored at the top level
        return RunState.from_dict(
            {
                k: state[k]
                for k in ("step", "epoch", "batch_in_epoch", "skipped", "seconds")
                if k in state
            }
        )
    raise ModelError(
        f"--resume: {path} is a checkpoint of format {fmt!r}; this marginface "
        f"reads {FORMAT!r} and {_FORMAT_1!r}"
    )


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
        raise ModelError(
            f"--resume: no checkpoint found in {root} (has this run written one? "
            "checkpoints are saved every checkpoint.every_steps steps and on Ctrl-C)"
        )
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
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
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
