"""Export a marginface model directory to ONNX (dynamic batch axis), optionally int8.

The conversion of a module itself (:func:`module_to_onnx_bytes`) lives in
:mod:`marginface.embed.runtimes`, below the loader, which also uses it; it is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marginface.card import ModelCard
from marginface.embed.base import l2_normalize
from marginface.embed.loader import load_backbone
from marginface.embed.runtimes import INPUT_NAME, export_module_to_onnx, module_to_onnx_bytes
from marginface.errors import ModelError
from marginface.runtime import import_onnxruntime, onnx_session

__all__ = ["ExportResult", "export_onnx", "module_to_onnx_bytes", "quantize_int8"]


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how closely it matches PyTorch."""

    onnx_path: Path
    card_path: Path
    max_abs_diff: float  # normalised embeddings, ONNX vs PyTorch, on random inputs
    int8_path: Path | None = None
    int8_card_path: Path | None = None
    int8_max_abs_diff: float | None = None
    int8_min_cosine: float | None = None


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantisation of an ONNX model's weights (onnxruntime.quantization)."""
    import_onnxruntime()  # telemetry off before onnxruntime initialises
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy: onnxruntime

    dst = Path(dst)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    *,
    int8: bool = False,
    opset: int = 17,
    check_batch: int = 8,
    seed: int = 0,
) -> ExportResult:
    """Export ``model_dir`` to ``out`` (``.onnx``), write its card beside it as
    ``<stem>.json`` and check parity against PyTorch on random input.

    With ``int8`` an extra ``<stem>.int8.onnx`` (and card) is written by dynamic quantisation;
    its agreement with the float model is measured on the same input. Raises
    :class:`ModelError` when the float export disagrees with PyTorch by more than 1e-4.
    """
    import torch  # heavy: torch

    from marginface.backbones.weights import load_state_dict_file  # heavy: torch

    model_dir = Path(model_dir)
    card = ModelCard.load(model_dir)
    if card.format == "onnx":
        raise ModelError(f"{model_dir}: already an ONNX model")
    state = load_state_dict_file(model_dir / card.weights, card.format)
    module = load_backbone(
        state, card.architecture, card.embedding_dim, str(model_dir), card.architecture_kwargs
    )
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        out = out.with_suffix(".onnx")
    if out.with_suffix(".json").resolve() == (model_dir / "model.json").resolve():
        raise ModelError(
            f"exporting to {out} would overwrite the model's own card; choose another file name"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    export_module_to_onnx(module, card, str(out), opset)

    onnx_card = card.model_copy(update={"weights": out.name, "format": "onnx"})
    card_path = onnx_card.save(out.with_suffix(".json"))

    h, w = card.preprocessing.input_size
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((check_batch, 3, int(h), int(w))).astype(np.float32)
    with torch.inference_mode():
        ref = l2_normalize(module(torch.from_numpy(x)).float().numpy())
    got = l2_normalize(onnx_session(out).run(None, {INPUT_NAME: x})[0])
    diff = float(np.abs(ref - got).max())
    if diff > 1e-4:
        raise ModelError(
            f"ONNX export of {model_dir} disagrees with PyTorch (max |diff| {diff:.2e})"
        )
    result = ExportResult(onnx_path=out, card_path=card_path, max_abs_diff=diff)
    if int8:
        q_path = quantize_int8(out, out.with_name(out.stem + ".int8.onnx"))
        q_card = card.model_copy(
            update={
                "name": f"{card.name}-int8",
                "weights": q_path.name,
                "format": "onnx",
                "calibration": None,
                "notes": (card.notes + " " if card.notes else "")
                + "int8 dynamic quantisation of the float ONNX export; recalibrate thresholds.",
            }
        )
        result.int8_path = q_path
        result.int8_card_path = q_card.save(q_path.with_suffix(".json"))
        q = l2_normalize(onnx_session(q_path).run(None, {INPUT_NAME: x})[0])
        result.int8_max_abs_diff = float(np.abs(q - got).max())
        result.int8_min_cosine = float((q * got).sum(axis=1).min())
    return result
