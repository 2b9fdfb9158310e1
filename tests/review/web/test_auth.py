"""Access: every route needs a user, tokens are stored hashed, roles and task kinds are enforced."""

from __future__ import annotations

import sqlite3

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conceptengine.cli import app as cli_app
from conceptengine.review.web import api, auth, dashboard, pages, segment
from conceptengine.review.web.accounts import Accounts
from conceptengine.review.web.auth import COOKIE
from tests.review.web.conftest import Site

PUBLIC = {"/api/login", "/login"}


def _routes(site: Site) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, read from the routers create_app mounts."""
    out = []
    for module in (api, auth, dashboard, pages, segment):
        for route in module.router.routes:
            if not isinstance(route, APIRoute) or route.path in PUBLIC:
                continue
            path = route.path.replace("{task_id}", site.tasks["mv"][0]).replace("{kind}", "mv")
            out.extend((method, path) for method in route.methods)
    return out


def test_every_route_but_login_needs_a_user(site: Site) -> None:
    anonymous = site.client()
    routes = _routes(site)
    assert len(routes) >= 12  # api, segment, dashboard and pages all registered
    for method, path in routes:
        resp = anonymous.request(method, path, json={}, follow_redirects=False)
        if path.startswith("/api/"):
            assert resp.status_code == 401, (method, path, resp.text)
            assert "authentication" in resp.json()["detail"]
        else:  # pages send a browser to the login page and back
            assert resp.status_code == 303, (method, path)
            assert resp.headers["location"].startswith("/login?next=")
    forged = site.client()
    forged.headers["Authorization"] = "Bearer " + site.tokens["ann"][:-2] + "xx"
    assert forged.post("/api/lease", json={}).status_code == 401
    assert forged.get("/api/me").json()["detail"].startswith("authentication")


def test_login_sets_an_httponly_session_that_logout_ends(site: Site) -> None:
    c = site.client()
    bad = c.post("/api/login", json={"token": "nope.nope"})
    assert bad.status_code == 401 and bad.json()["detail"].startswith("token:")
    resp = c.post("/api/login", json={"token": site.tokens["ann"]})
    assert resp.status_code == 200 and resp.json() == {
        "name": "ann",
        "role": "reviewer",
        "kinds": ["mv", "ev"],
    }
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert site.tokens["ann"] not in cookie  # the browser holds a session id, never the token
    assert c.get("/api/me").json()["name"] == "ann"
    assert c.get("/review/mv").status_code == 200
    assert c.post("/api/logout").json() == {"logged_out": "ann"}
    c.cookies.set(COOKIE, cookie.split(";")[0].split("=", 1)[1])  # replaying the old session fails
    assert c.get("/api/me").status_code == 401


def test_tokens_are_stored_only_as_salted_hashes(site: Site) -> None:
    data = (site.run / "review.db").read_bytes() + (site.run / "review.db-wal").read_bytes()
    for token in site.tokens.values():
        assert token.split(".")[1].encode() not in data
    rows = (
        sqlite3.connect(site.run / "review.db")
        .execute("select salt, token_hash from review_users")
        .fetchall()
    )
    assert len({salt for salt, _ in rows}) == len(rows) == 4
    assert all(len(h) == 64 for _, h in rows)


def test_roles_and_kinds_are_enforced(site: Site) -> None:
    ann, boss, cam = site.client("ann"), site.client("boss"), site.client("cam")
    assert ann.get("/api/dashboard").status_code == 403
    assert "needs an admin" in ann.get("/api/dashboard").json()["detail"]
    assert boss.get("/api/dashboard").status_code == 200
    denied = ann.post("/api/lease", json={"kinds": ["correction"]})
    assert denied.status_code == 403 and denied.json()["detail"].startswith("kinds:")
    assert ann.get("/review/correction").status_code == 403
    assert ann.get("/review/adjudicate").status_code == 403  # consensus disputes: admins only
    assert boss.post("/api/lease", json={"kinds": ["adjudicate"]}).json() == {"tasks": []}
    # cam reviews corrections only: leasing without kinds gives correction tasks, never MV / EV
    got = cam.post("/api/lease", json={"n": 5}).json()["tasks"]
    assert got and {t["kind"] for t in got} == {"correction"}
    # an MV task is out of reach for cam even by id
    assert cam.get(f"/api/tasks/{site.tasks['mv'][0]}").status_code == 403


def test_disabled_user_is_locked_out_at_once(site: Site) -> None:
    c = site.client("ann")
    assert c.get("/api/me").status_code == 200
    site.app.state.accounts.set_disabled("ann")
    assert c.get("/api/me").status_code == 401


def test_add_user_cli_prints_the_token_once_and_rejects_bad_input(site: Site) -> None:
    runner = CliRunner()
    res = runner.invoke(cli_app, ["review", "add-user", str(site.run), "dee", "--kinds", "ev"])
    assert res.exit_code == 0, res.output
    token = res.output.strip().splitlines()[-1]
    user = Accounts(f"sqlite:///{site.run / 'review.db'}").verify_token(token)
    assert user is not None and user.name == "dee" and user.kinds == ("ev",)
    again = runner.invoke(cli_app, ["review", "add-user", str(site.run), "dee"])
    assert again.exit_code == 2 and "--replace" in again.output
    bad = runner.invoke(cli_app, ["review", "add-user", str(site.run), "eve", "--kinds", "mv,typo"])
    assert bad.exit_code == 2 and "kinds: unknown task kind 'typo'" in bad.output
    role = runner.invoke(cli_app, ["review", "add-user", str(site.run), "eve", "--role", "boss"])
    assert role.exit_code == 2 and "role:" in role.output
    missing = runner.invoke(cli_app, ["review", "add-user", str(site.run.parent / "nope"), "eve"])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    serve = runner.invoke(cli_app, ["review", "serve", str(site.run.parent / "nope")])
    assert serve.exit_code == 2 and "no such run directory" in serve.output
    assert not (site.run.parent / "nope").exists()
    (site.run.parent / "empty").mkdir()
    empty = runner.invoke(cli_app, ["review", "serve", str(site.run.parent / "empty")])
    assert empty.exit_code == 2 and "no run.json" in empty.output


def test_replacing_a_token_in_another_process_revokes_it_at_once(site: Site) -> None:
    old = site.tokens["ann"]
    c = site.client("ann")
    assert c.get("/api/me").status_code == 200  # the server has verified (and remembered) the old token
    # `review add-user ann --replace` in another process: its own Accounts on the same database.
    other = Accounts(f"sqlite:///{site.run / 'review.db'}")
    new = other.add_user("ann", "reviewer", ["mv", "ev"], replace=True)
    assert c.get("/api/me").status_code == 401
    assert TestClient(site.app).post("/api/login", json={"token": old}).status_code == 401
    browser = TestClient(site.app)
    assert browser.post("/api/login", json={"token": new}).status_code == 200
    assert browser.get("/api/me").json()["name"] == "ann"
    other.set_disabled("ann")  # disabling, also from elsewhere, ends the session it opened
    assert browser.get("/api/me").status_code == 401


def test_tokens_expire_and_replaced_tokens_open_no_session_on_each_backend(review_url: str) -> None:
    now = [1_000.0]
    accounts = Accounts(review_url, clock=lambda: now[0], token_ttl_s=3600)
    other = Accounts(review_url, clock=lambda: now[0])  # another process on the same database
    try:
        token = accounts.add_user("ann", "reviewer", ["mv"])
        assert accounts.verify_token(token) is not None and accounts.login(token) is not None
        now[0] += 3600
        assert accounts.verify_token(token) is None and accounts.login(token) is None
        fresh = other.add_user("ann", "reviewer", ["mv"], replace=True)
        assert accounts.login(fresh) is not None
        other.add_user("ann", "reviewer", ["mv"], replace=True)
        assert accounts.login(fresh) is None and accounts.verify_token(fresh) is None
    finally:
        accounts.close()
        other.close()


def test_failed_logins_are_limited_per_address_and_refusals_take_the_same_work(
    site: Site, monkeypatch
) -> None:
    from conceptengine.review.web import accounts as accounts_module
    from conceptengine.review.web.guards import MAX_FAILURES, FailureLimiter

    now = [0.0]
    site.app.state.failures = FailureLimiter(clock=lambda: now[0])
    c = site.client()
    codes = [c.post("/api/login", json={"token": f"x{i}.wrong"}).status_code for i in range(MAX_FAILURES + 2)]
    assert codes == [401] * MAX_FAILURES + [429, 429]
    limited = c.post("/api/login", json={"token": site.tokens["ann"]})  # even the right token, for now
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    bearer = TestClient(site.app, headers={"Authorization": "Bearer nope.nope"})
    assert bearer.get("/api/me").status_code == 429  # the same address, by bearer token
    now[0] += 61
    assert c.post("/api/login", json={"token": site.tokens["ann"]}).status_code == 200

    # An unknown token id costs one scrypt, as a wrong secret does: refusals do not tell which ids exist.
    calls: list[str] = []
    real = accounts_module._scrypt
    monkeypatch.setattr(
        accounts_module, "_scrypt", lambda secret, salt: calls.append(salt) or real(secret, salt)
    )
    accounts = site.app.state.accounts
    assert accounts.verify_token("0000000000000000.guess") is None
    assert accounts.verify_token(site.tokens["bob"].split(".")[0] + ".guess") is None
    assert len(calls) == 2


def test_cookie_requests_from_another_site_are_refused(site: Site) -> None:
    c = site.client()
    assert c.post("/api/login", json={"token": site.tokens["ann"]}).status_code == 200
    here = "http://testserver"
    evil = c.post("/api/logout", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["detail"].startswith("origin:")
    assert c.post("/api/logout", headers={"Origin": "null"}).status_code == 403
    assert c.post("/api/logout", headers={"Origin": here}).json() == {"logged_out": "ann"}
