"""THE browser test: a reviewer in headless Chromium answers a real round, and the round commits with it.

A real `conceptengine run` (subprocess) on the rendered domain with no simulated reviewers waits in
HUMAN_REVIEW; a real uvicorn server serves the review app over that run's queue; Playwright drives
Debian's /usr/bin/chromium: log in with a token, answer every MV task and every EV task with the
keyboard (one EV "Reject" to create a correction task), add a missed instance with a click on the
correction page, press Enter. Then the verdicts are in the queue database and in the committed round.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from conceptengine.engine import rle
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.pipelines.export import committed_annotations
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.web.server import add_user
from tests.review.web.live import engine_run, live_server, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
# Set to a folder to keep the MV page screenshot (the README's docs/review-mv.png comes from here).
SCREENSHOT_ENV = "CONCEPTENGINE_SCREENSHOT_DIR"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
]

NO_TASKS = "document.getElementById('status').textContent.startsWith('No ')"


def answer_with_keys(page, key_for) -> list[str]:  # type: ignore[no-untyped-def]
    """Press a key per task until the page says none is left; returns the task ids answered, in order."""
    page.wait_for_function(f"document.body.dataset.taskId || {NO_TASKS}")
    done: list[str] = []
    while not page.evaluate(NO_TASKS):
        tid = page.evaluate("document.body.dataset.taskId")
        page.keyboard.press(key_for(len(done)))
        done.append(tid)
        page.wait_for_function(f"document.body.dataset.taskId !== '{tid}' || {NO_TASKS}", timeout=10_000)
    return done


def test_reviewer_answers_a_round_in_chromium_and_it_commits(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with engine_run(tmp_path) as (run_dir, proc):
        queue = ReviewQueue(str(run_dir / "review.db"))
        token = add_user(str(run_dir), "ann", "reviewer", ["mv", "ev", "correction"])
        with live_server(run_dir) as base, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            wait_for(lambda: queue.open_count(1, ["mv"]) > 0, 60, "the round's MV tasks")

            page.goto(f"{base}/")  # not logged in: the app sends the browser to /login
            assert "/login?next=" in page.url
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url("**/review/mv")
            page.wait_for_selector("body[data-task-id]")

            # The page's RLE decoder draws exactly the mask the engine stored.
            task = queue.get(page.evaluate("document.body.dataset.taskId"))
            p = task.payload
            js = page.evaluate(
                "([s, h, w]) => Array.from(CE.decodeRle(s, h, w))", [p["rle"], p["height"], p["width"]]
            )
            assert js == rle.decode(p["rle"], p["height"], p["width"]).T.ravel().astype(int).tolist()
            shot = tmp_path / "review-mv.png"
            page.screenshot(path=str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get(SCREENSHOT_ENV):  # 256 colours keep the README's copy small
                Image.open(shot).convert("RGB").quantize(256).save(
                    Path(os.environ[SCREENSHOT_ENV]) / shot.name
                )

            mv_ids = answer_with_keys(page, lambda i: "1")  # Accept every mask
            wait_for(lambda: queue.open_count(1, ["ev"]) > 0, 30, "EV tasks after MV drained")
            page.goto(f"{base}/review/ev")
            ev_ids = answer_with_keys(page, lambda i: "2" if i == 0 else "1")  # first pair: Reject
            wait_for(lambda: queue.open_count(1, ["correction"]) > 0, 30, "the correction task")

            page.goto(f"{base}/review/correction")
            page.wait_for_selector("body[data-task-id]")
            correction_id = page.evaluate("document.body.dataset.taskId")
            box = page.locator("#view").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)
            page.wait_for_function(
                "document.getElementById('draft').textContent.includes(' px')", timeout=20_000
            )
            page.keyboard.press("Enter")
            wait_for(lambda: queue.get(correction_id).status == "done", 20, "the correction answer")

            # The admin's dashboard draws its charts from the same data (a fresh browser context: no session).
            admin = browser.new_context().new_page()
            admin.on("pageerror", lambda e: errors.append(str(e)))
            admin.goto(f"{base}/login?next=/dashboard")
            admin.fill("#token", add_user(str(run_dir), "lead", "admin", ["mv", "ev", "correction"]))
            admin.click("button[type=submit]")
            admin.wait_for_url("**/dashboard")
            admin.wait_for_selector("#hourly svg polyline, #hourly svg circle")
            assert admin.locator("#queue svg rect").count() >= 1
            assert "ann" in admin.inner_text("#reviewers")
            assert errors == []
            browser.close()

            wait_for(lambda: proc.poll() is not None, 90, "the round to commit")
        assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]

        # The verdicts are in the queue database, from the browser's user, with the keys' choices.
        mv = queue.answers(1, "mv")
        assert sorted(a.task_id for a in mv) == sorted(mv_ids) and {a.choice for a in mv} == {"Accept"}
        ev = {a.task_id: a for a in queue.answers(1, "ev")}
        assert set(ev) == set(ev_ids) and ev[ev_ids[0]].choice == "Reject"
        [fix] = queue.answers(1, "correction")
        assert fix.task_id == correction_id and fix.choice == "Done" and len(fix.payload["add"]) == 1
        assert {a.annotator for a in [*mv, *ev.values(), fix]} == {"human:ann"}
        assert all(a.seconds > 0 for a in mv)  # the page timed the reviewer

        # ...and the round committed with them: human verdicts stored, the clicked mask in the dataset.
        store = RunStore(str(run_dir))
        verdicts = store.read_step(StepRef(1, "commit"), "verdicts").to_pylist()
        human = [v for v in verdicts if v["annotator"] == "human:ann"]
        assert len(human) == len(mv) + len(ev) + 1
        [row] = [r for r in committed_annotations(store).to_pylist() if r["pair_id"] == fix.pair_id]
        assert row["provenance"] == "corrected"
        assert fix.payload["add"][0] in [m["rle"] for m in row["masks"]]
        queue.close()
