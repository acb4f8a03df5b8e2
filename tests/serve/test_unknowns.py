"""``/v1/unknowns``: the strangers' review queue. Roles on every route; a stranger seen by a push
camera becomes a pending visitor with its crops, is assigned to a new subject (and recognised on
its next visit), or dismissed; conflicts, bad input and galleries that keep no crops."""

from __future__ import annotations

from typing import Any

from marginface.serve import ServeSettings
from tests.serve.conftest import started_harness
from tests.serve.serve_fakes import (
    FAKE_CAMERAS,
    QUICK,
    Harness,
    add_camera,
    camera,
    camera_frame,
    make_photo,
    push_until_processed,
    seed_visitor,
    wait_for,
)

RANK = {"recognise": 0, "enrol": 1, "admin": 2}


ROUTES = [
    ("GET", "/v1/unknowns", "recognise", 200),
    ("GET", "/v1/unknowns/{visitor_id}", "recognise", 200),
    ("GET", "/v1/unknowns/{visitor_id}/faces/{face_id}.png", "enrol", 200),
    ("POST", "/v1/unknowns/{visitor_id}/assign", "enrol", 200),
    ("POST", "/v1/unknowns/{visitor_id}/dismiss", "enrol", 200),
]


def test_route_table_covers_every_unknowns_route(camera_harness: Harness) -> None:
    paths = camera_harness.client.get("/openapi.json").json()["paths"]
    routes = {
        (m.upper(), p) for p, ops in paths.items() if p.startswith("/v1/unknowns") for m in ops
    }
    assert routes == {(m, p) for m, p, *_ in ROUTES}


def test_roles_on_every_unknowns_route(camera_harness: Harness) -> None:
    h = camera_harness
    n = 0
    for method, template, least, ok in ROUTES:
        for caller in (None, "wrong", "recognise", "enrol", "admin"):
            visitor = seed_visitor(h, n % 18)
            n += 1
            url = template.format(visitor_id=visitor["id"], face_id=visitor["faces"][0]["id"])
            kw: dict[str, Any] = {}
            if template.endswith("/assign"):
                kw["json"] = {"name": f"Person {n}", "force": True}
            headers = {}
            if caller == "wrong":
                headers["X-API-Key"] = "mfk_000000000000_not-a-real-key"
            elif caller:
                headers = h.headers(caller)
            r = h.client.request(method, url, headers=headers, **kw)
            expected = (
                401 if caller in (None, "wrong") else (403 if RANK[caller] < RANK[least] else ok)
            )
            assert r.status_code == expected, (method, template, caller, r.text)
            if expected == 200 and template.endswith(".png"):
                assert r.headers["content-type"] == "image/png"
                assert r.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_stranger_seen_reviewed_and_recognised(camera_harness: Harness) -> None:
    h = camera_harness
    enrol = h.headers("enrol")
    cam = add_camera(h, "door", settings=QUICK)
    cid = cam["id"]
    wait_for(lambda: camera(h, cid)["status"]["running"], what="the camera to run")

    def visit(person: int) -> None:
        for side in (60, 70, 80):
            push_until_processed(h, cid, camera_frame((person, side)))
        push_until_processed(h, cid, camera_frame())

    visit(9)  # nobody enrolled looks like person 9: a stranger
    queue = wait_for(
        lambda: h.client.get("/v1/unknowns", headers=h.headers("recognise")).json()["visitors"],
        what="the stranger in the queue",
    )
    assert len(queue) == 1
    visitor = queue[0]
    assert visitor["status"] == "pending" and visitor["sightings"] == 1
    assert visitor["cameras"] == ["door"] and visitor["face_ids"]
    assert visitor["first_seen"] <= visitor["last_seen"]
    assert all(f["has_crop"] for f in visitor["faces"])
    left = h.client.get(f"/v1/cameras/{cid}/visits", headers=enrol).json()["visits"][0]
    assert left["kind"] == "left" and left["subject_id"] is None
    assert left["visitor_id"] == visitor["id"]

    vid, face = visitor["id"], visitor["face_ids"][0]
    r = h.client.get(f"/v1/unknowns/{vid}/faces/{face}.png", headers=enrol)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert h.client.get(f"/v1/unknowns/{vid}/faces/999999.png", headers=enrol).status_code == 404
    assert h.client.get(f"/v1/unknowns/{vid}", headers=enrol).json()["id"] == vid

    # The same stranger again: the same visitor, a second sighting.
    visit(9)
    wait_for(
        lambda: h.client.get(f"/v1/unknowns/{vid}", headers=enrol).json()["sightings"] == 2,
        what="a second sighting",
    )

    # Assigned to a new subject: enrolled at once, recognised on the next visit.
    r = h.client.post(f"/v1/unknowns/{vid}/assign", json={"name": "Newcomer"}, headers=enrol)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["visitor"]["status"] == "assigned" and body["subject"]["name"] == "Newcomer"
    assert body["subject"]["n_faces"] >= 1
    assert body["visitor"]["subject_id"] == body["subject"]["id"]
    assert h.client.get("/v1/unknowns", headers=enrol).json()["total"] == 0
    assigned = h.client.get("/v1/unknowns", params={"status": "assigned"}, headers=enrol).json()
    assert [v["id"] for v in assigned["visitors"]] == [vid]
    r = h.client.post(f"/v1/unknowns/{vid}/assign", json={"name": "Again"}, headers=enrol)
    assert r.status_code == 409
    visit(9)

    def named() -> list[dict]:
        visits = h.client.get(f"/v1/cameras/{cid}/visits", headers=enrol).json()["visits"]
        return [v for v in visits if v["name"] == "Newcomer"]

    assert wait_for(named, what="the newcomer recognised")[0]["subject_id"] == body["subject"]["id"]


