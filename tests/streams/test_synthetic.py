"""The synthetic test videos: real celeba-dev photos passing a camera, encoded as H.264, with
ground truth that the real pipeline agrees with."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from marginface.errors import ConfigError
from tests.streams.synthetic import (
    STANDARD_SCENES,
    Passer,
    Scene,
    render_frames,
    truth,
)


def decode(path: Path, times: list[float] | None = None) -> tuple[dict, dict[int, np.ndarray]]:
    """The stream's properties, and the RGB frames nearest ``times`` (by frame index)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        wanted = {round(t * fps) for t in times or []}
        frames, count, last_t = {}, 0, 0.0
        for frame in container.decode(stream):
            if count in wanted:
                frames[count] = frame.to_ndarray(format="rgb24")
            last_t = float(frame.pts * stream.time_base)
            count += 1
        info = {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": fps,
            "frames": count,
            "last_t": last_t,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
        }
    return info, frames


def centre_in(box, area, margin: float = 0.0) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return area[0] - margin <= cx <= area[2] + margin and area[1] - margin <= cy <= area[3] + margin


def test_video_decodes_with_its_size_rate_and_length(scene_videos):
    path, _ = scene_videos["single"]
    scene = scene_videos.scenes["single"]
    info, frames = decode(path, [0.0, 4.0])
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"], info["fps"]) == (1280, 720, 25.0)
    assert info["frames"] == scene.n_frames == 200
    assert info["last_t"] == pytest.approx(scene.duration_s - 1 / scene.fps, abs=1e-3)
    # what was encoded is what render_frames draws (up to H.264's loss)
    drawn = dict(zip(sorted(frames), render_frames(scene, frames), strict=True))
    for i, frame in frames.items():
        assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(np.int16) - drawn[i]).mean() < 4.0


def test_ground_truth_is_consistent(stream_people, stream_scenes):
    assert set(stream_scenes) == set(STANDARD_SCENES)
    enrolled = {p.identity for p in stream_people.enrolled}
    strangers = {p.identity for p in stream_people.strangers}
    assert len(enrolled) == 6 and len(strangers) == 3 and not enrolled & strangers
    for p in stream_people.enrolled:  # enrolment photos never appear in a video
        assert len(p.enrol_photos) >= 3 and not set(p.enrol_photos) & set(p.video_photos)
    truths = {}
    for name, scene in stream_scenes.items():
        truths[name] = t = truth(scene)
        for passer in t:
            assert passer["enrolled"] == (passer["identity"] in enrolled)
            assert passer["enrolled"] or passer["identity"] in strangers
            runs = passer["visible"]
            assert runs, (name, passer["identity"])
            assert passer["enter_s"] <= runs[0][0] and runs[-1][1] < passer["exit_s"]
            assert all(a <= b for a, b in runs)
            assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(runs))
            assert passer["first_visible_s"] == runs[0][0]
        # the same scene from its JSON has the same truth
        again = Scene.from_json(scene.to_json())
        assert truth(again) == t and json.loads(again.to_json()) == json.loads(scene.to_json())

    (single,) = truths["single"]
    assert single["enrolled"] and len(single["visible"]) == 1
    assert single["visible"][0][1] - single["visible"][0][0] > 4.0
    a, b = truths["two_at_once"]
    assert (
        min(a["visible"][0][1], b["visible"][0][1]) - max(a["visible"][0][0], b["visible"][0][0])
        > 4.0
    )
    (occ,) = truths["occlusion"]  # hidden for the 0.5 s of the occlusion, and only then
    assert len(occ["visible"]) == 2
    hidden = occ["visible"][1][0] - occ["visible"][0][1]
    assert 0.5 <= hidden <= 0.6 and occ["visible"][0][1] < 4.8 <= 5.3 <= occ["visible"][1][0]
    (gap,) = truths["gap_revisit"]
    assert len(gap["visible"]) == 2 and 5.0 <= gap["visible"][1][0] - gap["visible"][0][1] <= 6.0
    (stranger,) = truths["stranger"]
    assert not stranger["enrolled"]
    door = truths["door"]
    assert len(door) >= 8 and {p["enrolled"] for p in door} == {True, False}
    assert len({p["identity"] for p in door}) == len(door)  # nobody passes twice
    together = sum(
        1
        for i, p in enumerate(door)
        for q in door[i + 1 :]
        if min(p["visible"][-1][1], q["visible"][-1][1])
        > max(p["visible"][0][0], q["visible"][0][0])
    )
    assert together >= 2


