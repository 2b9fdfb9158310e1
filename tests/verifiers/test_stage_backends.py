"""ai_verify with its backend chosen by config: a separate EV checkpoint, the HTTP backend on Ray
actors, the config keys that select them, and the vLLM backend's install hint and memory share."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi import FastAPI

from conceptengine.config import ConfigError, load_config
from conceptengine.engine.runner import LocalRunner, RayRunner, run_stage
from conceptengine.engine.stage import StageConfig, get_stage
from conceptengine.round.ai_verify import params_from_config
from conceptengine.verifiers.backend_factory import make_backend, vllm_memory_share
from conceptengine.verifiers.retry import ServerUnusable
from conceptengine.verifiers.serve import create_app, load_models
from conceptengine.verifiers.settings import BackendParams, VLLMConfig
from conceptengine.verifiers.stage import VERIFIED
from conceptengine.verifiers.tiny import build_tiny_verifier

from .conftest import VOCAB, proposals_table, square_mask
from .loopback import serve_in_thread


@pytest.fixture(scope="module")
def proposals(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    pairs = [("red square", [square_mask(5, 5, 10), square_mask(40, 30, 12)]), ("star", [])]
    return proposals_table(tmp_path_factory.mktemp("stage_backends"), pairs)


@pytest.fixture(scope="module")
def ev_verifier_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_verifier(str(tmp_path_factory.mktemp("ev_verifier") / "ev0001"), VOCAB, seed=1)


def _verify(table: pa.Table, **params) -> list[dict]:
    return run_stage(
        LocalRunner(), get_stage("ai_verify"), StageConfig(), params, table, "pair_id", VERIFIED
    ).to_pylist()


def test_ev_uses_its_own_checkpoint(
    proposals: pa.Table, tiny_verifier_path: str, ev_verifier_path: str
) -> None:
    both = _verify(proposals, model_path=tiny_verifier_path, ev_model_path=ev_verifier_path)
    mv_only = _verify(proposals, model_path=tiny_verifier_path)
    ev_only = _verify(proposals, model_path=ev_verifier_path)
    for b, m, e in zip(both, mv_only, ev_only, strict=True):
        assert b["error"] is None and b["verifier_version"] == "v0001+ev0001"
        np.testing.assert_allclose(
            b["mv_probs"] or [], m["mv_probs"] or [], atol=1e-6
        )  # MV from the MV model
        np.testing.assert_allclose(b["ev_probs"], e["ev_probs"], atol=1e-6)  # EV from the EV model
        assert not np.allclose(b["ev_probs"], m["ev_probs"])  # ... which really is a different model
    same = _verify(proposals, model_path=tiny_verifier_path, ev_model_path=tiny_verifier_path)
    assert same[0]["verifier_version"] == "v0001"


@pytest.fixture(scope="module")
def server_url(tiny_verifier_path: str) -> Iterator[str]:
    with serve_in_thread(create_app(load_models([tiny_verifier_path]))) as url:
        yield url


@pytest.mark.slow
def test_ray_actors_score_through_the_http_backend(
    proposals: pa.Table, tiny_verifier_path: str, server_url: str, ray_session
) -> None:
    """The stage on a Ray actor pool, its backend an OpenAI-compatible server: same rows as in-process."""
    params = {
        "backend": "openai",
        "model_path": "v0001",
        "openai": {"base_url": server_url, "top_logprobs": 4096, "max_concurrency": 2},
    }
    cfg = StageConfig(batch_size=1, concurrency=1, num_cpus=0.5)
    via_http = run_stage(RayRunner(), get_stage("ai_verify"), cfg, params, proposals, "pair_id", VERIFIED)
    local = _verify(proposals, model_path=tiny_verifier_path)
    for h, t in zip(via_http.to_pylist(), local, strict=True):
        assert h["error"] is None and h["verifier_version"] == "v0001"
        np.testing.assert_allclose(h["ev_probs"], t["ev_probs"], atol=1e-4)
        np.testing.assert_allclose(h["mv_probs"] or [], t["mv_probs"] or [], atol=1e-4)


def test_config_selects_the_backend(tmp_path: Path) -> None:
    cfg = load_config(None, ["verifier.ev_model=models/ev"]).verifier
    params = params_from_config(cfg, lambda p: str(tmp_path / p))
    assert params["backend"] == "transformers"
    assert (params["model_path"], params["ev_model_path"]) == (
        str(tmp_path / "models/verifier"),
        str(tmp_path / "models/ev"),
    )

    with pytest.raises(ConfigError, match=r"verifier\.openai\.model is required"):
        load_config(None, ["verifier.backend=openai"])
    cfg = load_config(
        None, ["verifier.backend=openai", "verifier.openai.model=mv", "verifier.openai.ev_model=ev"]
    )
    params = params_from_config(cfg.verifier, lambda p: pytest.fail(f"served names are not paths: {p}"))
    assert (params["model_path"], params["ev_model_path"]) == ("mv", "ev")
    stage = get_stage("ai_verify")(StageConfig(), **params)  # the stage accepts what the config produces
    assert stage.p.openai.base_url == "http://127.0.0.1:8000/v1"

    with pytest.raises(ConfigError, match=r"verifier\.backend"):
        load_config(None, ["verifier.backend=triton"])
    with pytest.raises(ConfigError, match=r"verifier\.openai\.max_concurrency"):
        load_config(None, ["verifier.openai.max_concurrency=0"])
    with pytest.raises(ValueError, match=r"params: openai\.timeout_s"):
        get_stage("ai_verify")(StageConfig(), model_path="m", openai={"timeout_s": -1})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_names_the_extra(tiny_verifier_path: str) -> None:
    with pytest.raises(ImportError, match=r"pip install 'conceptengine\[vllm\]'"):
        make_backend(BackendParams(backend="vllm"), tiny_verifier_path)


def test_vllm_memory_follows_the_stage_gpu_share() -> None:
    assert vllm_memory_share(VLLMConfig(), 0.5) == 0.45  # half a GPU: leave the other half free
    assert vllm_memory_share(VLLMConfig(), 2.0) == 0.9  # whole GPUs (tensor parallel): vLLM's default
    assert vllm_memory_share(VLLMConfig(), 0.0) == 0.9
    assert vllm_memory_share(VLLMConfig(gpu_memory_utilization=0.3), 0.5) == 0.3


def test_an_unusable_server_ends_the_step_instead_of_quarantining_rows(
    proposals: pa.Table, server_url: str
) -> None:
    """Rows are not at fault when the server is down or the model name is wrong: the step fails (and
    `run --resume` scores them later); a per-row quarantine would drop a whole round's pairs."""
    fast = {"base_url": server_url, "max_retries": 0, "top_logprobs": 4096}
    with pytest.raises(ServerUnusable, match=r"HTTP 404.*'nope' is not served here"):
        _verify(proposals, backend="openai", model_path="nope", openai=fast)
    with serve_in_thread(FastAPI()) as dead_url:
        pass  # stopped: nothing listens on its port any more
    with pytest.raises(ServerUnusable, match="failed after 1 attempt; last: connection failed"):
        _verify(proposals, backend="openai", model_path="v0001", openai=fast | {"base_url": dead_url})
