"""Fixtures for the review web app tests: a small run, users, and a TestClient over the real app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conceptengine.pipelines.demo import SHIPPED_SAM3
from conceptengine.review.web.app import create_app
from conceptengine.review.web.server import add_user
from conceptengine.review.web.tracker import TrackerService, build_tracker_checkpoint
from tests.review.web.run_builder import build_run, fill_queue


@pytest.fixture(scope="session")
def tracker_dir(tmp_path_factory) -> str:
    """A Sam3TrackerModel checkpoint built once from the shipped demo SAM 3 (its vision encoder)."""
    return build_tracker_checkpoint(
        str(SHIPPED_SAM3), str(tmp_path_factory.mktemp("tracker") / "sam3-tracker")
    )


@dataclass
class Site:
    run: Path
    media: list[dict]
    tasks: dict[str, list[str]]
    tokens: dict[str, str]
    app: object

    def client(self, who: str | None = None) -> TestClient:
        c = TestClient(self.app)
        if who is not None:
            c.headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return c


@pytest.fixture
def site(tmp_path: Path, tracker_dir: str) -> Site:
    run, media = build_run(tmp_path)
    tasks = fill_queue(run, media)
    tokens = {
        "ann": add_user(str(run), "ann", "reviewer", ["mv", "ev"]),
        "bob": add_user(str(run), "bob", "reviewer", ["mv", "ev", "correction"]),
        "cam": add_user(str(run), "cam", "reviewer", ["correction"]),
        "boss": add_user(str(run), "boss", "admin", ["mv", "ev", "correction"]),
    }
    app = create_app(str(run), TrackerService(tracker_dir))
    return Site(run, media, tasks, tokens, app)
