"""The review app factory: one FastAPI app over one run's queue, accounts, media and tracker.

Every error a client can cause comes back as JSON `{"detail": "<field>: <what is wrong>"}` with a 4xx,
one message per request, so a script or a page can show it as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from conceptengine.review.answers import LeaseLost, SubmissionError
from conceptengine.review.db import make_engine
from conceptengine.review.queue import ReviewQueue
from conceptengine.review.web import api, auth, dashboard, pages, segment
from conceptengine.review.web.accounts import Accounts
from conceptengine.review.web.guards import FailureLimiter
from conceptengine.review.web.leases import TaskAccessError
from conceptengine.review.web.limits import BodySizeLimit
from conceptengine.review.web.run import ReviewRun
from conceptengine.review.web.schemas import with_lease_limit
from conceptengine.review.web.tracker import TrackerService

STATIC = Path(__file__).parent / "static"


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


def create_app(run: ReviewRun | str, tracker: TrackerService | None = None) -> FastAPI:
    """`run`: a run directory (or an opened ReviewRun). `tracker`: SAM 3 tracker for correction clicks;
    default: the run's own (built next to the run from its SAM 3 checkpoint, loaded on first use)."""
    run = run if isinstance(run, ReviewRun) else ReviewRun.open(run)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.queue.close()
        app.state.accounts.close()
        app.state.db.dispose()

    app = FastAPI(
        title="conceptengine review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    def openapi() -> dict:
        # FastAPI builds the document once and caches it; this run's lease limit is written into it then.
        if app.openapi_schema is None:
            with_lease_limit(FastAPI.openapi(app), run.review.max_lease_ttl_s)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimit)
    app.state.run = run
    app.state.queue = ReviewQueue(run.review_url)
    app.state.db = make_engine(run.review_url)
    app.state.failures = FailureLimiter()
    app.state.accounts = Accounts(run.review_url, token_ttl_s=run.token_ttl_s)
    app.state.tracker = tracker if tracker is not None else TrackerService.for_run(run)

    @app.exception_handler(TaskAccessError)
    def _access(_: Request, exc: TaskAccessError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(LeaseLost)
    def _lease_lost(_: Request, exc: LeaseLost) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(SubmissionError)
    def _submission(_: Request, exc: SubmissionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    for module in (auth, api, segment, dashboard, pages):
        app.include_router(module.router)
    app.add_exception_handler(auth.NotLoggedIn, pages.not_logged_in)
    # Code and styles only (no data), so the login page can load them before anyone is logged in.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app
