"""Embedding models and the photo-to-embedding pipeline.

``load_embedder(spec)`` gives an :class:`Embedder` for a built-in name (``sface``,
``default``), a model directory, an ONNX file or an insightface ``backbone.pth``;
``Pipeline`` chains detection, alignment and embedding; ``export_onnx`` writes a model
directory to ONNX.
"""

from marginface.embed.base import Embedder, l2_normalize
from marginface.embed.export import ExportResult, export_onnx, quantize_int8
from marginface.embed.loader import (
    builtin_names,
    infer_insightface_architecture,
    load_embedder,
    resolve_builtin,
)
from marginface.embed.pipeline import EmbedderLike, Face, FaceLike, FacePipeline, Pipeline

__all__ = [
    "Embedder",
    "EmbedderLike",
    "ExportResult",
    "Face",
    "FaceLike",
    "FacePipeline",
    "Pipeline",
    "builtin_names",
    "export_onnx",
    "infer_insightface_architecture",
    "l2_normalize",
    "load_embedder",
    "quantize_int8",
    "resolve_builtin",
]
