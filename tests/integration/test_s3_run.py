"""A run directory on S3-compatible storage (a local moto server): the whole loop with retraining commits
the same dataset as a run on local disk, and the readers (status, export) take the s3:// URL."""

import json
import os
import secrets
import subprocess
import sys

import pytest
import s3fs
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from conceptengine.engine.round_steps import Step
from conceptengine.engine.store import RunStore, StepRef
from conceptengine.engine.tables import ANNOTATIONS
from conceptengine.review.web.run import ReviewRun
from conceptengine.round.commit import COMMITTED, committed_shards
from tests.integration.conftest import write_config
from tests.review.conftest import pg_database  # noqa: F401 - the queue's PostgreSQL
from tests.s3_server import local_s3

RETRAINING = [
    "rounds.count=2",
    "retrain.enabled=true",
    "retrain.every_rounds=1",
    "retrain.steps=3",
    "verifier_retrain.enabled=true",
    "verifier_retrain.every_rounds=2",
    "verifier_retrain.steps=3",
    "verifier_retrain.min_examples=4",
]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conceptengine.cli", *args],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _queue(pg_database: str, name: str) -> str:  # noqa: F811
    """A queue of its own: a fresh schema of the session's PostgreSQL database."""
    engine = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    schema = f"{name}_{secrets.token_hex(4)}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return (
        make_url(pg_database)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@pytest.mark.slow
def test_a_run_on_s3_commits_what_a_local_run_commits(small_workspace, tmp_path, pg_database):  # noqa: F811
    schemas = {name: _queue(pg_database, name) for name in ("local", "s3")}
    local_cfg = write_config(
        small_workspace, "local-pg.yaml", RETRAINING + [f"review.url={schemas['local']}"]
    )
    s3_cfg = write_config(small_workspace, "s3.yaml", RETRAINING + [f"review.url={schemas['s3']}"])
    cache = {"CONCEPTENGINE_CACHE_DIR": str(tmp_path / "cache")}

    done = _cli("run", str(local_cfg), "--run-dir", str(tmp_path / "local-run"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with local_s3() as (bucket, env):
        url = f"s3://{bucket}/run"
        done = _cli("run", str(s3_cfg), "--run-dir", url, env=env | cache)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        remote, local = RunStore(url), RunStore(str(tmp_path / "local-run"))
        for table in ("annotations", "verdicts"):
            assert remote.read_every_round(Step.COMMIT, table, COMMITTED[table]).equals(
                local.read_every_round(Step.COMMIT, table, COMMITTED[table])
            ), table
        fs = s3fs.S3FileSystem()
        for round_ in (1, 2):
            promote = remote.manifest(StepRef(round_, Step.PROMOTE))
            assert promote["extra"]["candidate_path"] == f"{url}/models/sam3/v{round_:04d}"
            assert fs.exists(f"{bucket}/run/models/sam3/v{round_:04d}/model.safetensors")
        retrained = remote.manifest(StepRef(2, Step.RETRAIN_VERIFIERS))["extra"]["verifiers"]
        assert {t: v["candidate"] for t, v in retrained.items()} == {
            t: f"{url}/models/verifier-{t}/v0002" for t in ("mv", "ev")
        }
        shards = committed_shards(remote)
        assert shards and all(fs.exists(s) for s in shards)
        assert all(s.startswith(f"{url}/round-") for s in shards)

        review = ReviewRun.open(url)  # what `conceptengine review serve s3://...` opens
        assert review.review_url == schemas["s3"] and review.media_uri(
            local.read_every_round(Step.COMMIT, "annotations", ANNOTATIONS)["media_id"][0].as_py()
        )

        status = _cli("status", url, env=env)
        assert status.returncode == 0 and "round 2: complete" in status.stdout, status.stdout + status.stderr
        out = tmp_path / "coco.json"
        export = _cli("export", url, "--format", "coco", "--out", str(out), env=env)
        assert export.returncode == 0, export.stdout + export.stderr
        assert json.loads(out.read_text())["annotations"]
        export = _cli("export", url, "--format", "webdataset", env=env)  # beside the run, in the bucket
        assert export.returncode == 0, export.stdout + export.stderr
        assert fs.exists(f"{bucket}/run/export/webdataset/train-000000.tar")


def test_a_run_on_s3_without_a_database_queue_is_refused_before_it_starts(small_workspace, tmp_path):
    cfg = write_config(small_workspace, "s3-sqlite.yaml")
    with local_s3() as (bucket, env):
        done = _cli("run", str(cfg), "--run-dir", f"s3://{bucket}/run", env=env)
        assert done.returncode != 0
        assert "review.url" in done.stdout + done.stderr and "remote" in done.stdout + done.stderr
        assert not s3fs.S3FileSystem().ls(bucket)  # nothing written
