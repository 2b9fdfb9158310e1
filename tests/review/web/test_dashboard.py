"""The admin dashboard: queue depth, answers per reviewer per hour, and the rounds' metrics from manifests."""

from __future__ import annotations

from conceptengine.engine.store import RunStore, StepRef
from tests.review.web.conftest import Site


def _manifests(site: Site) -> None:
    store = RunStore(str(site.run))
    store.write_step(StepRef(0, "evaluate"), {}, "t", "f", extra={"gold_cgF1": 1.5})
    for step, extra in [
        ("evaluate", {"gold_cgF1": 4.25}),
        ("route", {"human_share": 0.4}),
        ("human_review", {"human_seconds": 300.0}),
        ("commit", {"committed_pairs": 12}),
    ]:
        store.write_step(StepRef(1, step), {}, "t", "f", extra=extra)


def test_dashboard_reports_queue_reviewers_and_rounds(site: Site) -> None:
    _manifests(site)
    ann, bob = site.client("ann"), site.client("bob")
    for who, n in ((ann, 3), (bob, 1)):
        for t in who.post("/api/lease", json={"kinds": ["mv"], "n": n}).json()["tasks"]:
            assert who.post(f"/api/tasks/{t['task_id']}/answer", json={"choice": "Accept"}).status_code == 200
    bob.post("/api/lease", json={"kinds": ["ev"], "n": 2})

    d = site.client("boss").get("/api/dashboard").json()
    n_mv, n_ev = len(site.tasks["mv"]), len(site.tasks["ev"])
    assert d["queue"]["mv"] == {"open": n_mv - 4, "leased": 0, "done": 4}
    assert d["queue"]["ev"] == {"open": n_ev - 2, "leased": 2, "done": 0}
    per_hour = d["answers_per_hour"]
    assert len(per_hour["hours"]) == 24 and per_hour["hours"] == sorted(per_hour["hours"])
    assert {k: sum(v) for k, v in per_hour["reviewers"].items()} == {"human:ann": 3, "human:bob": 1}
    assert per_hour["reviewers"]["human:ann"][-1] == 3  # this hour
    assert d["rounds"] == [
        {"round": 0, "gold_cgF1": 1.5, "human_share": None, "committed_pairs": None,
         "human_seconds": None, "human_seconds_per_pair": None},
        {"round": 1, "gold_cgF1": 4.25, "human_share": 0.4, "committed_pairs": 12,
         "human_seconds": 300.0, "human_seconds_per_pair": 25.0},
    ]  # fmt: skip
    assert {u["name"] for u in d["reviewers"]} == {"ann", "bob", "cam", "boss"}


def test_dashboard_page_is_for_admins(site: Site) -> None:
    page = site.client("boss").get("/dashboard")
    assert page.status_code == 200 and "/static/charts.js" in page.text
    assert site.client("ann").get("/dashboard").status_code == 403
    assert site.client("boss").get("/", follow_redirects=False).headers["location"] == "/dashboard"
    assert site.client("cam").get("/", follow_redirects=False).headers["location"] == "/review/correction"
