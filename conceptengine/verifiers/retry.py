"""POST with bounded retries: exponential backoff with jitter on 429, 5xx and transport failures.

Many Ray actors share one inference server, so overload (429 / 503) and slow answers are normal
operating conditions, not bugs: back off and try again, honouring the server's `Retry-After`. Any
other 4xx means the request itself is wrong, and repeating it cannot help, so it fails at once with
the status and the server's message. The wait happens outside the concurrency semaphore, so a
request that is backing off does not hold a slot that a healthy request could use.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

# 408 is the server timing the request out: as retryable as a client-side timeout.
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class ServerError(RuntimeError):
    """The verifier server could not answer; the message names the URL, the status or error, and the body."""


class ServerUnusable(ServerError):
    """No request can succeed: retries ran out, or the server refused the credentials or the model name
    (401 / 403 / 404). Callers should stop rather than mark every remaining row as failed."""


UNUSABLE_STATUS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4  # attempts = max_retries + 1
    backoff_s: float = 0.5  # first wait; doubles every retry
    max_backoff_s: float = 30.0  # also caps a server's Retry-After, so a bad header cannot stall a run

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before retry number `attempt` (0-based): the server's wish, else backoff x jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * rng.uniform(0.5, 1.5)  # jitter: retries of many clients do not arrive in lockstep


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _body(resp: httpx.Response, limit: int = 500) -> str:
    text = resp.text.strip()
    return text[:limit] + ("..." if len(text) > limit else "")


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    semaphore: asyncio.Semaphore,
    policy: RetryPolicy,
    rng: random.Random,
    what: str,
) -> dict[str, Any]:
    """POST `payload` and return the JSON answer, retrying what is worth retrying. `what` names the
    server and model in errors, so a failure in a Ray actor's log says which deployment to look at."""

    last = ""
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        async with semaphore:
            try:
                resp = await client.post(url, json=payload)
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError:
                        raise ServerError(
                            f"{what}: {url} answered 200 with a body that is not JSON: {_body(resp)!r}"
                        )
                if resp.status_code not in RETRYABLE_STATUS:
                    kind = ServerUnusable if resp.status_code in UNUSABLE_STATUS else ServerError
                    raise kind(
                        f"{what}: {url} answered HTTP {resp.status_code} (not retried: the request itself "
                        f"was refused): {_body(resp)}"
                    )
                last = f"HTTP {resp.status_code}: {_body(resp, 200)}"
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
        if attempt < policy.max_retries:
            await asyncio.sleep(policy.delay(attempt, retry_after, rng))
    n = policy.max_retries + 1
    raise ServerUnusable(f"{what}: {url} failed after {n} attempt{'s' if n > 1 else ''}; last: {last}")
