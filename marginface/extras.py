"""Which optional extra of ``pip install 'marginface[...]'`` brings which module.

The core install runs ``marginface serve``, ``enroll`` and ``identify`` on the default models
(their weights ship in ``marginface/weights/``) with a SQLite gallery and the exact index.
Everything else is an extra named in ``pyproject.toml``; ``all`` is every one of them. Each
optional import names its extra when it fails (for example
``GalleryError("the FAISS index needs faiss-cpu: pip install 'marginface[faiss]'")``), and
:func:`missing_extra_message` turns a bare ``ModuleNotFoundError`` into the same advice.
"""

from __future__ import annotations

__all__ = ["EXTRA_OF_MODULE", "SEPARATE_INSTALL", "install_hint", "missing_extra_message"]

#: Top-level module -> (the extra that installs it, the distribution's name on PyPI).
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "faiss": ("faiss", "faiss-cpu"),
    "psycopg": ("postgres", "psycopg"),
    "psycopg_pool": ("postgres", "psycopg-pool"),
    "pymilvus": ("milvus", "pymilvus"),
    "milvus_lite": ("milvus", "milvus-lite"),
    "albumentations": ("train", "albumentations"),
    "tensorboard": ("train", "tensorboard"),
    "matplotlib": ("plots", "matplotlib"),
    "sklearn": ("plots", "scikit-learn"),  # also in 'demo'; 'plots' is the larger set
    "av": ("streams", "av"),
    "paho": ("streams", "paho-mqtt"),
    "supervision": ("streams", "supervision"),
}

#: Modules installed by a command of their own rather than an extra (name -> command).
SEPARATE_INSTALL: dict[str, str] = {
    # trackers declares opencv-python, which would clash with opencv-python-headless
    "trackers": "pip install --no-deps 'trackers==2.6.1'",
}


def install_hint(extra: str) -> str:
    """The command that installs an extra: ``pip install 'marginface[<extra>]'``."""
    return f"pip install 'marginface[{extra}]'"


def missing_extra_message(exc: BaseException) -> str | None:
    """A one-line message naming the extra for an ``ImportError`` of an optional module, or
    None when the missing module is not one of marginface's extras."""
    if not isinstance(exc, ImportError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name in SEPARATE_INSTALL:
        return f"this needs {name}, which is not installed: {SEPARATE_INSTALL[name]}"
    if name not in EXTRA_OF_MODULE:
        return None
    extra, dist = EXTRA_OF_MODULE[name]
    return f"this needs {dist}, which is not installed: {install_hint(extra)}"
