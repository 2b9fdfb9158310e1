"""The OpenAI-compatible verifier server, spoken to over real HTTP on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conceptengine.verifiers.data_url import encode_png
from conceptengine.verifiers.serve import create_app, load_models

from .loopback import serve_in_thread


@pytest.fixture(scope="module")
def served(tiny_verifier_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list]]:
    # The same checkpoint under a second directory name: one server can carry an MV and an EV verifier.
    alias = tmp_path_factory.mktemp("alias") / "ev"
    alias.symlink_to(tiny_verifier_path)
    models = load_models([tiny_verifier_path, str(alias)])
    with serve_in_thread(create_app(models, max_batch=4)) as url:
        yield url, models


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))


def _request(model: str, images: list[Image.Image], text: str, **extra) -> dict:
    content = [{"type": "image_url", "image_url": {"url": encode_png(im)}} for im in images]
    content.append({"type": "text", "text": text})
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 1}
    return body | extra


def test_models_and_health(served) -> None:
    url, _ = served
    ids = [m["id"] for m in httpx.get(f"{url}/models").json()["data"]]
    assert ids == ["v0001", "ev"]
    assert httpx.get(url.removesuffix("/v1") + "/health").json() == {"status": "ok"}


def test_top_logprobs_are_the_models_full_vocabulary_log_softmax(served) -> None:
    url, models = served
    model = models[0]
    images, text = [_image(0), _image(1)], "Is this a red square?"
    body = _request("v0001", images, text, logprobs=True, top_logprobs=50, temperature=0)
    answer = httpx.post(f"{url}/chat/completions", json=body, timeout=30).json()

    choice = answer["choices"][0]
    lp = choice["logprobs"]["content"][0]
    top = lp["top_logprobs"]
    assert len(top) == 50 and answer["model"] == "v0001" and choice["finish_reason"] == "length"
    assert choice["message"]["content"] == lp["token"] == top[0]["token"]  # greedy: the most likely token
    assert answer["usage"]["completion_tokens"] == 1 and answer["usage"]["prompt_tokens"] > 0

    # the same forward pass by hand: chat template, processor, model, log-softmax over the vocabulary
    backend = model.backend
    enc = backend.processor(text=[backend.render_prompt(2, text)], images=[images], return_tensors="pt")
    with torch.inference_mode():
        ref = torch.log_softmax(backend.model(**enc).logits[0, -1].float(), dim=-1)
    values, ids = torch.topk(ref, 50)
    assert [t["token"] for t in top] == [backend.processor.tokenizer.decode([i]) for i in ids.tolist()]
    np.testing.assert_allclose([t["logprob"] for t in top], values.numpy(), atol=1e-4)
    assert all(t["bytes"] == list(t["token"].encode()) for t in top)


def test_logprobs_off_gives_none(served) -> None:
    url, _ = served
    answer = httpx.post(
        f"{url}/chat/completions", json=_request("ev", [_image(2)], "star"), timeout=30
    ).json()
    assert answer["choices"][0]["logprobs"] is None and answer["model"] == "ev"


def _user(part: dict) -> dict:
    return {"messages": [{"role": "user", "content": [part]}]}


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"model": "nope"}, 404, "served: ['ev', 'v0001']"),
        ({"max_tokens": 5}, 400, "max_tokens"),
        ({"n": 2}, 400, "n:"),
        ({"stream": True}, 400, "stream"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        (_user({"type": "image_url", "image_url": {"url": "http://x/a.png"}}), 400, "data:image"),
        (_user({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}), 400, "decodable image"),
        (_user({"type": "audio"}), 400, "content[0].type"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_clear_error(served, change: dict, status: int, needle: str) -> None:
    url, _ = served
    resp = httpx.post(
        f"{url}/chat/completions", json=_request("v0001", [_image(3)], "q") | change, timeout=30
    )
    assert resp.status_code == status
    assert needle in resp.json()["error"]["message"]


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_models([str(tmp_path / "nowhere")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_verifier_serve_answers_over_http(tiny_verifier_path: str) -> None:
    """`conceptengine verifier serve DIR` as a user starts it: a separate process, polled until healthy."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "conceptengine.cli",
        "verifier",
        "serve",
        tiny_verifier_path,
        "--port",
        str(port),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "verifier serve did not come up"
            time.sleep(0.2)
        body = _request("v0001", [_image(4)], "star", logprobs=True, top_logprobs=3)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30).json()
        assert len(answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
