"""The OpenAI-compatible backend against real servers on loopback: the verifier server, and small
scripted FastAPI servers that misbehave on purpose (overload, bad requests, hangs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from conceptengine.engine import rle
from conceptengine.verifiers import choices
from conceptengine.verifiers.backend import VerifierBackend
from conceptengine.verifiers.logprobs import MissingChoicesError, choice_probs
from conceptengine.verifiers.openai_backend import OpenAIBackend
from conceptengine.verifiers.retry import ServerError
from conceptengine.verifiers.serve import create_app, load_models
from conceptengine.verifiers.verify import ExhaustivityVerifier, MaskVerifier

from .loopback import serve_in_thread

LETTERS = list(choices.MV.letters)


@pytest.fixture(scope="module")
def server_url(tiny_verifier_path: str) -> Iterator[str]:
    with serve_in_thread(create_app(load_models([tiny_verifier_path]), max_batch=4)) as url:
        yield url


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]


def _http(url: str, **kw) -> OpenAIBackend:
    # top_logprobs covers the tiny model's whole vocabulary: every choice token comes back, exactly
    return OpenAIBackend(url, "v0001", **({"top_logprobs": 4096, "max_concurrency": 4} | kw))


def test_http_probabilities_equal_the_in_process_backend(server_url: str, backend) -> None:
    http = _http(server_url)
    assert isinstance(http, VerifierBackend) and http.version == "v0001"
    imgs = _images(4)
    views = [imgs[:2], imgs[2:3], imgs[1:3], imgs[3:4], imgs[:1]]
    qs = ["Is this a red square?", "A longer question about the striped circle here?", "star", "x", "y"]
    got = http.score(views, qs, LETTERS)
    want = backend.score(views, qs, LETTERS)
    assert got.shape == (5, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert http.score([], [], LETTERS).shape == (0, 5)


def test_mask_and_exhaustivity_verifiers_work_through_http(server_url: str, backend) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    masks = []
    for x0, y0 in ((10, 10), (60, 40)):
        m = np.zeros((90, 120), dtype=bool)
        m[y0 : y0 + 15, x0 : x0 + 15] = True
        counts = rle.encode(m)
        masks.append({"rle": counts, "box_xyxy": rle.box_xyxy(counts, 90, 120)})
    http = _http(server_url)
    np.testing.assert_allclose(
        MaskVerifier(http).score(image, "red square", masks),
        MaskVerifier(backend).score(image, "red square", masks),
        atol=1e-4,
    )
    boxes = [m["box_xyxy"] for m in masks]
    for shown in (boxes, []):  # with boxes, and the no-box view that gives the presence score
        np.testing.assert_allclose(
            ExhaustivityVerifier(http).score(image, "star", shown),
            ExhaustivityVerifier(backend).score(image, "star", shown),
            atol=1e-4,
        )


def test_score_works_inside_a_running_event_loop(server_url: str, backend) -> None:
    views, qs = [_images(1)], ["star"]

    async def from_async_code() -> tuple[np.ndarray, np.ndarray]:
        http = _http(server_url)
        return http.score(views, qs, LETTERS), await http.ascore(views, qs, LETTERS)

    sync_in_loop, awaited = asyncio.run(from_async_code())
    np.testing.assert_allclose(sync_in_loop, backend.score(views, qs, LETTERS), atol=1e-4)
    np.testing.assert_allclose(awaited, sync_in_loop, atol=1e-6)


def test_choice_probs_renormalise_and_bound_missing_tokens() -> None:
    top = {"A": np.log(0.5), "B": np.log(0.2), "zebra": np.log(0.1)}
    p = choice_probs(top, ["A", "B"], "srv")
    np.testing.assert_allclose(p, [0.5 / 0.7, 0.2 / 0.7], atol=1e-6)
    # C is not among the returned tokens: it gets the smallest returned logprob minus the margin
    p = choice_probs(top, ["A", "B", "C"], "srv", margin=1.0)
    c = 0.1 * np.exp(-1.0)
    np.testing.assert_allclose(p, np.array([0.5, 0.2, c]) / (0.7 + c), atol=1e-6)
    with pytest.raises(MissingChoicesError, match=r"srv: none of the choice tokens \['C', 'D'\]"):
        choice_probs(top, ["C", "D"], "srv")


def test_a_model_that_does_not_answer_with_the_letters_is_named(server_url: str) -> None:
    http = _http(server_url, top_logprobs=1)  # only the greedy token comes back: not a choice letter
    with pytest.raises(
        MissingChoicesError, match=r"verifier server http://127\.0\.0\.1:\d+/v1 \(model 'v0001'\)"
    ):
        http.score([_images(1)], ["star"], ["Accept", "Reject"])


# -- misbehaving servers ----------------------------------------------------------------------------


def _answer(letter_logprobs: dict[str, float]) -> dict:
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in letter_logprobs.items()]
    return {"choices": [{"index": 0, "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}


class Script:
    """A scripted chat endpoint that records every attempt and the most requests it had in flight."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0):
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.attempts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            status = self.statuses.pop(0) if self.statuses else 200
        finally:
            self.in_flight -= 1
        if status == 200:
            return JSONResponse(_answer({"A": np.log(0.75), "B": np.log(0.25), "q": -9.0}))
        headers = {"Retry-After": "0"} if status == 429 else {}
        return JSONResponse({"error": {"message": f"scripted {status} for {body['model']}"}}, status, headers)


