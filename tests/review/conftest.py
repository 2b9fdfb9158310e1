"""`review_url`: every queue test runs on SQLite (a temp file) and on a real PostgreSQL.

PostgreSQL comes from CONCEPTENGINE_TEST_PG_URL (`.ci/postgres-up` starts a local server and prints
one; `.ci/run` exports it). The session creates a fresh database there and drops it at the end; each
test gets its own schema in it (through the URL's `search_path`), so tests never see each other's
tasks, also not from the child processes they spawn. Without the variable the PostgreSQL cases skip,
and the run's summary says why.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

PG_ENV = "CONCEPTENGINE_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]
_SKIP_REASON = (
    f"{PG_ENV} is not set, so the review queue was not tested on PostgreSQL; "
    "run `export CONCEPTENGINE_TEST_PG_URL=$(.ci/postgres-up)` first (as .ci/run does)"
)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(_SKIP_REASON)
    name = f"ce_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def review_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A queue URL nobody else uses, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.db'}"
        return
    base = request.getfixturevalue("pg_database")
    schema = f"t_{secrets.token_hex(6)}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield (
        make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}", "application_name": schema})
        .render_as_string(hide_password=False)
    )
    # Queues a test left open would hold connections until garbage collection: end them now.
    with engine.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (schema,)
        )
    engine.dispose()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if any(_SKIP_REASON in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_line(f"NOTE: {_SKIP_REASON}", yellow=True)
