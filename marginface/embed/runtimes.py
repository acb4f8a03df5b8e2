"""Embedders over the runtimes marginface supports: onnxruntime, PyTorch and OpenCV DNN.

The sessions themselves (:func:`onnx_session`, :func:`import_onnxruntime`,
:func:`rewrite_prelu`, :func:`dequantized_onnx_bytes`, :class:`PerThreadModel`) live in
:mod:`marginface.runtime`, below both the detectors and the embedders, and are re-exported here.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from marginface.card import ModelCard
from marginface.embed.base import PRECISIONS, Embedder
from marginface.errors import ConfigError, ModelError
from marginface.runtime import (
    PerThreadModel,
    dequantized_onnx_bytes,
    import_onnxruntime,
    onnx_session,
    rewrite_prelu,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxEmbedder",
    "OpenCVEmbedder",
    "TorchEmbedder",
    "dequantized_onnx_bytes",
    "export_module_to_onnx",
    "import_onnxruntime",
    "module_to_onnx_bytes",
    "onnx_session",
    "rewrite_prelu",
    "sface_onnx_bytes",
]

#: The names of the input and output of the ONNX graphs marginface writes from PyTorch modules.
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


def export_module_to_onnx(
    module: nn.Module, card: ModelCard, target: str | BinaryIO, opset: int = 17
) -> None:
    """Write ``module`` (a backbone, eval mode, float32) as ONNX to ``target`` (a path or a
    binary file): input ``input`` ``(N, 3, H, W)`` at the card's input size, output
    ``embedding`` ``(N, D)``, dynamic batch axis. Exporter failures become
    :class:`~marginface.errors.ModelError` naming the card's model."""
    import torch  # heavy: torch

    h, w = card.preprocessing.input_size
    dummy = torch.zeros(2, 3, int(h), int(w), dtype=torch.float32)
    module = module.float().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (dummy,),
                target,  # type: ignore[arg-type]  # a binary file works too
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # torch raises many unrelated types from its exporter
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            raise ModelError(
                f"cannot export {card.name!r} ({card.architecture}) to ONNX: {first}"
            ) from None


def module_to_onnx_bytes(module: nn.Module, card: ModelCard, *, opset: int = 17) -> bytes:
    """Serialize a backbone to ONNX in memory (input ``input`` (N, 3, H, W), output
    ``embedding`` (N, D), dynamic batch)."""
    buffer = io.BytesIO()
    export_module_to_onnx(module, card, buffer, opset)
    return buffer.getvalue()


class OnnxEmbedder(Embedder):
    """An ONNX recogniser (NCHW input, one (N, D) output) run with onnxruntime.

    ``micro_batch`` crops go through the network per call (cache-sized chunks are faster on a
    CPU than one large batch).
    """

    def __init__(
        self,
        model: str | Path | bytes,
        card: ModelCard,
        *,
        name: str | None = None,
        threads: int | None = None,
        spinning: bool = False,
        micro_batch: int | None = 8,
    ) -> None:
        super().__init__(card, name)
        self.micro_batch = micro_batch
        self.session = onnx_session(model, threads=threads, spinning=spinning)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.name}: expected an ONNX model with one input, "
                f"found {[i.name for i in inputs]}"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None
        if len(shape) == 4 and isinstance(shape[1], int) and shape[1] != 3:
            raise ModelError(f"{self.name}: expected NCHW input with 3 channels, got {shape}")
        hw = tuple(shape[2:4]) if len(shape) == 4 else ()
        if hw and all(isinstance(v, int) for v in hw) and hw != self.input_size:
            raise ModelError(
                f"{self.name}: the ONNX model takes {hw[0]}x{hw[1]} input but its card says "
                f"{self.input_size[0]}x{self.input_size[1]}"
            )
        out_shape = self.session.get_outputs()[0].shape
        if (
            len(out_shape) == 2
            and isinstance(out_shape[1], int)
            and out_shape[1] != (self.embedding_dim)
        ):
            raise ModelError(
                f"{self.name}: the ONNX model outputs {out_shape[1]}-d embeddings but its card "
                f"says embedding_dim={self.embedding_dim}"
            )

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and self.fixed_batch != batch.shape[0]:
            if self.fixed_batch != 1:
                raise ModelError(f"{self.name}: model has a fixed batch of {self.fixed_batch}")
            return np.concatenate(
                [
                    self.session.run(None, {self.input_name: batch[i : i + 1]})[0]
                    for i in range(batch.shape[0])
                ]
            )
        return self.session.run(None, {self.input_name: batch})[0]


