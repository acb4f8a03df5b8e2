"""Photo-level enrolment, identification and verification with a fake face pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_helpers import FakePipeline

from marginface.errors import GalleryError, NoFaceError
from marginface.gallery import EnrollmentError, Recognizer


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
    assert status == {"a1.jpg": "enrolled", "a2.jpg": "enrolled",
                      "a1-again.jpg": "near_duplicate", "group.jpg": "multiple_faces",
                      "empty.jpg": "no_face", "notes.txt": "unreadable"}
    assert res.created and res.enrolled == 2 and len(res.face_ids) == 2
    assert res.subject.n_faces == 2 and res.subject.metadata == {"badge": 1}
    dup = next(o for o in res.photos if o.status == "near_duplicate")
    assert dup.similarity >= 0.95
    assert "not an image" in next(o.message for o in res.photos if o.source == "notes.txt")
    assert res.to_dict()["photos"][0]["status"] == "enrolled"
    # faces carry the hash of their source photo, never the photo itself
    faces = g.faces(res.subject.id)
    assert all(f.source_hash and len(f.source_hash) == 64 for f in faces)
    assert all(not f.has_crop for f in faces)


def test_largest_face_policy_and_adding_photos(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline, multiple_faces="largest", store_crops=True)
    group = fake_pipeline.photo("group", [people.sample(0)[0], people.sample(1)[0]])
    res = rec.enroll("Ada", [group])
    assert res.photos[0].status == "enrolled" and "largest" in res.photos[0].message
    assert rec.identify(fake_pipeline.photo("probe", people.sample(0)))[0] \
        .identification.subject_id == res.subject.id
    png = g.face_crop(res.face_ids[0])
    assert png.startswith(b"\x89PNG")
    more = rec.add_photos(res.subject.id, [fake_pipeline.photo("a2", people.sample(0)),
                                           fake_pipeline.photo("a2", people.sample(0))])
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
    assert g.count_subjects() == 0
    with pytest.raises(GalleryError, match="at least one photo"):
        rec.enroll("Ada", [])


def test_identify_answers_every_face_and_logs_events(sqlite_store, people, fake_pipeline):
    g = sqlite_store.open()
    rec = Recognizer(g, fake_pipeline)
    ada = rec.enroll("Ada", [fake_pipeline.photo(f"a{i}", people.sample(0)) for i in range(3)])
    bob = rec.enroll("Bob", [fake_pipeline.photo(f"b{i}", people.sample(1)) for i in range(3)])
    crowd = fake_pipeline.photo("crowd", [people.sample(1)[0], people.stranger()[0],
                                          people.sample(0)[0]])
    faces = rec.identify(crowd, source="lobby")
    assert [f.identification.subject_id for f in faces] == [bob.subject.id, None,
                                                            ada.subject.id]
    assert faces[0].box[2] - faces[0].box[0] > faces[2].box[2] - faces[2].box[0]
    assert faces[1].identification.candidates  # unknown still lists the nearest subjects
    events = g.events(source="lobby")
    assert sorted(e.decision for e in events) == ["match", "match", "unknown"]
    assert rec.identify(fake_pipeline.photo("nobody", np.zeros((0, 32)))) == []
    assert len(g.events()) == 3  # no source, no logging


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
    g.create_subject("Ada", embeddings=people.sample(0))
    with pytest.raises(GalleryError, match="not comparable"):
        Recognizer(g, FakePipeline(name="other-model"))
