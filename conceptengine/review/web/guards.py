"""Two guards in front of authentication: a limit on failed logins, and the Origin check on cookie requests.

- Failed token checks (login or bearer) are counted per client address and per token id over a sliding
  window; past `MAX_FAILURES` the address or id gets 429 with Retry-After until the window has passed. The
  count lives in this process: one `review serve` process per queue is the deployment the README describes.
- A state-changing request that authenticates with the session cookie must come from this site: a browser
  always sends `Origin` on cross-site POSTs, and one that names another host is refused (403). Bearer-token
  clients (scripts) send no cookie and are not affected. SameSite=Strict cookies already stop most of it;
  this closes the rest (e.g. a sibling subdomain).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

MAX_FAILURES = 10
WINDOW_S = 60.0


class FailureLimiter:
    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S, clock=time.monotonic):
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, *keys: str) -> None:
        """429 when any key (an address, a token id) failed too often within the window."""
        now = self._clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    retry = max(1, round(times[0] + self.window_s - now))
                    raise HTTPException(
                        429,
                        f"authentication: too many failed attempts; try again in {retry} s",
                        headers={"Retry-After": str(retry)},
                    )

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times


def client_keys(request: Request, token: object) -> tuple[str, ...]:
    """What failures are counted by: the client's address and, for a well-formed token, its id."""
    keys = [f"addr:{request.client.host if request.client else '?'}"]
    if isinstance(token, str) and token.count(".") == 1:
        keys.append(f"id:{token.split('.')[0][:32]}")
    return tuple(keys)


def check_origin(request: Request) -> None:
    """403 for a cookie-authenticated state change whose Origin is another site."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site request (browsers send Origin on every POST)
        return
    here = request.headers.get("host", "")
    if urlsplit(origin).netloc != here:
        raise HTTPException(403, f"origin: {origin} is not this site; requests must come from its own pages")
