"""``gallery.visitors``: strangers seen by cameras, grouped as visitors (VisitorStore), reviewed
(assigned to a subject by the gallery, dismissed or split) and purged after the retention age
(by the gallery, with the camera visits' events)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from gallery_helpers import DIM, MODEL, People, make_store

from marginface.card import Calibration, ModelCard
from marginface.errors import ConflictError, GalleryError, NotFoundError
from marginface.gallery import FacesUnlikeError, Gallery, StrangerSighting, Visitor
from tests.impostor_tables import log_linear_tail

T0 = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


def card() -> ModelCard:
    # the 1:1 threshold holds assigned faces to the subject's own (marginface.gallery.likeness)
    return ModelCard(
        name=MODEL,
        architecture="mbf",
        embedding_dim=DIM,
        impostors=log_linear_tail(0.45),
        calibration=Calibration(thresholds={"1e-3": 0.45}),
    )


@pytest.fixture
def people() -> People:
    return People(10, seed=3)


@pytest.fixture
def gallery(tmp_path, people: People) -> Iterator[Gallery]:
    """Two enrolled people (0 and 1); the others are strangers."""
    with Gallery.open(tmp_path / "g.db", card=card()) as g:
        g.subjects.create("Ada", embeddings=people.sample(0, 3))
        g.subjects.create("Grace", embeddings=people.sample(1, 3))
        yield g


def crop(shade: int) -> np.ndarray:
    return np.full((112, 112, 3), shade, np.uint8)


def sight(
    g: Gallery,
    people: People,
    person: int,
    *,
    at: datetime = T0,
    camera: str = "door",
    n: int = 3,
    crops: bool = True,
    **kwargs,
) -> StrangerSighting:
    """One unknown visit of ``person``: ``n`` faces of rising quality over 4 s."""
    qualities = [0.2 + 0.2 * i for i in range(n)]
    return g.visitors.record(
        camera,
        at,
        at + timedelta(seconds=4),
        people.sample(person, n),
        qualities,
        [crop(10 * i) for i in range(n)] if crops else None,
        **kwargs,
    )


# -- grouping -----------------------------------------------------------------------------------
def test_sightings_of_one_person_make_one_visitor(gallery: Gallery, people: People) -> None:
    first = sight(gallery, people, 5, camera="door")
    assert first.new and first.status == "pending" and first.score == -1.0
    again = sight(gallery, people, 5, at=T0 + timedelta(hours=3), camera="lab")
    assert (again.visitor_id, again.new, again.status) == (first.visitor_id, False, "pending")
    assert again.score >= gallery.operating_point().threshold
    other = sight(gallery, people, 6, at=T0 + timedelta(hours=1))
    assert other.new and other.visitor_id != first.visitor_id
    assert gallery.visitors.count() == 2 and gallery.visitors.count(None) == 2
    v = gallery.visitors.get(first.visitor_id)
    assert isinstance(v, Visitor)
    assert (v.status, v.sightings, v.cameras, v.subject_id) == ("pending", 2, ["door", "lab"], None)
    assert (v.first_seen, v.last_seen) == (T0, T0 + timedelta(hours=3, seconds=4))
    assert len(v.faces) == 6 and v.face_ids == [f.id for f in v.faces]
    assert [f.quality for f in v.faces] == sorted((f.quality for f in v.faces), reverse=True)
    assert all(f.has_crop for f in v.faces)
    png = gallery.visitors.face_crop(v.faces[0].id)
    assert png is not None and png.startswith(PNG)
    # newest first, with their faces; JSON-ready
    listed = gallery.visitors.list()
    assert [x.id for x in listed] == [first.visitor_id, other.visitor_id]
    assert listed[0].to_dict()["faces"][0]["id"] == v.faces[0].id
    assert [x.id for x in gallery.visitors.list(limit=1, offset=1)] == [other.visitor_id]
    assert gallery.visitors.list("assigned") == []
    with pytest.raises(GalleryError, match="unknown visitor status"):
        gallery.visitors.list("maybe")
    with pytest.raises(NotFoundError):
        gallery.visitors.get("nope")
    with pytest.raises(NotFoundError):
        gallery.visitors.face_crop(10**9)


def test_strangers_are_grouped_only_on_strong_consistent_evidence(
    gallery: Gallery, people: People
) -> None:
    """Two people whose mean faces come close (a visit mixing both, as a track switching
    people would give) are not merged: most faces of a visit must each match the visitor's."""
    first = sight(gallery, people, 5)  # the model's 1:1 thresholds: FAR 1e-4 mean, 1e-3 faces
    again = sight(gallery, people, 5, at=T0 + timedelta(hours=1))
    assert not again.new and again.visitor_id == first.visitor_id
    # a sighting of 5 faces: one of person 5, four of person 6, and a mean pulled to 5 by
    # its one very good face; the mean alone would join person 5's visitor
    mixed = np.vstack([people.sample(5, 1), people.sample(6, 4)])
    qualities = [50.0, 0.1, 0.1, 0.1, 0.1]
    mean = (np.asarray(qualities)[:, None] * mixed).sum(axis=0)
    mean /= np.linalg.norm(mean)
    assert float(mean @ people.centres[5]) > 0.75  # as close to 5 as 5's own photos
    joined = gallery.visitors.record("door", T0, T0 + timedelta(seconds=4), mixed, qualities)
    assert joined.new and joined.visitor_id != first.visitor_id
    # the card decides the thresholds: none needed from the caller
    assert gallery.visitors.count() == 2


