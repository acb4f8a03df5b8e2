"""Identification answers say how they were decided, at a target FPIR per service or per
request, and the threshold follows the gallery's size."""

from __future__ import annotations

from tests.serve.serve_fakes import Harness, make_photo


def _identify(h: Harness, photo: bytes, **data: str) -> dict:
    r = h.client.post(
        "/v1/identify",
        files={"photo": ("q.png", photo, "image/png")},
        data=data,
        headers=h.headers("recognise"),
    )
    assert r.status_code == 200, r.text
    return r.json()["faces"][0]


def test_answers_carry_the_operating_point(harness: Harness) -> None:
    harness.enrol("Ada", make_photo((1, 60)))
    face = _identify(harness, make_photo((1, 70)))
    point = face["operating_point"]
    assert point["source"] == "fpir" and point["target_fpir"] == 0.01
    assert (point["gallery_subjects"], point["gallery_faces"]) == (1, 1)
    assert point["threshold"] == face["threshold"]
    assert abs(point["expected_fpir"] - 0.01) < 0.001
    assert face["match"]["name"] == "Ada"

    # per request: a stricter target, a higher threshold
    strict = _identify(harness, make_photo((1, 70)), fpir="0.0001")["operating_point"]
    assert strict["target_fpir"] == 0.0001 and strict["threshold"] > point["threshold"]

    # the threshold follows enrolment
    for person in range(2, 8):
        harness.enrol(f"p{person}", make_photo((person, 60)))
    grown = _identify(harness, make_photo((1, 70)))["operating_point"]
    assert grown["gallery_subjects"] == 7 and grown["threshold"] > point["threshold"]


def test_a_bad_target_is_a_422(harness: Harness) -> None:
    harness.enrol("Ada", make_photo((1, 60)))
    for bad in ("0", "1", "2", "-0.1", "often"):
        r = harness.client.post(
            "/v1/identify",
            files={"photo": ("q.png", make_photo((1, 70)), "image/png")},
            data={"fpir": bad},
            headers=harness.headers("recognise"),
        )
        assert r.status_code == 422, (bad, r.text)
        assert "error" in r.json()


def test_the_service_follows_the_gallerys_stored_target(harness: Harness) -> None:
    harness.enrol("Ada", make_photo((1, 60)))
    gallery = harness.client.app.state.service.gallery
    gallery.set_target_fpir("1e-3")  # as `marginface gallery config --fpir 1e-3` does
    point = _identify(harness, make_photo((1, 70)))["operating_point"]
    assert point["target_fpir"] == 0.001
    gallery.set_target_fpir(None)
    assert _identify(harness, make_photo((1, 70)))["operating_point"]["target_fpir"] == 0.01


def test_one_policy_from_the_settings_decides_everywhere(harness: Harness) -> None:
    """The service builds its identification policy once from the settings and hands the
    same object to the gallery, the recogniser and the cameras."""
    service = harness.client.app.state.service
    policy = service.policy
    assert (policy.fpir, policy.threshold, policy.k, policy.far) == (
        harness.settings.fpir,
        harness.settings.threshold,
        harness.settings.top_k,
        harness.settings.far,
    )
    assert service.gallery.policy is policy
    assert service.recognizer.policy is policy
    assert service.cameras.policy is policy
