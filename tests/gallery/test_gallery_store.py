"""The gallery test-suite, run on every store: SQLite, PostgreSQL and Milvus Lite; exact and
FAISS indexes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from gallery_helpers import DIM, People, unit

from marginface.card import Calibration, ModelCard
from marginface.decision import IdentificationPolicy
from marginface.errors import ConflictError, GalleryError, NotFoundError
from tests.impostor_tables import log_linear_tail


def enrol_people(gallery, people: People, n: int, per: int = 3) -> list[str]:
    return [
        gallery.subjects.create(f"person {i}", {"idx": i}, embeddings=people.sample(i, per)).id
        for i in range(n)
    ]


def test_enrol_then_identify(store, people):
    g = store.open()
    ids = enrol_people(g, people, 10)
    assert g.subjects.count() == 10 and g.subjects.count_faces() == 30
    probes = np.vstack([people.sample(i) for i in range(10)])
    answers = g.identify(probes)
    assert [a.subject_id for a in answers] == ids
    assert all(a.known and a.score >= 0.5 for a in answers)
    assert answers[3].name == "person 3"
    assert answers[3].candidates[0].subject_id == ids[3]
    assert answers[3].candidates[0].votes >= 1
    strangers = g.identify(people.stranger(5))
    assert all(not a.known and a.subject_id is None for a in strangers)
    assert all(a.score < 0.5 for a in strangers)


def test_search_orders_hits_and_maps_subjects(store, people):
    g = store.open()
    ids = enrol_people(g, people, 5, per=2)
    hits = g.search(people.sample(2), k=4)[0]
    assert len(hits) == 4
    assert hits[0].subject_id == ids[2]
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    face_ids = {f.id for f in g.subjects.faces(ids[2])}
    assert hits[0].face_id in face_ids


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


def test_restart_serves_same_answers(store, people):
    g = store.open()
    enrol_people(g, people, 8)
    probes = np.vstack([people.sample(i) for i in range(8)] + [people.stranger(2)])
    before = [(a.subject_id, round(a.score, 5)) for a in g.identify(probes)]
    g.close()
    g2 = store.open()
    after = [(a.subject_id, round(a.score, 5)) for a in g2.identify(probes)]
    assert after == before


def test_mixed_models_are_refused(store, people):
    g = store.open()
    g.subjects.create("Ada", embeddings=people.sample(0, 1))
    g.close()
    with pytest.raises(GalleryError, match="refusing model 'other'"):
        store.open(model="other")
    with pytest.raises(GalleryError, match="not comparable"):
        store.open(dim=DIM * 2)
    g = store.open()  # the right model still opens
    with pytest.raises(GalleryError, match=r"shape \(N, 32\)"):
        g.subjects.add_faces(g.subjects.list()[0].id, np.ones((1, 16), np.float32))


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


def test_two_handles_stay_in_step(store, people):
    """Two processes (here: two handles) share one store: each sees the other's changes."""
    if store.index == "milvus":
        pytest.skip("Milvus is itself shared: covered by the other tests")
    a = store.open()
    b = store.open()
    s = a.subjects.create("Ada", embeddings=people.sample(0, 2))
    assert b.identify(people.sample(0))[0].subject_id == s.id
    a.subjects.delete(s.id)
    assert b.search(people.sample(0), k=3)[0] == []
    assert len(b.index) == 0


