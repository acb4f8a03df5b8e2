"""``load_embedder(spec)``: one entry point for every model a user may bring.

``spec`` is one of:

- a built-in name: ``sface`` (the OpenCV-zoo SFace baseline) or ``default`` (whatever
  ``marginface/embed/models/builtin.json`` names; SFace until a trained model replaces it);
- a marginface model directory (``model.json`` + the weights it names) or its ``model.json``;
- an ``.onnx`` file. Its card is ``<stem>.json`` beside it, else a ``model.json`` in the same
  folder whose ``weights`` names this file; without a card the insightface convention is
  assumed: RGB 112×112 ArcFace-aligned crops, ``(x - 127.5) / 127.5``, the embedding size read
  from the model;
- an insightface ``backbone.pth`` (IResNet / MobileFaceNet state dict): the architecture is
  given, or inferred from the tensor names and shapes; insightface preprocessing as above.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from marginface.align.weights import bundled_model
from marginface.card import CARD_FILENAME, ModelCard, Preprocessing
from marginface.embed.base import PRECISIONS, Embedder
from marginface.embed.runtimes import (
    OnnxEmbedder,
    OpenCVEmbedder,
    TorchEmbedder,
    module_to_onnx_bytes,
    onnx_session,
    sface_onnx_bytes,
)
from marginface.errors import ConfigError, ModelError

__all__ = [
    "BUILTIN_DIR",
    "builtin_names",
    "infer_insightface_architecture",
    "load_backbone",
    "load_embedder",
    "resolve_builtin",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "models"
RUNTIMES = ("auto", "opencv", "onnxruntime", "torch")


def builtin_names() -> list[str]:
    """The names ``load_embedder`` accepts without a path."""
    aliases = json.loads((BUILTIN_DIR / "builtin.json").read_text(encoding="utf-8"))
    names = {"sface"} | {k for k in aliases if not k.startswith("_")}
    names |= {p.name for p in BUILTIN_DIR.iterdir() if (p / CARD_FILENAME).is_file()}
    return sorted(names)


def resolve_builtin(name: str) -> str | Path | None:
    """``"sface"``, a bundled model directory, or None when ``name`` is not built in."""
    aliases = json.loads((BUILTIN_DIR / "builtin.json").read_text(encoding="utf-8"))
    seen: set[str] = set()
    key = name.strip().lower()
    while key in aliases and not key.startswith("_"):
        if key in seen:
            raise ModelError(f"built-in model names form a cycle: {sorted(seen)}")
        seen.add(key)
        key = str(aliases[key]).strip().lower()
    if key == "sface":
        return "sface"
    folder = BUILTIN_DIR / key
    if key and (folder / CARD_FILENAME).is_file():
        return folder
    return None


def _sface(runtime: str, ort: dict[str, Any]) -> Embedder:
    card = ModelCard.load(BUILTIN_DIR / "sface.json")
    path = bundled_model("sface")  # ships with marginface, SHA-256 checked
    if runtime == "onnxruntime":
        return OnnxEmbedder(sface_onnx_bytes(path), card, name="sface", **ort)
    if runtime == "torch":
        raise ConfigError("SFace runs with runtime 'opencv' or 'onnxruntime', not 'torch'")
    return OpenCVEmbedder(path, card, input_name="data", name="sface")


def _onnx_precision(precision: str, label: str) -> None:
    if precision != "fp32":
        raise ConfigError(
            f"{label} is an ONNX model and runs in fp32; precision "
            f"{precision!r} applies to PyTorch weights"
        )


def _embedding_dim_of(state: dict[str, Any]) -> int:
    """The size of the last 1-D tensor (the final BatchNorm1d of insightface backbones)."""
    for value in reversed(list(state.values())):
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) == 1:
            return int(shape[0])
    raise ModelError("cannot read the embedding size from the checkpoint")


def infer_insightface_architecture(state: dict[str, Any]) -> str:
    """The registry name (``iresnet18/34/50/100/200``, ``mbf``, ``mbf_large``) whose state-dict
    layout matches ``state`` (see :func:`marginface.backbones.weights.infer_architecture`)."""
    from marginface.backbones.weights import infer_architecture  # heavy: torch

    return infer_architecture(state)["name"]


def load_backbone(
    state: dict[str, Any],
    architecture: str,
    embedding_dim: int,
    source: str,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Build ``architecture`` (with constructor ``kwargs``) from the registry and load ``state``
    strictly."""
    import torch  # heavy: torch

    from marginface.backbones import create  # heavy: torch

    try:
        module = create(architecture, embedding_dim, **(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{source}: cannot build {architecture!r} with {kwargs}: {exc}") from None
    state = {
        k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in state.items()
    }
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = str(exc)
        hint = ""
        if "size mismatch" in text:
            hint = (
                f" (does the embedding size {embedding_dim} or the architecture "
                f"{architecture!r} disagree with the weights?)"
            )
        first = text.split("\n\t")[1] if "\n\t" in text else text[:300]
        raise ModelError(f"{source}: weights do not fit {architecture!r}: {first}{hint}") from None
    return module.eval()


def _onnx_card(path: Path) -> ModelCard | None:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return ModelCard.load(sidecar)
    folder_card = path.parent / CARD_FILENAME
    if folder_card.is_file():
        card = ModelCard.load(folder_card)
        if card.weights == path.name:
            return card
    return None


def _onnx_output_dim(path: Path) -> int | None:
    try:
        import onnx  # heavy: onnx

        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].dim_value > 0:
            return int(dims[1].dim_value)
    except Exception:
        return None
    return None


def _from_onnx_file(path: Path, card: ModelCard | None, ort: dict[str, Any]) -> Embedder:
    if card is None:
        dim = _onnx_output_dim(path)
        if dim is None:  # dynamic output: run it once
            session = onnx_session(path, threads=ort.get("threads"))
            inp = session.get_inputs()[0]
            out = session.run(None, {inp.name: np.zeros((1, 3, 112, 112), np.float32)})[0]
            dim = int(np.asarray(out).reshape(1, -1).shape[1])
        card = ModelCard(
            name=path.stem,
            architecture="onnx",
            embedding_dim=dim,
            weights=path.name,
            format="onnx",
            preprocessing=Preprocessing(),
            notes="no model card found: insightface convention assumed "
            "(RGB, (x - 127.5) / 127.5, 112x112 ArcFace template)",
        )
    return OnnxEmbedder(path, card, **ort)


def _to_onnx_runtime(module: Any, card: ModelCard, ort: dict[str, Any]) -> Embedder:
    return OnnxEmbedder(module_to_onnx_bytes(module, card), card, **ort)


def _from_model_dir(
    folder: Path, runtime: str, ort: dict[str, Any], precision: str = "fp32"
) -> Embedder:
    from marginface.backbones.weights import load_state_dict_file  # heavy: torch

    card = ModelCard.load(folder)
    weights = folder / card.weights
    if card.format == "onnx":
        _onnx_precision(precision, str(weights))
        return _from_onnx_file(weights, card, ort)
    state = load_state_dict_file(weights, card.format)
    module = load_backbone(
        state, card.architecture, card.embedding_dim, str(weights), card.architecture_kwargs
    )
    if runtime == "onnxruntime":
        return _to_onnx_runtime(module, card, ort)
    return TorchEmbedder(module, card, precision=precision)


def _from_torch_checkpoint(
    path: Path, architecture: str | None, runtime: str, ort: dict[str, Any], precision: str = "fp32"
) -> Embedder:
    # heavy: torch
    from marginface.backbones.weights import infer_architecture, load_state_dict_file

    state = load_state_dict_file(path, "torch")
    if architecture is None:
        guess = infer_architecture(state)
        arch, dim, kwargs = guess["name"], guess["embedding_dim"], guess["kwargs"]
    else:
        arch, dim, kwargs = architecture, _embedding_dim_of(state), {}
    module = load_backbone(state, arch, dim, str(path), kwargs)
    card = ModelCard(
        name=f"{path.parent.name or path.stem}-{arch}",
        architecture=arch,
        embedding_dim=dim,
        architecture_kwargs=kwargs,
        weights=path.name,
        format="torch",
        preprocessing=Preprocessing(),
        notes="insightface checkpoint: RGB, (x - 127.5) / 127.5, 112x112 ArcFace template",
    )
    if runtime == "onnxruntime":
        return _to_onnx_runtime(module, card, ort)
    return TorchEmbedder(module, card, precision=precision)


def load_embedder(
    spec: str | Path,
    *,
    runtime: str = "auto",
    architecture: str | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    spinning: bool = False,
) -> Embedder:
    """An :class:`Embedder` for a built-in name, model directory, ``.onnx`` or ``backbone.pth``.

    ``runtime``: ``auto`` (OpenCV DNN for SFace, PyTorch for weights, onnxruntime for ONNX),
    or force ``onnxruntime`` (PyTorch weights are exported to ONNX in memory), ``opencv``
    (SFace only) or ``torch``. ``architecture`` names the backbone of a ``.pth`` checkpoint
    when it cannot be inferred. ``threads`` limits onnxruntime's intra-op threads; ``spinning``
    lets them busy-wait between layers (lowest latency on dedicated cores, wasteful on shared
    ones; see :func:`marginface.embed.runtimes.onnx_session`).
    ``precision`` ``bf16`` runs PyTorch weights in bfloat16 (about twice as fast on CPUs with
    AVX512-BF16 or AMX; see :func:`marginface.embed.inference.bf16_supported`); it needs the
    ``torch`` (or ``auto``) runtime and PyTorch weights.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and runtime not in ("auto", "torch"):
        raise ConfigError(f"precision {precision!r} needs runtime 'torch', not {runtime!r}")
    ort: dict[str, Any] = {"threads": threads, "spinning": spinning}
    if isinstance(spec, str) and not any(c in spec for c in "/\\") and not Path(spec).exists():
        target = resolve_builtin(spec)
        if target == "sface":
            _onnx_precision(precision, "SFace")
            return _sface(runtime, ort)
        if isinstance(target, Path):
            return _from_model_dir(target, runtime, ort, precision)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(
            f"model not found: {spec} (not a file or folder, nor a built-in name: "
            f"{', '.join(builtin_names())})"
        )
    if path.is_dir():
        return _from_model_dir(path, runtime, ort, precision)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_model_dir(path.parent, runtime, ort, precision)
    if suffix == ".onnx":
        _onnx_precision(precision, str(path))
        return _from_onnx_file(path, _onnx_card(path), ort)
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return _from_torch_checkpoint(path, architecture, runtime, ort, precision)
    if suffix == ".safetensors":
        if (path.parent / CARD_FILENAME).is_file():
            return _from_model_dir(path.parent, runtime, ort, precision)
        raise ModelError(f"{path}: a .safetensors file needs the model.json beside it")
    raise ModelError(
        f"{path}: unknown model format {suffix or '(no extension)'}; expected a "
        "model directory, .onnx or .pth"
    )