def test_a_visitor_holding_two_people_is_split(gallery: Gallery, people: People) -> None:
    a = sight(gallery, people, 5, threshold=-1.0)  # a threshold that merges anyone
    b = sight(gallery, people, 6, at=T0 + timedelta(hours=1), threshold=-1.0)
    assert b.visitor_id == a.visitor_id
    merged = gallery.visitors.get(a.visitor_id)
    assert len(merged.faces) == 6
    theirs = [f.id for f in merged.faces if f.ts == T0 + timedelta(hours=1, seconds=4)]
    new = gallery.visitors.split(a.visitor_id, theirs)
    assert (new.status, sorted(new.face_ids)) == ("pending", sorted(theirs))
    assert new.first_seen == new.last_seen == T0 + timedelta(hours=1, seconds=4)
    left = gallery.visitors.get(a.visitor_id)
    assert sorted(left.face_ids) == sorted(set(merged.face_ids) - set(theirs))
    assert gallery.visitors.count() == 2
    # each visitor's mean now follows its own faces: person 6 joins the new one
    again = sight(gallery, people, 6, at=T0 + timedelta(hours=2))
    assert again.visitor_id == new.id
    with pytest.raises(GalleryError, match="at least one face"):
        gallery.visitors.split(a.visitor_id, left.face_ids)
    with pytest.raises(GalleryError, match="not faces of"):
        gallery.visitors.split(a.visitor_id, [new.face_ids[0]])
    with pytest.raises(GalleryError, match="name the faces"):
        gallery.visitors.split(a.visitor_id, [])
    gallery.visitors.dismiss(a.visitor_id)
    with pytest.raises(ConflictError, match="only a pending one splits"):
        gallery.visitors.split(a.visitor_id, left.face_ids[:1])
    with pytest.raises(NotFoundError):
        gallery.visitors.split("nope", [1])


def test_the_threshold_decides_the_grouping(gallery: Gallery, people: People) -> None:
    a = sight(gallery, people, 5, threshold=0.5)
    assert not sight(gallery, people, 5, threshold=0.5).new
    # a threshold above any two photos' similarity: every visit is a new visitor
    assert sight(gallery, people, 5, threshold=0.999).new
    # a threshold below chance groups strangers together
    b = sight(gallery, people, 7, threshold=-1.0)
    assert not b.new and b.visitor_id in {a.visitor_id, *[v.id for v in gallery.visitors.list()]}


def test_a_visitor_keeps_its_best_faces(gallery: Gallery, people: People) -> None:
    v = None
    for i in range(4):
        s = sight(gallery, people, 5, at=T0 + timedelta(minutes=i), n=3, keep_faces=4)
        v = gallery.visitors.get(s.visitor_id)
        assert len(v.faces) == min(4, 3 * (i + 1))
    assert v is not None and v.sightings == 4
    assert sorted(f.quality for f in v.faces) == pytest.approx([0.6, 0.6, 0.6, 0.6])
    # without crops nothing is kept but the embeddings and the qualities
    s = sight(gallery, people, 8, crops=False)
    face = gallery.visitors.get(s.visitor_id).faces[0]
    assert not face.has_crop and gallery.visitors.face_crop(face.id) is None


