"""Media come only from the run's own ingested media, reached through a task id: no path traversal."""

from __future__ import annotations

from pathlib import Path

from conceptengine.review.queue import ReviewQueue
from conceptengine.review.types import TaskSpec
from tests.review.web.conftest import Site
from tests.review.web.run_builder import H, W


def test_image_of_a_held_task_is_the_ingested_file(site: Site) -> None:
    ann = site.client("ann")
    task = ann.post("/api/lease", json={"kinds": ["mv"]}).json()["tasks"][0]
    resp = ann.get(task["image_url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    media_id = site.app.state.queue.get(task["task_id"]).payload["media_id"]
    [uri] = [m["uri"] for m in site.media if m["media_id"] == media_id]
    assert resp.content == Path(uri).read_bytes()


def test_traversal_attempts_never_reach_a_file(site: Site, tmp_path: Path) -> None:
    ann = site.client("ann")
    for path in [
        "/api/tasks/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/tasks/%2Fetc%2Fpasswd/image",
        "/api/tasks/../../run.json/image",
        "/static/../run.py",
        "/static/..%2Frun.py",
        "/static/%2e%2e/app.py",
    ]:
        resp = ann.get(path)
        assert resp.status_code == 404, (path, resp.status_code)
        assert b"root:" not in resp.content and b"def " not in resp.content

    # A task whose payload names a file outside the run (a hostile or broken producer) is still refused:
    # the server resolves media ids through the run's ingest table, never through the payload's uri.
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    q = ReviewQueue(str(site.run / "review.db"))
    payload = {
        "media_id": "not-in-this-run",
        "uri": str(secret),
        "height": H,
        "width": W,
        "noun_phrase": "x",
        "rles": [],
    }
    spec = TaskSpec(kind="ev", round=0, subject_id="evil", pair_id="evil", payload=payload)
    q.enqueue([spec])
    q.close()
    held = ann.post("/api/lease", json={"kinds": ["ev"], "round": 0}).json()["tasks"]
    assert [t["task_id"] for t in held] == [spec.task_id]
    resp = ann.get(held[0]["image_url"])
    assert resp.status_code == 404 and resp.json()["detail"].startswith("media: 'not-in-this-run'")
    assert b"secret" not in resp.content
