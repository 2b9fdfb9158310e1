"""After login the page goes to ?next= only when it is on this site (finding 3 of issue 14: `/%5Cevil.example`
passed a text check and the browser resolved it to http://evil.example/). Driven in headless Chromium,
because what counts is where the browser resolves the URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.review.web.live import serve
from tests.review.web.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")

OFF_SITE = [
    "/\\evil.example",
    "//evil.example/x",
    "https://evil.example/",
    "/\\/evil.example",
    "javascript:alert(1)",
]


def test_login_follows_next_only_within_the_site(site) -> None:  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve(site.app) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        here = urlsplit(base).netloc
        for next_ in [*OFF_SITE, "/dashboard?tab=queue"]:
            page = browser.new_context().new_page()
            page.goto(f"{base}/login?next={quote(next_, safe='')}")
            page.fill("#token", site.tokens["boss"])
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/login" not in url, timeout=10_000)
            page.wait_for_load_state()
            landed = urlsplit(page.url)
            assert landed.netloc == here, (next_, page.url)
            if next_.startswith("/dashboard"):
                assert (landed.path, landed.query) == ("/dashboard", "tab=queue")
            else:
                assert landed.path != "/login", (next_, page.url)
        browser.close()