def test_bad_sightings_are_refused(gallery: Gallery, people: People) -> None:
    cases = [
        (people.sample(5, 2)[:, :16], [0.5, 0.5], None),  # another model's dimension
        (people.sample(5, 2), [0.5], None),  # qualities do not match
        (people.sample(5, 2), [0.5, float("nan")], None),
        (people.sample(5, 2), [0.5, 0.5], [crop(0)]),  # crops do not match
        (people.sample(5, 1), [0.5], [np.zeros((4, 4), np.uint8)]),  # not an RGB image
        (np.zeros((0, DIM), np.float32), [], None),
    ]
    for emb, q, crops in cases:
        with pytest.raises(GalleryError):
            gallery.visitors.record("door", T0, T0, emb, q, crops, threshold=0.5)
    with pytest.raises(GalleryError, match="before its first_seen"):
        gallery.visitors.record(
            "door", T0, T0 - timedelta(seconds=1), people.sample(5, 1), [0.5], threshold=0.5
        )
    assert gallery.visitors.count(None) == 0


# -- review -------------------------------------------------------------------------------------
def test_assign_to_a_new_subject(gallery: Gallery, people: People) -> None:
    for i in range(3):
        s = sight(gallery, people, 5, at=T0 + timedelta(minutes=i))
    faces_before = gallery.subjects.count_faces()
    assert gallery.identify(people.sample(5))[0].match is None
    subject = gallery.assign_visitor(s.visitor_id, name="Hedy")
    assert subject.name == "Hedy" and subject.n_faces == 5  # the best five of nine
    assert gallery.subjects.count_faces() == faces_before + 5
    assert all(f.has_crop for f in gallery.subjects.faces(subject.id))
    answer = gallery.identify(people.sample(5))[0]
    assert answer.subject_id == subject.id and answer.name == "Hedy"
    v = gallery.visitors.get(s.visitor_id)
    assert (v.status, v.subject_id) == ("assigned", subject.id)
    assert gallery.visitors.count() == 0 and gallery.visitors.count("assigned") == 1
    with pytest.raises(ConflictError, match="is assigned already"):
        gallery.assign_visitor(s.visitor_id, name="Hedy again")
    with pytest.raises(ConflictError, match="is assigned already"):
        gallery.visitors.dismiss(s.visitor_id)
    # a later unknown visit of someone else is not grouped with the assigned visitor
    assert sight(gallery, people, 6).new
    # erasing the subject erases the visitors assigned to it
    gallery.subjects.delete(subject.id)
    with pytest.raises(NotFoundError):
        gallery.visitors.get(s.visitor_id)


def test_assign_to_an_existing_subject(gallery: Gallery, people: People) -> None:
    (ada,) = gallery.subjects.find("Ada")
    s = sight(gallery, people, 0, n=4)  # Ada, seen unknown (say, badly lit)
    v = gallery.visitors.get(s.visitor_id)
    chosen = v.face_ids[:2]
    subject = gallery.assign_visitor(s.visitor_id, subject_id=ada.id, faces=chosen)
    assert subject.id == ada.id and subject.n_faces == ada.n_faces + 2
    assert gallery.visitors.get(s.visitor_id).status == "assigned"
    with pytest.raises(ConflictError):
        gallery.assign_visitor(s.visitor_id, subject_id=ada.id)


def test_assignment_input_is_checked(gallery: Gallery, people: People) -> None:
    s = sight(gallery, people, 5)
    with pytest.raises(GalleryError, match="one of the two"):
        gallery.assign_visitor(s.visitor_id)
    with pytest.raises(GalleryError, match="one of the two"):
        gallery.assign_visitor(s.visitor_id, subject_id="x", name="y")
    with pytest.raises(NotFoundError, match="unknown subject"):
        gallery.assign_visitor(s.visitor_id, subject_id="nobody")
    with pytest.raises(GalleryError, match="not faces of visitor"):
        gallery.assign_visitor(s.visitor_id, name="Hedy", faces=[10**9])
    with pytest.raises(GalleryError, match="name is empty"):
        gallery.assign_visitor(s.visitor_id, name="  ")
    with pytest.raises(NotFoundError):
        gallery.assign_visitor("nope", name="Hedy")
    assert gallery.visitors.get(s.visitor_id).status == "pending"
    assert gallery.subjects.count() == 2


