"""Detection, selection and alignment on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.align import (
    Aligner,
    Detection,
    ImageTooSmallError,
    align_face,
    load_detector,
    read_image,
    select_faces,
    template_points,
)
from marginface.errors import ConfigError, ImageError

from .conftest import ASTRONAUT_EYES


def _eye_error(det: Detection) -> float:
    return float(np.linalg.norm(det.landmarks[:2] - ASTRONAUT_EYES, axis=1).max())


def test_yunet_landmarks_land_on_the_true_eyes(astronaut, yunet):
    faces = yunet.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert _eye_error(face) < 6.0
    x1, y1, x2, y2 = face.box
    assert x1 < 200 < x2 and y1 < 100 < y2
    # nose below the eyes, mouth corners below the nose
    assert face.landmarks[2, 1] > face.landmarks[:2, 1].max()
    assert face.landmarks[3:, 1].min() > face.landmarks[2, 1]


def test_mtcnn_landmarks_land_on_the_true_eyes(astronaut):
    detector = load_detector("mtcnn", min_face_size=40)
    faces = detector.detect(astronaut)
    assert faces and faces[0].score > 0.9
    assert _eye_error(faces[0]) < 6.0


def test_unknown_detector_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown face detector"):
        load_detector("haar")


def test_large_images_are_scaled_down_and_mapped_back(astronaut, yunet):
    import cv2

    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_LINEAR)
    detector = load_detector("yunet", max_side=640)
    faces = detector.detect(big)
    assert faces
    # coordinates are in the big image's pixels
    assert np.linalg.norm(faces[0].landmarks[:2] / 5.0 - ASTRONAUT_EYES, axis=1).max() < 7.0


def _rotate(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR), m


def test_refined_landmarks_follow_head_roll(astronaut, yunet, yunet_refined):
    import cv2

    assert _eye_error(yunet_refined.detect(astronaut)[0]) < 4.0
    rotated, m = _rotate(astronaut, 25.0)
    back = cv2.invertAffineTransform(m)

    def eye_error(detector) -> float:
        eyes = detector.detect(rotated)[0].landmarks[:2]
        return float(
            np.linalg.norm(eyes @ back[:, :2].T + back[:, 2] - ASTRONAUT_EYES, axis=1).max()
        )

    assert eye_error(yunet_refined) < 4.0
    assert eye_error(yunet) > eye_error(yunet_refined)  # YuNet alone barely follows roll


def _crop_agreement(aligner: Aligner, image: np.ndarray, angle: float) -> tuple[float, float]:
    original = aligner.align(image)
    rotated = aligner.align(_rotate(image, angle)[0])
    assert len(original.crops) == len(rotated.crops) == 1
    a = original.crops[0].astype(np.float32)
    b = rotated.crops[0].astype(np.float32)
    return float(np.abs(a - b).mean()), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_aligned_crop_of_a_rotated_copy_matches_the_original(astronaut, yunet_refined):
    """With roll-robust landmarks the crop of a copy turned by 25 degrees equals the original's
    crop up to interpolation (a 3-pixel shift of the crop costs about 20 grey levels)."""
    diff, corr = _crop_agreement(Aligner(yunet_refined), astronaut, 25.0)
    assert diff < 10.0 and corr > 0.97


def test_plain_yunet_aligns_a_slightly_turned_copy(astronaut, yunet):
    diff, corr = _crop_agreement(Aligner(yunet), astronaut, 6.0)
    assert diff < 20.0 and corr > 0.85


def _collage(astronaut: np.ndarray) -> np.ndarray:
    import cv2

    canvas = np.full((700, 1400, 3), 90, dtype=np.uint8)
    canvas[0:512, 0:512] = astronaut  # big face at the top left
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    canvas[222:478, 572:828] = small  # smaller face near the centre
    return canvas


def test_selection_policies(astronaut, yunet):
    collage = _collage(astronaut)
    detections = yunet.detect(collage)
    assert len(detections) == 2
    largest = select_faces(detections, collage.shape, selection="largest")
    central = select_faces(detections, collage.shape, selection="central")
    both = select_faces(detections, collage.shape, selection="all")
    assert len(largest) == len(central) == 1 and len(both) == 2
    assert largest[0].center[0] < 400 and central[0].center[0] > 600
    assert both[0].area > both[1].area
    big_size = max(d.size for d in detections)
    assert select_faces(detections, collage.shape, selection="all", min_face_size=big_size - 1) == [
        largest[0]
    ]
    assert select_faces(detections, collage.shape, score_threshold=1.01) == []
    with pytest.raises(ValueError):
        select_faces(detections, collage.shape, selection="biggest")  # type: ignore[arg-type]


def test_no_face_and_too_small_reasons(astronaut, yunet):
    aligner = Aligner(yunet, min_face_size=400)
    result = aligner.align(astronaut)
    assert result.faces == [] and result.reason == "too small" and len(result.crops) == 0
    blank = Aligner(yunet).align(np.full((200, 200, 3), 128, dtype=np.uint8))
    assert blank.reason == "no face" and blank.crops.shape == (0, 112, 112, 3)
    with pytest.raises(ImageTooSmallError, match="too small"):
        Aligner(yunet).align(np.zeros((12, 12, 3), dtype=np.uint8))
    assert issubclass(ImageTooSmallError, ImageError)


def test_112x96_template(astronaut, yunet):
    result = Aligner(yunet, template="arcface_112x96").align(astronaut)
    assert result.crops.shape == (1, 112, 96, 3)


def _mean_landmarks(detector, images) -> np.ndarray:
    found = []
    for image in images:
        faces = detector.detect(image)
        if faces:
            found.append(max(faces, key=lambda d: d.area).landmarks)
    assert len(found) >= 0.9 * len(images)
    return np.mean(found, axis=0)


@pytest.mark.slow
def test_crops_share_the_training_sets_geometry(shared_data, yunet, yunet_refined):
    """Crops of raw celeba-dev photos made by the default aligner look like the
    celeba-train-112 crops: YuNet finds the landmarks of both at the same template positions,
    and their mean faces agree."""
    train = sorted((shared_data / "celeba-train-112").glob("*/*.jpg"))[::100][:120]
    dev = sorted((shared_data / "celeba-dev").glob("*/*.jpg"))[::40][:40]
    train_crops = [read_image(p) for p in train]
    aligner = Aligner(yunet_refined)
    dev_crops = [c for p in dev for c in aligner.align(p).crops]
    assert len(dev_crops) >= 36
    points, _ = template_points()
    train_lm = _mean_landmarks(yunet, train_crops[:40])
    dev_lm = _mean_landmarks(yunet, dev_crops)
    # both sit on the template (YuNet puts mouth corners ~4.5 px high) and on each other
    assert np.abs(train_lm - points).max() < 5.0 and np.abs(dev_lm - points).max() < 5.0
    assert np.abs(dev_lm - train_lm).max() < 1.5
    mean_train = np.mean(train_crops, axis=0).mean(axis=2)
    mean_dev = np.mean(dev_crops, axis=0).mean(axis=2)
    corr = np.corrcoef(mean_train.ravel(), mean_dev.ravel())[0, 1]
    assert corr > 0.9
    # a crop misplaced by a few pixels would correlate worse
    shifted = np.roll(mean_dev, 5, axis=0)
    assert np.corrcoef(mean_train.ravel(), shifted.ravel())[0, 1] < corr


def test_align_face_on_detected_landmarks(astronaut, yunet):
    crop = align_face(astronaut, yunet.detect(astronaut)[0].landmarks)
    assert crop.shape == (112, 112, 3)
    # the eyes of the crop are darker than the skin between them
    eyes = crop[48:56, 34:42].mean() + crop[48:56, 70:78].mean()
    skin = crop[60:68, 50:62].mean()
    assert eyes / 2 < skin


def test_yunet_creation_prints_no_opencv_warning(capfd):
    import cv2

    from marginface.align import load_detector

    level = cv2.utils.logging.getLogLevel()
    detector = load_detector("yunet", refine_landmarks=False, runtime="opencv")
    detector.detect(np.zeros((64, 64, 3), np.uint8))
    assert "setPreferableTarget" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == level  # the global level is restored


def test_concurrent_detector_creation_restores_the_opencv_log_level(astronaut):
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from marginface.align import load_detector

    level = cv2.utils.logging.getLogLevel()
    detector = load_detector("yunet", refine_landmarks=False, runtime="opencv")
    with ThreadPoolExecutor(max_workers=4) as pool:  # one OpenCV model per thread
        found = list(pool.map(lambda _: len(detector.detect(astronaut)), range(8)))
    assert found == [1] * 8
    assert cv2.utils.logging.getLogLevel() == level


def test_yunet_in_onnxruntime_matches_cv2_facedetectoryn(shared_data, astronaut):
    """The onnxruntime path decodes YuNet exactly as OpenCV does, on real photos of any size."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from marginface.align import load_detector, read_image

    fast = load_detector("yunet", refine_landmarks=False)
    assert fast.runtime == "onnxruntime"
    reference = load_detector("yunet", refine_landmarks=False, runtime="opencv")
    paths = sorted((shared_data / "celeba-dev").glob("*/*.jpg"))[::60]
    images = [astronaut, astronaut[:301, :437], np.zeros((64, 64, 3), np.uint8)]
    images += [read_image(p) for p in paths]
    faces = 0
    for image in images:
        got, want = fast.detect(image), reference.detect(image)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert abs(a.score - b.score) < 1e-4
            faces += 1
    assert faces >= len(images) - 2
    # one network per thread, and the detector pickles for worker processes
    with ThreadPoolExecutor(max_workers=3) as pool:
        found = list(pool.map(lambda _: len(fast.detect(astronaut)), range(6)))
    assert found == [1] * 6
    copy = pickle.loads(pickle.dumps(fast))
    np.testing.assert_allclose(copy.detect(astronaut)[0].box, fast.detect(astronaut)[0].box)
    with pytest.raises(ConfigError, match="unknown YuNet runtime"):
        load_detector("yunet", runtime="tensorflow")
