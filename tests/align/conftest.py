"""Fixtures for the alignment tests: the astronaut photo and one YuNet detector per session."""

from __future__ import annotations

import numpy as np
import pytest

# Eye centres of skimage.data.astronaut() (512x512), annotated by hand: image-left eye first.
ASTRONAUT_EYES = np.array([[203.5, 101.8], [245.0, 103.5]], dtype=np.float32)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def yunet():
    """YuNet with its own landmarks (how celeba-train-112 was aligned)."""
    from marginface.align import load_detector

    return load_detector("yunet", refine_landmarks=False)


@pytest.fixture(scope="session")
def yunet_refined():
    """The default detector: YuNet boxes, landmarks refined by MTCNN's output network."""
    from marginface.align import load_detector

    detector = load_detector("yunet")
    assert detector.refine_landmarks
    return detector
