"""``/v1/unknowns``: the strangers' review queue. Roles on every route; a stranger seen by a push
camera becomes a pending visitor with its crops, is assigned to a new subject (and recognised on
its next visit), or dismissed; conflicts, bad input and galleries that keep no crops."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from marginface.serve import ServeSettings
from tests.serve.conftest import started_harness
from tests.serve.serve_fakes import (
    DIM,
    FAKE_CAMERAS,
    QUICK,
    Harness,
    add_camera,
    camera,
    camera_frame,
    hue_rgb,
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
    ("POST", "/v1/unknowns/{visitor_id}/split", "enrol", 200),
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
            if template.endswith("/split"):
                kw["json"] = {"faces": [visitor["faces"][0]["id"]]}
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

    def named() -> list[dict]:  # names: for admin keys (docs/streams.md, "Who sees what")
        admin = h.headers("admin")
        visits = h.client.get(f"/v1/cameras/{cid}/visits", headers=admin).json()["visits"]
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


def _stranger(h: Harness, *people: int) -> dict[str, Any]:
    """A pending visitor whose faces are of ``people`` (one face each; two for one person)."""
    gallery = h.client.app.state.service.cameras.gallery
    rows = people if len(people) > 1 else (people[0], people[0])
    emb = np.zeros((len(rows), DIM), np.float32)
    for i, person in enumerate(rows):
        emb[i, person] = 1.0
        emb[i, 20 + i] = 0.3
    now = time.time()
    crops = [np.full((112, 112, 3), hue_rgb(p), np.uint8) for p in rows]
    # threshold 1.01: a new visitor, never grouped with another
    sighting = gallery.visitors.record(
        "door", now - 5, now, emb, [0.9 - 0.1 * i for i in range(len(rows))], crops, 1.01
    )
    return gallery.visitors.get(sighting.visitor_id).to_dict()


def test_a_stranger_cannot_be_assigned_to_someone_else(camera_harness: Harness) -> None:
    """The identity hijack of issue #25: an enrol key assigned a stranger's faces to an
    employee, whose name the stranger then got from every camera. Assigning checks the faces
    against the subject at the 1:1 threshold, as adding a photo does."""
    h = camera_harness
    employee = h.enrol("Employee", make_photo((3, 60)), make_photo((3, 90)))["subject"]
    stranger = _stranger(h, 9)
    url = f"/v1/unknowns/{stranger['id']}/assign"

    r = h.client.post(url, json={"subject_id": employee["id"]}, headers=h.headers("enrol"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "photo_mismatch" and "Employee" in error["message"]
    assert {d["face_id"] for d in error["details"]} == {f["id"] for f in stranger["faces"]}
    assert all(d["score"] < d["threshold"] for d in error["details"])
    # Forcing a mismatch is an admin's act, as for photos; nothing was stored meanwhile.
    r = h.client.post(
        url, json={"subject_id": employee["id"], "force": True}, headers=h.headers("enrol")
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
    subject = h.client.get(f"/v1/subjects/{employee['id']}", headers=h.headers("enrol")).json()
    assert subject["n_faces"] == 2
    assert (
        h.client.get(f"/v1/unknowns/{stranger['id']}", headers=h.headers("enrol")).json()["status"]
        == "pending"
    )
    # The stranger is still nobody.
    r = h.client.post(
        "/v1/identify",
        files={"photo": ("q.png", make_photo((9, 70)), "image/png")},
        headers=h.headers("recognise"),
    )
    assert r.json()["faces"][0]["match"] is None

    r = h.client.post(
        url, json={"subject_id": employee["id"], "force": True}, headers=h.headers("admin")
    )
    assert r.status_code == 200, r.text
    assert r.json()["subject"]["n_faces"] == 4

    # The employee's own face, seen by a camera, is assigned without force.
    own = _stranger(h, 3)
    r = h.client.post(
        f"/v1/unknowns/{own['id']}/assign",
        json={"subject_id": employee["id"]},
        headers=h.headers("enrol"),
    )
    assert r.status_code == 200, r.text


def test_a_visitor_of_several_people_is_refused_until_split(camera_harness: Harness) -> None:
    h = camera_harness
    mixed = _stranger(h, 9, 9, 13)  # two faces of one person, one of another
    url = f"/v1/unknowns/{mixed['id']}/assign"
    for body in ({"name": "Mixed"}, {"name": "Mixed", "force": True}):
        r = h.client.post(url, json=body, headers=h.headers("admin"))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "faces_disagree"
        assert [d["face_id"] for d in error["details"]] == [mixed["faces"][2]["id"]]
    assert h.client.get("/v1/subjects", headers=h.headers("admin")).json()["total"] == 0
    # The faces of one person: assigned.
    one = [f["id"] for f in mixed["faces"][:2]]
    r = h.client.post(url, json={"name": "Nine", "faces": one}, headers=h.headers("enrol"))
    assert r.status_code == 200, r.text
    assert r.json()["subject"]["n_faces"] == 2


def test_a_visitor_of_two_people_is_split(camera_harness: Harness) -> None:
    """The review queue grouped two people: the faces of one are split off into a new
    visitor, which is then reviewed on its own."""
    h = camera_harness
    enrol = h.headers("enrol")
    a = seed_visitor(h, 7)
    faces = [f["id"] for f in a["faces"]]
    assert len(faces) >= 2
    r = h.client.post(f"/v1/unknowns/{a['id']}/split", json={"faces": faces[:1]}, headers=enrol)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["new"]["face_ids"] == faces[:1] and body["new"]["status"] == "pending"
    assert body["visitor"]["face_ids"] == faces[1:]
    assert h.client.get("/v1/unknowns", headers=enrol).json()["total"] == 2
    for payload, status in (
        ({"faces": body["visitor"]["face_ids"]}, 422),  # every face: nothing would be left
        ({"faces": [faces[0]]}, 422),  # not the visitor's any more
        ({"faces": []}, 422),
        ({"faces": [1], "force": True}, 422),  # unknown field
    ):
        r = h.client.post(f"/v1/unknowns/{a['id']}/split", json=payload, headers=enrol)
        assert r.status_code == status, (payload, r.text)
    r = h.client.post("/v1/unknowns/nope/split", json={"faces": [1]}, headers=enrol)
    assert r.status_code == 404 and r.json()["error"]["code"] == "visitor_not_found"
    r = h.client.post(
        f"/v1/unknowns/{a['id']}/split", json={"faces": [1]}, headers=h.headers("recognise")
    )
    assert r.status_code == 403
