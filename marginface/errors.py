"""Errors that users can cause. Each carries a message meant to be read by a person.

The CLI and the service turn any :class:`MarginfaceError` into a one-line message or a JSON
error, never a traceback.
"""

from __future__ import annotations


class MarginfaceError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(MarginfaceError, ValueError):
    """A configuration file or value is wrong (unknown key, bad type, bad range)."""


class DataError(MarginfaceError):
    """A data set, label file or pairs file is missing or malformed."""


class ImageError(MarginfaceError):
    """An image cannot be read: not an image, empty, truncated or too large."""


class NoFaceError(MarginfaceError):
    """No face was found in an image where one was required."""


class ModelError(MarginfaceError):
    """A model file or checkpoint is missing, corrupt, or disagrees with its card."""


class GalleryError(MarginfaceError):
    """A gallery operation cannot be done (unknown subject, mixed models, ...)."""


class NotFoundError(GalleryError):
    """A subject, face or API key that the gallery does not hold (never made, or deleted)."""


class ConflictError(GalleryError):
    """A write that contradicts what is stored: an id that exists, faces of another model,
    revoking the last admin key. The request was valid; the gallery's state refuses it."""


class StorageError(GalleryError):
    """The gallery's database or vector index failed (a server-side fault, not the caller's).
    Nothing half-written is kept: the write was rolled back, or is reconciled at the next
    search."""
