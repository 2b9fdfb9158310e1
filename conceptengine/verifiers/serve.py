"""`conceptengine verifier serve`: a small OpenAI-compatible server for verifier checkpoints.

Serve a verifier once and let many Ray workers (`verifier.backend: openai`) share it, or test the
HTTP backend against a real server on loopback. It answers `POST /v1/chat/completions` with one
token and real `logprobs.content[0].top_logprobs` (full-vocabulary log-softmax of the next-token
logits), `GET /v1/models` and `GET /health`. Concurrent requests are micro-batched per model. Every
checkpoint is served under its directory name (`.../verifier-demo/mv` -> `mv`), so one server can
carry the MV and the EV verifier.

Deliberate limits, each refused with a 400 naming the field: one completion (`n` = 1), one token
(`max_tokens` / `max_completion_tokens` = 1), no streaming, images only as base64 data URLs (the
server fetches nothing). Decoding is greedy whatever the temperature: the verifiers read
probabilities, not samples. `top_logprobs` may exceed OpenAI's 20, up to the vocabulary size.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conceptengine.verifiers.batcher import MicroBatcher
from conceptengine.verifiers.serve_model import Answer, BadRequest, Question, ServedModel


class ChatRequest(BaseModel):
    """The fields this server reads; other OpenAI fields (seed, user, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    n: int = 1
    stream: bool = False


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _check(req: ChatRequest) -> None:
    if req.stream:
        raise BadRequest("stream: this server does not stream; send stream=false")
    if req.n != 1:
        raise BadRequest(f"n: this server returns one completion, got n={req.n}")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, name)
        if value is not None and value != 1:
            raise BadRequest(
                f"{name}: this server generates exactly one token (verifier scoring), got {value}"
            )


def _entry(t: Any) -> dict[str, Any]:
    return {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8"))}


def completion(model: str, answer: Answer, with_logprobs: bool) -> dict[str, Any]:
    """The chat.completion object, shaped as OpenAI's (and vLLM's) API returns it."""
    logprobs = None
    if with_logprobs:
        logprobs = {"content": [{**_entry(answer.token), "top_logprobs": [_entry(t) for t in answer.top]}]}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.token.token},
                "logprobs": logprobs,
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": answer.prompt_tokens + 1,
        },
    }


def create_app(models: list[ServedModel], max_batch: int = 16, max_wait_s: float = 0.005) -> FastAPI:
    if not models:
        raise ValueError("serve at least one verifier checkpoint")
    by_name = {m.name: m for m in models}
    if len(by_name) != len(models):
        raise ValueError(f"served model names must be unique, got {[m.name for m in models]}")
    batchers: dict[str, MicroBatcher[Question, Answer]] = {
        name: MicroBatcher(m.answer, max_batch=max_batch, max_wait_s=max_wait_s)
        for name, m in by_name.items()
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for b in batchers.values():
            b.start()
        yield
        for b in batchers.values():
            await b.stop()

    app = FastAPI(title="conceptengine verifier server", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, msgs)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "conceptengine"} for n in by_name]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(req: ChatRequest) -> dict[str, Any] | JSONResponse:
        served = by_name.get(req.model)
        if served is None:
            return _error(
                404, f"model {req.model!r} is not served here; served: {sorted(by_name)}", "not_found"
            )
        try:
            _check(req)
            k = (req.top_logprobs or 0) if req.logprobs else 0
            question = served.question(req.messages, k)
        except BadRequest as exc:
            return _error(400, str(exc))
        try:
            answer = await batchers[req.model].submit(question)
        except Exception as exc:  # noqa: BLE001 - a model failure is the server's fault: 500, message kept
            return _error(500, f"{type(exc).__name__}: {exc}", "server_error")
        return completion(req.model, answer, req.logprobs)

    return app


def load_models(model_dirs: list[str], device: str = "cpu", dtype: str = "auto") -> list[ServedModel]:
    """Each checkpoint served under its directory's name; a missing directory is named in the error."""
    out = []
    for d in model_dirs:
        path = Path(d)
        if not path.is_dir():
            raise FileNotFoundError(f"verifier checkpoint directory {d} does not exist")
        name = path.name or path.resolve().name  # a symlink keeps its own name: serve one dir twice
        out.append(ServedModel(name, str(path), device=device, dtype=dtype))
    return out


def serve(
    model_dirs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    dtype: str = "auto",
    max_batch: int = 16,
) -> None:
    """Block serving `model_dirs` until interrupted (the CLI's `verifier serve`)."""

    app = create_app(load_models(model_dirs, device=device, dtype=dtype), max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="info")
