"""The YuNet face detector and the detectors by name (``load_detector``).

What a detector returns, its interface and the face-selection policy live in
:mod:`marginface.align.detection` (re-exported here); MTCNN in :mod:`marginface.align.mtcnn`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from marginface.align.detection import Detection, Detector, Selection, select_faces
from marginface.align.image import resize_longest_side
from marginface.align.mtcnn import MTCNNDetector, ONetRefiner
from marginface.align.weights import bundled_model
from marginface.errors import ConfigError, ModelError
from marginface.runtime import PerThreadModel, dequantized_onnx_bytes, onnx_session, quiet_opencv

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

_YUNET_STRIDES = (8, 16, 32)
#: YuNet's output heads: per stride, class and objectness scores, box offsets and landmarks.
_YUNET_OUTPUTS = [
    f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in _YUNET_STRIDES
]


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
            self.refiner = ONetRefiner()
        self.refine_landmarks = bool(refine_landmarks)

    @property
    def _model_label(self) -> str:
        return f"the YuNet model {self.model_path}"

    def _create_model(self) -> Any:
        import cv2  # heavy: cv2

        if self.runtime == "onnxruntime":
            if self._onnx is None:
                self._onnx = dequantized_onnx_bytes(
                    self.model_path,
                    "YuNet",
                    input_axes={2: "height", 3: "width"},
                    output_axes={1: "anchors"},
                )
            return onnx_session(self._onnx, threads=self.threads)
        return cv2.FaceDetectorYN.create(
            str(self.model_path),
            "",
            (320, 320),
            self.score_threshold,
            self.nms_threshold,
            self.top_k,
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
        import cv2  # heavy: cv2

        session = self._model()
        h, w = bgr.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        outputs = dict(
            zip(_YUNET_OUTPUTS, session.run(_YUNET_OUTPUTS, {"input": blob}), strict=True)
        )
        rows = []
        for stride in _YUNET_STRIDES:
            cls, obj, bbox, kps = (
                outputs[f"{kind}_{stride}"][0] for kind in ("cls", "obj", "bbox", "kps")
            )
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
        kept = cv2.dnn.NMSBoxes(
            faces[:, :4].tolist(),
            faces[:, 14].tolist(),
            self.score_threshold,
            self.nms_threshold,
            top_k=self.top_k,
        )
        return faces[np.asarray(kept, dtype=np.int64).reshape(-1)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        import cv2  # heavy: cv2

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


def _mtcnn(**options: Any) -> Detector:

    return MTCNNDetector(**options)


DETECTORS: dict[str, Callable[..., Detector]] = {"yunet": YuNetDetector, "mtcnn": _mtcnn}


def load_detector(name: str = "yunet", **options: Any) -> Detector:
    """A detector by name: ``yunet`` (default) or ``mtcnn`` (both with weights that ship with
    marginface).

    ``options`` go to the backend (e.g. ``score_threshold``, ``max_side``).
    """
    key = name.lower()
    if key not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; available: {', '.join(DETECTORS)}")
    return DETECTORS[key](**options)