def test_a_visitor_like_another_subject_needs_force(gallery: Gallery, people: People) -> None:
    (grace,) = gallery.subjects.find("Grace")
    s = sight(gallery, people, 1)  # looks like Grace
    subjects, faces = gallery.subjects.count(), gallery.subjects.count_faces()
    with pytest.raises(ConflictError, match=r"looks like subject 'Grace'.*or force"):
        gallery.assign_visitor(s.visitor_id, name="Not Grace")
    (ada,) = gallery.subjects.find("Ada")
    with pytest.raises(ConflictError, match="'Grace'"):
        gallery.assign_visitor(s.visitor_id, subject_id=ada.id)
    assert (gallery.subjects.count(), gallery.subjects.count_faces()) == (subjects, faces)
    assert gallery.visitors.get(s.visitor_id).status == "pending"
    # to Grace herself it is no conflict
    assert gallery.assign_visitor(s.visitor_id, subject_id=grace.id).id == grace.id
    # force enrols anyway
    s2 = sight(gallery, people, 1)
    twin = gallery.assign_visitor(s2.visitor_id, name="Grace's twin", force=True)
    assert twin.n_faces == 3 and gallery.visitors.get(s2.visitor_id).subject_id == twin.id


def test_a_dismissed_visitor_does_not_come_back(gallery: Gallery, people: People) -> None:
    s = sight(gallery, people, 5)
    v = gallery.visitors.dismiss(s.visitor_id)
    assert v.status == "dismissed" and gallery.visitors.count() == 0
    assert gallery.visitors.dismiss(s.visitor_id).status == "dismissed"  # idempotent
    later = sight(gallery, people, 5, at=T0 + timedelta(days=1), camera="yard")
    assert (later.visitor_id, later.new, later.status) == (s.visitor_id, False, "dismissed")
    v = gallery.visitors.get(s.visitor_id)
    assert (v.sightings, v.last_seen, v.cameras) == (
        2,
        T0 + timedelta(days=1, seconds=4),
        ["door", "yard"],
    )
    assert len(v.faces) == 3  # no new faces kept for a dismissed person
    assert gallery.visitors.count() == 0 and gallery.visitors.list() == []
    with pytest.raises(ConflictError, match="is dismissed already"):
        gallery.assign_visitor(s.visitor_id, name="Hedy")


def test_the_review_steps_the_gallery_composes(gallery: Gallery, people: People) -> None:
    """An assignment is the gallery's (it enrols into the subjects and asks identification);
    the visitors part gives it the faces to enrol, the visitor's mean and the final mark."""
    (ada,) = gallery.subjects.find("Ada")
    s = sight(gallery, people, 5, n=4)
    v = gallery.visitors.get(s.visitor_id)
    chosen, vecs, crops = gallery.visitors.faces_to_enrol(v)
    assert chosen == v.face_ids and vecs.shape == (4, DIM)  # all four: fewer than five
    assert crops is not None and all(c is not None and c.startswith(PNG) for c in crops)
    one = v.face_ids[1]
    assert gallery.visitors.faces_to_enrol(v, [one, one])[0] == [one]
    with pytest.raises(GalleryError, match="no stored face to enrol"):
        gallery.visitors.faces_to_enrol(v, [])
    plain = gallery.visitors.get(sight(gallery, people, 6, crops=False).visitor_id)
    assert gallery.visitors.faces_to_enrol(plain)[2] is None
    mean = gallery.visitors.mean(v.id)
    assert abs(float(np.linalg.norm(mean)) - 1) < 1e-5
    assert float(mean @ people.centres[5]) > float(mean @ people.centres[6])
    with pytest.raises(NotFoundError):
        gallery.visitors.mean("nope")
    gallery.visitors.mark_assigned(v.id, ada.id)
    assert (gallery.visitors.get(v.id).status, gallery.visitors.get(v.id).subject_id) == (
        "assigned",
        ada.id,
    )
    with pytest.raises(ConflictError, match="reviewed meanwhile"):
        gallery.visitors.mark_assigned(v.id, ada.id)


