"""``marginface.gallery.likeness``: the one rule for faces added to a subject."""

from __future__ import annotations

import numpy as np

from marginface.gallery import unlike, unlike_each_other


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_unlike_the_subject() -> None:
    subject = np.vstack([unit(1, 0, 0), unit(1, 0.2, 0)])
    faces = np.vstack([unit(1, 0.1, 0), unit(0, 1, 0), unit(0.6, 0.8, 0)])
    found = unlike(subject, faces, 0.5)
    assert [u.index for u in found] == [1]
    assert found[0].threshold == 0.5 and found[0].score < 0.5
    assert unlike(subject, unit(1, 0, 0), 0.5) == []  # one face as a vector
    assert unlike(np.zeros((0, 3), np.float32), faces, 0.5) == []  # nothing to compare with
    assert len(unlike(subject, faces, 0.9999)) == 3


def test_unlike_each_other() -> None:
    faces = np.vstack([unit(1, 0, 0), unit(1, 0.1, 0), unit(0, 0, 1)])
    assert [u.index for u in unlike_each_other(faces, 0.5)] == [2]
    assert unlike_each_other(faces[:1], 0.5) == []
    two_people = np.vstack([unit(1, 0, 0), unit(0, 1, 0)])
    assert [u.index for u in unlike_each_other(two_people, 0.5)] == [0, 1]


def test_two_people_of_two_faces_each_do_not_pass_as_one() -> None:
    """Each face has a look-alike among the others (its own person's other face), yet the
    faces are two people: the groups are told apart, the smaller one refused."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 32))
    faces = np.vstack([a + 0.1 * rng.standard_normal(32) for _ in range(3)] + [b, b + 0.05])
    refused = unlike_each_other(faces, 0.5)
    assert [u.index for u in refused] == [3, 4]
    assert unlike_each_other(faces[:3], 0.5) == []  # one person: linked
    chain = np.vstack([[1.0, 0.0], [0.8, 0.6], [0.28, 0.96]])  # 0-1 and 1-2 alike, 0-2 not
    assert unlike_each_other(chain, 0.7) == []  # one person, linked through the middle face
