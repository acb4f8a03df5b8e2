"""Camera streams on real footage (``../shared/data/video-real``), against the truth written
by eye beside these tests (``tests/streams/real/``; how it was made: ``make_truth.py``).

People are enrolled from frames of one clip and looked for in others (``footage.ENROLMENT``),
beside celeba-dev distractors. The figures over every clip and 2, 5 and 10 frames/s are
``bench/streams_real.py``'s; these tests hold what must never happen on any run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.streams.real import footage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_gallery_path(
    shared_data: Path, default_pipeline: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A gallery of the clips' enrolled people and 10 celeba-dev distractors (built once)."""
    from marginface.gallery import Gallery

    path = tmp_path_factory.mktemp("real") / "gallery.db"
    dev = sorted(p for p in (shared_data / "celeba-dev").iterdir() if p.is_dir())[:10]
    with Gallery.open(path, card=default_pipeline.embedder.card) as gallery:
        subjects = footage.enrol_people(gallery, default_pipeline, dev)
    return path, subjects


@pytest.fixture
def real_gallery(
    real_gallery_path: tuple[Path, dict[str, str]], default_pipeline: Any, tmp_path: Path
) -> Iterator[tuple[Any, dict[str, str]]]:
    from marginface.gallery import Gallery

    copy = tmp_path / "gallery.db"
    shutil.copyfile(real_gallery_path[0], copy)
    with Gallery.open(copy, card=default_pipeline.embedder.card, create=False) as gallery:
        yield gallery, real_gallery_path[1]


def test_no_track_carries_two_people_in_the_crowd(real_gallery, default_pipeline) -> None:
    """People crossing and occluding each other at an entrance: no track passes from one
    person to another, no box carries a wrong name, every person is one visit."""
    gallery, subjects = real_gallery
    truth = footage.load_truth("crowd-entrance")
    run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5)
    s = footage.score(truth, run, subjects)
    assert s["tracks_two_people"] == 0, s["tracks_two_people_detail"]
    assert s["named_boxes"] >= 40 and s["named_right"] == s["named_boxes"], s[
        "named_wrong_examples"
    ]
    assert all(n == 1 for n in s["visits"].values()), s["visits"]
    assert {"crowd-entrance:A", "crowd-entrance:B", "crowd-entrance:C"} <= set(s["visits"])
    assert s["visits_not_faces"] == 0


def test_an_enrolled_person_with_a_poor_start_is_named_once_a_clear_face_appears(
    real_gallery, default_pipeline
) -> None:
    """woman1, enrolled from another clip, first turns her head away (profile): the system
    waits, then names her once her face turns to the camera, and never names anyone else."""
    gallery, subjects = real_gallery
    truth = footage.load_truth("intel-head-pose-face-detection-female")
    run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5)
    states = [
        (r["frame"], t["state"], subjects.get(t["subject_id"]))
        for r in run.records
        for t in r["tracks"]
    ]
    first_named = next(f for f, state, _ in states if state == "known")
    assert states[0][1] == "undecided"  # the profile at the start says nothing
    assert first_named > states[0][0]
    assert {who for _, state, who in states if state == "known"} == {"woman1"}
    s = footage.score(truth, run, subjects)
    assert s["recall"] is not None and s["recall"] >= 0.5
    assert [e.kind for e in run.events].count("arrived") == 1


def test_a_shot_cut_ends_every_track(real_gallery, default_pipeline, tmp_path: Path) -> None:
    """Two clips joined: the woman in the first shot and the man in the second stand in the
    same place, which IoU tracking alone would carry across the cut."""
    gallery, subjects = real_gallery
    names = ["intel-head-pose-face-detection-female", "intel-head-pose-face-detection-male"]
    truth = footage.joined(names, tmp_path / "cut.mp4")
    (cut,) = truth["cuts"]
    run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5)
    before = {t["track_id"] for r in run.records if r["frame"] < cut for t in r["tracks"]}
    after = {t["track_id"] for r in run.records if r["frame"] >= cut for t in r["tracks"]}
    assert before and after and not before & after
    assert run.status["scene_cuts"] == 1
    s = footage.score(truth, run, subjects)
    assert s["tracks_two_people"] == 0 and s["named_right"] == s["named_boxes"] > 0
    assert sorted(s["visits"]) == ["man1", "woman1"]
    assert any(e.kind == "left" and e.reason == "cut" for e in run.events)


