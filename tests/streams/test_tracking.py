"""Faces followed across frames: occlusions keep one track, two faces get two tracks."""

from __future__ import annotations

import numpy as np
import pytest

from marginface.align.detection import Detection
from marginface.streams.tracking import FaceTracker
from tests.streams.synthetic import render_frames

FPS = 5.0


def det(cx: float, cy: float, size: float = 34.0, score: float = 0.9) -> Detection:
    half = size / 2
    box = np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)
    marks = np.array(
        [[cx - 8, cy - 5], [cx + 8, cy - 5], [cx, cy + 2], [cx - 6, cy + 9], [cx + 6, cy + 9]],
        dtype=np.float32,
    )
    return Detection(box=box, score=score, landmarks=marks)


def test_a_short_occlusion_keeps_one_track_and_the_track_ends_after_the_buffer() -> None:
    tracker = FaceTracker(FPS, track_buffer_s=1.0)
    ids, ended = [], []
    for k in range(30):  # 40 px per processed frame: more than the face's own width
        t = k / FPS
        hidden = 12 <= k < 15  # 0.6 s behind a pillar
        faces = [] if hidden else [det(100 + 40 * k, 300 + 2 * k)]
        for track_id, d in tracker.update(faces, t):
            assert d is faces[0]  # the detection itself comes back, not a copy
            ids.append(track_id)
        ended += tracker.ended(t)
    assert len(ids) >= 26 and set(ids) == {ids[0]}  # one track throughout (bar the first frame)
    assert ended == []
    assert tracker.open_tracks() == 1
    # the face leaves: the track ends once it has been lost longer than track_buffer_s
    t = 30 / FPS
    for k in range(8):
        tracker.update([], t + k / FPS)
        ended += tracker.ended(t + k / FPS)
    assert ended == [ids[0]] and tracker.open_tracks() == 0


def test_two_faces_at_once_and_a_crossing_give_two_tracks_without_a_switch() -> None:
    tracker = FaceTracker(FPS, track_buffer_s=1.0)
    owners: dict[int, set[str]] = {}
    for k in range(24):
        a, b = det(100 + 45 * k, 300), det(1180 - 45 * k, 330, size=40)
        faces = [a, b]
        for track_id, d in tracker.update(faces, k / FPS):
            owners.setdefault(track_id, set()).add("a" if d is a else "b")
    assert len(owners) == 2 and all(len(v) == 1 for v in owners.values())
    closed = tracker.close_all()
    assert sorted(closed) == sorted(owners) and tracker.open_tracks() == 0
    # ids are never reused, also after close_all
    new = tracker.update([det(500, 300)], 10.0) + tracker.update([det(520, 300)], 10.2)
    assert new and new[0][0] not in owners


def test_low_scored_detections_continue_tracks_but_start_none() -> None:
    tracker = FaceTracker(FPS, activation_threshold=0.6)
    assert tracker.update([det(100, 100, score=0.5)], 0.0) == []
    assert tracker.update([det(110, 100, score=0.5)], 0.2) == []
    tracker.update([det(300, 300, score=0.9)], 0.4)
    tracked = tracker.update([det(320, 300, score=0.55)], 0.6)  # a weak frame of a track
    assert len(tracked) == 1


def test_a_rendered_occlusion_scene_is_one_track(stream_scenes, default_pipeline) -> None:
    """YuNet on the rendered ``occlusion`` scene (hidden 0.5 s behind a pillar) at 5 fps."""
    scene = stream_scenes["occlusion"]
    detector = default_pipeline.detector
    tracker = FaceTracker(FPS, track_buffer_s=1.0)
    indices = list(range(0, scene.n_frames, round(scene.fps / FPS)))
    ids, hidden_frames = [], 0
    for i, image in zip(indices, render_frames(scene, indices), strict=True):
        faces = [d for d in detector.detect(image) if d.size >= 20]
        hidden_frames += not faces
        ids += [track_id for track_id, _ in tracker.update(faces, scene.time(i))]
    assert hidden_frames >= 3  # before entering, behind the pillar, after leaving
    assert len(ids) >= 30 and len(set(ids)) == 1
    assert tracker.close_all() == [ids[0]]


@pytest.mark.parametrize("t", [0.0, 0.0, -1.0])
def test_repeated_or_backward_times_do_not_lose_detections(t: float) -> None:
    tracker = FaceTracker(FPS)
    tracker.update([det(100, 100)], 0.0)
    assert len(tracker.update([det(110, 100)], t)) == 1
