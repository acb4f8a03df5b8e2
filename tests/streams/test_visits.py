"""Visits whose decisions follow the evidence: evidence per track, one person per track, only
faces open visits, the open-set decision and its corrections, re-appearance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from marginface.align.quality import FaceQuality
from marginface.card import ModelCard
from marginface.decision import IdentificationPolicy
from marginface.errors import GalleryError
from marginface.gallery import Gallery
from marginface.streams import VisitSettings, VisitTracker
from marginface.streams.visits import VisitEvent
from tests.impostor_tables import log_linear_tail

DIM = 32
rng = np.random.default_rng(7)
CENTRES = rng.standard_normal((4, DIM))
CENTRES /= np.linalg.norm(CENTRES, axis=1, keepdims=True)
BOX = np.array([100.0, 100.0, 160.0, 170.0])


#: People 0 and 1 are enrolled (Ada, Grace); 2 and 3 are strangers.
STRANGER, OTHER_STRANGER = 2, 3


def face(person: int, noise: float = 0.35) -> np.ndarray:
    """A photo of ``person`` (cosine ~0.8 to their other photos)."""
    e = CENTRES[person] + noise * rng.standard_normal(DIM) / np.sqrt(DIM)
    return e / np.linalg.norm(e)


def poor_photo_of(person: int, cosine: float) -> np.ndarray:
    """A fixed embedding at ``cosine`` from ``person``'s centre: a blurred or turned face."""
    other = np.random.default_rng(1).standard_normal(DIM)
    other -= (other @ CENTRES[person]) * CENTRES[person]
    other /= np.linalg.norm(other)
    return cosine * CENTRES[person] + np.sqrt(1 - cosine**2) * other


def quality(
    size: float = 40.0, sharp: float = 300.0, yaw: float = 0.0, face_prob: float | None = 0.99
) -> FaceQuality:
    return FaceQuality(
        size=size, detection_score=0.95, sharpness=sharp, yaw=yaw, pitch=0.5, face_prob=face_prob
    )


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    card = ModelCard(
        name="fake", architecture="mbf", embedding_dim=DIM, impostors=log_linear_tail(0.45)
    )
    with Gallery.open(tmp_path / "g.db", card=card) as g:
        g.subjects.create("Ada", embeddings=np.vstack([face(0), face(0)]))
        g.subjects.create("Grace", embeddings=np.vstack([face(1), face(1)]))
        yield g


def step(
    tracker: VisitTracker,
    track: int,
    t: float,
    q: FaceQuality,
    person: int | np.ndarray,
    box: np.ndarray = BOX,
    **kw: object,
) -> list[VisitEvent]:
    """One detection: embedded (and verified) when the tracker asks, as a camera does."""
    emb = None
    if tracker.wants_embedding(track, q, t, box):
        emb = face(person) if isinstance(person, int) else person
        assert tracker.verify(track, q, emb) != "different"
    return tracker.observe(track, t, q, emb, box=box, **kw)  # type: ignore[arg-type]


def walk(
    tracker: VisitTracker, track: int, person: int, start: float, frames: int = 10, fps: float = 5
) -> list[VisitEvent]:
    """A person crossing the view (growing as they approach), then gone: their events up to
    the ``left`` that follows ``leave_s`` later."""
    events: list[VisitEvent] = []
    for i in range(frames):
        events += step(tracker, track, start + i / fps, quality(20 + 4 * i), person)
    end = start + (frames - 1) / fps
    events += tracker.end(track)
    events += tracker.flush(end + tracker.settings.leave_s)
    return events


def test_each_passer_is_one_visit_with_the_right_name(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, revisit_s=5))
    ada = walk(tracker, 1, person=0, start=0.0)
    stranger = walk(tracker, 2, person=STRANGER, start=10.0)
    grace = walk(tracker, 3, person=1, start=20.0)
    for events, name in ((ada, "Ada"), (stranger, None), (grace, "Grace")):
        assert [e.kind for e in events] == ["arrived", "left"]
        assert events[0].name == name and events[1].name == name
        assert events[1].end_s == pytest.approx(events[1].start_s + 9 / 5)
        assert events[0].uid == events[1].uid and len(events[0].uid) == 16
    assert len({e.visit_id for e in ada + stranger + grace}) == 3
    assert ada[0].threshold > 0.45  # the gallery's operating point for 2 subjects x 2 faces
    d = ada[1].to_dict()
    assert d["visit_uid"] == ada[0].uid and d["reason"] == "ended" and "evidence" not in d


