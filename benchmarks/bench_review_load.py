"""Load test of the review web app: concurrent reviewer clients against the real server, then an audit.

What it does:
1. builds a run directory with `--tasks` MV / EV tasks in its review queue (SQLite `RUN/review.db`, or a
   fresh schema on the PostgreSQL server at `--db-url`) and one reviewer account per client;
2. starts the review app (`conceptengine.review.web.app`) on uvicorn on loopback, in a subprocess;
3. runs `--clients` reviewers for `--seconds`, each as the review page does: lease two tasks (current +
   next), then per task submit an answer and lease one more (prefetch), over HTTP with httpx;
4. stops the server and reads the database: every answer a client saw accepted must be stored exactly
   once, with that client's choice and name ("lost" counts those that are not), and the database must
   hold no answer that no client saw accepted ("duplicated" counts those, plus any task two clients
   both had accepted).

Clients do not fetch task images (a page does, from a cached route), so the figure is the queue's
lease/answer throughput through the web stack. The last line printed is one JSON object: answers/s,
p50 / p95 latency of every request (and per route), request errors, lost and duplicated answers. The
script exits 1 if any answer was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from conceptengine.config import EngineConfig
from conceptengine.engine import ids, rle
from conceptengine.engine.store import RunStore
from conceptengine.review.answers import CHOICES
from conceptengine.review.models import AnswerRecord
from conceptengine.review.queue import ReviewQueue, TaskSpec

SIZE = 224
ROUND = 1
SERVER = """
import sys, uvicorn
from conceptengine.review.web.app import create_app
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False)
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20, help="concurrent reviewer clients")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the clients work")
    ap.add_argument("--tasks", type=int, default=30_000, help="tasks enqueued before the clients start")
    ap.add_argument("--db-url", default=None, help="PostgreSQL server URL (default: SQLite in the run dir)")
    ap.add_argument("--workdir", default=None, help="where the run goes (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.tasks < 1:
        ap.error("--clients, --seconds and --tasks must be positive")
    return args


# -- the run -------------------------------------------------------------------------------------------
def _specs(n: int) -> list[TaskSpec]:
    """Two MV tasks per EV task, on masks of a realistic size (a box at a seeded random place)."""
    rng = np.random.default_rng(0)
    specs = []
    for i in range(n):
        media = f"{i // 8:016x}"
        pair = ids.pair_id(media, f"object {i % 8}")
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        x, y = (int(v) for v in rng.integers(0, SIZE - 48, 2))
        s = int(rng.integers(12, 48))
        mask[y : y + s, x : x + s] = True
        counts = rle.encode(mask)
        base = {"media_id": media, "uri": f"mem://{media}.png", "height": SIZE, "width": SIZE,
                "noun_phrase": f"object {i % 8}"}  # fmt: skip
        if i % 3 == 2:
            specs.append(TaskSpec(kind="ev", round=ROUND, subject_id=pair, pair_id=pair,
                                  payload=base | {"rles": [counts]}))  # fmt: skip
        else:
            iid = ids.instance_id(pair, i % 3)
            payload = base | {"instance_id": iid, "rle": counts, "box_xyxy": rle.box_xyxy(counts, SIZE, SIZE)}
            specs.append(TaskSpec(kind="mv", round=ROUND, subject_id=iid, pair_id=pair, payload=payload))
    return specs


def _pg_schema(server_url: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server: (queue URL using it, schema name)."""
    schema = f"bench_{secrets.token_hex(4)}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def build_run(root: Path, n_tasks: int, queue_url: str | None) -> tuple[Path, str]:
    run = root / "run"
    store = RunStore(str(run))
    cfg = EngineConfig.model_validate({"review": {"url": queue_url}})
    store.write_json(
        "run.json", {"config": cfg.model_dump(mode="json"), "config_hash": "bench", "workspace": str(root)}
    )
    url = queue_url or f"sqlite:///{store.local_path('review.db')}"
    with ReviewQueue(url) as queue:
        queue.enqueue(_specs(n_tasks))
    return run, url


def add_reviewers(url: str, n: int) -> list[tuple[str, str]]:
    """One reviewer account per client (MV and EV), in the run's own accounts table."""
    from conceptengine.review.web.accounts import Accounts

    accounts = Accounts(url)
    try:
        return [(f"bench{i}", accounts.add_user(f"bench{i}", "reviewer", ["mv", "ev"])) for i in range(n)]
    finally:
        accounts.close()


# -- the server ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(run), str(port)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"review server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"review server did not answer within 120 s: {log_path.read_text()[-2000:]}")


# -- the clients -----------------------------------------------------------------------------------------
@dataclass
class Client:
    name: str
    token: str
    accepted: dict[str, str] = field(default_factory=dict)  # task_id -> choice the server accepted
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {"lease": [], "answer": []})
    errors: int = 0
    conflicts: int = 0
    ran_dry: bool = False


def _choice(task: dict) -> str:
    """A reviewer's pick, spread over the kind's choices and fixed by the task id."""
    options = CHOICES[task["kind"]]
    return options[int(hashlib.sha256(task["task_id"].encode()).hexdigest()[:8], 16) % len(options)]


async def _call(
    http: httpx.AsyncClient, c: Client, route: str, url: str, body: dict
) -> httpx.Response | None:
    """POST with up to 3 tries: a retried answer is harmless (`duplicate`), which is what makes retries safe."""
    for _ in range(3):
        t0 = time.perf_counter()
        try:
            res = await http.post(url, json=body)
        except httpx.TransportError:
            c.errors += 1
            continue
        c.latency_ms[route].append((time.perf_counter() - t0) * 1000)
        if res.status_code < 500:
            return res
        c.errors += 1
    return None


async def reviewer(base: str, c: Client, deadline: float) -> None:
    headers = {"Authorization": f"Bearer {c.token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:

        async def lease(n: int) -> list[dict]:
            res = await _call(http, c, "lease", "/api/lease", {"n": n, "ttl_s": 600.0})
            if res is None or res.status_code != 200:
                c.errors += res is not None
                return []
            return res.json()["tasks"]

        buffer = await lease(2)  # the current task and the next one, as the page asks
        while buffer and time.monotonic() < deadline:
            task = buffer.pop(0)
            choice = _choice(task)
            res = await _call(
                http, c, "answer", f"/api/tasks/{task['task_id']}/answer", {"choice": choice, "seconds": 1.0}
            )
            if res is not None and res.status_code == 200:
                c.accepted[task["task_id"]] = choice
            elif res is not None and res.status_code == 409:
                c.conflicts += 1
            elif res is not None:
                c.errors += 1
            buffer += await lease(1)  # prefetch the next task
        c.ran_dry = not buffer and time.monotonic() < deadline


async def run_clients(base: str, clients: list[Client], seconds: float) -> float:
    start = time.monotonic()
    await asyncio.gather(*(reviewer(base, c, start + seconds) for c in clients))
    return time.monotonic() - start


# -- the audit -------------------------------------------------------------------------------------------
def audit(url: str, clients: list[Client]) -> dict[str, int]:
    """Compare what the clients were told with what the database holds."""
    seen: dict[str, tuple[str, str]] = {}
    duplicated = 0
    for c in clients:
        for task_id, choice in c.accepted.items():
            duplicated += task_id in seen  # two clients both told "accepted" for one task
            seen[task_id] = (f"human:{c.name}", choice)
    with ReviewQueue(url) as queue:
        stored = {
            a.task_id: (a.annotator, a.choice) for kind in ("mv", "ev") for a in queue.answers(ROUND, kind)
        }
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(AnswerRecord.__table__)) or 0
    engine.dispose()
    lost = sum(stored.get(t) != who for t, who in seen.items())
    duplicated += sum(t not in seen for t in stored) + (rows - len(stored))
    return {"stored_answers": len(stored), "lost": lost, "duplicated": duplicated}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-review-"))
    root.mkdir(parents=True, exist_ok=True)
    queue_url, schema = _pg_schema(args.db_url) if args.db_url else (None, None)
    run, url = build_run(root, args.tasks, queue_url)
    clients = [Client(name, token) for name, token in add_reviewers(url, args.clients)]
    proc, base = start_server(run, root / "server.log")
    try:
        elapsed = asyncio.run(run_clients(base, clients, args.seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    checks = audit(url, clients)
    answers = sum(len(c.accepted) for c in clients)
    every = [ms for c in clients for v in c.latency_ms.values() for ms in v]
    per_route = {r: [ms for c in clients for ms in c.latency_ms[r]] for r in ("lease", "answer")}
    result = {
        "backend": make_url(url).get_backend_name(),
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "tasks_enqueued": args.tasks,
        "answers": answers,
        "answers_per_s": round(answers / elapsed, 1),
        "p50_latency_ms": _pct(every, 50),
        "p95_latency_ms": _pct(every, 95),
        "p95_lease_ms": _pct(per_route["lease"], 95),
        "p95_answer_ms": _pct(per_route["answer"], 95),
        "requests": len(every),
        "request_errors": sum(c.errors for c in clients),
        "conflicts": sum(c.conflicts for c in clients),
        "queue_ran_dry": any(c.ran_dry for c in clients),
        **checks,
    }
    if schema is not None:
        engine = create_engine(args.db_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
    if args.workdir is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = main()
    sys.exit(1 if out["lost"] or out["duplicated"] else 0)
