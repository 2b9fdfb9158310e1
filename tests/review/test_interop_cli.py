"""`conceptengine review export|import` on a real run directory (run.json, ingested media, filled queue)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from conceptengine.cli import app
from conceptengine.review.queue import ReviewQueue
from tests.review.web.run_builder import build_run, fill_queue

runner = CliRunner()


def test_export_then_import_answers_through_the_cli(tmp_path: Path) -> None:
    run, media = build_run(tmp_path, n_media=2)
    tasks = fill_queue(run, media)
    out = tmp_path / "ls"
    res = runner.invoke(
        app, ["review", "export", str(run), str(out), "--round", "1", "--format", "labelstudio"]
    )
    assert res.exit_code == 0, res.output
    assert "4 mv, 4 ev, 2 correction" in res.output
    exported = json.loads((out / "labelstudio-mv.json").read_text())
    for i, task in enumerate(exported):
        choice = "Accept" if i % 2 == 0 else "Reject"
        task["annotations"] = [
            {"id": i, "completed_by": 5, "lead_time": 3.0,
             "result": [{"type": "choices", "from_name": "choice", "value": {"choices": [choice]}}]}
        ]  # fmt: skip
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(exported))

    res = runner.invoke(app, ["review", "import", str(run), str(answers), "--format", "labelstudio"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1]) == {
        "accepted": 4, "duplicate": 0, "conflict": 0, "errors": 0,
    }  # fmt: skip
    q = ReviewQueue(str(run / "review.db"))
    got = {a.task_id: (a.choice, a.annotator) for a in q.answers(1, "mv")}
    assert set(got) == set(tasks["mv"]) and {a for _, a in got.values()} == {"human:5"}


def test_cli_errors_name_the_option(tmp_path: Path) -> None:
    run, media = build_run(tmp_path, n_media=1)
    fill_queue(run, media)
    res = runner.invoke(
        app, ["review", "export", str(run), str(tmp_path / "o"), "--round", "1", "--format", "yolo"]
    )
    assert res.exit_code == 2 and "--format: 'yolo' is not supported" in res.output
    res = runner.invoke(app, ["review", "import", str(run), str(tmp_path / "x.json"), "--format", "cvat"])
    assert res.exit_code == 2 and "--manifest" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"task_id": "nope"}, "annotations": []}]))
    res = runner.invoke(app, ["review", "import", str(run), str(bad), "--format", "labelstudio"])
    assert res.exit_code == 1 and "task nope: not in this run's review queue" in res.output
