"""The shared training pieces on a real (tiny) torch model: checkpoint layout, pruning, exact restore."""

from __future__ import annotations

import json

import pytest
import torch

from conceptengine.training import loop


def _setup(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(loop.param_groups(model, 0.1, 0.01), lr=0.01)
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, loop.warmup_cosine(10, 2, 0.1))


def _step(model, opt, sched, step: int) -> None:
    x = torch.arange(6.0).reshape(2, 3) + step
    loop.optimizer_step(model(x).pow(2).mean(), model, list(model.parameters()), opt, 1.0, 1)
    sched.step()


def test_checkpoints_keep_the_newest_and_restore_weights_optimizer_and_schedule(tmp_path):
    model, opt, sched = _setup(0)
    (tmp_path / loop.CHECKPOINTS).mkdir()
    (tmp_path / loop.CHECKPOINTS / ".tmp-step-0000009").mkdir()  # a crashed write: never counted
    for step in range(1, 4):
        _step(model, opt, sched, step)
        loop.save_checkpoint(str(tmp_path), step, {"model": model.state_dict()}, opt, sched, keep=2)
    assert [d.name for d in loop.checkpoint_dirs(str(tmp_path))] == ["step-0000002", "step-0000003"]

    other, other_opt, other_sched = _setup(1)
    seen = []

    def load(state: dict, where) -> None:
        seen.append(where.name)
        other.load_state_dict(state["model"])

    start = loop.resume(str(tmp_path), torch.device("cpu"), other_opt, other_sched, load)
    assert start == 3 and seen == ["step-0000003"]
    assert other_sched.get_last_lr() == sched.get_last_lr()
    _step(model, opt, sched, 4)
    _step(other, other_opt, other_sched, 4)  # same optimizer moments: the same next step, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_resume_without_checkpoints_starts_at_zero(tmp_path):
    _, opt, sched = _setup(0)
    assert loop.resume(str(tmp_path), torch.device("cpu"), opt, sched, lambda s, d: None) == 0


def test_warmup_then_cosine_to_the_floor():
    f = loop.warmup_cosine(steps=10, warmup=2, min_ratio=0.1)
    assert f(0) == pytest.approx(0.01) and f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.55) and f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)


def test_train_log_writes_due_steps_and_reports_them(tmp_path):
    reports: list[dict] = []
    log = loop.TrainLog(str(tmp_path / "out"), steps=5, log_every=2, rank=0, report=reports.append)
    written = [log.after_step(s, 0.5, {"loss": float(s)}) for s in range(1, 6)]
    assert [r is not None for r in written] == [False, True, False, True, True]
    lines = [json.loads(x) for x in (tmp_path / "out" / loop.TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in reports] == [2, 4, 5]
    silent = loop.TrainLog(str(tmp_path / "rank1"), steps=5, log_every=2, rank=1, report=None)
    assert silent.after_step(2, 0.5, {}) is not None and not (tmp_path / "rank1").exists()


def test_bad_device_and_missing_checkpoint_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        loop.check_device("gpu")
    with pytest.raises(FileNotFoundError, match="is not a SAM 3 checkpoint"):
        loop.require_init_checkpoint(str(tmp_path), "SAM 3")


def test_param_groups_scale_the_rate_under_a_prefix_and_keep_weight_decay_off_vectors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    groups = loop.param_groups(model, 0.1, 0.01, {"0.": 0.1})
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["0.weight"])] == pytest.approx((0.001, 0.1))
    assert by_param[id(named["0.bias"])] == pytest.approx((0.001, 0.0))
    assert by_param[id(named["1.weight"])] == pytest.approx((0.01, 0.0))
    assert by_param[id(named["2.weight"])] == pytest.approx((0.01, 0.1))
    # Unscaled: the full-rate groups come first, decayed before not, so older optimizer checkpoints load.
    assert [(g["lr"], g["weight_decay"]) for g in loop.param_groups(model, 0.1, 0.01)] == [
        (0.01, 0.1),
        (0.01, 0.0),
    ]
    assert len(by_param) == sum(1 for _ in model.parameters())
