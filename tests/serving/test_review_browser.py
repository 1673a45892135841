"""The review workbench in a real headless Chromium (Debian's ``chromium`` driven by
Playwright): sign in with a reviewer key, load the queue, open a case from the keyboard,
toggle the overlays, draw a missed finding, record a disposition and see it recorded in
the store. A screenshot of the case is kept under ``data/test-artifacts/``."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from models.paths import data_dir
from tests.serving.review_fixtures import ReviewService, flagged_claim, make_review_service, periapical_image

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(tmp_path, models) -> Iterator[tuple[str, ReviewService]]:
    service = make_review_service(tmp_path, models)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        service.store.close()


def test_a_reviewer_works_a_case_in_the_browser(live) -> None:
    assert CHROMIUM, "Debian's chromium is needed for the browser test (make test installs it: apt-get install chromium)"
    from playwright.sync_api import expect, sync_playwright

    base, service = live
    rid, image = periapical_image(9)
    decided = httpx.post(f"{base}/v1/claims:validate", json=flagged_claim("WEB-1", (rid, image)),
                         headers={"X-API-Key": service.keys["adjudicator"]}, timeout=60)
    assert decided.status_code == 200, decided.text
    reviewer = {"X-API-Key": service.keys["reviewer"]}
    queue = httpx.get(f"{base}/v1/reviews", headers=reviewer).json()
    top = queue["items"][0]

    artifacts = data_dir() / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/review")
        page.get_by_label("API key (reviewer role)").fill(service.keys["reviewer"])
        page.get_by_role("button", name="Open the queue").click()

        rows = page.locator("#queue-table tbody tr")
        expect(rows).to_have_count(queue["total"])
        expect(rows.first).to_contain_text(f"{top['claim_id']} / {top['line_id']}")

        # From the keyboard: move down and back up, open the top case.
        rows.first.focus()
        page.keyboard.press("j")
        expect(rows.nth(1)).to_be_focused()
        page.keyboard.press("k")
        page.keyboard.press("Enter")
        expect(page.locator("#case-title")).to_have_text(f"Claim {top['claim_id']}, line {top['line_id']}")
        stage = page.locator(".stage").first
        expect(stage.locator("img")).to_have_js_property("complete", True)
        teeth = page.locator("svg .tooth")
        assert teeth.count() > 0
        expect(page.locator("#lines-table tbody tr")).to_have_count(4)
        expect(page.locator("#lines-table tbody tr.queued")).to_contain_text(top["code"])

        # Overlays toggle from the keyboard.
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("t")
        expect(teeth.first).to_have_class("tooth hidden")
        page.keyboard.press("t")
        expect(teeth.first).to_have_class("tooth")

        # Draw a missed finding on the radiograph.
        page.keyboard.press("d")
        expect(page.locator("#draw-mode")).to_be_checked()
        box = stage.locator("svg").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.42, steps=5)
        page.mouse.up()
        expect(page.locator("#corrections li")).to_have_count(1)
        expect(page.locator("#corrections li")).to_contain_text("Missed finding: caries")

        # The disposition: outcome 2 (override, pay the line), a reason, Ctrl+Enter.
        page.keyboard.press("2")
        expect(page.locator('input[name="outcome"][value="override_pass"]')).to_be_checked()
        page.keyboard.press("r")
        expect(page.locator("#reason")).to_be_focused()
        page.keyboard.type("Caries visible on the distal surface; the indication holds.")
        page.screenshot(path=str(artifacts / "review-case.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        expect(page.locator("#status")).to_contain_text("Recorded: line")
        expect(page.locator("#history-list li")).to_have_count(1)
        expect(page.locator("#submit")).to_be_disabled()
        page.screenshot(path=str(artifacts / "review-recorded.png"), full_page=True)

        page.keyboard.press("Escape")
        expect(rows).to_have_count(queue["total"] - 1)
        assert errors == []
        browser.close()

    case = httpx.get(f"{base}/v1/reviews/{top['item_id']}", headers=reviewer).json()
    assert case["item"]["status"] == "closed"
    [recorded] = case["dispositions"]
    assert (recorded["outcome"], recorded["action"]) == ("override_pass", "pass")
    assert recorded["reason"].startswith("Caries visible")
    [drawn] = recorded["corrections"]
    assert drawn["type"] == "missed_finding" and drawn["image_id"] == rid and drawn["finding_class"] == "caries"
    reading = case["readings"][0]
    x0, _, _, y1 = drawn["box_xyxy_px"]
    # the box is in the radiograph's own pixels, where it was drawn (30-45 % across, 30-42 % down)
    assert x0 == pytest.approx(0.30 * reading["width_px"], abs=0.03 * reading["width_px"])
    assert y1 == pytest.approx(0.42 * reading["height_px"], abs=0.03 * reading["height_px"])
    assert (artifacts / "review-case.png").stat().st_size > 10_000


def test_a_referred_appeal_shows_its_narrative_and_documents(live) -> None:
    assert CHROMIUM, "Debian's chromium is needed for the browser test (make test installs it: apt-get install chromium)"
    import base64

    from playwright.sync_api import expect, sync_playwright

    base, service = live
    adjudicator, reviewer = ({"X-API-Key": service.keys[r]} for r in ("adjudicator", "reviewer"))
    decided = httpx.post(f"{base}/v1/claims:validate", json=flagged_claim("WEB-2", periapical_image(9)),
                         headers=adjudicator, timeout=60).json()
    for item in httpx.get(f"{base}/v1/reviews", headers=reviewer).json()["items"]:
        httpx.post(f"{base}/v1/reviews/{item['item_id']}/disposition", headers=reviewer,
                   json={"outcome": "confirm", "reason": "as decided"})
    appealed = httpx.post(f"{base}/v1/decisions/{decided['audit_id']}/appeals", headers=adjudicator, timeout=60, json={
        "line_ids": ["1"], "narrative": "Three canals found; see the chart note.",
        "documents": [{"name": "chart note.pdf", "content_base64": base64.b64encode(b"%PDF-1.4 note").decode()}]}).json()
    assert appealed["outcome"] == "referred"  # a document only a person reads
    [item] = [i for i in httpx.get(f"{base}/v1/reviews", headers=reviewer).json()["items"]
              if i["audit_id"] == appealed["audit_id"]]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/review")
        page.get_by_label("API key (reviewer role)").fill(service.keys["reviewer"])
        page.get_by_role("button", name="Open the queue").click()
        page.locator(f"#queue-table tbody tr[data-item='{item['item_id']}']").click()
        expect(page.locator("#appeal")).to_be_visible()
        expect(page.locator("#appeal-summary")).to_contain_text("Three canals found")
        with page.expect_download() as download:
            page.get_by_role("button", name="chart note.pdf (application/pdf, 0.0 KiB)").click()
        assert download.value.suggested_filename == "chart note.pdf"
        assert download.value.path().read_bytes() == b"%PDF-1.4 note"
        assert errors == []
        browser.close()