def test_dismiss_conflicts_and_bad_input(camera_harness: Harness) -> None:
    h = camera_harness
    enrol = h.headers("enrol")
    a = seed_visitor(h, 7)
    b = seed_visitor(h, 11)
    c = h.client

    r = c.post(f"/v1/unknowns/{a['id']}/dismiss", headers=enrol)
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    assert c.post(f"/v1/unknowns/{a['id']}/dismiss", headers=enrol).status_code == 200
    r = c.post(f"/v1/unknowns/{a['id']}/assign", json={"name": "X"}, headers=enrol)
    assert r.status_code == 409
    listed = c.get("/v1/unknowns", headers=enrol).json()
    assert [v["id"] for v in listed["visitors"]] == [b["id"]] and listed["total"] == 1
    everyone = c.get("/v1/unknowns", params={"status": "all"}, headers=enrol).json()
    assert everyone["total"] == 2

    for body in ({}, {"name": "X", "subject_id": "abc"}):
        r = c.post(f"/v1/unknowns/{b['id']}/assign", json=body, headers=enrol)
        assert r.status_code == 422, r.text
    r = c.post(f"/v1/unknowns/{b['id']}/assign", json={"subject_id": "nobody"}, headers=enrol)
    assert r.status_code == 404
    for method, suffix in (("GET", ""), ("POST", "/dismiss"), ("GET", "/faces/1.png")):
        r = c.request(method, f"/v1/unknowns/nope{suffix}", headers=enrol)
        assert r.status_code == 404 and r.json()["error"]["code"] == "visitor_not_found"
    r = c.post("/v1/unknowns/nope/assign", json={"name": "X"}, headers=enrol)
    assert r.status_code == 404

    # A visitor who looks like someone enrolled since: assigning it elsewhere needs force.
    bob = h.enrol("Bob", make_photo((11, 60)), make_photo((11, 90)))["subject"]
    r = c.post(f"/v1/unknowns/{b['id']}/assign", json={"name": "Not Bob"}, headers=enrol)
    assert r.status_code == 409, r.text
    r = c.post(f"/v1/unknowns/{b['id']}/assign", json={"subject_id": bob["id"]}, headers=enrol)
    assert r.status_code == 200, r.text
    assert r.json()["subject"]["id"] == bob["id"]
    assert c.post(f"/v1/unknowns/{b['id']}/dismiss", headers=enrol).status_code == 409


def test_crops_only_when_stored(settings: ServeSettings) -> None:
    with started_harness(settings, camera_options=FAKE_CAMERAS) as h:  # store_photos off
        visitor = seed_visitor(h, 5, crops=False)
        assert not any(f["has_crop"] for f in visitor["faces"])
        face = visitor["faces"][0]["id"]
        r = h.client.get(
            f"/v1/unknowns/{visitor['id']}/faces/{face}.png", headers=h.headers("enrol")
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "crop_not_stored"