class TorchEmbedder(Embedder):
    """A PyTorch backbone (``nn.Module`` mapping (N, 3, H, W) to (N, D)) run on the CPU.

    With ``optimize`` (the default) the module is prepared once by
    :func:`marginface.embed.inference.prepare_for_inference`: BatchNorm folded, channels-last,
    weights frozen in ``precision`` (``fp32``, or ``bf16`` which halves the work on CPUs with
    AVX512-BF16/AMX and moves embeddings by a cosine distance of ~1e-4). ``micro_batch`` crops go
    through the network per call. ``module`` itself is left in eval mode and not modified.
    """

    def __init__(
        self,
        module: nn.Module,
        card: ModelCard,
        *,
        name: str | None = None,
        precision: str = "fp32",
        optimize: bool = True,
        micro_batch: int | None = 16,
    ) -> None:
        from marginface.embed.inference import prepare_for_inference  # heavy: torch

        super().__init__(card, name)
        if precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}"
            )
        if precision != "fp32" and not optimize:
            raise ConfigError(f"precision {precision!r} needs optimize=True")
        self.precision = precision
        self.micro_batch = micro_batch
        self.module = module.float().eval()
        self._net = (
            prepare_for_inference(self.module, self.input_size, precision)
            if optimize
            else self.module
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.embedding_dim}, "
            f"precision={self.precision!r})"
        )

    def _network_input(self, crops: np.ndarray) -> Any:
        """(N, H, W, 3) uint8 crops -> normalised (N, 3, H, W) tensor in channels-last memory
        (a view of the crops' own layout) and the network's precision: no transposed copy."""
        import torch  # heavy: torch

        pre = self.card.preprocessing
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        if pre.color == "BGR":
            x = x.flip(1)
        x = x.to(torch.float32)
        if pre.mean != 0.0:
            x = x - float(np.float32(pre.mean))
        if pre.std != 1.0:
            x = x * float(np.float32(1.0 / pre.std))
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    def _forward(self, batch: Any) -> np.ndarray:
        import torch  # heavy: torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        with torch.inference_mode():
            out = self._net(batch)
        if isinstance(out, tuple | list):
            out = out[0]
        return out.float().cpu().numpy()


class OpenCVEmbedder(PerThreadModel, Embedder):
    """An ONNX recogniser run by OpenCV's DNN module (one network per thread)."""

    def __init__(
        self,
        path: str | Path,
        card: ModelCard,
        *,
        input_name: str = "data",
        name: str | None = None,
    ) -> None:
        super().__init__(card, name)
        self.path = Path(path)
        self.input_name = input_name
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self._model()  # fail early on a corrupt file

    @property
    def _model_label(self) -> str:
        return f"the ONNX model {self.path}"

    def _create_model(self) -> Any:
        import cv2  # heavy: cv2

        return cv2.dnn.readNetFromONNX(str(self.path))

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        net = self._model()
        net.setInput(batch, self.input_name)
        return np.asarray(net.forward(), dtype=np.float32)


def sface_onnx_bytes(path: str | Path) -> bytes:
    """The bundled SFace model rewritten for fast batched onnxruntime inference.

    The block-quantised weights are dequantised once (bit-identical to what the runtime would
    compute) and the batch axis made dynamic; :func:`onnx_session` then rewrites its PReLUs
    (:func:`rewrite_prelu`). The network is the same SFace.
    """
    return dequantized_onnx_bytes(path, "SFace")
