"""Micro-batching for the verifier server: concurrent requests share one forward pass.

Many Ray actors send one question per HTTP request; answering them one at a time would leave the
accelerator mostly idle. The batcher waits at most `max_wait_s` after the first request for others
to arrive, then runs up to `max_batch` of them together on a worker thread (the event loop keeps
accepting requests meanwhile). The transformers backend makes a row's result independent of what
else is in its batch, so batching changes throughput only, never answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], list[R]], max_batch: int = 16, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind to the running loop (the server's); call once from inside it."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                batch.append(
                    self._queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return [(item, fut) for item, fut in batch if not fut.done()]  # drop requests whose client left

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await asyncio.to_thread(self.fn, items)
            except Exception:  # noqa: BLE001 - one bad request must not fail its batch-mates
                await self._one_by_one(batch)
                continue
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        for item, fut in batch:
            try:
                (res,) = await asyncio.to_thread(self.fn, [item])
            except Exception as exc:  # noqa: BLE001 - delivered to that request's handler
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(res)