# -- retention ----------------------------------------------------------------------------------
def test_the_visitors_part_of_the_purge(gallery: Gallery, people: People) -> None:
    old = sight(gallery, people, 5, at=T0)
    new = sight(gallery, people, 6, at=T0 + timedelta(days=40))
    cutoff = (T0 + timedelta(days=30)).timestamp()
    assert gallery.visitors.delete_seen_before(cutoff) == {"visitor_faces": 3, "visitors": 1}
    with pytest.raises(NotFoundError):
        gallery.visitors.get(old.visitor_id)
    assert len(gallery.visitors.get(new.visitor_id).faces) == 3
    assert gallery.visitors.delete_seen_before(cutoff) == {"visitor_faces": 0, "visitors": 0}


def test_purge_by_age(gallery: Gallery, people: People) -> None:
    (ada,) = gallery.subjects.find("Ada")
    old = sight(gallery, people, 5, at=T0)
    mixed = sight(gallery, people, 6, at=T0)
    sight(gallery, people, 6, at=T0 + timedelta(days=40))
    assigned = sight(gallery, people, 7, at=T0)
    gallery.assign_visitor(assigned.visitor_id, name="Hedy")
    details = {"camera": "door", "track_id": 1, "visit_id": "v1", "kind": "visit"}
    for day in (0, 40):
        for decision in ("arrived", "left"):
            gallery.events.log(
                "door",
                subject_id=ada.id,
                score=0.8,
                decision=decision,
                time=T0 + timedelta(days=day),
                details=details,
            )
    gallery.events.log(
        "kiosk",
        subject_id=ada.id,
        score=0.9,
        decision="match",
        time=T0,
        details={"faces": 1, "note": '"kind": "visit"'},
    )
    subjects, faces = gallery.subjects.count(), gallery.subjects.count_faces()
    counts = gallery.purge_stream_data(T0 + timedelta(days=30))
    assert counts == {"visitor_faces": 9, "visitors": 1, "events": 2}
    with pytest.raises(NotFoundError):
        gallery.visitors.get(old.visitor_id)
    kept = gallery.visitors.get(mixed.visitor_id)
    assert len(kept.faces) == 3 and all(f.ts > T0 + timedelta(days=30) for f in kept.faces)
    hedy = gallery.visitors.get(assigned.visitor_id)  # the record of the assignment stays
    assert hedy.status == "assigned" and hedy.faces == []
    assert (gallery.subjects.count(), gallery.subjects.count_faces()) == (subjects, faces)
    assert sorted((e.source, e.decision) for e in gallery.events.list()) == [
        ("door", "arrived"),
        ("door", "left"),
        ("kiosk", "match"),
    ]
    assert gallery.purge_stream_data(T0 + timedelta(days=30)) == {
        "visitor_faces": 0,
        "visitors": 0,
        "events": 0,
    }


# -- PostgreSQL ---------------------------------------------------------------------------------
def test_strangers_on_postgresql(tmp_path, request: pytest.FixtureRequest, people: People) -> None:
    url = make_store("postgresql", "exact", tmp_path, request).url
    with Gallery.open(url, card=card()) as g:
        g.subjects.create("Ada", embeddings=people.sample(0, 3))
        a = sight(g, people, 5)
        assert not sight(g, people, 5, at=T0 + timedelta(hours=1)).new
        b = sight(g, people, 6)
        assert b.new
        assert g.visitors.face_crop(g.visitors.get(a.visitor_id).face_ids[0]).startswith(PNG)
        g.visitors.dismiss(b.visitor_id)
        subject = g.assign_visitor(a.visitor_id, name="Hedy")
        assert g.identify(people.sample(5))[0].subject_id == subject.id
        with pytest.raises(ConflictError):
            g.assign_visitor(a.visitor_id, name="Hedy")
        assert g.purge_stream_data(T0 + timedelta(days=1)) == {
            "visitor_faces": 9,
            "visitors": 1,
            "events": 0,
        }


