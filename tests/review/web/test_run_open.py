"""The review server opens a run from its snapshot: its own `review:` section and `sam3.model`, nothing else."""

from __future__ import annotations

import pytest

from conceptengine.config import EngineConfig
from conceptengine.engine.store import RunStore
from conceptengine.review.web.run import ReviewRun, RunOpenError
from tests.review.web.run_builder import build_run


def _snapshot(run, config: dict) -> None:
    RunStore.existing(str(run)).write_json("run.json", {"config": config, "workspace": str(run.parent)})


def test_opens_the_review_section_and_the_sam3_model_the_run_was_started_with(tmp_path):
    run, media = build_run(tmp_path)
    cfg = EngineConfig.model_validate({"review": {"max_leased_per_reviewer": 3}, "sam3": {"model": "m/sam3"}})
    _snapshot(run, cfg.model_dump(mode="json"))

    opened = ReviewRun.open(str(run))
    assert opened.review.max_leased_per_reviewer == 3
    assert opened.review == cfg.review
    assert opened.sam3_path == "m/sam3"  # no such folder: the name, for the tracker to report when needed
    assert opened.review_url.endswith("review.db")
    assert opened.media_uri(media[0]["media_id"]) == media[0]["uri"]
    assert opened.media_uri("no-such-media") is None


def test_a_snapshot_without_a_readable_config_names_what_to_fix(tmp_path):
    run, _ = build_run(tmp_path)
    RunStore.existing(str(run)).write_json("run.json", {"workspace": str(tmp_path)})
    with pytest.raises(RunOpenError, match="no run.json with a config"):
        ReviewRun.open(str(run))

    good = EngineConfig().model_dump(mode="json")
    _snapshot(run, good | {"review": good["review"] | {"lease_ttl_s": -1}})
    with pytest.raises(RunOpenError, match=r"run.json: its config cannot be read.*review\.lease_ttl_s"):
        ReviewRun.open(str(run))

    _snapshot(run, {k: v for k, v in good.items() if k != "sam3"})
    with pytest.raises(RunOpenError, match="sam3"):
        ReviewRun.open(str(run))


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(RunOpenError):
        ReviewRun.open(str(tmp_path / "nothing-here"))