def test_passer_and_scene_validation(tmp_path):
    photo = tmp_path / "x.jpg"
    with pytest.raises(ConfigError, match="exit_s"):
        Passer("a", [photo], enter_s=2.0, exit_s=1.0)
    with pytest.raises(ConfigError, match="no photos"):
        Passer("a", [], enter_s=0.0, exit_s=1.0)
    with pytest.raises(ConfigError, match="interval"):
        Passer("a", [photo], enter_s=0.0, exit_s=1.0, occlusions=[(0.5, 0.2)])
    with pytest.raises(ConfigError, match="even"):
        Scene(duration_s=1.0, passers=[], width=641)


def test_frames_are_deterministic_and_noisy(stream_scenes):
    scene = Scene(**{**vars(stream_scenes["single"]), "duration_s": 0.2})
    first = list(render_frames(scene))
    second = list(render_frames(scene))
    assert len(first) == 5 and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])  # sensor noise changes every frame
    assert np.abs(first[0].astype(np.int16) - first[1]).mean() < 4.0


def test_detector_sees_passers_where_the_truth_says(scene_videos, default_pipeline):
    """On decoded frames: a face at the passer's face box when visible, none during the
    occlusion, none before the passer enters."""
    path, _ = scene_videos["occlusion"]
    scene = scene_videos.scenes["occlusion"]
    times = [0.2, 2.0, 3.5, 5.0, 7.0]
    _, frames = decode(path, times)
    for t in times:
        placed = scene.faces_at(t)
        faces = default_pipeline.align(frames[round(t * scene.fps)]).faces
        visible = [p for p in placed if p.visible]
        if t in (0.2, 5.0):
            assert not visible and not faces, (t, [f.box for f in faces])
            if t == 5.0:
                assert placed and placed[0].occluded
            continue
        (p,) = visible
        assert len(faces) == 1, t
        face = faces[0].box
        assert centre_in(face, p.face_box, margin=10), (t, face, p.face_box)
        iou_area = (min(face[2], p.face_box[2]) - max(face[0], p.face_box[0])) * (
            min(face[3], p.face_box[3]) - max(face[1], p.face_box[1])
        )
        union = (
            (face[2] - face[0]) * (face[3] - face[1])
            + (p.face_box[2] - p.face_box[0]) * (p.face_box[3] - p.face_box[1])
            - iou_area
        )
        assert iou_area / union > 0.5, t


def test_two_people_at_once_are_both_detected(stream_scenes, default_pipeline):
    from marginface.embed.pipeline import Pipeline

    scene = stream_scenes["two_at_once"]
    every = Pipeline(default_pipeline.detector, default_pipeline.embedder, selection="all")
    (frame,) = render_frames(scene, [125])
    faces = every.align(frame).faces
    placed = [p for p in scene.faces_at(5.0) if p.visible]
    assert len(placed) == 2 and len(faces) == 2
    for p in placed:
        assert any(centre_in(f.box, p.face_box, margin=10) for f in faces)


def test_video_faces_match_the_enrolled_gallery(scene_videos, enrolled_gallery, default_pipeline):
    """The real pipeline end to end: faces of decoded frames identified in the gallery
    enrolled from other photos; the enrolled passer by name, the stranger as unknown."""
    from marginface.gallery import Recognizer

    rec = Recognizer(enrolled_gallery, default_pipeline)
    assert enrolled_gallery.subjects.count() == 6
    for name, enrolled in (("single", True), ("stranger", False)):
        scene = scene_videos.scenes[name]
        (passer,) = truth(scene)
        ((a, b),) = passer["visible"]
        times = list(np.linspace(a + 0.3, b - 0.3, 6))
        if enrolled:  # decoded from the H.264 file
            _, frames = decode(scene_videos[name][0], times)
        else:  # drawn (saves encoding a second video)
            idx = [round(t * scene.fps) for t in times]
            frames = dict(zip(idx, render_frames(scene, idx), strict=True))
        answers = []
        for t in times:
            found = rec.identify(frames[round(t * scene.fps)])
            assert len(found) == 1, (name, t)
            answers.append(found[0].identification)
        if enrolled:
            named = [x.name for x in answers if x.known]
            assert named.count(passer["identity"]) >= 4, (name, named)
        else:
            assert sum(not x.known for x in answers) >= 5, (name, answers)
