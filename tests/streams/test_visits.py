"""One decision per visit: evidence per track, the open-set decision, re-appearance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from marginface.align.quality import FaceQuality
from marginface.card import ModelCard
from marginface.decision import IdentificationPolicy
from marginface.errors import GalleryError
from marginface.gallery import Gallery
from marginface.streams import VisitSettings, VisitTracker
from tests.impostor_tables import log_linear_tail

DIM = 32
rng = np.random.default_rng(7)
CENTRES = rng.standard_normal((4, DIM))
CENTRES /= np.linalg.norm(CENTRES, axis=1, keepdims=True)


def face(person: int, noise: float = 0.35) -> np.ndarray:
    """A photo of ``person`` (cosine ~0.8 to their other photos); person -1: a stranger."""
    base = rng.standard_normal(DIM) if person < 0 else CENTRES[person]
    e = base / np.linalg.norm(base) + noise * rng.standard_normal(DIM) / np.sqrt(DIM)
    return e / np.linalg.norm(e)


def quality(score_size: float = 40.0, sharp: float = 300.0, yaw: float = 0.0) -> FaceQuality:
    return FaceQuality(size=score_size, detection_score=0.95, sharpness=sharp, yaw=yaw, pitch=0.5)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    card = ModelCard(
        name="fake", architecture="mbf", embedding_dim=DIM, impostors=log_linear_tail(0.45)
    )
    with Gallery.open(tmp_path / "g.db", card=card) as g:
        g.create_subject("Ada", embeddings=np.vstack([face(0), face(0)]))
        g.create_subject("Grace", embeddings=np.vstack([face(1), face(1)]))
        yield g


def _walk(
    tracker: VisitTracker, track: int, person: int, start: float, frames: int = 10, fps: float = 5.0
) -> list:
    """A person crossing the view: every frame observed, embedded when the tracker asks."""
    events = []
    for i in range(frames):
        q = quality(20 + 4 * i)  # growing as they approach
        emb = face(person) if tracker.wants_embedding(track, q) else None
        ev = tracker.observe(track, start + i / fps, q, emb)
        if ev is not None:
            events.append(ev)
    left = tracker.end(track)
    return events + ([left] if left is not None else [])


def test_each_passer_is_one_visit_with_the_right_name(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, revisit_s=5))
    ada = _walk(tracker, 1, person=0, start=0.0)
    stranger = _walk(tracker, 2, person=-1, start=10.0)
    grace = _walk(tracker, 3, person=1, start=20.0)
    for events, name in ((ada, "Ada"), (stranger, None), (grace, "Grace")):
        assert [e.kind for e in events] == ["arrived", "left"]
        assert events[0].name == name and events[1].name == name
        assert events[0].faces == 3  # decided on the third good face
        assert events[1].end_s == pytest.approx(events[1].start_s + 9 / 5)
    assert len({e.visit_id for e in ada + stranger + grace}) == 3
    assert ada[0].threshold > 0.45  # the gallery's operating point for 2 subjects x 2 faces
    assert set(ada[0].to_dict()) >= {
        "camera",
        "track_id",
        "subject_id",
        "name",
        "score",
        "start_s",
        "end_s",
        "faces",
    }


def test_reappearance_within_the_window_is_the_same_visit(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(revisit_s=30))
    first = _walk(tracker, 1, person=0, start=0.0)
    back = _walk(tracker, 2, person=0, start=20.0)  # lost behind a pillar, back 18 s later
    assert [e.kind for e in back] == ["left"]  # no second "arrived"
    assert back[0].visit_id == first[0].visit_id and back[0].start_s == 0.0
    later = _walk(tracker, 3, person=0, start=200.0)  # long after: a new visit
    assert [e.kind for e in later] == ["arrived", "left"]
    assert later[0].visit_id != first[0].visit_id
    tracker.forget_before(210.0)  # drops the first visit only: the later one may continue
    again = _walk(tracker, 4, person=0, start=215.0)
    assert [e.kind for e in again] == ["left"] and again[0].visit_id == later[0].visit_id


def test_poor_or_brief_faces_decide_nothing(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, min_eye_distance=15))
    assert not tracker.wants_embedding(1, quality(score_size=8))  # too small
    assert not tracker.wants_embedding(1, quality(sharp=0.0))  # blurred
    assert tracker.wants_embedding(1, quality())
    assert tracker.observe(1, 0.0, quality(), face(0)) is None
    assert tracker.end(1) is None  # one face: too brief to say anything
    # a full track keeps its best faces only and embeds only better ones
    small = VisitTracker(gallery, "door", VisitSettings(min_faces=2, max_faces=2))
    small.observe(5, 0.0, quality(30), face(0))
    assert small.observe(5, 0.2, quality(35), face(0)) is not None  # decided
    assert small.wants_embedding(5, quality(40))
    assert not small.wants_embedding(5, quality(10))
    with pytest.raises(GalleryError):
        VisitTracker(gallery, "door", VisitSettings(min_faces=4, max_faces=3))


def test_a_track_seen_only_poorly_is_decided_after_its_patience(gallery: Gallery) -> None:
    """Blurred faces wait ``patience_s`` for a better one, then count: the person is decided
    about a second after appearing instead of never (or only when they finally turn)."""
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, patience_s=0.6))
    blurred = quality(sharp=8.0)
    assert blurred.score < tracker.settings.min_quality
    events, embedded_at = [], []
    for i in range(10):
        t = i / 5
        emb = face(0) if tracker.wants_embedding(1, blurred, t) else None
        if emb is not None:
            embedded_at.append(t)
        ev = tracker.observe(1, t, blurred if emb is not None else None, emb)
        events += [ev] if ev else []
    assert embedded_at[0] == pytest.approx(0.6)  # not before the patience ran out
    assert [e.kind for e in events] == ["arrived"] and events[0].end_s == pytest.approx(1.0)
    assert not tracker.wants_embedding(1, blurred)  # decided: poor faces add nothing now
    assert not tracker.wants_embedding(2, quality(score_size=8))  # too small: never


def test_the_visit_follows_the_gallery_operating_point(gallery: Gallery) -> None:
    strict = VisitTracker(gallery, "door", policy=IdentificationPolicy(fpir="1e-6"))
    loose = VisitTracker(gallery, "door", policy=IdentificationPolicy(fpir="1e-1"))
    a = _walk(strict, 1, person=0, start=0.0)
    b = _walk(loose, 1, person=0, start=0.0)
    assert a[0].threshold > b[0].threshold


def test_events_carry_wall_times_and_the_best_faces_as_evidence(gallery: Gallery) -> None:
    from datetime import UTC, datetime

    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=2, max_faces=3, revisit_s=30))
    wall0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    events = []
    for i in range(6):
        q = quality(20 + 4 * i)
        crop = np.full((112, 112, 3), i, dtype=np.uint8)
        emb = face(0) if tracker.wants_embedding(1, q) else None
        ev = tracker.observe(1, i / 5, q, emb, crop=crop, wall=wall0 + i / 5)
        events += [ev] if ev else []
    left = tracker.end(1)
    assert left is not None and [e.kind for e in events] == ["arrived"]
    assert events[0].first_seen == datetime.fromtimestamp(wall0, tz=UTC)
    assert left.first_seen == events[0].first_seen
    assert left.last_seen == datetime.fromtimestamp(wall0 + 1.0, tz=UTC)
    d = left.to_dict()
    assert d["first_seen"] == "2026-01-01T00:00:00+00:00" and "evidence" not in d
    # the best three faces (the largest: the last ones), best first, with their crops
    assert [int(ev.crop[0, 0, 0]) for ev in left.evidence] == [5, 4, 3]
    assert all(abs(float(np.linalg.norm(ev.embedding)) - 1) < 1e-5 for ev in left.evidence)
    # a re-appearance continues the visit: its left event starts at the visit's first sight
    for i in range(3):
        tracker.observe(2, 10 + i / 5, quality(40), face(0), wall=wall0 + 10 + i / 5)
    again = tracker.end(2)
    assert again is not None and again.visit_id == left.visit_id
    assert again.first_seen == left.first_seen and again.start_s == 0.0
    # events compare and print without their evidence
    assert "evidence" not in repr(left)
