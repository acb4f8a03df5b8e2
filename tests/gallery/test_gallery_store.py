"""The Gallery facade (opening, search, identification and its operating point, export, stats,
the parts sharing one database), on every store: SQLite, PostgreSQL and Milvus Lite; exact and
FAISS indexes. Each part has its module: test_gallery_subjects, _events, _keys, _cameras and
_visitors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gallery_helpers import DIM, enrol_people

from marginface.card import Calibration, ModelCard
from marginface.decision import IdentificationPolicy
from marginface.errors import GalleryError
from tests.impostor_tables import log_linear_tail


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


def test_the_parts_share_the_gallerys_database_and_its_transactions(store, people):
    g = store.open()
    ada = g.subjects.create("Ada", embeddings=people.sample(0, 1))
    with pytest.raises(RuntimeError, match="undone"), g._db.transaction():
        g.subjects.update(ada.id, name="Ada L.")
        g.events.log("door", subject_id=ada.id, score=0.9, decision="match")
        g.cameras.create("door", "rtsp://cam/door")
        g.keys.create("kiosk", "enrol")
        raise RuntimeError("undone: every part's write with it")
    assert g.subjects.get(ada.id).name == "Ada"
    assert (g.events.count(), g.cameras.count(), g.keys.count()) == (0, 0, 0)
    # the event names the subject through the subjects part, in the same transaction
    with g._db.transaction():
        renamed = g.subjects.update(ada.id, name="Ada L.")
        logged = g.events.log("door", subject_id=ada.id, score=0.9, decision="match")
    assert renamed.name == logged.subject_name == "Ada L."
    stats = g.stats()
    assert (stats["subjects"], stats["faces"], stats["events"]) == (1, 1, 1)
