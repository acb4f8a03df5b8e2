"""Which detected faces are used, by default: the one place of the detection limits that the
aligner, the pipeline, batch alignment (``marginface align``) and the cameras share.

A module of its own that imports nothing, so that the CLI shows these defaults in ``--help``
without loading :mod:`marginface.align` (numpy, Pillow). :mod:`marginface.align` re-exports
them (``marginface.align.DEFAULT_MIN_FACE_SIZE``).
"""

__all__ = ["DEFAULT_MIN_FACE_SIZE", "DEFAULT_SCORE_THRESHOLD"]

#: Faces whose box's shorter side is smaller than this (pixels) are not used.
DEFAULT_MIN_FACE_SIZE = 20.0
#: Faces detected with a lower score than this are not used.
DEFAULT_SCORE_THRESHOLD = 0.6
