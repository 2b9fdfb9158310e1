"""POST with bounded retries (tenacity): exponential backoff with jitter on 429, 5xx and transport failures.

Many Ray actors share one inference server, so overload (429 / 503) and slow answers are normal
operating conditions, not bugs: back off and try again, honouring the server's `Retry-After`. Any
other 4xx means the request itself is wrong, and repeating it cannot help, so it fails at once with
the status and the server's message. The wait happens outside the concurrency semaphore, so a
request that is backing off does not hold a slot that a healthy request could use.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

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
    backoff_s: float = (
        0.5  # first wait; doubles every retry, with jitter (tenacity's wait_random_exponential)
    )
    max_backoff_s: float = 30.0  # also caps a server's Retry-After, so a bad header cannot stall a run


class _Retryable(Exception):
    """An attempt that failed in a way worth repeating; `retry_after` is the server's wish, if it said one."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


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


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """The server's Retry-After when it sent one (capped), else exponential backoff with full jitter."""
    backoff = wait_random_exponential(multiplier=policy.backoff_s, max=policy.max_backoff_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), policy.max_backoff_s)
        return backoff(state)

    return wait


def _body(resp: httpx.Response, limit: int = 500) -> str:
    text = resp.text.strip()
    return text[:limit] + ("..." if len(text) > limit else "")


async def _attempt(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], semaphore: asyncio.Semaphore, what: str
) -> dict[str, Any]:
    async with semaphore:  # held for the request only: a request backing off leaves its slot to others
        try:
            resp = await client.post(url, json=payload)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from exc
    if resp.status_code == 200:
        try:
            return resp.json()
        except ValueError:
            raise ServerError(
                f"{what}: {url} answered 200 with a body that is not JSON: {_body(resp)!r}"
            ) from None
    if resp.status_code not in RETRYABLE_STATUS:
        kind = ServerUnusable if resp.status_code in UNUSABLE_STATUS else ServerError
        raise kind(
            f"{what}: {url} answered HTTP {resp.status_code} (not retried: the request itself "
            f"was refused): {_body(resp)}"
        )
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    raise _Retryable(f"HTTP {resp.status_code}: {_body(resp, 200)}", retry_after)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    semaphore: asyncio.Semaphore,
    policy: RetryPolicy,
    what: str,
) -> dict[str, Any]:
    """POST `payload` and return the JSON answer, retrying what is worth retrying. `what` names the
    server and model in errors, so a failure in a Ray actor's log says which deployment to look at."""
    attempts = policy.max_retries + 1
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(_Retryable),
        reraise=True,
    )
    try:
        return await retrying(_attempt, client, url, payload, semaphore, what)
    except _Retryable as exc:
        n = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise ServerUnusable(f"{what}: {url} failed after {n}; last: {exc}") from None
