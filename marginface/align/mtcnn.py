"""MTCNN (Zhang et al., 2016) with facenet-pytorch 2.6.0's port of its weights.

The ``pnet.pt``/``rnet.pt``/``onet.pt`` state dicts ship with marginface
(``marginface/weights/mtcnn/``, MIT, checked by SHA-256; see ``LICENSES.md`` there).
``facenet_pytorch`` itself needs torchvision and is not used: the three networks and the
cascade are re-implemented here (following facenet-pytorch's MIT-licensed ``detect_face``) with
a numpy NMS.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from marginface.align.detection import Detection, Detector
from marginface.align.image import resize_longest_side
from marginface.align.weights import bundled_model, mtcnn_weights_dir
from marginface.errors import ModelError
from marginface.runtime import onnx_session

__all__ = ["MTCNNDetector", "nms"]


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union"
) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap by IoU or by the smaller box)."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _nets() -> tuple[Any, Any, Any]:
    from torch import nn  # heavy: torch

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
            self.prelu1 = nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
            self.prelu2 = nn.PReLU(16)
            self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
            self.prelu3 = nn.PReLU(32)
            self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
            self.softmax4_1 = nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = self.prelu1(self.conv1(x))
            x = self.pool1(x)
            x = self.prelu2(self.conv2(x))
            x = self.prelu3(self.conv3(x))
            return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
            self.prelu1 = nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
            self.prelu2 = nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
            self.prelu3 = nn.PReLU(64)
            self.dense4 = nn.Linear(576, 128)
            self.prelu4 = nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.softmax5_1 = nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x: Any) -> tuple[Any, Any]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
            self.prelu1 = nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
            self.prelu2 = nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
            self.prelu3 = nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
            self.prelu4 = nn.PReLU(128)
            self.dense5 = nn.Linear(1152, 256)
            self.prelu5 = nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.softmax6_1 = nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x: Any) -> tuple[Any, Any, Any]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    return PNet(), RNet(), ONet()


def _square(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += reg[:, 0] * w
    boxes[:, 1] += reg[:, 1] * h
    boxes[:, 2] += reg[:, 2] * w
    boxes[:, 3] += reg[:, 3] * h
    return boxes


class MTCNNDetector(Detector):
    """The three-stage MTCNN cascade on one image (CPU, PyTorch)."""

    name = "mtcnn"

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        *,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 1280,
        score_threshold: float | None = None,
    ) -> None:
        import torch  # heavy: torch

        folder = Path(weights_dir) if weights_dir else mtcnn_weights_dir()
        self.pnet, self.rnet, self.onet = _nets()
        for net, filename in (
            (self.pnet, "pnet.pt"),
            (self.rnet, "rnet.pt"),
            (self.onet, "onet.pt"),
        ):
            path = folder / filename
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=True)
            except FileNotFoundError:
                raise ModelError(f"MTCNN weights not found: {path}") from None
            except Exception as exc:
                raise ModelError(f"{path}: cannot load MTCNN weights ({str(exc)[:200]})") from None
            net.eval()
        self.min_face_size = int(min_face_size)
        t1, t2, t3 = thresholds
        if score_threshold is not None:
            t3 = float(score_threshold)
        self.thresholds = (float(t1), float(t2), float(t3))
        self.factor = float(factor)
        self.max_side = int(max_side)
        self._lock = threading.Lock()  # torch modules are shared: one image at a time

    def _crops(self, img: Any, boxes: np.ndarray, size: int) -> Any:
        # heavy: torch
        import torch
        from torch.nn.functional import interpolate

        h, w = img.shape[2:4]
        b = np.trunc(boxes[:, :4]).astype(np.int64)
        x = np.maximum(b[:, 0], 1)
        y = np.maximum(b[:, 1], 1)
        ex = np.minimum(b[:, 2], w)
        ey = np.minimum(b[:, 3], h)
        crops, keep = [], []
        for k in range(len(b)):
            if ey[k] > y[k] - 1 and ex[k] > x[k] - 1:
                patch = img[:, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]]
                crops.append(interpolate(patch, size=(size, size), mode="area"))
                keep.append(k)
        if not crops:
            return None, np.zeros(0, dtype=np.int64)
        return (torch.cat(crops) - 127.5) * 0.0078125, np.asarray(keep, dtype=np.int64)

    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # heavy: torch
        import torch
        from torch.nn.functional import interpolate

        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        h, w = img.shape[2:4]
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor
        # stage 1: proposal network over the pyramid
        found = []
        for s in scales:
            data = interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            reg, probs = self.pnet((data - 127.5) * 0.0078125)
            prob = probs[0, 1].numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if ys.size == 0:
                continue
            score = prob[ys, xs]
            offsets = reg[0].numpy()[:, ys, xs].T
            q1 = np.floor((2 * np.stack([xs, ys], 1) + 1) / s)
            q2 = np.floor((2 * np.stack([xs, ys], 1) + 12) / s)
            cand = np.concatenate([q1, q2, score[:, None], offsets], axis=1)
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * regw,
                boxes[:, 1] + boxes[:, 6] * regh,
                boxes[:, 2] + boxes[:, 7] * regw,
                boxes[:, 3] + boxes[:, 8] * regh,
                boxes[:, 4],
            ],
            axis=1,
        )
        boxes = _square(boxes)
        # stage 2: refinement
        data, keep = self._crops(img, boxes, 24)
        if data is None:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        boxes = boxes[keep]
        reg, probs = self.rnet(data)
        score = probs[:, 1].numpy()
        ok = score > self.thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        reg = reg.numpy()[ok]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_regress(boxes[pick], reg[pick]))
        if len(boxes) == 0:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        # stage 3: output network with landmarks
        data, keep = self._crops(img, boxes, 48)
        if data is None:
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        boxes = boxes[keep]
        reg, points, probs = (t.numpy() for t in self.onet(data))
        score = probs[:, 1]
        ok = score > self.thresholds[2]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        reg, points = reg[ok], points[ok]
        wi = boxes[:, 2] - boxes[:, 0] + 1
        hi = boxes[:, 3] - boxes[:, 1] + 1
        px = wi[:, None] * points[:, :5] + boxes[:, 0:1] - 1
        py = hi[:, None] * points[:, 5:10] + boxes[:, 1:2] - 1
        landmarks = np.stack([px, py], axis=2)
        boxes = _regress(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, method="min")
        return boxes[pick], landmarks[pick]

    def refine(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """Re-estimate the landmarks of boxes found by another detector with MTCNN's output
        network (robust to head roll); boxes and scores are kept."""
        import torch  # heavy: torch

        if not detections:
            return []
        img = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
        boxes = _square(np.array([np.r_[d.box, d.score] for d in detections], dtype=np.float64))
        with self._lock, torch.inference_mode():
            data, keep = self._crops(img, boxes, 48)
            if data is None:
                return list(detections)
            _, points, probs = (t.numpy() for t in self.onet(data))
        out = list(detections)
        for k, pts, p in zip(keep, points, probs[:, 1], strict=True):
            b = boxes[k]
            wi, hi = b[2] - b[0] + 1, b[3] - b[1] + 1
            lm = np.stack([wi * pts[:5] + b[0] - 1, hi * pts[5:10] + b[1] - 1], axis=1)
            out[k] = Detection(
                box=detections[k].box,
                score=detections[k].score,
                landmarks=lm.astype(np.float32),
                face_prob=float(p),
            )
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        import torch  # heavy: torch

        if image.ndim != 3 or min(image.shape[:2]) < 12:
            return []
        work, scale = resize_longest_side(image, self.max_side)
        with self._lock, torch.inference_mode():
            boxes, landmarks = self._detect(work)
        faces = []
        for box, pts in zip(boxes, landmarks, strict=True):
            det = Detection(
                box=box[:4].astype(np.float32),
                score=float(box[4]),
                landmarks=pts.astype(np.float32),
                face_prob=float(box[4]),  # MTCNN's score is ONet's face probability
            )
            faces.append(det.scaled(1.0 / scale) if scale != 1.0 else det)
        faces.sort(key=lambda d: d.score, reverse=True)
        return faces


class ONetRefiner:
    """MTCNN's output network alone, exported once to ONNX and run with onnxruntime on one
    thread: re-estimates the five landmarks inside boxes found by another detector (about a
    millisecond per face, robust to head roll)."""

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        import torch  # heavy: torch

        path = Path(weights_dir) / "onet.pt" if weights_dir else bundled_model("mtcnn-onet")
        onet = _nets()[2]
        try:
            onet.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise ModelError(f"MTCNN weights not found: {path}") from None
        except Exception as exc:
            raise ModelError(f"{path}: cannot load MTCNN weights ({str(exc)[:200]})") from None
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # torch's hints allow only paths here; a BytesIO works with dynamo=False.
            torch.onnx.export(
                onet.eval(),
                (torch.zeros(1, 3, 48, 48),),
                buffer,  # type: ignore[arg-type]
                input_names=["input"],
                output_names=["reg", "points", "prob"],
                dynamic_axes={"input": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )
        self.session = onnx_session(buffer.getvalue(), threads=1)

    def refine(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The same detections with landmarks re-estimated by ONet and ONet's face
        probability (:attr:`Detection.face_prob`); boxes and scores kept."""
        import cv2  # heavy: cv2

        if not detections:
            return []
        h, w = image.shape[:2]
        boxes = _square(np.array([np.r_[d.box, d.score] for d in detections], dtype=np.float64))
        patches, keep = [], []
        for k, b in enumerate(np.trunc(boxes[:, :4]).astype(np.int64)):
            x0, y0 = max(int(b[0]), 1) - 1, max(int(b[1]), 1) - 1
            x1, y1 = min(int(b[2]), w), min(int(b[3]), h)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            patch = cv2.resize(image[y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA)
            patches.append(patch)
            keep.append(k)
        if not patches:
            return list(detections)
        x = (np.stack(patches).astype(np.float32).transpose(0, 3, 1, 2) - 127.5) * 0.0078125
        points, prob = self.session.run(["points", "prob"], {"input": x})
        out = list(detections)
        for k, pts, p in zip(keep, points, prob[:, 1], strict=True):
            b = boxes[k]
            wi, hi = b[2] - b[0] + 1, b[3] - b[1] + 1
            lm = np.stack([wi * pts[:5] + b[0] - 1, hi * pts[5:10] + b[1] - 1], axis=1)
            out[k] = Detection(
                box=detections[k].box,
                score=detections[k].score,
                landmarks=lm.astype(np.float32),
                face_prob=float(p),
            )
        return out
