"""The embedding model of a gallery's faces: recorded in the store, checked at open, and the one
normalisation every vector goes through on its way in (stored faces and queries alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marginface.embed import l2_normalize
from marginface.errors import ConflictError, GalleryError
from marginface.gallery.db import Database

__all__ = ["EmbeddingModel", "bind_model"]


@dataclass(frozen=True)
class EmbeddingModel:
    """The model's name and embedding dimension (both None while the gallery has none)."""

    name: str | None
    dim: int | None

    def require(self) -> tuple[str, int]:
        """``(name, dim)``; :class:`GalleryError` while the gallery has no model."""
        if self.name is None or self.dim is None:
            raise GalleryError(
                "this gallery has no embedding model yet: open it with model_name and dim"
            )
        return self.name, self.dim

    def normalise(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, dim)`` float32 rows of unit length (a single vector becomes one row);
        :class:`GalleryError` for another shape, NaN or infinite values, or a zero vector."""
        _, dim = self.require()
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim == 1:
            e = e[None, :]
        if e.ndim != 2 or e.shape[1] != dim:
            raise GalleryError(
                f"embeddings must have shape (N, {dim}) for model {self.name!r}, "
                f"got {tuple(e.shape)}"
            )
        if not np.all(np.isfinite(e)):
            raise GalleryError("embeddings contain NaN or infinite values")
        if np.any(np.linalg.norm(e, axis=1) < 1e-12):
            raise GalleryError("an embedding is all zeros")
        return np.ascontiguousarray(l2_normalize(e))


def bind_model(db: Database, model_name: str | None, dim: int | None) -> EmbeddingModel:
    """The gallery's model: the recorded one when neither is given, else ``model_name``/``dim``,
    recorded unless the store holds faces of another model (:class:`ConflictError`)."""
    rows = dict(db.query("SELECT key, value FROM meta WHERE key IN ('model', 'dim')"))
    stored_model, stored_dim = rows.get("model"), rows.get("dim")
    stored_dim_i = int(stored_dim) if stored_dim is not None else None
    if model_name is None and dim is None:
        return EmbeddingModel(stored_model, stored_dim_i)
    if model_name is None or dim is None:
        raise GalleryError("give both model_name and dim (or neither)")
    dim = int(dim)
    if stored_model is not None and (stored_model != model_name or stored_dim_i != dim):
        n = db.scalar("SELECT COUNT(*) FROM faces")
        if n:
            raise ConflictError(
                f"this gallery holds {n} faces embedded with model {stored_model!r} "
                f"({stored_dim}-d); refusing model {model_name!r} ({dim}-d): embeddings of "
                "different models are not comparable. Use another gallery (--db) or delete "
                "its subjects and enrol again"
            )
    if stored_model != model_name or stored_dim_i != dim:
        with db.transaction():
            for key, value in (("model", model_name), ("dim", str(dim))):
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
                db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
    return EmbeddingModel(model_name, dim)
