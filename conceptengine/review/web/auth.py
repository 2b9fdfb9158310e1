"""Authentication for every route: a bearer token (scripts, the load benchmark) or the session cookie.

The browser logs in once with its token and then carries only an HttpOnly, SameSite=Strict cookie,
so page scripts never hold the token and other sites cannot make the browser send it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from conceptengine.review.web.accounts import SESSION_TTL_S, Accounts, User
from conceptengine.review.web.guards import check_origin, client_keys
from conceptengine.review.web.schemas import AUTH_ERRORS, BODY_ERRORS, LoginBody

COOKIE = "ce_session"


class NotLoggedIn(HTTPException):
    """401 for API calls; pages turn it into a redirect to /login (see app.py)."""

    def __init__(self) -> None:
        super().__init__(401, "authentication: send 'Authorization: Bearer TOKEN' or log in at /login")


def accounts(request: Request) -> Accounts:
    return request.app.state.accounts


# Both ways in, as OpenAPI security schemes; neither raises, so current_user answers every failure itself.
_BEARER = HTTPBearer(auto_error=False, description="a reviewer's token, as `review add-user` printed it")
_SESSION = APIKeyCookie(name=COOKIE, auto_error=False, description="the session cookie POST /api/login sets")


def current_user(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    session: Annotated[str | None, Security(_SESSION)],
) -> User:
    accts = accounts(request)
    # Read raw rather than from `_bearer`: a header with another scheme is a failed attempt, not no header.
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        limiter, keys = request.app.state.failures, client_keys(request, token)
        limiter.check(*keys)
        user = accts.verify_token(token) if scheme.lower() == "bearer" else None
        if user is None:
            limiter.failed(*keys)
            raise HTTPException(
                401, "authentication: the bearer token is unknown, malformed, expired or disabled"
            )
        return user
    check_origin(request)
    user = accts.session_user(session)
    if user is None:
        raise NotLoggedIn()
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(403, f"role: {user.name} is a {user.role}; this needs an admin")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
router = APIRouter(responses=AUTH_ERRORS | BODY_ERRORS)


@router.post("/api/login")
def login(body: LoginBody, request: Request, response: Response) -> dict:
    check_origin(request)
    limiter, keys = request.app.state.failures, client_keys(request, body.token)
    limiter.check(*keys)
    opened = accounts(request).login(body.token)
    if opened is None:
        limiter.failed(*keys)
        raise HTTPException(401, "token: unknown, malformed, expired or disabled; ask an admin for a new one")
    user, session = opened
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(SESSION_TTL_S),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return user.public()


@router.post("/api/logout")
def logout(request: Request, response: Response, user: CurrentUser) -> dict:
    session = request.cookies.get(COOKIE)
    if session:
        accounts(request).close_session(session)
    response.delete_cookie(COOKIE, path="/")
    return {"logged_out": user.name}


@router.get("/api/me")
def me(user: CurrentUser) -> dict:
    return user.public()
