"""Request size limit, before anything reads the body: authentication, JSON parsing, validation.

Without it an unauthenticated client could make the server parse a 20 MB JSON body (issue 14). The largest
legitimate body is a correction's RLE masks, tens of kilobytes; the limit leaves ample room.
"""

from __future__ import annotations

from typing import Any

MAX_BODY_BYTES = 4 * 1024 * 1024


class BodySizeLimit:
    """ASGI middleware: 413 for a declared Content-Length above `limit`; a body without one (chunked) is
    read here up to `limit` and handed on whole, or refused as soon as it grows past it."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await _too_large(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return whole

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    body = b'{"detail": "request body: larger than %d bytes"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
