import io
import json
import time

from rich.console import Console

from conceptengine.engine.progress import StepProgress, TrainingWatch, step_counts


def test_a_finished_step_shows_its_rows_and_numbers_but_not_its_seconds_twice():
    info = {"rows": {"pairs": 470}, "extra": {"images": 80, "seconds": 3.2, "human_share": 0.5, "ok": True}}
    assert step_counts(info) == " · pairs 470 · images 80 · human_share 0.50"
    assert step_counts({}) == ""


def test_output_that_is_not_a_terminal_gets_one_plain_line_per_finished_step():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with StepProgress(console, total_steps=2) as progress:
        progress("round-0001/propose_nps", "start", {})
        progress("round-0001/propose_nps", "done", {"seconds": 1.25, "rows": {"pairs": 12}, "extra": {}})
        progress("round-0001/propose_masks", "done", {"reused": True, "rows": {}, "extra": {"errors": 0}})
    lines = out.getvalue().splitlines()
    assert lines == [
        "[1/2] round-0001/propose_nps done 1.2s · pairs 12",
        "[2/2] round-0001/propose_masks done reused · errors 0",
    ]


def test_a_training_step_reports_its_steps_loss_and_eta_from_the_trainers_log(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = [{"step": 10, "sec": 5.0, "loss": 1.5}, {"step": 60, "sec": 30.0, "loss": 1.2345}]
    # The newest complete line counts; a line still being written is left for the next poll.
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 70, "se')
    seen: list[str] = []
    watch = TrainingWatch(str(log), steps=150, report=seen.append, poll_s=0.05)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.stop()
    assert seen[0] == "step 60/150 · loss 1.234 · ETA 0:00:45"