def test_events_filters_and_attendance(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    bob = g.subjects.create("Bob", embeddings=people.sample(1, 1))
    day = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
    g.events.log("front-door", subject_id=ada.id, score=0.8, decision="match", time=day)
    g.events.log(
        "lab", subject_id=ada.id, score=0.7, decision="match", time=day + timedelta(hours=9)
    )
    g.events.log(
        "front-door", subject_id=bob.id, score=0.9, decision="match", time=day + timedelta(hours=1)
    )
    g.events.log(
        "front-door", subject_id=None, score=0.2, decision="unknown", time=day + timedelta(hours=2)
    )
    g.events.log(
        "front-door", subject_id=ada.id, score=0.9, decision="match", time=day + timedelta(days=1)
    )
    assert len(g.events.list()) == 5
    assert [e.source for e in g.events.list(subject=ada.id)] == ["front-door", "lab", "front-door"]
    assert len(g.events.list(source="lab")) == 1
    assert len(g.events.list(decision="unknown")) == 1
    same_day = g.events.list(start=day, end=day + timedelta(days=1))
    assert len(same_day) == 4 and same_day[0].time > same_day[-1].time  # newest first
    rows = g.events.attendance("2024-03-05", tz=UTC)
    assert [(r.name, r.count) for r in rows] == [("Ada", 2), ("Bob", 1)]
    assert rows[0].first_seen == day and rows[0].last_seen == day + timedelta(hours=9)
    assert rows[0].sources == ["front-door", "lab"]
    csv_text = g.events.attendance_csv("2024-03-05", tz=UTC)
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("date,subject_id,name,first_seen")
    assert lines[1].startswith(f"2024-03-05,{ada.id},Ada,2024-03-05T08:00:00+00:00")
    assert "2024-03-06" not in csv_text
    with pytest.raises(GalleryError, match="YYYY-MM-DD"):
        g.events.attendance("5 March")
    with pytest.raises(GalleryError, match="unknown subject"):
        g.events.log("door", subject_id="ghost", score=1.0, decision="match")


def test_api_keys_are_stored_hashed(store):
    g = store.open()
    rec, secret = g.keys.create("ops laptop", "admin")
    assert g.keys.authenticate(secret).role == "admin"
    assert g.keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert g.keys.authenticate("nonsense") is None and g.keys.authenticate(None) is None
    rows = g._db.query("SELECT id, name, role, key_hash FROM api_keys")
    assert rows and all(
        secret not in str(r) and secret.split("_", 2)[2] not in str(r) for r in rows
    )
    if store.backend == "sqlite":
        g._db.query("PRAGMA wal_checkpoint(FULL)")
        from pathlib import Path

        raw = Path(store.url).read_bytes()
        assert secret.split("_", 2)[2].encode() not in raw
    _, enrol_secret = g.keys.create("kiosk", "enrol")
    assert g.keys.count() == 2 and g.keys.count("enrol") == 1
    assert {k.name for k in g.keys.list()} == {"ops laptop", "kiosk"}
    with pytest.raises(ConflictError, match="last admin key"):
        g.keys.delete(rec.id)
    assert g.keys.authenticate(secret).role == "admin"
    assert g.keys.delete(rec.id, allow_last_admin=True).id == rec.id
    assert g.keys.authenticate(secret) is None
    assert g.keys.authenticate(enrol_secret).role == "enrol"
    with pytest.raises(NotFoundError):
        g.keys.delete(rec.id)
    with pytest.raises(GalleryError, match="unknown role"):
        g.keys.create("x", "root")


def test_identification_threshold_comes_from_the_cards_impostor_table(store, people):
    card = ModelCard(
        name="fake-model",
        architecture="mbf",
        embedding_dim=DIM,
        calibration=Calibration(thresholds={"1e-3": 0.5}),
    )
    g = store.open(policy=IdentificationPolicy(), card=card)
    g.subjects.create("Ada", embeddings=people.sample(0, 2))
    # a 1:1 calibration is not an identification operating point: no silent guess
    with pytest.raises(GalleryError, match=r"calibrate .*--impostors"):
        g.identify(people.sample(0))
    res = g.identify(people.sample(0), IdentificationPolicy(threshold=0.5))[
        0
    ]  # explicit is allowed
    assert res.known and res.operating_point.source == "threshold"
    assert res.operating_point.expected_fpir is None  # nothing to predict it from
    g.close()

    tail = log_linear_tail(0.4)
    g = store.open(policy=IdentificationPolicy(), card=card.model_copy(update={"impostors": tail}))
    one = g.identify(people.sample(0))[0]
    point = one.operating_point
    assert (point.source, point.target_fpir, point.gallery_subjects, point.gallery_faces) == (
        "fpir",
        0.01,
        1,
        2,
    )
    assert one.threshold == point.threshold == g.operating_point().threshold
    assert point.expected_fpir == pytest.approx(0.01, rel=0.02)
    # per request: a stricter target is a higher threshold
    strict = g.identify(people.sample(0), point=g.operating_point(fpir="1e-4"))[0].operating_point
    assert strict.threshold > point.threshold and strict.target_fpir == 1e-4
    with pytest.raises(GalleryError, match="FPIR"):
        g.operating_point(fpir="2")
    # enrolling more people raises the threshold; erasing them lowers it again
    ids = [g.subjects.create(f"p{i}", embeddings=people.sample(i, 1)).id for i in range(1, 8)]
    grown = g.operating_point()
    assert grown.gallery_subjects == 8 and grown.threshold > point.threshold
    for sid in ids:
        g.subjects.delete(sid)
    assert g.operating_point().threshold == pytest.approx(point.threshold)
    # an explicit threshold stays possible, and the card says what FPIR it gives
    fixed = g.operating_point(threshold=0.3)
    assert fixed.source == "threshold" and fixed.expected_fpir > 0.01
    g.close()
    # another handle (another process) sees the change of faces and recomputes
    g1 = store.open(policy=IdentificationPolicy(), card=card.model_copy(update={"impostors": tail}))
    g2 = store.open(policy=IdentificationPolicy(), card=card.model_copy(update={"impostors": tail}))
    before = g1.operating_point().threshold
    g2.subjects.create("Bob", embeddings=people.sample(9, 1))
    assert g1.operating_point().threshold > before
    g1.close()
    g2.close()


def test_export(store, people):
    g = store.open()
    s = g.subjects.create("Ada", {"badge": 7}, embeddings=people.sample(0, 2))
    data = g.export()
    assert data["model"] == "fake-model" and data["dim"] == DIM
    assert data["subjects"][0]["id"] == s.id and len(data["subjects"][0]["faces"]) == 2
    assert "embedding" not in data["subjects"][0]["faces"][0]
    full = g.export(include_embeddings=True)
    emb = np.asarray(full["subjects"][0]["faces"][0]["embedding"], np.float32)
    assert emb.shape == (DIM,) and abs(float(np.linalg.norm(emb)) - 1) < 1e-5
    stats = g.stats()
    assert stats["subjects"] == 1 and stats["faces"] == 2 and stats["backend"] == store.backend


def test_embeddings_are_normalised_on_the_way_in(store):
    g = store.open()
    raw = np.zeros((1, DIM), np.float32)
    raw[0, 0] = 7.0
    s = g.subjects.create("Ada", embeddings=raw)
    _, mat = g.subjects.embeddings(s.id)
    assert np.allclose(mat, unit(raw))
    hit = g.search(raw * 3, k=1)[0][0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_target_fpir_is_stored_with_the_gallery(store, people):
    card = ModelCard(
        name="fake-model", architecture="mbf", embedding_dim=DIM, impostors=log_linear_tail(0.4)
    )
    g1 = store.open(policy=IdentificationPolicy(), card=card)
    g1.subjects.create("Ada", embeddings=people.sample(0, 1))
    assert g1.fpir == "1e-2" and g1.stored_target_fpir() is None
    default = g1.operating_point()
    g2 = store.open(policy=IdentificationPolicy(), card=card)
    assert g2.set_target_fpir(0.001) == "1e-3"
    # another handle (another process, the service) follows the stored target
    stricter = g1.operating_point()
    assert (g1.fpir, stricter.target_fpir) == ("1e-3", 0.001)
    assert stricter.threshold > default.threshold
    # a handle's own target, then a call's, win over the stored one
    g3 = store.open(policy=IdentificationPolicy(fpir="1e-1"), card=card)
    assert g3.operating_point().target_fpir == 0.1
    assert g3.operating_point(fpir="1e-2").target_fpir == 0.01
    with pytest.raises(GalleryError, match="FPIR"):
        g2.set_target_fpir(1.5)
    assert g2.set_target_fpir(None) == "1e-2" and g1.fpir == "1e-2"
    for g in (g1, g2, g3):
        g.close()
