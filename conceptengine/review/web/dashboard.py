"""GET /api/dashboard (admins): what a review lead watches during a round.

- queue depth per task kind (open and leased tasks, every round),
- answers per reviewer per hour over the last day (from the answers' own timestamps),
- per round, from the step manifests the engine writes: gold cgF1 (evaluate), the share of items sent
  to humans (route), and human seconds per committed pair (human_review seconds / commit pairs).
Reading manifests, not recomputing, keeps the dashboard cheap and equal to the run's own round table.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Engine, func, select

from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.review.answers import KINDS
from conceptengine.review.db import read_tx
from conceptengine.review.models import AnswerRecord, TaskRecord
from conceptengine.review.web.auth import AdminUser
from conceptengine.review.web.schemas import AUTH_ERRORS

router = APIRouter(responses=AUTH_ERRORS)
_T = TaskRecord.__table__
_A = AnswerRecord.__table__
HOURS = 24


def queue_depth(engine: Engine) -> dict[str, dict[str, int]]:
    out = {k: {"open": 0, "leased": 0, "done": 0} for k in KINDS}
    with read_tx(engine) as conn:
        rows = conn.execute(
            select(_T.c.kind, _T.c.status, func.count())
            .where(_T.c.status.in_(("open", "leased", "done")))
            .group_by(_T.c.kind, _T.c.status)
        ).all()
    for kind, status, n in rows:
        out.setdefault(kind, {"open": 0, "leased": 0, "done": 0})[status] = int(n)
    return out


def answers_per_hour(engine: Engine, now: float, hours: int = HOURS) -> dict[str, Any]:
    """{"hours": [start epoch of each hour, oldest first], "reviewers": {annotator: [count per hour]}}."""
    current = int(now // 3600) * 3600
    starts = [current - 3600 * i for i in range(hours - 1, -1, -1)]
    with read_tx(engine) as conn:
        rows = conn.execute(
            select(_A.c.annotator, _A.c.answered_at).where(_A.c.answered_at >= starts[0])
        ).all()
    reviewers: dict[str, list[int]] = {}
    for annotator, at in rows:
        slot = min(int((at - starts[0]) // 3600), hours - 1)
        reviewers.setdefault(annotator, [0] * hours)[slot] += 1
    return {"hours": starts, "reviewers": dict(sorted(reviewers.items()))}


def _extra(store: RunStore, r: int, step: Step) -> dict[str, Any] | None:
    manifest = store.manifest(StepRef(r, step))
    return None if manifest is None else manifest.get("extra", {})


def round_metrics(store: RunStore) -> list[dict[str, Any]]:
    out = []
    for r in store.rounds_done():
        evaluate = _extra(store, r, Step.EVALUATE)
        route = _extra(store, r, Step.ROUTE)
        review = _extra(store, r, Step.HUMAN_REVIEW)
        commit = _extra(store, r, Step.COMMIT)
        row: dict[str, Any] = {"round": r}
        row["gold_cgF1"] = evaluate.get("gold_cgF1") if evaluate else None
        row["human_share"] = route.get("human_share") if route else None
        pairs = commit.get("committed_pairs") if commit else None
        seconds = review.get("human_seconds") if review else None
        row["committed_pairs"] = pairs
        row["human_seconds"] = seconds
        row["human_seconds_per_pair"] = round(seconds / pairs, 2) if seconds is not None and pairs else None
        if any(v is not None for k, v in row.items() if k != "round"):
            out.append(row)
    return out


@router.get("/api/dashboard")
def dashboard(request: Request, user: AdminUser) -> dict[str, Any]:
    app = request.app
    now = time.time()
    return {
        "generated_at": now,
        "queue": queue_depth(app.state.db),
        "answers_per_hour": answers_per_hour(app.state.db, now),
        "rounds": round_metrics(app.state.run.store),
        "reviewers": [u.public() for u in app.state.accounts.users()],
    }
