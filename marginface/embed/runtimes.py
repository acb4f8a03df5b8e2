"""Embedders over the runtimes marginface supports: onnxruntime, PyTorch and OpenCV DNN."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from marginface.align.detect import PerThreadModel
from marginface.card import ModelCard
from marginface.embed.base import PRECISIONS, Embedder
from marginface.errors import ConfigError, ModelError

__all__ = [
    "OnnxEmbedder",
    "OpenCVEmbedder",
    "TorchEmbedder",
    "dequantized_onnx_bytes",
    "import_onnxruntime",
    "onnx_session",
    "rewrite_prelu",
    "sface_onnx_bytes",
]


def _prelu_slope(consts: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """The per-channel slope of a PRelu whose slope is a (C, 1, 1) or (1, C, 1, 1) float32
    constant, else None (left to onnxruntime's own PRelu kernel)."""
    slope = consts.get(name)
    if slope is None or slope.dtype != np.float32:
        return None
    shape = slope.shape[1:] if slope.ndim == 4 and slope.shape[0] == 1 else slope.shape
    if len(shape) != 3 or shape[1:] != (1, 1) or shape[0] < 2 or not np.all(np.isfinite(slope)):
        return None
    return slope.reshape(-1)


def _channel_scale(src: str, dst: str, scale: np.ndarray, initializers: list[Any]) -> Any:
    """A ``BatchNormalization`` node computing ``scale[c] * src`` per channel; its parameters
    are appended to ``initializers``."""
    from onnx import helper, numpy_helper

    c = scale.size
    params = {"scale": scale.astype(np.float32), "bias": np.zeros(c, np.float32),
              "mean": np.zeros(c, np.float32), "var": np.ones(c, np.float32)}
    names = [f"{dst}_{k}" for k in params]
    initializers.extend(numpy_helper.from_array(v, n)
                        for n, v in zip(names, params.values(), strict=True))
    return helper.make_node("BatchNormalization", [src, *names], [dst], epsilon=0.0,
                            name=f"{dst}_bn")


def rewrite_prelu(model: Any) -> int:
    """Rewrite per-channel ``PRelu`` nodes of an ``onnx.ModelProto`` in place for onnxruntime.

    ``PRelu(z) = z + (1 - a) * Relu(-z)`` (exact up to float rounding), written as a
    ``BatchNormalization`` with scale ``-(1 - a)``, a ``Relu`` and an ``Add`` when every slope
    ``a <= 1`` (with one more ``BatchNormalization`` otherwise). onnxruntime's NCHWc layout
    optimiser keeps these ops in its blocked layout (a scale and a Relu become one depthwise
    convolution), whereas a ``PRelu`` forces a reorder to NCHW and back around itself. On
    MobileFaceNet (33 PReLUs) onnxruntime runs about 2x faster on 2 cores. Returns the number
    of nodes rewritten.
    """
    from onnx import helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 7:  # BatchNormalization had other attributes before opset 7
        return 0
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes, added, count = [], [], 0
    for node in graph.node:
        # constants reached through Constant / Identity nodes (the TorchScript exporter shares
        # equal initializers that way)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
        slope = None
        if node.op_type == "PRelu" and node.domain in ("", "ai.onnx") and len(node.input) == 2:
            slope = _prelu_slope(consts, node.input[1])
        if slope is None:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        p = f"{y}__mf_prelu"
        if np.all(slope <= 1.0):  # (1 - a) * relu(-z) == relu(-(1 - a) * z)
            nodes.append(_channel_scale(x, f"{p}_neg", slope - 1.0, added))
            nodes.append(helper.make_node("Relu", [f"{p}_neg"], [f"{p}_relu"], name=f"{p}_relu"))
            negative_part = f"{p}_relu"
        else:  # some slope above 1: relu(-z) first, then the signed factor (1 - a)
            nodes.append(_channel_scale(x, f"{p}_neg", -np.ones_like(slope), added))
            nodes.append(helper.make_node("Relu", [f"{p}_neg"], [f"{p}_relu"], name=f"{p}_relu"))
            nodes.append(_channel_scale(f"{p}_relu", f"{p}_scaled", 1.0 - slope, added))
            negative_part = f"{p}_scaled"
        nodes.append(helper.make_node("Add", [x, negative_part], [y], name=f"{p}_add"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(added)
        used = {i for n in graph.node for i in n.input}
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return count


def _fast_source(source: str | bytes) -> str | bytes:
    """``source`` with its PReLUs rewritten (see :func:`rewrite_prelu`), or unchanged when
    there is none or the model cannot be rewritten in memory (external data, > 2 GB)."""
    try:
        import onnx

        model = (onnx.load_from_string(source) if isinstance(source, bytes)
                 else onnx.load(source))
        if not any(n.op_type == "PRelu" for n in model.graph.node):
            return source
        if rewrite_prelu(model) == 0:
            return source
        return model.SerializeToString()
    except Exception:  # anything unusual: let onnxruntime load the original as it is
        return source


#: onnxruntime's switch for its built-in telemetry, read once, when onnxruntime initialises.
ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime with its telemetry off, and return the module.

    The official onnxruntime wheels (1.32 on Linux, here) start Microsoft's 1DS telemetry when
    the module is first imported: it creates ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``
    (a persistent device id and an event store, ``onnxruntime.db``) and may upload events. A
    face recognition tool next to a biometric gallery should not, by default. The only switch
    that prevents the device id and the store is ``ORT_DISABLE_TELEMETRY=1`` in the
    environment before that import (onnxruntime's Privacy.md); ``disable_telemetry_events()``
    afterwards only silences non-essential events. So this sets the variable, unless the user
    has set it (their choice wins), just before importing onnxruntime, and calls
    ``disable_telemetry_events()`` when something imported onnxruntime earlier. Nothing
    happens at marginface's import; child processes (alignment workers) inherit the setting.
    """
    if ORT_TELEMETRY_ENV not in os.environ:
        already_imported = "onnxruntime" in sys.modules
        os.environ[ORT_TELEMETRY_ENV] = "1"
        import onnxruntime

        if already_imported:  # initialised with telemetry on: stop what can still be stopped
            onnxruntime.disable_telemetry_events()
        return onnxruntime
    import onnxruntime

    return onnxruntime


def onnx_session(
    model: str | Path | bytes,
    *,
    threads: int | None = None,
    spinning: bool = False,
    optimize: bool = True,
) -> Any:
    """An onnxruntime CPU session for a file or serialized model, errors as :class:`ModelError`.

    ``threads`` sets the intra-op pool (one inter-op thread, sequential execution);
    ``spinning`` lets idle pool threads busy-wait (a little faster on an otherwise idle
    machine, much slower when the CPU is shared); ``optimize`` rewrites PReLUs into ops that
    stay in onnxruntime's fast blocked layout (:func:`rewrite_prelu`; the file is unchanged).
    All graph optimisations are on. onnxruntime's telemetry is off
    (:func:`import_onnxruntime`).
    """
    ort = import_onnxruntime()

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
    if optimize:
        source = _fast_source(source)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Busy-waiting worker threads collapse throughput when the CPU is shared (a service with
    # several requests in flight, other processes); measured 1.3-3x slower on 2 busy cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
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
    """A PyTorch backbone (``nn.Module`` mapping (N, 3, H, W) to (N, D)) run on the CPU.

    With ``optimize`` (the default) the module is prepared once by
    :func:`marginface.embed.inference.prepare_for_inference`: BatchNorm folded, channels-last,
    weights frozen in ``precision`` (``fp32``, or ``bf16`` which halves the work on CPUs with
    AVX512-BF16/AMX and moves embeddings by a cosine distance of ~1e-4). ``micro_batch`` crops go
    through the network per call. ``module`` itself is left in eval mode and not modified.
    """

    def __init__(self, module: Any, card: ModelCard, *, name: str | None = None,
                 precision: str = "fp32", optimize: bool = True,
                 micro_batch: int | None = 16) -> None:
        from marginface.embed.inference import prepare_for_inference

        super().__init__(card, name)
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; use one of "
                              f"{', '.join(PRECISIONS)}")
        if precision != "fp32" and not optimize:
            raise ConfigError(f"precision {precision!r} needs optimize=True")
        self.precision = precision
        self.micro_batch = micro_batch
        self.module = module.float().eval()
        self._net = (prepare_for_inference(self.module, self.input_size, precision)
                     if optimize else self.module)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.embedding_dim}, "
                f"precision={self.precision!r})")

    def _network_input(self, crops: np.ndarray) -> Any:
        """(N, H, W, 3) uint8 crops -> normalised (N, 3, H, W) tensor in channels-last memory
        (a view of the crops' own layout) and the network's precision: no transposed copy."""
        import torch

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
        import torch

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
        self, path: str | Path, card: ModelCard, *, input_name: str = "data",
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
        import cv2

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


def dequantized_onnx_bytes(path: str | Path, label: str = "ONNX",
                           input_axes: dict[int, str] | None = None,
                           output_axes: dict[int, str] | None = None) -> bytes:
    """``path``'s model with constant ``DequantizeLinear`` weights folded to float32.

    The folding is bit-identical to what a runtime computes at every call; what is left runs
    in onnxruntime's fast float kernels. Axis 0 of every input and output becomes ``batch``;
    ``input_axes`` / ``output_axes`` name more dynamic axes (e.g. ``{2: "height"}``).
    """
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the {label} model ({exc})") from None
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
        else:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    data_inputs = [i for i in graph.input if i.name not in consts and i.name in used]
    del graph.input[:]
    graph.input.extend(data_inputs)
    del graph.value_info[:]
    for values, axes in ((graph.input, input_axes), (graph.output, output_axes)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for axis, name in {0: "batch", **(axes or {})}.items():
                if axis < len(dims):
                    dims[axis].dim_param = name
    return model.SerializeToString()
