"""Photo-level enrolment, identification and verification with a fake face pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_helpers import FakePipeline

from marginface.errors import ConflictError, GalleryError, NoFaceError
from marginface.gallery import (
    EnrollmentError,
    IdentityConflictError,
    MismatchForceError,
    Recognizer,
)


def test_enrol_reports_every_photo(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    p = fake_pipeline
    a1, a2 = people.sample(0, 2)
    photos = [
        ("a1.jpg", p.photo("a1", a1)),
        ("a2.jpg", p.photo("a2", a2)),
        ("a1-again.jpg", p.photo("a1b", a1 + 0.001)),  # near duplicate of a1
        ("group.jpg", p.photo("group", [people.sample(0)[0], people.sample(1)[0]])),
        ("empty.jpg", p.photo("empty", np.zeros((0, 32)))),
        ("notes.txt", b"plain text"),
    ]
    res = rec.enroll("Ada", photos, metadata={"badge": 1})
    status = {o.source: o.status for o in res.photos}
    assert status == {
        "a1.jpg": "enrolled",
        "a2.jpg": "enrolled",
        "a1-again.jpg": "near_duplicate",
        "group.jpg": "multiple_faces",
        "empty.jpg": "no_face",
        "notes.txt": "unreadable",
    }
    assert res.created and res.enrolled == 2 and len(res.face_ids) == 2
    assert res.subject.n_faces == 2 and res.subject.metadata == {"badge": 1}
    dup = next(o for o in res.photos if o.status == "near_duplicate")
    assert dup.similarity >= 0.95
    assert "not an image" in next(o.message for o in res.photos if o.source == "notes.txt")
    assert res.to_dict()["photos"][0]["status"] == "enrolled"
    # faces carry the hash of their source photo, never the photo itself
    faces = g.subjects.faces(res.subject.id)
    assert all(f.source_hash and len(f.source_hash) == 64 for f in faces)
    assert all(not f.has_crop for f in faces)


def test_largest_face_policy_and_adding_photos(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline, multiple_faces="largest", store_crops=True)
    group = fake_pipeline.photo("group", [people.sample(0)[0], people.sample(1)[0]])
    res = rec.enroll("Ada", [group])
    assert res.photos[0].status == "enrolled" and "largest" in res.photos[0].message
    assert (
        rec.identify(fake_pipeline.photo("probe", people.sample(0)))[0].identification.subject_id
        == res.subject.id
    )
    png = g.subjects.face_crop(res.face_ids[0])
    assert png.startswith(b"\x89PNG")
    more = rec.add_photos(
        res.subject.id,
        [fake_pipeline.photo("a2", people.sample(0)), fake_pipeline.photo("a2", people.sample(0))],
    )
    assert not more.created and more.subject.n_faces == 2
    # the same photo twice in one batch: the second is a near duplicate of the first
    assert [o.status for o in more.photos] == ["enrolled", "near_duplicate"]


def test_nothing_enrollable_creates_nothing(sqlite_store, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    with pytest.raises(EnrollmentError, match="no photo of 'Ada'") as info:
        rec.enroll("Ada", [b"junk", fake_pipeline.photo("e", np.zeros((0, 32)))])
    assert isinstance(info.value, NoFaceError)
    assert [o.status for o in info.value.photos] == ["unreadable", "no_face"]
    assert g.subjects.count() == 0
    with pytest.raises(GalleryError, match="at least one photo"):
        rec.enroll("Ada", [])


def test_identify_answers_every_face_and_logs_events(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    ada = rec.enroll("Ada", [fake_pipeline.photo(f"a{i}", people.sample(0)) for i in range(3)])
    bob = rec.enroll("Bob", [fake_pipeline.photo(f"b{i}", people.sample(1)) for i in range(3)])
    crowd = fake_pipeline.photo(
        "crowd", [people.sample(1)[0], people.stranger()[0], people.sample(0)[0]]
    )
    faces = rec.identify(crowd, source="lobby")
    assert [f.identification.subject_id for f in faces] == [bob.subject.id, None, ada.subject.id]
    assert faces[0].box[2] - faces[0].box[0] > faces[2].box[2] - faces[2].box[0]
    assert faces[1].identification.candidates  # unknown still lists the nearest subjects
    events = g.events.list(source="lobby")
    assert sorted(e.decision for e in events) == ["match", "match", "unknown"]
    assert rec.identify(fake_pipeline.photo("nobody", np.zeros((0, 32)))) == []
    assert len(g.events.list()) == 3  # no source, no logging


def test_verify_photos_and_subjects(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    a, b = fake_pipeline.photo("a", people.sample(0)), fake_pipeline.photo("b", people.sample(0))
    c = fake_pipeline.photo("c", people.sample(5))
    same = rec.verify(a, b)
    assert same.same and same.score >= 0.5 and same.threshold == 0.5
    diff = rec.verify(a, c)
    assert not diff.same and diff.score < 0.5
    assert rec.verify(a, c, threshold=-1.0).same
    with pytest.raises(NoFaceError, match="second photo"):
        rec.verify(a, fake_pipeline.photo("none", np.zeros((0, 32))))
    ada = rec.enroll("Ada", [a])
    assert rec.verify_subject(b, ada.subject.id).same
    assert not rec.verify_subject(c, ada.subject.id).same
    with pytest.raises(GalleryError, match="unknown subject"):
        rec.verify_subject(b, "ghost")


def test_pipeline_of_another_model_is_refused(sqlite_store, people):
    g = sqlite_store.open()
    g.subjects.create("Ada", embeddings=people.sample(0))
    with pytest.raises(GalleryError, match="not comparable"):
        Recognizer(g, FakePipeline(name="other-model"))


# -- identity integrity at enrolment -------------------------------------------------------------
def test_photo_of_someone_enrolled_is_held_back_unless_forced(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()  # identification threshold 0.5
    rec = Recognizer(g, fake_pipeline)
    p = fake_pipeline
    ada = rec.enroll("Ada", [p.photo(f"a{i}", people.sample(0)) for i in range(2)]).subject
    # another photo of Ada, and nothing else usable: no second subject, a conflict naming Ada
    twin = [
        ("ada-3.jpg", p.photo("a3", people.sample(0))),
        ("empty.jpg", p.photo("e", np.zeros((0, 32)))),
    ]
    with pytest.raises(IdentityConflictError) as info:
        rec.enroll("Ada Lovelace", twin)
    assert isinstance(info.value, ConflictError)
    held, empty = info.value.photos
    assert (held.status, held.forceable, empty.status) == ("matches_other", True, "no_face")
    assert held.conflict.subject_id == ada.id and held.conflict.name == "Ada"
    assert held.conflict.score >= held.conflict.threshold == 0.5
    assert "'Ada'" in str(info.value) and "force" in str(info.value)
    assert g.subjects.count() == 1
    # a stranger among them is enrolled; Ada's photo is reported, not stored
    mixed = rec.enroll("Bob", [p.photo("b1", people.sample(1)), p.photo("a4", people.sample(0))])
    assert [o.status for o in mixed.photos] == ["enrolled", "matches_other"]
    assert mixed.subject.n_faces == 1
    # force: enrolled anyway, the outcome keeps the warning naming Ada
    forced = rec.enroll("Ada Lovelace", twin, force=True)
    (photo, _) = forced.photos
    assert photo.status == "enrolled" and photo.forced and photo.conflict.subject_id == ada.id
    assert "'Ada'" in photo.message and "force" in photo.message
    assert g.subjects.count() == 3


def test_same_photo_twice(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    photo = fake_pipeline.photo("a1", people.sample(0))
    ada = rec.enroll("Ada", [("a1.jpg", photo)]).subject
    calls = fake_pipeline.calls
    # for the same subject: useless, even forced
    for force in (False, True):
        (again,) = rec.add_photos(ada.id, [("a1.jpg", photo)], force=force).photos
        assert again.status == "duplicate_photo" and not again.forceable
        assert again.conflict.subject_id == ada.id and "enrolled for 'Ada'" in again.message
    assert fake_pipeline.calls == calls  # found by its hash: no photo processing
    # for another subject: held back, naming the subject that has it; force stores it
    with pytest.raises(IdentityConflictError, match="already enrolled for 'Ada'") as info:
        rec.enroll("Impostor", [("a1.jpg", photo)])
    (held,) = info.value.photos
    assert held.status == "duplicate_photo" and held.forceable
    assert held.conflict.subject_id == ada.id and held.conflict.score is None
    forced = rec.enroll("Impostor", [("a1.jpg", photo)], force=True)
    assert forced.photos[0].forced and forced.photos[0].conflict.subject_id == ada.id
    stored = g.subjects.faces_with_source_hashes([g.subjects.faces(ada.id)[0].source_hash])
    assert sorted(f.subject_id for f in next(iter(stored.values()))) == sorted(
        [ada.id, forced.subject.id]
    )
    assert g.subjects.faces_with_source_hashes(["0" * 64]) == {}


def test_mismatched_photo_is_refused_with_its_score(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()  # 1:1 threshold 0.5
    rec = Recognizer(g, fake_pipeline)
    p = fake_pipeline
    ada = rec.enroll("Ada", [p.photo("a1", people.sample(0))]).subject
    stranger = ("stranger.jpg", p.photo("s", people.stranger()))
    res = rec.add_photos(ada.id, [stranger, p.photo("a2", people.sample(0))])
    bad, good = res.photos
    assert (bad.status, good.status) == ("mismatch", "enrolled")
    assert bad.forceable and bad.conflict.subject_id == ada.id
    assert bad.conflict.score < bad.conflict.threshold == 0.5
    assert f"{bad.conflict.score:.3f}" in bad.message and "'Ada'" in bad.message
    # force asked for, but mismatches may not be forced by this caller: nothing is stored
    with pytest.raises(MismatchForceError, match="does not look like 'Ada'") as info:
        rec.add_photos(
            ada.id, [stranger, p.photo("a3", people.sample(0))], force=True, force_mismatch=False
        )
    assert [o.source for o in info.value.photos] == ["stranger.jpg"]  # the refused photos
    assert g.subjects.get(ada.id).n_faces == 2
    forced = rec.add_photos(ada.id, [stranger], force=True)
    assert forced.photos[0].forced and forced.enrolled == 1
    assert "does not look like 'Ada'" in forced.photos[0].message
    # a photo of another enrolled person is a mismatch that also names them
    bob = rec.enroll("Bob", [p.photo("b1", people.sample(1))]).subject
    (both,) = rec.add_photos(ada.id, [p.photo("b2", people.sample(1))]).photos
    assert both.status == "mismatch" and "'Bob'" in both.message and bob.id in both.message


def test_multiple_faces_policy_per_enrolment(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)  # the default policy: reject
    # the fake photo is 400 px wide: the first (largest) face is at the left, the second at
    # the centre
    group = fake_pipeline.photo("group", [people.sample(0)[0], people.sample(1)[0]])
    with pytest.raises(EnrollmentError):
        rec.enroll("Group", [group])
    largest = rec.enroll("Left", [group], multiple_faces="largest")
    assert "largest" in largest.photos[0].message
    central = rec.enroll("Centre", [group], multiple_faces="central", force=True)
    assert "nearest the centre" in central.photos[0].message
    probe = rec.identify(fake_pipeline.photo("p1", people.sample(1)))[0]
    assert probe.identification.subject_id == central.subject.id
    probe = rec.identify(fake_pipeline.photo("p0", people.sample(0)))[0]
    assert probe.identification.subject_id == largest.subject.id
    with pytest.raises(GalleryError, match="multiple_faces must be"):
        rec.enroll("Group", [group], multiple_faces="all")  # type: ignore[arg-type]


def test_concurrent_enrolments_of_one_person_do_not_both_pass(store, people, fake_pipeline):
    """Two requests (two handles, as two processes) enrol the same person at the same moment:
    both find nobody like them, then write. The writes are serialised and the second one sees
    the first one's face, so it is refused as it would have been had it come second."""
    import threading

    p = fake_pipeline
    a1, a2 = people.sample(0, 2)
    photo_1, photo_2 = p.photo("k1", a1), p.photo("k2", a2)
    handles = [store.open(), store.open()]
    barrier = threading.Barrier(2, timeout=30)
    for g in handles:
        original = g.subjects.create

        def waiting(*args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            barrier.wait()  # both have checked the gallery; now both write
            return _original(*args, **kwargs)

        g.subjects.create = waiting  # type: ignore[method-assign]
    results: list[object] = [None, None]

    def enrol(i: int, name: str, photo: bytes) -> None:
        try:
            results[i] = Recognizer(handles[i], p).enroll(name, [(f"{name}.jpg", photo)])
        except Exception as exc:  # collected below
            results[i] = exc

    threads = [
        threading.Thread(target=enrol, args=(0, "Ada", photo_1)),
        threading.Thread(target=enrol, args=(1, "Ada at kiosk 2", photo_2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for g in handles:
        del g.subjects.create  # the method again, without the barrier
    refused = [r for r in results if isinstance(r, IdentityConflictError)]
    assert len(refused) == 1, results
    (outcome,) = refused[0].photos
    assert outcome.status == "matches_other" and "meanwhile" in outcome.message
    assert handles[0].subjects.count() == 1 and handles[0].subjects.count_faces() == 1
    # forcing it stores it, as for a conflict found before the write
    loser = 0 if results[0] is refused[0] else 1
    forced = Recognizer(handles[loser], p).enroll(
        "Ada at kiosk 2", [("x.jpg", photo_2)], force=True
    )
    assert forced.created and handles[0].subjects.count() == 2
