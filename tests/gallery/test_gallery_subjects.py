"""``gallery.subjects``: subjects and their faces (SubjectStore), on every store: SQLite,
PostgreSQL and Milvus Lite; exact and FAISS indexes."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_helpers import DIM, enrol_people, unit

from marginface.errors import ConflictError, GalleryError, NotFoundError


def test_subject_crud_and_listing(store, people):
    g = store.open()
    a = g.subjects.create("Zoe", {"team": "night"})
    b = g.subjects.create("adam", embeddings=people.sample(1, 2))
    assert a.n_faces == 0 and b.n_faces == 2
    assert [s.name for s in g.subjects.list()] == ["Zoe", "adam"]
    assert [s.name for s in g.subjects.list(search="ZO")] == ["Zoe"]
    assert [s.name for s in g.subjects.list(limit=1, offset=1)] == ["adam"]
    renamed = g.subjects.update(a.id, name="Zoë", metadata={"team": "day"})
    assert renamed.name == "Zoë" and renamed.metadata == {"team": "day"}
    assert renamed.updated_at >= a.updated_at
    with pytest.raises(GalleryError, match="is empty"):
        g.subjects.create("   ")
    with pytest.raises(GalleryError, match="unknown subject"):
        g.subjects.update("nope", name="x")
    with pytest.raises(GalleryError, match="JSON"):
        g.subjects.create("x", {"bad": object()})
    ids = g.subjects.add_faces(a.id, people.sample(0, 2))
    assert len(ids) == 2 and g.subjects.get(a.id).n_faces == 2


def test_duplicate_names_get_distinct_ids(store, people):
    g = store.open()
    a = g.subjects.create("Sam Lee", embeddings=people.sample(0, 2))
    b = g.subjects.create("Sam Lee", embeddings=people.sample(1, 2))
    assert a.id != b.id
    assert {s.id for s in g.subjects.find("Sam Lee")} == {a.id, b.id}
    assert [g.identify(people.sample(i))[0].subject_id for i in (0, 1)] == [a.id, b.id]


def test_delete_subject_removes_it_everywhere(store, people):
    g = store.open()
    ids = enrol_people(g, people, 6)
    victim = ids[2]
    victim_faces = [f.id for f in g.subjects.faces(victim)]
    g.events.log("door", subject_id=victim, score=0.9, decision="match")
    assert g.subjects.delete(victim) == 3
    # SQL rows are gone
    assert g._db.query("SELECT COUNT(*) FROM faces WHERE subject_id = ?", (victim,))[0][0] == 0
    assert g._db.query("SELECT COUNT(*) FROM subjects WHERE id = ?", (victim,))[0][0] == 0
    assert g.events.list(subject=victim) == []
    # the index no longer holds the vectors, and search never returns them
    assert not set(victim_faces) & set(g.index.ids().tolist())
    probe = people.sample(2, 4)
    for row in g.search(probe, k=18):
        assert all(h.subject_id != victim and h.face_id not in victim_faces for h in row)
    assert all(not a.known or a.subject_id != victim for a in g.identify(probe))
    with pytest.raises(NotFoundError, match="unknown subject"):
        g.subjects.get(victim)
    with pytest.raises(GalleryError, match="unknown subject"):
        g.subjects.delete(victim)
    g.close()
    g2 = store.open()  # still gone after a restart
    assert not set(victim_faces) & set(g2.index.ids().tolist())
    assert g2.subjects.count() == 5 and g2.subjects.count_faces() == 15


def test_delete_one_face(store, people):
    g = store.open()
    s = g.subjects.create("Ada", embeddings=people.sample(0, 3))
    faces = g.subjects.faces(s.id)
    target = faces[1].id
    _, mat = g.subjects.embeddings(s.id)
    removed = g.subjects.delete_face(target)
    assert removed.subject_id == s.id
    assert [f.id for f in g.subjects.faces(s.id)] == [faces[0].id, faces[2].id]
    assert target not in g.index.ids().tolist()
    # querying with the deleted face's own embedding never returns it
    hits = g.search(mat[1], k=3)[0]
    assert target not in [h.face_id for h in hits]
    with pytest.raises(NotFoundError, match="unknown face"):
        g.subjects.delete_face(target)


def test_failed_writes_leave_nothing(store, people):
    g = store.open()
    bad = people.sample(0, 3)
    bad[1, 0] = np.nan
    with pytest.raises(GalleryError, match="NaN"):
        g.subjects.create("Ada", embeddings=bad)
    with pytest.raises(GalleryError, match="one to one"):
        g.subjects.create("Ada", embeddings=people.sample(0, 3), source_hashes=["x"])
    assert g.subjects.count() == 0 and g.subjects.count_faces() == 0
    assert len(g.index) == 0
    s = g.subjects.create("Bob")
    with pytest.raises(GalleryError, match="all zeros"):
        g.subjects.add_faces(s.id, np.zeros((2, DIM), np.float32))
    with pytest.raises(GalleryError, match="unknown subject"):
        g.subjects.add_faces("missing", people.sample(0, 1))
    assert g.subjects.count_faces() == 0


def test_embeddings_are_normalised_on_the_way_in(store):
    g = store.open()
    raw = np.zeros((1, DIM), np.float32)
    raw[0, 0] = 7.0
    s = g.subjects.create("Ada", embeddings=raw)
    _, mat = g.subjects.embeddings(s.id)
    assert np.allclose(mat, unit(raw))
    hit = g.search(raw * 3, k=1)[0][0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_faces_are_found_by_subject_id_and_photo(store, people):
    g = store.open()
    assert g.subjects.max_face_id() == 0 and g.subjects.faces_after(0) == []
    ada = g.subjects.create(
        "Ada", embeddings=people.sample(0, 2), source_hashes=["h1", None], crops=[b"png", None]
    )
    assert g.subjects.exists(ada.id) and not g.subjects.exists("nobody")
    with pytest.raises(ConflictError, match="already exists"):
        g.subjects.create("Ada again", subject_id=ada.id)
    first, second = g.subjects.faces(ada.id)
    assert (first.source_hash, first.has_crop) == ("h1", True)
    assert (second.source_hash, second.has_crop) == (None, False)
    assert g.subjects.get_face(second.id) == second
    assert g.subjects.face_crop(first.id) == b"png" and g.subjects.face_crop(second.id) is None
    for missing in (g.subjects.get_face, g.subjects.face_crop):
        with pytest.raises(NotFoundError, match="unknown face"):
            missing(10**9)
    since = g.subjects.max_face_id()
    assert since == second.id
    bob = g.subjects.create("Bob", embeddings=people.sample(1, 1), source_hashes=["h1"])
    (after,) = g.subjects.faces_after(since)
    record, name, vector = after
    assert (record.subject_id, name, vector.shape) == (bob.id, "Bob", (DIM,))
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    found = g.subjects.faces_with_source_hashes(["h1", "h2"])
    assert list(found) == ["h1"] and [f.subject_id for f in found["h1"]] == [ada.id, bob.id]
    ids, mat = g.subjects.embeddings(ada.id)
    assert ids.tolist() == [first.id, second.id] and mat.shape == (2, DIM)
    assert g.subjects.add_faces(ada.id, np.zeros((0, DIM), np.float32)) == []
    assert g.subjects.count() == 2 and g.subjects.count("bo") == 1
    assert g.subjects.count_faces() == 3
    assert g.subjects.faces_per_subject() == {2: 1, 1: 1}
    for unknown in (g.subjects.get, g.subjects.faces, g.subjects.embeddings):
        with pytest.raises(NotFoundError, match="unknown subject"):
            unknown("nobody")


def test_a_deleted_subject_may_leave_its_events(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    g.events.log("door", subject_id=ada.id, score=0.9, decision="match")
    assert g.subjects.delete(ada.id, erase_events=False) == 1
    (event,) = g.events.list()
    assert (event.subject_id, event.subject_name, event.source) == (None, None, "door")


def test_export_lists_every_subject_with_its_faces(store, people):
    g = store.open()
    assert g.subjects.export() == []
    zoe = g.subjects.create("Zoe", {"team": "night"})
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 2))
    plain, full = g.subjects.export(), g.subjects.export(include_embeddings=True)
    assert [e["id"] for e in plain] == [ada.id, zoe.id]  # by name, as list() orders them
    assert plain[1]["metadata"] == {"team": "night"} and plain[1]["faces"] == []
    assert len(plain[0]["faces"]) == 2 and "embedding" not in plain[0]["faces"][0]
    assert len(full[0]["faces"][0]["embedding"]) == DIM
