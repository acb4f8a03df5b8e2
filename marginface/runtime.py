"""Model runtimes shared by detectors (``marginface.align``) and embedders (``marginface.embed``).

This module sits below both (it imports only :mod:`marginface.errors`), so neither has to
import the other for its sessions:

- onnxruntime: :func:`import_onnxruntime` (telemetry off), :func:`onnx_session` (a CPU
  session, errors as :class:`~marginface.errors.ModelError`), :func:`rewrite_prelu` (PReLU
  rewritten for onnxruntime's blocked layout) and :func:`dequantized_onnx_bytes` (constant
  ``DequantizeLinear`` weights folded to float32);
- OpenCV: :func:`quiet_opencv` and :class:`PerThreadModel` (one OpenCV network per thread).

``onnx``, ``onnxruntime`` and ``cv2`` are imported inside the functions that use them (heavy),
so importing this module costs numpy only.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from marginface.errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ORT_TELEMETRY_ENV",
    "PerThreadModel",
    "dequantized_onnx_bytes",
    "import_onnxruntime",
    "onnx_session",
    "quiet_opencv",
    "rewrite_prelu",
]


# OpenCV's log level is process-wide: quiet_opencv() changes and restores it under this lock.
_OPENCV_LOG_LOCK = threading.RLock()


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Raise OpenCV's log threshold to errors for the duration of the block, then restore it.

    OpenCV 5 prints a ``setPreferableTarget ... not supported by the new graph engine`` warning
    whenever a DNN model such as YuNet is created (the request is harmless: CPU is the only
    target here). Only the creation of models is wrapped, so warnings raised elsewhere in the
    program are left alone; the level is process-wide, so concurrent uses are serialised.
    """
    import cv2  # heavy: cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    with _OPENCV_LOG_LOCK:  # two threads creating models at once must not interleave
        previous = logging.getLogLevel()
        logging.setLogLevel(min(previous, logging.LOG_LEVEL_ERROR))
        try:
            yield
        finally:
            logging.setLogLevel(previous)


class PerThreadModel:
    """Mixin: one OpenCV model object per thread (they are not thread-safe).

    Subclasses implement :meth:`_create_model`; :meth:`_model` returns this thread's object,
    built on first use with OpenCV's log quietened and its errors turned into
    :class:`~marginface.errors.ModelError` naming ``_model_label``. Instances pickle (for
    worker processes) without the per-thread objects.
    """

    @property
    def _model_label(self) -> str:
        """What the error message calls the model."""
        return "the model"

    def _create_model(self) -> Any:
        raise NotImplementedError

    def _model(self) -> Any:
        import cv2  # heavy: cv2

        local = self.__dict__.get("_local")
        if local is None:  # first use, or unpickled: setdefault keeps one when threads race
            local = self.__dict__.setdefault("_local", threading.local())
        model = getattr(local, "model", None)
        if model is None:
            try:
                with quiet_opencv():
                    model = self._create_model()
            except cv2.error as exc:
                raise ModelError(
                    f"cannot load {self._model_label} ({str(exc).strip()[:200]})"
                ) from None
            local.model = model
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


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


def _channel_scale(
    src: str, dst: str, scale: np.ndarray, initializers: list[onnx.TensorProto]
) -> onnx.NodeProto:
    """A ``BatchNormalization`` node computing ``scale[c] * src`` per channel; its parameters
    are appended to ``initializers``."""
    from onnx import helper, numpy_helper  # heavy: onnx

    c = scale.size
    params = {
        "scale": scale.astype(np.float32),
        "bias": np.zeros(c, np.float32),
        "mean": np.zeros(c, np.float32),
        "var": np.ones(c, np.float32),
    }
    names = [f"{dst}_{k}" for k in params]
    initializers.extend(
        numpy_helper.from_array(v, n) for n, v in zip(names, params.values(), strict=True)
    )
    return helper.make_node(
        "BatchNormalization", [src, *names], [dst], epsilon=0.0, name=f"{dst}_bn"
    )


def rewrite_prelu(model: onnx.ModelProto) -> int:
    """Rewrite per-channel ``PRelu`` nodes of an ``onnx.ModelProto`` in place for onnxruntime.

    ``PRelu(z) = z + (1 - a) * Relu(-z)`` (exact up to float rounding), written as a
    ``BatchNormalization`` with scale ``-(1 - a)``, a ``Relu`` and an ``Add`` when every slope
    ``a <= 1`` (with one more ``BatchNormalization`` otherwise). onnxruntime's NCHWc layout
    optimiser keeps these ops in its blocked layout (a scale and a Relu become one depthwise
    convolution), whereas a ``PRelu`` forces a reorder to NCHW and back around itself. On
    MobileFaceNet (33 PReLUs) onnxruntime runs about 2x faster on 2 cores. Returns the number
    of nodes rewritten.
    """
    from onnx import helper, numpy_helper  # heavy: onnx

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 7:  # BatchNormalization had other attributes before opset 7
        return 0
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    count = 0
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
        import onnx  # heavy: onnx

        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
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
        import onnxruntime  # heavy: onnxruntime

        if already_imported:  # initialised with telemetry on: stop what can still be stopped
            onnxruntime.disable_telemetry_events()
        return onnxruntime
    import onnxruntime  # heavy: onnxruntime

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


def dequantized_onnx_bytes(
    path: str | Path,
    label: str = "ONNX",
    input_axes: dict[int, str] | None = None,
    output_axes: dict[int, str] | None = None,
) -> bytes:
    """``path``'s model with constant ``DequantizeLinear`` weights folded to float32.

    The folding is bit-identical to what a runtime computes at every call; what is left runs
    in onnxruntime's fast float kernels. Axis 0 of every input and output becomes ``batch``;
    ``input_axes`` / ``output_axes`` name more dynamic axes (e.g. ``{2: "height"}``).
    """
    # heavy: onnx
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
            zero = consts[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale)
            axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            if block:

                def expand(
                    a: np.ndarray,
                    axis: int = axis,
                    block: int = block,
                    shape: tuple[int, ...] = q.shape,
                ) -> np.ndarray:
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
