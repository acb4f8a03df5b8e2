"""The web page's Cameras card in headless Chromium (Debian's ``chromium``, through Playwright;
no browser is downloaded), against the app under uvicorn with the fake pipeline and the fake
camera worker (``serve_fakes.FakeCameraWorker``: coloured squares are faces, decided by the real
``VisitTracker``, recorded by the real recorder, strangers grouped by the real gallery).

One walk through the card: a bad URL answered with the API's message, a push camera added
through the form and listed with its state, its live view ("no frame yet", then the frame
pushed through the API), two strangers in the recent visits and the review queue with their
crops, one assigned to a new person (who joins the subjects list), the other dismissed, and the
camera deleted after a confirmation; a recognise key sees the same card with the buttons it may
not use disabled. Every request to another host is aborted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from marginface.serve import ServeSettings, create_app
from tests.serve.serve_fakes import (
    FAKE_CAMERAS,
    FakePipeline,
    camera_frame,
    free_port,
    running_server,
)
from tests.serve.test_browser import _launch, _offline_page

#: A camera name that would be markup if the page did not escape it.
CAMERA = 'Front <b>door</b> & "hall"'
NEW_PERSON = "Zoë <i>Stranger</i>"


@dataclass
class CameraServer:
    url: str
    admin: str
    recognise: str


@pytest.fixture(scope="module")
def camera_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CameraServer]:
    """The app with the fake pipeline and fake camera workers, keeping face crops."""
    tmp = tmp_path_factory.mktemp("cameras")
    settings = ServeSettings(
        db=str(tmp / "gallery.db"), port=free_port(), workers=2, store_photos=True
    )
    app = create_app(settings, pipeline=FakePipeline(), camera_options=FAKE_CAMERAS)
    with running_server(app, settings.port) as url:
        admin = settings.key_file.read_text().strip()
        r = httpx.post(
            f"{url}/v1/keys",
            json={"name": "viewer", "role": "recognise"},
            headers={"X-API-Key": admin},
        )
        assert r.status_code == 201, r.text
        yield CameraServer(url, admin, r.json()["secret"])


def _push_until_processed(api: httpx.Client, camera_id: str, frame: bytes) -> None:
    """Push ``frame`` until the camera's worker has processed it (a live source keeps only
    its latest frame, and one pushed sooner than 1/fps after the previous is not due)."""

    def processed() -> int:
        r = api.get(f"/v1/cameras/{camera_id}")
        assert r.status_code == 200, r.text
        return int(r.json()["status"]["frames_processed"])

    before = processed()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = api.post(
            f"/v1/cameras/{camera_id}/frames", content=frame, headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 202, r.text
        for _ in range(15):
            if processed() > before:
                return
            time.sleep(0.02)
    raise AssertionError("the pushed frame was never processed")


def _images_loaded(page: Any, selector: str, width: int) -> None:
    """Wait until every image ``selector`` finds has loaded, ``width`` pixels wide."""
    page.wait_for_function(
        """([selector, width]) => {
            const imgs = Array.from(document.querySelectorAll(selector));
            return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth === width
                && i.src.startsWith('blob:'));
        }""",
        arg=[selector, width],
    )


def _card_route(error: str) -> bool:
    """Whether a recorded ``"STATUS URL"`` error is a request of the Cameras card."""
    path = urlsplit(error.split()[1]).path
    return path.startswith(("/v1/cameras", "/v1/visits", "/v1/unknowns"))


def _sign_in(page: Any, url: str, key: str, role: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    expect(page.locator("#key-status")).to_contain_text(f"({role})")


@pytest.mark.slow
def test_cameras_card(camera_server: CameraServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    srv = camera_server
    api = httpx.Client(base_url=srv.url, headers={"X-API-Key": srv.admin}, timeout=10)
    bad = api.post("/v1/cameras", json={"name": "bad", "url": "ftp://x"})
    assert bad.status_code == 422
    bad_message = bad.json()["error"]["message"]

    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page, traffic = _offline_page(browser)
            page.set_default_timeout(15_000)
            _sign_in(page, srv.url, srv.admin, "admin")
            message = page.locator("#cameras-message")

            # A wrong scheme: nothing added, the API's own message shown as an error.
            page.fill("#camera-name", "bad")
            page.fill("#camera-url", "ftp://x")
            page.click("#camera-submit")
            expect(message).to_have_text(bad_message)
            expect(message).to_have_class("msg error")
            expect(page.locator("#cameras-empty")).to_be_visible()

            # A push camera through the form: listed, running, its name shown as text.
            page.fill("#camera-name", CAMERA)
            page.fill("#camera-url", "push:")
            page.fill("#camera-fps", "50")
            page.click("#camera-submit")
            expect(message).to_contain_text(f"Added {CAMERA}")
            rows = page.locator("#cameras-table tbody tr")
            expect(rows).to_have_count(1)
            row = rows.first
            expect(row.locator(".camera-name")).to_have_text(CAMERA)
            expect(row.locator(".camera-url")).to_have_text("push:")
            # A push camera is connecting until its first frame comes.
            expect(row).to_have_attribute("data-state", re.compile(r"^(connecting|running)$"))
            expect(row.locator(".camera-state")).to_have_text(row.get_attribute("data-state"))
            # the node running it (the service's own, of a one-node SQLite gallery)
            node = api.get("/v1/nodes").json()["this"]
            expect(row.locator(".camera-node")).to_have_text(node)
            assert page.locator("#cameras b, #cameras i").count() == 0  # escaped
            camera_id = row.get_attribute("data-camera-id")
            assert camera_id
            assert api.get(f"/v1/cameras/{camera_id}").json()["settings"] == {"fps": 50}

            # The live view: nothing processed yet, then the frames pushed through the API.
            expect(page.locator("#live-name")).to_have_text(CAMERA)
            expect(page.locator("#live-placeholder")).to_have_text("no frame yet")
            for side in (60, 70, 80, 90):  # two strangers walking closer
                _push_until_processed(api, camera_id, camera_frame((5, side), (11, side)))
            expect(page.locator("#camera-live")).to_be_visible()
            expect(row).to_have_attribute("data-state", "running")
            _images_loaded(page, "#camera-live", 320)
            expect(row.locator(".camera-tracks-open")).to_have_text("2")
            _push_until_processed(api, camera_id, camera_frame())  # both have gone
            expect(row.locator(".camera-tracks-open")).to_have_text("0")

            # Their visits: unknown, with a thumbnail of the face; and the review queue.
            visits = page.locator("#visits-table tbody tr.visit")
            expect(visits).to_have_count(2)
            for i in range(2):
                expect(visits.nth(i).locator(".visit-name")).to_have_text("unknown")
                expect(visits.nth(i)).to_contain_text(CAMERA)
            _images_loaded(page, "#visits-table img.thumb", 112)
            queue = page.locator("#unknowns-list li.visitor")
            expect(queue).to_have_count(2)
            expect(page.locator("#unknowns-count")).to_have_text("(2)")
            expect(queue.first).to_contain_text("1 sighting(s) on " + CAMERA)
            _images_loaded(page, "#unknowns-list img.visitor-crop", 112)

            # A recognise key: the same card, its configuration and review buttons disabled.
            viewer, viewer_traffic = _offline_page(browser)
            _sign_in(viewer, srv.url, srv.recognise, "recognise")
            expect(viewer.locator("#cameras-table tbody tr")).to_have_count(1)
            expect(viewer.locator("#camera-submit")).to_be_disabled()
            for name in ("stop-camera", "delete-camera"):
                expect(viewer.locator(f"#cameras-table .{name}")).to_be_disabled()
            expect(viewer.locator("#unknowns-list li.visitor")).to_have_count(2)
            for name in ("assign-visitor", "dismiss-visitor", "split-visitor"):
                expect(viewer.locator(f".{name}").first).to_be_disabled()
            expect(viewer.locator(".crops .placeholder").first).to_have_text(
                "faces need an enrol key"
            )
            _images_loaded(viewer, "#camera-live", 320)
            # the visits' decisions, without the strangers' faces (they need an enrol key)
            expect(viewer.locator("#visits-table tbody tr.visit")).to_have_count(2)
            expect(viewer.locator("#visits-table img.thumb")).to_have_count(0)
            viewer.context.close()
            # No refusal from the card (the subjects and attendance cards' 403s are theirs).
            assert [e for e in viewer_traffic.errors if _card_route(e)] == []
            assert viewer_traffic.page_errors == []

            # Two people grouped as one stranger: select a face, split it off, dismiss it.
            before = {queue.nth(i).get_attribute("data-visitor-id") for i in range(2)}
            first = queue.first
            expect(first.locator(".split-visitor")).to_be_disabled()  # nothing selected
            first.locator("button.visitor-face").first.click()
            expect(first.locator("button.visitor-face").first).to_have_attribute(
                "aria-pressed", "true"
            )
            first.locator(".split-visitor").click()
            expect(page.locator("#unknowns-message")).to_contain_text("Split 1 face(s) off")
            expect(queue).to_have_count(3)
            ids = [queue.nth(i).get_attribute("data-visitor-id") for i in range(3)]
            (split_off,) = set(ids) - before
            new_item = page.locator(f'#unknowns-list li[data-visitor-id="{split_off}"]')
            expect(new_item.locator("img.visitor-crop")).to_have_count(1)
            new_item.locator(".dismiss-visitor").click()
            expect(queue).to_have_count(2)

            # Assign one stranger to a new person: out of the queue, into the subjects.
            assigned = queue.first.get_attribute("data-visitor-id")
            queue.first.locator(".assign-visitor").click()
            form = queue.first.locator(".assign-form")
            expect(form.locator(".assign-subject")).to_have_value("")
            form.locator(".assign-name").fill(NEW_PERSON)
            form.locator(".assign-submit").click()
            expect(page.locator("#unknowns-message")).to_contain_text(
                f"Assigned the stranger to {NEW_PERSON}"
            )
            expect(queue).to_have_count(1)
            subject = page.locator("#subjects-table tbody tr", has_text=NEW_PERSON)
            expect(subject).to_have_count(1)
            expect(subject.locator("td").nth(1)).not_to_have_text("0")

            # Dismiss the other.
            dismissed = queue.first.get_attribute("data-visitor-id")
            queue.first.locator(".dismiss-visitor").click()
            expect(page.locator("#unknowns-message")).to_have_text("Dismissed the stranger.")
            expect(queue).to_have_count(0)
            expect(page.locator("#unknowns-count")).to_have_text("(0)")

            # Stop, start and delete (after a confirmation) the camera.
            row.locator(".stop-camera").click()
            expect(row).to_have_attribute("data-state", "stopped")
            expect(row.locator(".start-camera")).to_be_visible()
            row.locator(".start-camera").click()
            expect(row).to_have_attribute("data-state", re.compile(r"^(connecting|running)$"))
            expect(row.locator(".stop-camera")).to_be_visible()
            expect(row.locator(".start-camera")).to_be_hidden()
            page.once("dialog", lambda dialog: dialog.dismiss())
            row.locator(".delete-camera").click()
            expect(rows).to_have_count(1)
            page.once("dialog", lambda dialog: dialog.accept())
            row.locator(".delete-camera").click()
            expect(message).to_have_text(f"Removed {CAMERA}.")
            expect(rows).to_have_count(0)
            expect(page.locator("#live-name")).to_have_text("no camera selected")
        finally:
            browser.close()

    assert traffic.aborted == [] and traffic.page_errors == []
    # The only refusals: the bad URL and the live view's "no frame yet".
    refused = {(e.split()[0], urlsplit(e.split()[1]).path) for e in traffic.errors}
    assert refused <= {("422", "/v1/cameras"), ("404", f"/v1/cameras/{camera_id}/snapshot.jpg")}
    assert ("422", "/v1/cameras") in refused

    visitors = {v["id"]: v for v in api.get("/v1/unknowns?status=all").json()["visitors"]}
    assert visitors[assigned]["status"] == "assigned"
    assert visitors[dismissed]["status"] == "dismissed"
    subjects = api.get("/v1/subjects").json()["subjects"]
    assert [s["name"] for s in subjects] == [NEW_PERSON]
    assert visitors[assigned]["subject_id"] == subjects[0]["id"]
    assert api.get("/v1/cameras").json()["total"] == 0
    api.close()
