"""The review API keeps its published contract: schemathesis, with every check, against a live server.

The document is served only to logged-in users; schemathesis reads it, generates valid and invalid
requests for every operation (following the document's links from a lease to the task routes) and checks
each answer: no 5xx, only declared status codes and content types, bodies that match the declared schema,
valid requests accepted, invalid ones refused, and no route reachable without authentication.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from conceptengine.review.web.guards import FailureLimiter
from tests.review.web.live import serve

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = str(Path(sys.executable).with_name("st"))


def test_openapi_is_for_logged_in_users_only(site) -> None:
    anonymous = site.client()
    assert anonymous.get("/api/openapi.json").status_code == 401
    assert anonymous.get("/openapi.json").status_code == 404
    assert anonymous.get("/docs").status_code == 404
    doc = site.client("ann").get("/api/openapi.json").json()
    assert "/api/lease" in doc["paths"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["detail"]["type"] == "string"  # what every 4xx body is, 422 included
    lease = doc["paths"]["/api/lease"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "413", "422", "429"} <= set(lease)


def test_schemathesis_finds_no_failure(site, tmp_path: Path) -> None:
    # Schemathesis logs in with made-up tokens on purpose; the failed-login limit (tested in test_auth.py)
    # would otherwise lock its own address out after ten and leave nothing else tested.
    site.app.state.failures = FailureLimiter(max_failures=1_000_000)
    token = site.tokens["boss"]  # an admin: every route, every task kind
    with serve(site.app) as base:
        doc = httpx.get(f"{base}/api/openapi.json", headers={"Authorization": f"Bearer {token}"})
        doc.raise_for_status()
        schema = tmp_path / "openapi.json"
        schema.write_text(json.dumps(doc.json()))
        cmd = [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            str(schema),
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ]
        # Run in tmp_path: schemathesis keeps a cache directory where it runs.
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "Tested: 11" in done.stdout, report  # every operation in the document was exercised