def test_a_clear_face_is_announced_at_once_a_stranger_after_min_faces(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, quick_margin=0.1))
    named = step(tracker, 1, 0.0, quality(), 0) + step(tracker, 1, 0.2, quality(), 0)
    assert [e.kind for e in named] == ["arrived"] and named[0].faces < 3
    assert named[0].score >= named[0].threshold + 0.1
    stranger: list[VisitEvent] = []
    for i in range(3):
        stranger += step(tracker, 2, i / 5, quality(), STRANGER, box=BOX + 300)
    assert [e.kind for e in stranger] == ["arrived"] and stranger[0].faces == 3


def test_reappearance_within_the_window_is_the_same_visit(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(revisit_s=30))
    first = walk(tracker, 1, person=0, start=0.0)
    back = walk(tracker, 2, person=0, start=20.0)  # lost behind a pillar, back 18 s later
    assert [e.kind for e in back] == ["left"]  # no second "arrived"
    assert back[0].visit_id == first[0].visit_id and back[0].start_s == 0.0
    later = walk(tracker, 3, person=0, start=200.0)  # long after: a new visit
    assert [e.kind for e in later] == ["arrived", "left"]
    assert later[0].visit_id != first[0].visit_id
    tracker.forget_before(210.0)  # drops the first visit only: the later one may continue
    again = walk(tracker, 4, person=0, start=215.0)
    assert [e.kind for e in again] == ["left"] and again[0].visit_id == later[0].visit_id


def test_a_stranger_back_is_the_same_visit_another_stranger_is_not(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(revisit_s=30))
    first: list[VisitEvent] = []
    for i in range(4):
        first += step(tracker, 1, i / 5, quality(), STRANGER)
    first += tracker.end(1) + tracker.flush(5.0)
    back: list[VisitEvent] = []
    for i in range(4):
        back += step(tracker, 2, 10 + i / 5, quality(), STRANGER)
    assert not back  # rejoined the stranger's visit at the first face
    other = walk(tracker, 3, person=OTHER_STRANGER, start=12.0)
    assert [e.kind for e in other] == ["arrived", "left"] and other[0].subject_id is None
    assert other[0].visit_id != first[0].visit_id


def test_backs_of_heads_and_poor_or_brief_faces_open_no_visit(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, min_eye_distance=15))
    assert not tracker.wants_embedding(1, quality(size=8))  # too small
    assert not tracker.wants_embedding(1, quality(sharp=0.0, face_prob=0.2))  # blurred, no face
    assert tracker.wants_embedding(1, quality())
    assert tracker.observe(1, 0.0, quality(), face(0)) == []
    assert tracker.end(1) == []  # one face: too brief to say anything
    # the back of a head: ONet says no face, however large and sharp, for 3 s
    back: list[VisitEvent] = []
    for i in range(15):
        back += step(tracker, 2, i / 5, quality(face_prob=0.1), STRANGER)
    back += tracker.end(2)
    assert back == [] and tracker.flush(100.0) == []
    # a profile: a face, turned away
    side: list[VisitEvent] = []
    for i in range(15):
        side += step(tracker, 3, i / 5, quality(yaw=1.2), 0)
    assert side + tracker.end(3) == []
    with pytest.raises(GalleryError):
        VisitTracker(gallery, "door", VisitSettings(min_faces=4, max_faces=3))


def test_a_person_seen_briefly_is_counted_when_the_track_ends(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, quick_margin=1.0))
    events = step(tracker, 1, 0.0, quality(), STRANGER) + step(tracker, 1, 0.2, quality(), STRANGER)
    assert events == []  # two faces: fewer than min_faces
    events = tracker.end(1)
    assert [e.kind for e in events] == ["arrived"] and events[0].subject_id is None
    assert [e.kind for e in tracker.flush(10.0)] == ["left"]


def test_faces_too_small_to_identify_are_counted_then_identified(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_eye_distance=12, small_wait_s=1.0))
    events: list[VisitEvent] = []
    for i in range(6):  # far away: eyes 8 px apart, for 1 s
        events += step(tracker, 1, i / 5, quality(size=8), 0)
    assert [e.kind for e in events] == ["arrived"] and events[0].subject_id is None
    assert events[0].faces == 0
    assert tracker.decision(1) == ("unknown", None, None)
    for i in range(6, 12):  # closer: large enough to embed
        events += step(tracker, 1, i / 5, quality(size=30), 0)
    assert [e.kind for e in events] == ["arrived", "identified"]
    assert events[1].name == "Ada" and events[1].uid == events[0].uid
    assert tracker.decision(1)[2] == "Ada"


