"""Which detected faces are used, by default: the one place of the detection limits that the
aligner, the pipeline, batch alignment (``marginface align``) and the cameras share.

Cameras track and count smaller faces than photos use (:data:`DEFAULT_TRACKED_FACE_SIZE`): a
person far from a camera, or in a low-resolution stream, is counted before their face is large
enough to identify (the camera identifies from ``visits.min_eye_distance`` on).

A module of its own that imports nothing, so that the CLI shows these defaults in ``--help``
without loading :mod:`marginface.align` (numpy, Pillow). :mod:`marginface.align` re-exports
them (``marginface.align.DEFAULT_MIN_FACE_SIZE``).
"""

__all__ = ["DEFAULT_MIN_FACE_SIZE", "DEFAULT_SCORE_THRESHOLD", "DEFAULT_TRACKED_FACE_SIZE"]

#: Faces whose box's shorter side is smaller than this (pixels) are not used.
DEFAULT_MIN_FACE_SIZE = 20.0
#: Faces detected with a lower score than this are not used.
DEFAULT_SCORE_THRESHOLD = 0.6
#: Faces a camera tracks and counts: boxes from this many pixels (12-24 px faces of a 480x270
#: stream are people walking in).
DEFAULT_TRACKED_FACE_SIZE = 10.0
