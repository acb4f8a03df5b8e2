"""The detection defaults are one pair of constants, shared by every path that finds faces."""

from __future__ import annotations

import inspect

from marginface.align import Aligner
from marginface.align.batch import AlignJob
from marginface.detection_defaults import (
    DEFAULT_MIN_FACE_SIZE,
    DEFAULT_SCORE_THRESHOLD,
    DEFAULT_TRACKED_FACE_SIZE,
)
from marginface.embed import Pipeline
from marginface.streams.camera import CameraSettings


def test_every_path_defaults_to_the_same_limits() -> None:
    assert (DEFAULT_MIN_FACE_SIZE, DEFAULT_SCORE_THRESHOLD) == (20.0, 0.6)
    job, camera = AlignJob(), CameraSettings()
    assert (job.min_face_size, job.score_threshold) == (20.0, 0.6)
    # cameras count smaller faces than they identify (visits.min_eye_distance)
    assert (camera.min_face_size, camera.score_threshold) == (DEFAULT_TRACKED_FACE_SIZE, 0.6)
    for factory in (Aligner.__init__, Pipeline.__init__):
        params = inspect.signature(factory).parameters
        assert params["min_face_size"].default == DEFAULT_MIN_FACE_SIZE
        assert params["score_threshold"].default == DEFAULT_SCORE_THRESHOLD