def test_an_unknown_visit_is_identified_when_a_clear_face_comes(gallery: Gallery) -> None:
    """Poor faces (blurred, turned) say unknown; a clear one names the person."""
    settings = VisitSettings(min_faces=2, patience_s=0.0, split_far="1e-1", quick_margin=1.0)
    tracker = VisitTracker(gallery, "door", settings)
    poor = poor_photo_of(0, 0.47)  # Ada, blurred: below the gallery's threshold
    assert gallery.identify(poor[None])[0].subject_id is None
    assert float(poor @ face(0, noise=0.1)) > tracker.split_below  # but the same person
    events: list[VisitEvent] = []
    for i in range(3):
        events += step(tracker, 1, i / 5, quality(sharp=10.0), poor)
    assert [e.kind for e in events] == ["arrived"] and events[0].subject_id is None
    for i in range(3, 6):
        events += step(tracker, 1, i / 5, quality(), face(0, noise=0.1))
    assert [e.kind for e in events] == ["arrived", "identified"]
    assert events[1].name == "Ada" and events[1].visit_id == events[0].visit_id


def test_a_named_visit_whose_better_faces_name_someone_else_is_corrected(
    gallery: Gallery,
) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(min_faces=3, quick_margin=1.0))
    ada, grace = CENTRES[0], CENTRES[1]
    blend = ada * 0.7 + grace * 0.5
    blend /= np.linalg.norm(blend)  # looks like Ada, also like Grace
    events: list[VisitEvent] = []
    for i in range(3):
        events += step(tracker, 1, i / 5, quality(size=13, sharp=40.0), blend)
    assert [e.kind for e in events] == ["arrived"] and events[0].name == "Ada"
    for i in range(3, 8):  # clear faces: Grace
        q = quality(size=45)
        emb = face(1, noise=0.1)
        assert tracker.wants_embedding(1, q, i / 5, BOX)
        assert tracker.verify(1, q, emb) == "same"  # the same person as the poor faces
        events += tracker.observe(1, i / 5, q, emb, box=BOX)
    assert [e.kind for e in events] == ["arrived", "corrected"]
    assert events[1].name == "Grace" and events[1].previous_name == "Ada"
    d = events[1].to_dict()
    assert d["previous_name"] == "Ada" and d["visit_uid"] == events[0].uid
    assert tracker.corrections == 1


def test_a_face_of_someone_else_is_another_person(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door")
    for i in range(4):
        step(tracker, 1, i / 5, quality(), 0)
    assert tracker.verify(1, quality(), face(0)) == "same"
    assert tracker.verify(1, quality(), face(1)) == "different"
    assert tracker.verify(1, quality(face_prob=0.3), face(1)) == "unsure"  # not a face to judge
    assert tracker.verify(9, quality(), face(1)) == "unsure"  # nothing to compare with


def test_a_named_box_keeps_its_name_only_while_verified_or_moving_smoothly(
    gallery: Gallery,
) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(hold_s=2.0, verify_s=10.0))
    for i in range(4):
        step(tracker, 1, i / 5, quality(), 0)
    assert tracker.label(1)[0] == "known"
    turned = quality(yaw=1.2)  # cannot be verified
    tracker.observe(1, 1.0, turned, box=BOX + 2)  # a small move: still Ada
    assert tracker.label(1)[2] == "Ada"
    assert tracker.jumped(1, BOX + 80, 1.2)  # far away: someone else's face, maybe
    tracker.observe(1, 1.2, turned, box=BOX + 80)
    assert tracker.label(1) == ("undecided", None, None)
    assert tracker.decision(1)[2] == "Ada"  # the visit itself is unchanged


def test_a_split_track_rejoins_its_visit_at_its_next_face(gallery: Gallery) -> None:
    tracker = VisitTracker(gallery, "door", VisitSettings(revisit_s=30, leave_s=1.0))
    events: list[VisitEvent] = []
    for i in range(4):
        events += step(tracker, 1, i / 5, quality(), STRANGER)
    assert [e.kind for e in events] == ["arrived"]
    assert tracker.end(1, "jump") == []
    rejoined = step(tracker, 2, 0.8, quality(), STRANGER, box=BOX + 80)
    assert rejoined == [] and tracker.decision(2) == ("unknown", None, None)
    assert tracker.rejoined == 1 and tracker.splits == 1
    assert tracker.flush(5.0) == []  # the visit goes on: no left
    assert tracker.end(2) == [] and [e.kind for e in tracker.close()] == ["left"]


