"""The model card: ``model.json`` beside a model's weights.

A card says what a model is (architecture, embedding size), how its input must be prepared
(alignment template, colour order, normalisation), how it was trained, what it measured, and
which similarity thresholds were calibrated for it. Every component that embeds, scores or
decides reads preprocessing and thresholds from here, never from the caller's memory.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marginface.config import format_validation_error
from marginface.errors import ModelError

__all__ = ["CARD_FILENAME", "Calibration", "ImpostorTail", "ModelCard", "Preprocessing"]

CARD_FILENAME = "model.json"

_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,?\s*)+)\]")


class Preprocessing(BaseModel):
    """How an aligned crop becomes the network's input tensor: ``(pixel - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    template: Literal["arcface_112x112", "arcface_112x96"] = "arcface_112x112"
    input_size: tuple[int, int] = (112, 112)  # (height, width)
    color: Literal["RGB", "BGR"] = "RGB"
    mean: float = 127.5
    std: float = 127.5


class Calibration(BaseModel):
    """Cosine-similarity thresholds chosen for target false-accept rates on a named set."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["cosine"] = "cosine"
    thresholds: dict[str, float] = Field(
        default_factory=dict, description='target FAR ("1e-3") -> cosine threshold'
    )
    default_far: str = "1e-3"
    dataset: str = ""
    n_pairs: int = 0
    n_negative_pairs: int = 0

    def threshold(self, far: str | None = None) -> float:
        """The threshold for ``far`` (default: ``default_far``)."""
        key = far or self.default_far
        if key not in self.thresholds:
            raise ModelError(
                f"no calibrated threshold for FAR={key}; calibrated: {sorted(self.thresholds)}"
            )
        return self.thresholds[key]


class ImpostorTail(BaseModel):
    """The tail of a model's impostor score distribution, for open-set identification.

    Measured by ``marginface calibrate --impostors`` on many non-mated comparisons of
    identities the model was not trained on (:mod:`marginface.eval.openset`). A search of a
    gallery falsely identifies a stranger when *any* enrolled subject passes the threshold, so
    what matters is not the 1:1 false-accept rate but, for each probe, the share of subjects
    it passes. ``log10_fpir[i][j]`` is log10 of the expected false positive identification
    rate at ``thresholds[i]`` for a gallery of ``gallery_sizes[j]`` subjects with one face
    each (averaged over probes, so probes that resemble everyone weigh as they should);
    ``log10_fpir_by_faces[k]`` is the same for subjects of ``k`` faces (a subject's score is
    its best face's). ``-inf`` is written as ``floor``: no impostor reached it.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str
    identities: int = Field(gt=1, description="calibration identities")
    probes: int = Field(gt=0, description="probe faces searched")
    comparisons: int = Field(gt=0, description="non-mated probe-subject comparisons")
    excluded: str = Field("", description="identities left out (training data, hold-out)")
    holdout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of the dataset's identities "
        "held out by marginface.eval.openset.held_out, for validation",
    )
    thresholds: list[float] = Field(min_length=2, description="ascending cosine thresholds")
    gallery_sizes: list[int] = Field(min_length=2, description="ascending subject counts")
    log10_fpir: list[list[float]]
    log10_fpir_by_faces: dict[str, list[list[float]]] = Field(default_factory=dict)
    log10_far: list[float] = Field(default_factory=list, description="1:1 FAR per threshold")
    floor: float = -12.0
    max_impostor: float = Field(description="highest non-mated score observed")


class ModelCard(BaseModel):
    """Everything needed to use, compare and trust an embedding model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    architecture: str  # registry name (e.g. "mbf", "iresnet50") or "onnx" / "sface"
    embedding_dim: int = Field(gt=0)
    architecture_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra constructor arguments of the backbone"
    )
    weights: str = "weights.safetensors"  # relative to the card's folder
    format: Literal["safetensors", "torch", "onnx"] = "safetensors"
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    training: dict[str, Any] = Field(default_factory=dict)  # data, loss, hyper-parameters
    metrics: dict[str, Any] = Field(default_factory=dict)  # e.g. {"celeba-dev": {...}}
    calibration: Calibration | None = None
    impostors: ImpostorTail | None = None
    license: str = ""
    notes: str = ""

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card from ``model.json`` or from the folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILENAME
        if not path.is_file():
            raise ModelError(f"model card not found: {path}")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: model card is not valid JSON ({exc})") from None
        except ValidationError as exc:
            raise ModelError(
                f"{path}: invalid model card ({format_validation_error(exc)})"
            ) from None

    def save(self, path: str | Path) -> Path:
        """Write the card atomically to ``model.json`` (or into the given folder)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / CARD_FILENAME
        # one line per list of numbers: the impostor table stays a readable page, not thousands
        # of one-number lines
        text = _NUMBER_LIST.sub(
            lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
            self.model_dump_json(indent=2),
        )
        fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".json", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)  # a card is public metadata (mkstemp would make it 0600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
