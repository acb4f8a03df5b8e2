"""Face detectors that return boxes, scores and five landmarks, and the face-selection policy.

Landmark order (both backends): eye on the image's left, eye on the image's right, nose tip,
mouth corner on the image's left, mouth corner on the image's right; in the input image's pixel
coordinates. Images are RGB ``uint8`` as everywhere in marginface.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marginface.align.image import resize_longest_side

__all__ = [
    "DETECTORS",
    "Detection",
    "Detector",
    "PerThreadModel",
    "Selection",
    "YuNetDetector",
    "load_detector",
    "quiet_opencv",
    "select_faces",
]

Selection = Literal["largest", "central", "all"]

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
    import cv2

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
        import cv2

        from marginface.errors import ModelError

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


@dataclass
class Detection:
    """One detected face."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """The face size used for the minimum-size rule: the box's shorter side, pixels."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2.0, float(self.box[1] + self.box[3]) / 2.0

    def scaled(self, factor: float) -> Detection:
        """The same detection with coordinates multiplied by ``factor``."""
        return Detection(
            box=(self.box * factor).astype(np.float32),
            score=self.score,
            landmarks=(self.landmarks * factor).astype(np.float32),
        )


class Detector(ABC):
    """Finds faces in an RGB ``uint8`` image."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face found, best score first."""


_YUNET_STRIDES = (8, 16, 32)
#: YuNet's output heads: per stride, class and objectness scores, box offsets and landmarks.
_YUNET_OUTPUTS = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps")
                  for stride in _YUNET_STRIDES]