def _client(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(url, "scripted", **({"backoff_s": 0.01, "max_backoff_s": 0.05} | kw))


def test_overload_is_retried_until_it_succeeds() -> None:
    script = Script([429, 503])
    with serve_in_thread(script.app) as url:
        probs = _client(url, max_retries=3).score([[]], ["q"], ["A", "B"])
    np.testing.assert_allclose(probs, [[0.75, 0.25]], atol=1e-6)
    assert script.attempts == 3


def test_a_refused_request_fails_at_once_with_status_and_body() -> None:
    script = Script([400])
    with (
        serve_in_thread(script.app) as url,
        pytest.raises(ServerError, match=r"HTTP 400 \(not retried.*scripted 400 for scripted"),
    ):
        _client(url, max_retries=3).score([[]], ["q"], ["A", "B"])
    assert script.attempts == 1


def test_persistent_overload_gives_up_after_max_retries() -> None:
    script = Script([500] * 10)
    with (
        serve_in_thread(script.app) as url,
        pytest.raises(ServerError, match=r"failed after 3 attempts; last: HTTP 500"),
    ):
        _client(url, max_retries=2).score([[]], ["q"], ["A", "B"])
    assert script.attempts == 3


def test_a_hanging_server_times_out_after_the_retries() -> None:
    script = Script([], delay_s=3.0)
    with serve_in_thread(script.app) as url:
        start = time.monotonic()
        with pytest.raises(ServerError, match=r"failed after 2 attempts; last: timed out"):
            _client(url, timeout_s=0.2, max_retries=1).score([[]], ["q"], ["A", "B"])
        assert time.monotonic() - start < 2.0
    assert script.attempts == 2


def test_nothing_listening_is_a_connection_error() -> None:
    with serve_in_thread(FastAPI()) as url:
        pass  # the server stopped: its port is closed now
    with pytest.raises(ServerError, match="connection failed"):
        _client(url, max_retries=1).score([[]], ["q"], ["A", "B"])


def test_concurrency_is_bounded() -> None:
    script = Script([], delay_s=0.1)
    with serve_in_thread(script.app) as url:
        probs = _client(url, max_concurrency=3).score([[]] * 12, ["q"] * 12, ["A", "B"])
    assert probs.shape == (12, 2) and script.attempts == 12
    assert script.max_in_flight == 3  # never more than allowed, and the allowance is actually used


def test_api_key_comes_from_the_named_environment_variable(monkeypatch) -> None:
    seen: list[str | None] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        return JSONResponse(_answer({"A": -0.1, "B": -2.0}))

    monkeypatch.delenv("CE_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="CE_TEST_KEY.*not set"):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", api_key_env="CE_TEST_KEY")
    monkeypatch.setenv("CE_TEST_KEY", "sk-test")
    with serve_in_thread(app) as url:
        OpenAIBackend(url, "m", api_key_env="CE_TEST_KEY").score([[]], ["q"], ["A", "B"])
    assert seen == ["Bearer sk-test"]
