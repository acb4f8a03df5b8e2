"""The Recognizer on real photos (../shared/data/celeba-dev) with the bundled SFace baseline and
YuNet, through the real ``marginface.embed.Pipeline``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marginface.decision import IdentificationPolicy
from marginface.errors import NoFaceError
from marginface.gallery import Gallery, IdentityConflictError, Recognizer


@pytest.fixture(scope="module")
def pipeline():
    from marginface.embed import Pipeline

    return Pipeline.from_names(model="sface", selection="largest")


def photos_of(root: Path, name: str) -> list[Path]:
    return sorted((root / name).glob("*.jpg"))


def test_enrol_identify_verify_real_faces(shared_data, pipeline, tmp_path):
    root = shared_data / "celeba-dev"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    known, strangers = names[:6], names[6:12]
    card = pipeline.embedder.card
    assert card.calibration is not None, "the SFace card should carry its calibration"
    g = Gallery.open(tmp_path / "g.db", card=card)  # threshold: the card's calibrated one
    rec = Recognizer(g, pipeline)  # the pipeline answers only the largest face: widened to all
    assert rec.pipeline.selection == "all"
    enrolled = {}
    for name in known:
        res = rec.enroll(name, photos_of(root, name)[:3])
        assert res.enrolled >= 2, res.photos
        enrolled[name] = res.subject.id
    assert g.subjects.count() == 6 and g.model_name == "sface" and g.dim == 128

    correct = 0
    for name in known:
        faces = rec.identify(photos_of(root, name)[4])
        assert faces, name
        correct += faces[0].identification.subject_id == enrolled[name]
    assert correct >= 5
    false_accepts = sum(
        bool(f.identification.known)
        for name in strangers
        for f in rec.identify(photos_of(root, name)[0])
    )
    assert false_accepts <= 1

    # two people side by side: both answered
    from marginface.align import read_image

    a = read_image(photos_of(root, known[0])[5])
    b = read_image(photos_of(root, known[1])[5])
    h = max(a.shape[0], b.shape[0])
    pad = [np.pad(x, ((0, h - x.shape[0]), (0, 20), (0, 0))) for x in (a, b)]
    both = np.concatenate(pad, axis=1)
    answers = {f.identification.subject_id for f in rec.identify(both)}
    assert {enrolled[known[0]], enrolled[known[1]]} <= answers

    same = rec.verify(photos_of(root, known[2])[0], photos_of(root, known[2])[6])
    diff = rec.verify(photos_of(root, known[2])[0], photos_of(root, known[3])[0])
    assert same.same and not diff.same and same.score > diff.score
    assert rec.verify_subject(photos_of(root, known[3])[6], enrolled[known[3]]).same

    blank = np.full((200, 200, 3), 127, np.uint8)
    assert rec.identify(blank) == []
    with pytest.raises(NoFaceError):
        rec.verify(blank, photos_of(root, known[0])[0])
    res = rec.add_photos(enrolled[known[0]], [blank, photos_of(root, known[0])[0], b"not an image"])
    # photo [0] is enrolled already (its bytes are stored): a duplicate, found by its hash
    assert [o.status for o in res.photos] == ["no_face", "duplicate_photo", "unreadable"]


def test_enrolment_keeps_real_identities_apart(shared_data, pipeline, tmp_path):
    """Two other photos of an enrolled person, enrolled as a new subject, are held back as
    hers; another person's photo added to her subject is refused as a mismatch, with its
    score (real photos, SFace, its card's calibrated threshold given explicitly)."""
    root = shared_data / "celeba-dev"
    card = pipeline.embedder.card
    policy = IdentificationPolicy(threshold=card.calibration.threshold())
    g = Gallery.open(tmp_path / "g.db", card=card, policy=policy)
    rec = Recognizer(g, pipeline)
    her = photos_of(root, "celeb_7205")
    first = rec.enroll("Celeb A", her[:2]).subject
    with pytest.raises(IdentityConflictError, match="'Celeb A'") as info:
        rec.enroll("Celeb A, again", her[2:4])
    assert [o.status for o in info.value.photos] == ["matches_other"] * 2
    for o in info.value.photos:
        assert o.conflict.subject_id == first.id and o.conflict.score >= o.conflict.threshold
    assert g.subjects.count() == 1
    forced = rec.enroll("Celeb A, again", her[2:4], force=True)
    assert forced.enrolled == 2 and all(o.forced for o in forced.photos)
    assert all("'Celeb A'" in o.message for o in forced.photos)

    other = photos_of(root, "celeb_7206")[0]
    (refused,) = rec.add_photos(first.id, [other]).photos
    assert refused.status == "mismatch" and refused.conflict.subject_id == first.id
    assert (
        refused.conflict.score
        < refused.conflict.threshold
        == pytest.approx(rec.threshold(), abs=1e-4)
    )
    assert g.subjects.get(first.id).n_faces == 2
