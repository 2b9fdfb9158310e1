"""Consensus disputes reach admins through the app: two reviewers disagree, an admin settles it."""

from __future__ import annotations

from conceptengine.review.queue import ReviewQueue
from tests.review.web.conftest import Site
from tests.review.web.run_builder import fill_queue


def test_reviewers_disagree_and_an_admin_settles_it_in_the_app(site: Site) -> None:
    q = ReviewQueue(str(site.run / "review.db"))
    tasks = fill_queue(site.run, site.media[:1], round_index=2, replicas=2)
    ann, bob, boss = site.client("ann"), site.client("bob"), site.client("boss")
    votes = {}
    for who, choice in ((ann, "Accept"), (bob, "Reject")):
        got = who.post("/api/lease", json={"kinds": ["mv"], "round": 2}).json()["tasks"][0]
        votes[choice] = got["task_id"]
        assert who.post(f"/api/tasks/{got['task_id']}/answer", json={"choice": choice}).status_code == 200
    assert len(set(votes.values())) == 2  # two replicas of one item, one per reviewer
    assert {q.get(t).subject_id for t in votes.values()} == {q.get(tasks["mv"][0]).subject_id}

    assert ann.post("/api/lease", json={"kinds": ["adjudicate"]}).status_code == 403
    [dispute] = boss.post("/api/lease", json={"kinds": ["adjudicate"]}).json()["tasks"]
    assert dispute["kind"] == "adjudicate" and dispute["of_kind"] == "mv"
    assert sorted(a["choice"] for a in dispute["answers"]) == ["Accept", "Reject"]
    assert [c["key"] for c in dispute["choices"]] == ["1", "2", "3", "4", "5"] and len(dispute["masks"]) == 1
    assert boss.get(dispute["image_url"]).status_code == 200
    assert boss.get("/review/adjudicate").status_code == 200
    bad = boss.post(f"/api/tasks/{dispute['task_id']}/answer", json={"choice": "Done"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("choice:")
    ruling = boss.post(f"/api/tasks/{dispute['task_id']}/answer", json={"choice": "Reject"})
    assert ruling.json()["status"] == "accepted"
    [item] = [it for it in q.items(2, "mv") if it.adjudication is not None]
    assert item.adjudication.choice == "Reject" and item.adjudication.annotator == "human:boss"
    q.close()