class YuNetDetector(PerThreadModel, Detector):
    """YuNet (OpenCV zoo, MIT) with the weights that ship with marginface (int8 block-quantised,
    checked by SHA-256; see ``marginface/weights/LICENSES.md``).

    ``runtime="onnxruntime"`` (the default) runs the network with its int8 weights folded to
    float32 in onnxruntime and decodes its outputs exactly as ``cv2.FaceDetectorYN`` does
    (same boxes, landmarks and scores to float rounding, about 1.7x faster on 2 cores);
    ``runtime="opencv"`` uses ``cv2.FaceDetectorYN`` itself. ``threads`` bounds
    onnxruntime's threads per call. Images whose longest side exceeds ``max_side`` are shrunk
    before detection and the results are mapped back to the original pixels. Thread-safe (one
    network per thread).

    The bundled (int8) YuNet's landmarks barely follow head roll and jitter: on the astronaut
    photo turned by 25 degrees its eyes are off by about 9 px. With ``refine_landmarks`` the
    five points are re-estimated by MTCNN's output network inside YuNet's boxes (1-2 px at any
    roll up to 35 degrees, about 1 ms per face); SFace on celeba-dev went from 96.0 % to
    97.9 % (1,500 pairs), and the crops keep the training set's mean geometry. ``"auto"``
    (default) refines: the MTCNN weights ship with marginface, so it means ``True`` (kept for
    configurations written when they came from another package); ``refine_landmarks`` tells
    which happened.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        max_side: int = 1280,
        refine_landmarks: bool | Literal["auto"] = "auto",
        runtime: Literal["onnxruntime", "opencv"] = "onnxruntime",
        threads: int | None = None,
    ) -> None:
        from marginface.align.weights import bundled_model
        from marginface.errors import ConfigError, ModelError

        self.model_path = Path(model_path) if model_path else bundled_model("yunet")
        if not self.model_path.is_file():
            raise ModelError(f"YuNet model not found: {self.model_path}")
        if runtime not in ("onnxruntime", "opencv"):
            raise ConfigError(f"unknown YuNet runtime {runtime!r}; use onnxruntime or opencv")
        self.runtime = runtime
        self.threads = threads
        self._onnx: bytes | None = None
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.max_side = int(max_side)
        self._model()  # fail early on a corrupt file
        self.refiner: Any = None
        if refine_landmarks == "auto":
            refine_landmarks = True  # the MTCNN weights ship with marginface
        if refine_landmarks:
            from marginface.align.mtcnn import ONetRefiner

            self.refiner = ONetRefiner()
        self.refine_landmarks = bool(refine_landmarks)

    @property
    def _model_label(self) -> str:
        return f"the YuNet model {self.model_path}"

    def _create_model(self) -> Any:
        import cv2

        if self.runtime == "onnxruntime":
            from marginface.embed.runtimes import dequantized_onnx_bytes, onnx_session

            if self._onnx is None:
                self._onnx = dequantized_onnx_bytes(
                    self.model_path, "YuNet", input_axes={2: "height", 3: "width"},
                    output_axes={1: "anchors"})
            return onnx_session(self._onnx, threads=self.threads)
        return cv2.FaceDetectorYN.create(
            str(self.model_path), "", (320, 320),
            self.score_threshold, self.nms_threshold, self.top_k,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_onnx"] = None  # rebuilt from the model file where it is needed
        return state

    def _raw_onnxruntime(self, bgr: np.ndarray) -> np.ndarray:
        """``cv2.FaceDetectorYN.detect``'s (N, 15) rows, from the network run in onnxruntime.

        The image is padded right and bottom to a multiple of 32; each stride's cells give a
        score ``sqrt(clip(cls) * clip(obj))``, a box centred at ``(cell + offset) * stride``
        of size ``exp(log-size) * stride`` and five landmarks ``(cell + offset) * stride``;
        then OpenCV's NMS keeps the best ``top_k``.
        """
        import cv2

        session = self._model()
        h, w = bgr.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        outputs = dict(zip(_YUNET_OUTPUTS, session.run(_YUNET_OUTPUTS, {"input": blob}),
                           strict=True))
        rows = []
        for stride in _YUNET_STRIDES:
            cls, obj, bbox, kps = (outputs[f"{kind}_{stride}"][0]
                                   for kind in ("cls", "obj", "bbox", "kps"))
            score = np.sqrt(np.clip(cls[:, 0], 0.0, 1.0) * np.clip(obj[:, 0], 0.0, 1.0))
            keep = np.nonzero(score >= self.score_threshold)[0]
            if not len(keep):
                continue
            cols = pw // stride
            cx, cy = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            b, k = bbox[keep], kps[keep].reshape(-1, 5, 2)
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            x1 = (cx + b[:, 0]) * stride - bw / 2.0
            y1 = (cy + b[:, 1]) * stride - bh / 2.0
            lx = (k[:, :, 0] + cx[:, None]) * stride
            ly = (k[:, :, 1] + cy[:, None]) * stride
            marks = np.stack([lx, ly], axis=2).reshape(-1, 10)
            rows.append(np.column_stack([x1, y1, bw, bh, marks, score[keep]]))
        if not rows:
            return np.zeros((0, 15), dtype=np.float32)
        faces = np.concatenate(rows).astype(np.float32)
        keep = cv2.dnn.NMSBoxes(faces[:, :4].tolist(), faces[:, 14].tolist(),
                                self.score_threshold, self.nms_threshold, top_k=self.top_k)
        return faces[np.asarray(keep, dtype=np.int64).reshape(-1)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2

        if image.ndim != 3 or image.shape[0] < 8 or image.shape[1] < 8:
            return []
        work, scale = resize_longest_side(image, self.max_side)
        bgr = cv2.cvtColor(work, cv2.COLOR_RGB2BGR)
        if self.runtime == "onnxruntime":
            raw = self._raw_onnxruntime(bgr)
        else:
            detector = self._model()
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, raw = detector.detect(bgr)
        if raw is None or len(raw) == 0:
            return []
        faces = []
        for row in np.asarray(raw, dtype=np.float32):
            x, y, w, h = (float(v) for v in row[:4])
            if w <= 1 or h <= 1:
                continue
            det = Detection(
                box=np.array([x, y, x + w, y + h], dtype=np.float32),
                score=float(row[14]),
                landmarks=row[4:14].reshape(5, 2).astype(np.float32),
            )
            faces.append(det.scaled(1.0 / scale) if scale != 1.0 else det)
        faces.sort(key=lambda d: d.score, reverse=True)
        if self.refiner is not None and faces:
            faces = self.refiner.refine(image, faces)
        return faces


def select_faces(
    detections: list[Detection],
    image_shape: tuple[int, ...],
    *,
    selection: Selection = "largest",
    min_face_size: float = 0.0,
    score_threshold: float = 0.0,
) -> list[Detection]:
    """Apply the score threshold and minimum face size, then the selection policy:
    ``largest`` (biggest box), ``central`` (box centre nearest the image centre) or ``all``
    (every face, largest first)."""
    kept = [d for d in detections if d.score >= score_threshold and d.size >= min_face_size]
    if not kept:
        return []
    if selection == "largest":
        return [max(kept, key=lambda d: d.area)]
    if selection == "central":
        cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0
        return [min(kept, key=lambda d: ((d.center[0] - cx) ** 2 + (d.center[1] - cy) ** 2,
                                         -d.area))]
    if selection == "all":
        return sorted(kept, key=lambda d: d.area, reverse=True)
    raise ValueError(f"unknown face selection {selection!r}; use largest, central or all")


def _mtcnn(**options: Any) -> Detector:
    from marginface.align.mtcnn import MTCNNDetector

    return MTCNNDetector(**options)


DETECTORS = {"yunet": YuNetDetector, "mtcnn": _mtcnn}


def load_detector(name: str = "yunet", **options: Any) -> Detector:
    """A detector by name: ``yunet`` (default) or ``mtcnn`` (both with weights that ship with
    marginface).

    ``options`` go to the backend (e.g. ``score_threshold``, ``max_side``).
    """
    key = name.lower()
    if key not in DETECTORS:
        from marginface.errors import ConfigError

        raise ConfigError(f"unknown face detector {name!r}; available: {', '.join(DETECTORS)}")
    return DETECTORS[key](**options)
