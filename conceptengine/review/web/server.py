"""`conceptengine review serve` and `review add-user`: run the app on uvicorn, manage accounts.

One process serves a whole team: handlers are plain functions in uvicorn's thread pool, every state
change is a short database transaction, so concurrency is the database's (SQLite WAL for a few
reviewers, PostgreSQL for many; see `review.url`).
"""

from __future__ import annotations

import uvicorn

from conceptengine.review.web.accounts import Accounts
from conceptengine.review.web.app import create_app
from conceptengine.review.web.run import ReviewRun
from conceptengine.review.web.tracker import TrackerService


def add_user(run_dir: str, name: str, role: str, kinds: list[str], replace: bool = False) -> str:
    """Create a reviewer or admin on the run's review database; returns the token (shown once)."""
    run = ReviewRun.open(run_dir)
    accounts = Accounts(run.review_url, token_ttl_s=run.token_ttl_s)
    try:
        return accounts.add_user(name, role, kinds, replace=replace)
    finally:
        accounts.close()


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    tracker: str | None = None,
    device: str = "cpu",
    log_level: str = "info",
) -> None:

    run = ReviewRun.open(run_dir)
    service = TrackerService(tracker, device) if tracker else TrackerService.for_run(run, device)
    service.warm_up()
    uvicorn.run(create_app(run, service), host=host, port=port, log_level=log_level, access_log=False)