# -- durability ---------------------------------------------------------------------------------
CHILD = """
import sys
import numpy as np
from marginface.decision import IdentificationPolicy
from marginface.gallery import Gallery

policy = IdentificationPolicy(threshold=0.5)
g = Gallery.open(sys.argv[1], sys.argv[2], int(sys.argv[3]), policy=policy)
rng = np.random.default_rng(0)
centres = rng.normal(size=(3, g.dim))
for i in range(100000):
    faces = centres[i % 3] + 0.2 * rng.normal(size=(4, g.dim))
    s = g.visitors.record("door", 1e9 + i, 1e9 + i + 1, faces, [0.5, 0.6, 0.7, 0.8],
                          [np.full((8, 8, 3), i % 250, np.uint8)] * 4, threshold=0.5)
    g.events.log("door", subject_id=None, score=0.1, decision="left", time=1e9 + i + 1,
                details={"kind": "visit", "visit_id": str(i)})
    print("DONE", i, s.visitor_id, flush=True)
"""


def test_sigkill_loses_no_recorded_sighting(tmp_path) -> None:
    """Every sighting and event whose call returned survives a SIGKILL of the process."""
    url = str(tmp_path / "g.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, MODEL, str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("DONE"):
            done.append(line.split()[2])
            if len(done) == 12:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=30)
    assert len(done) == 12, proc.stderr.read() if proc.stderr else ""
    with Gallery.open(url, create=False) as g:
        visitors = {v.id: v for v in g.visitors.list(None, limit=None)}
        assert set(done) <= set(visitors) and len(set(done)) == 3
        assert sum(v.sightings for v in visitors.values()) >= 12
        assert all(0 < len(v.faces) <= 8 for v in visitors.values())
        assert len(g.events.list(limit=None)) >= 12


def test_assigned_faces_must_look_like_the_subject(gallery: Gallery, people: People) -> None:
    """The rule of every face added to a subject (marginface.gallery.likeness), here for a
    stranger assigned to an enrolled person: below the 1:1 threshold it is refused, in the
    write's transaction, unless the mismatch is forced."""
    (ada,) = gallery.subjects.find("Ada")
    s = sight(gallery, people, 5)  # a stranger
    faces = gallery.subjects.count_faces()
    for force in (False, True):  # force alone overrides look-alikes, not a mismatch
        with pytest.raises(FacesUnlikeError, match="does not look like 'Ada'") as err:
            gallery.assign_visitor(s.visitor_id, subject_id=ada.id, force=force)
        assert err.value.reason == "subject" and err.value.subject_id == ada.id
        assert {f for f, _ in err.value.faces} == set(gallery.visitors.get(s.visitor_id).face_ids)
    assert gallery.subjects.count_faces() == faces
    assert gallery.visitors.get(s.visitor_id).status == "pending"
    # the threshold is the 1:1 one: an explicit lower one lets them through
    with pytest.raises(FacesUnlikeError):
        gallery.assign_visitor(s.visitor_id, subject_id=ada.id, threshold=0.9)
    subject = gallery.assign_visitor(s.visitor_id, subject_id=ada.id, force_mismatch=True)
    assert subject.n_faces == ada.n_faces + 3


def test_faces_of_several_people_are_not_assigned_together(
    gallery: Gallery, people: People
) -> None:
    mixed = np.vstack([people.sample(5, 2), people.sample(6, 1)])
    s = gallery.visitors.record("door", T0, T0, mixed, [0.9, 0.8, 0.7], None, threshold=1.01)
    ids = [f.id for f in gallery.visitors.get(s.visitor_id).faces]  # best first: 5, 5, 6
    for kwargs in ({}, {"force": True}, {"force": True, "force_mismatch": True}):
        with pytest.raises(FacesUnlikeError, match="do not all look alike") as err:
            gallery.assign_visitor(s.visitor_id, name="Mixed", **kwargs)
        assert err.value.reason == "each_other" and [f for f, _ in err.value.faces] == [ids[2]]
    assert gallery.subjects.count() == 2
    assert gallery.assign_visitor(s.visitor_id, name="Hedy", faces=ids[:2]).n_faces == 2