def test_the_visit_follows_the_gallery_operating_point(gallery: Gallery) -> None:
    settings = VisitSettings(quick_margin=1.0)
    strict = VisitTracker(gallery, "door", settings, policy=IdentificationPolicy(fpir="1e-6"))
    loose = VisitTracker(gallery, "door", settings, policy=IdentificationPolicy(fpir="1e-1"))
    a = walk(strict, 1, person=0, start=0.0)
    b = walk(loose, 1, person=0, start=0.0)
    assert a[0].threshold > b[0].threshold


def test_events_carry_wall_times_and_the_best_faces_as_evidence(gallery: Gallery) -> None:
    settings = VisitSettings(min_faces=2, max_faces=3, revisit_s=30, quick_margin=1.0)
    tracker = VisitTracker(gallery, "door", settings)
    wall0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    events: list[VisitEvent] = []
    for i in range(6):
        q = quality(20 + 4 * i)
        crop = np.full((112, 112, 3), i, dtype=np.uint8)
        events += step(tracker, 1, i / 5, q, 0, crop=crop, wall=wall0 + i / 5)
    assert tracker.end(1) == [] and [e.kind for e in events] == ["arrived"]
    (left,) = tracker.flush(10.0)
    assert events[0].first_seen == datetime.fromtimestamp(wall0, tz=UTC)
    assert left.first_seen == events[0].first_seen
    assert left.last_seen == datetime.fromtimestamp(wall0 + 1.0, tz=UTC)
    assert left.to_dict()["first_seen"] == "2026-01-01T00:00:00+00:00"
    # the best three faces (the largest: the last ones), best first, with their crops
    assert [int(ev.crop[0, 0, 0]) for ev in left.evidence] == [5, 4, 3]
    assert all(abs(float(np.linalg.norm(ev.embedding)) - 1) < 1e-5 for ev in left.evidence)
    # a re-appearance continues the visit: its left event starts at the visit's first sight
    for i in range(3):
        step(tracker, 2, 10 + i / 5, quality(40), 0, wall=wall0 + 10 + i / 5)
    tracker.end(2)
    (again,) = tracker.close()
    assert again.visit_id == left.visit_id
    assert again.first_seen == left.first_seen and again.start_s == 0.0
    assert "evidence" not in repr(left)  # events compare and print without their evidence


# -- a camera taken over by another node (docs/cluster.md) ----------------------------------------
def test_a_worker_taking_a_camera_over_continues_the_recorded_visits(gallery: Gallery) -> None:
    """The previous holder announced Ada (still in view) and a stranger whose visit ended: the
    new worker, given those visits as the gallery recorded them, announces neither again; a
    person it has not seen yet is announced; the unended visit gets its ``left`` once nobody
    continues it."""
    from marginface.streams.visits import RESUME_GRACE_S, Evidence, PastVisit

    now = 1_700_000_000.0
    stranger_faces = tuple(Evidence(0.5, face(STRANGER)) for _ in range(3))
    past = [
        PastVisit("ada-visit", ada_id(gallery), "Ada", 0.8, 0.5, now - 20, now - 1, ended=False),
        PastVisit("s-visit", None, None, 0.1, 0.5, now - 30, now - 10, True, stranger_faces),
        PastVisit("old", ada_id(gallery), "Ada", 0.8, 0.5, now - 900, now - 800, ended=True),
    ]
    tracker = VisitTracker(gallery, "door", VisitSettings(revisit_s=60))
    assert tracker.resume(past, t=0.0, wall=now) == 2  # the old one is beyond revisit_s
    ada = walk(tracker, 1, person=0, start=0.0)
    assert [e.kind for e in ada] == ["left"] and ada[0].uid == "ada-visit"
    assert ada[0].first_seen == datetime.fromtimestamp(now - 20, UTC)  # the visit's start
    stranger: list[VisitEvent] = []
    for i in range(4):
        stranger += step(tracker, 2, 5 + i / 5, quality(), STRANGER)
    assert stranger == []  # known again by their visitor's faces
    grace = walk(tracker, 3, person=1, start=10.0)
    assert [e.kind for e in grace] == ["arrived", "left"]
    # a visit taken over that nobody continues is announced left after the grace period
    idle = VisitTracker(gallery, "door", VisitSettings(revisit_s=60))
    idle.resume(past[:1], t=0.0, wall=now)
    assert idle.flush(RESUME_GRACE_S - 0.5) == []
    (left,) = idle.flush(RESUME_GRACE_S)
    assert left.kind == "left" and left.uid == "ada-visit" and left.subject_id == ada_id(gallery)


def ada_id(gallery: Gallery) -> str:
    return gallery.subjects.find("Ada")[0].id
