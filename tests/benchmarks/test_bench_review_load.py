"""bench_review_load for a few seconds: real server, real HTTP clients, and its database audit."""

import json

import pytest

from tests.benchmarks import scripts


def load_bench():
    return scripts.load_bench("bench_review_load")


@pytest.mark.slow
def test_short_load_run_loses_and_duplicates_nothing(tmp_path, capsys):
    bench = load_bench()
    bench.main(["--seconds", "3", "--clients", "3", "--tasks", "400", "--workdir", str(tmp_path)])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["backend"] == "sqlite" and figures["clients"] == 3
    assert figures["answers"] > 0 and figures["answers_per_s"] > 0
    assert figures["stored_answers"] == figures["answers"]  # every accepted answer is in the database
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["conflicts"] == 0 and figures["request_errors"] == 0  # leases keep reviewers apart
    assert figures["p95_latency_ms"] >= figures["p50_latency_ms"] > 0


def test_audit_catches_a_lost_and_a_phantom_answer(tmp_path):
    """The audit is what makes 'zero lost' mean something: it must see both kinds of failure."""
    bench = load_bench()
    _, url = bench.build_run(tmp_path, 6, None)
    from conceptengine.review.queue import ReviewQueue

    with ReviewQueue(url) as q:
        tasks = q.lease("human:bench0", ["mv", "ev"], 3, ttl_s=60.0)
        q.submit(tasks[0].task_id, "human:bench0", "Accept")
        q.submit(tasks[1].task_id, "human:bench0", "Accept")  # stored, but no client was told so
    client = bench.Client("bench0", "token")
    client.accepted = {tasks[0].task_id: "Accept", tasks[2].task_id: "Accept"}  # the last never stored
    assert bench.audit(url, [client]) == {"stored_answers": 2, "lost": 1, "duplicated": 1}


def test_bad_arguments_are_refused():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--clients", "0"])
