"""HTML pages: login, one page per task kind, and the admin dashboard.

Pages are static files (package data) that fetch everything through the JSON API, so the pages hold
no data and the API is the single place where access is checked. Pages still require a session, so a
logged-out visitor is sent to /login instead of a page that cannot load anything.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from conceptengine.review.answers import KINDS
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.web.auth import AdminUser, CurrentUser

STATIC = Path(__file__).parent / "static"
router = APIRouter()
_NO_STORE = {"Cache-Control": "no-store"}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers=_NO_STORE)


def not_logged_in(request: Request, exc: HTTPException) -> Response:
    """API calls get the 401 as JSON; a page request is redirected to the login page and back."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": exc.detail}, status_code=401)
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


@router.get("/login", include_in_schema=False)
def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/", include_in_schema=False)
def home(user: CurrentUser) -> RedirectResponse:
    target = "/dashboard" if user.is_admin else f"/review/{user.kinds[0]}"
    return RedirectResponse(target, status_code=303)


@router.get("/review/{kind}", include_in_schema=False)
def review_page(kind: str, user: CurrentUser) -> FileResponse:
    if kind not in KINDS + (ADJUDICATE,):
        raise HTTPException(404, f"kind: no {kind!r} review page; pages exist for {list(KINDS)}")
    if kind not in user.allowed_kinds:
        raise HTTPException(
            403, f"kind: {user.name} is not assigned {kind!r} tasks (assigned: {list(user.kinds)})"
        )
    return _page(f"{kind}.html")


@router.get("/dashboard", include_in_schema=False)
def dashboard_page(user: AdminUser) -> FileResponse:
    return _page("dashboard.html")