def test_backs_of_heads_open_no_visit(real_gallery, default_pipeline) -> None:
    """Seven people walk away from the camera: heads, ears and hair, detected as faces by
    YuNet (scores up to 0.8), open no visit."""
    gallery, _ = real_gallery
    truth = footage.load_truth("one-by-one-backs")
    run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5)
    assert run.events == []
    assert run.status["faces_seen"] > 0  # they were detected, and tracked


def test_small_faces_are_counted_and_the_summary_says_they_were_too_small(
    real_gallery, default_pipeline
) -> None:
    """A 480x270 stream whose two faces are 12-24 px: detected on an enlarged copy, tracked,
    counted as unknown visits (too small to identify)."""
    gallery, subjects = real_gallery
    truth = footage.load_truth("intel-face-demographics-walking")
    run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5)
    s = footage.score(truth, run, subjects)
    assert s["visits"] == {
        "intel-face-demographics-walking:P": 1,
        "intel-face-demographics-walking:Q": 1,
    }
    assert all(e.subject_id is None for e in run.events)
    assert run.status["faces_too_small"] > 0


def test_an_empty_gallery_counts_strangers_and_keeps_them_apart(
    default_pipeline, tmp_path: Path
) -> None:
    """Before anyone is enrolled: three people walking in are three unknown visits, recorded
    as three visitors (two women and a man, never merged), with their faces for review; a
    visitor of two people is refused at assignment."""
    from marginface.gallery import FacesUnlikeError, Gallery, Recognizer
    from marginface.streams.recorder import VisitRecorder

    truth = footage.load_truth("intel-face-demographics-walking-and-pause")
    with Gallery.open(tmp_path / "empty.db", card=default_pipeline.embedder.card) as gallery:
        recorder = VisitRecorder(gallery, store_crops=True)
        run = footage.run_clip(truth["path"], default_pipeline, gallery, fps=5, sinks=[recorder])
        s = footage.score(truth, run, {})
        assert s["people_with_visits"] == s["visits_real_people"] == 3
        visitors = gallery.visitors.list()
        assert len(visitors) == 3 and all(v.faces and v.faces[0].has_crop for v in visitors)
        # A visitor holding two of them (as a track passing between people would give) is
        # not enrolled as one person: the assignment is refused until it is split.
        left = [e for e in run.events if e.kind == "left"]
        two = np.vstack([f.embedding for e in left[:2] for f in e.evidence[:2]])
        mixed = gallery.visitors.record("door", 0.0, 1.0, two, [1.0] * len(two))
        assert mixed.new  # the faces do not agree with either visitor
        with pytest.raises(FacesUnlikeError) as refused:
            Recognizer(gallery, default_pipeline).assign_visitor(mixed.visitor_id, name="Both")
        assert refused.value.reason == "each_other"
        assert gallery.subjects.count() == 0


def test_tracks_jsonl_and_annotate_on_a_real_clip(
    real_gallery_path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import av

    from marginface.cli import main

    clip = footage.load_truth("intel-head-pose-face-detection-female-and-male")["path"]
    tracks, video = tmp_path / "tracks.jsonl", tmp_path / "annotated.mp4"
    db = str(real_gallery_path[0])
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "watch",
                str(clip),
                "--db",
                db,
                "--tracks-jsonl",
                str(tracks),
                "--annotate",
                str(video),
            ]
        )
    assert exc.value.code in (0, None), capsys.readouterr().err
    with av.open(str(clip)) as a, av.open(str(video)) as b:
        assert sum(1 for _ in a.decode(video=0)) == sum(1 for _ in b.decode(video=0))
    records = [json.loads(line) for line in tracks.read_text().splitlines()]
    assert len(records) == len({r["frame"] for r in records}) > 10
    named = {t["name"] for r in records for t in r["tracks"] if t["state"] == "known"}
    assert named == {"man1", "woman1"}
