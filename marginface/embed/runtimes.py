"""Embedders over the runtimes marginface supports: onnxruntime, PyTorch and OpenCV DNN."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from marginface.card import ModelCard
from marginface.embed.base import Embedder
from marginface.errors import ModelError

__all__ = [
    "OnnxEmbedder",
    "OpenCVEmbedder",
    "TorchEmbedder",
    "onnx_session",
    "sface_onnx_bytes",
]


def onnx_session(model: str | Path | bytes, *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a file or serialized model, errors as :class:`ModelError`."""
    import onnxruntime as ort

    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"ONNX model not found: {path}")
        if path.stat().st_size == 0:
            raise ModelError(f"{path}: ONNX model file is empty")
        source: str | bytes = str(path)
        label = str(path)
    else:
        source, label = model, "ONNX model"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Busy-waiting worker threads collapse throughput when the CPU is shared (a service with
    # several requests in flight, other processes); measured 2x slower at batch 1 on 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(
            f"{label}: cannot load the ONNX model ({str(exc).strip()[:300]})"
        ) from None


class OnnxEmbedder(Embedder):
    """An ONNX recogniser (NCHW input, one (N, D) output) run with onnxruntime."""

    def __init__(
        self,
        model: str | Path | bytes,
        card: ModelCard,
        *,
        name: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(card, name)
        self.session = onnx_session(model, threads=threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.name}: expected an ONNX model with one input, "
                             f"found {[i.name for i in inputs]}")
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
        if len(out_shape) == 2 and isinstance(out_shape[1], int) and out_shape[1] != (
            self.embedding_dim
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
                [self.session.run(None, {self.input_name: batch[i : i + 1]})[0]
                 for i in range(batch.shape[0])]
            )
        return self.session.run(None, {self.input_name: batch})[0]


class TorchEmbedder(Embedder):
    """A PyTorch backbone (``nn.Module`` mapping (N, 3, H, W) to (N, D)), run in eval mode."""

    def __init__(self, module: Any, card: ModelCard, *, name: str | None = None) -> None:
        super().__init__(card, name)
        self.module = module.float().eval()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch))
        if isinstance(out, tuple | list):
            out = out[0]
        return out.float().cpu().numpy()


class OpenCVEmbedder(Embedder):
    """An ONNX recogniser run by OpenCV's DNN module (one network per thread)."""

    def __init__(
        self, path: str | Path, card: ModelCard, *, input_name: str = "data",
        name: str | None = None,
    ) -> None:
        super().__init__(card, name)
        self.path = Path(path)
        self.input_name = input_name
        self._local = threading.local()
        self._net()  # fail early on a missing or corrupt file

    def _net(self) -> Any:
        import cv2

        net = getattr(self._local, "net", None)
        if net is None:
            if not self.path.is_file():
                raise ModelError(f"model file not found: {self.path}")
            try:
                net = cv2.dnn.readNetFromONNX(str(self.path))
            except cv2.error as exc:
                raise ModelError(
                    f"{self.path}: cannot load the ONNX model ({str(exc).strip()[:200]})"
                ) from None
            self._local.net = net
        return net

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        net = self._net()
        net.setInput(batch, self.input_name)
        return np.asarray(net.forward(), dtype=np.float32)


def sface_onnx_bytes(path: str | Path) -> bytes:
    """The bundled SFace model rewritten for fast batched onnxruntime inference.

    The block-quantised weights are dequantised once (bit-identical to what the runtime would
    compute), the batch axis made dynamic, and ``PRelu`` expressed as ``Relu(x) + a*min(x, 0)``
    (exactly equal; onnxruntime's PRelu kernel is slow). The network is the same SFace.
    """
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the SFace model ({exc})") from None
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(i in consts for i in node.input):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            q = consts[node.input[0]].astype(np.float32)
            scale = consts[node.input[1]].astype(np.float32)
            zero = (consts[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale))
            axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            if block:
                def expand(a: np.ndarray, axis: int = axis, block: int = block,
                           shape: tuple[int, ...] = q.shape) -> np.ndarray:
                    a = np.repeat(a, block, axis=axis)
                    return a[tuple(slice(0, d) for d in shape)]
                scale, zero = expand(scale), expand(zero.astype(np.float32))
            elif scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.astype(np.float32).reshape(shape)
            consts[node.output[0]] = ((q - zero.astype(np.float32)) * scale).astype(np.float32)
        elif node.op_type == "Reshape" and all(i in consts for i in node.input):
            consts[node.output[0]] = consts[node.input[0]].reshape(consts[node.input[1]])
        elif node.op_type == "PRelu":
            x, slope = node.input
            y = node.output[0]
            nodes += [
                helper.make_node("Relu", [x], [y + "__pos"]),
                helper.make_node("Min", [x, "__mf_zero"], [y + "__negpart"]),
                helper.make_node("Mul", [y + "__negpart", slope], [y + "__neg"]),
                helper.make_node("Add", [y + "__pos", y + "__neg"], [y]),
            ]
        else:
            nodes.append(node)
    consts["__mf_zero"] = np.zeros((), dtype=np.float32)
    used = {i for n in nodes for i in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    data_inputs = [i for i in graph.input if i.name not in consts and i.name in used]
    del graph.input[:]
    graph.input.extend(data_inputs)
    del graph.value_info[:]
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model.SerializeToString()
