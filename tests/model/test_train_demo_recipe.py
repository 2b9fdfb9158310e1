"""scripts/train_demo_sam3.py's Recipe: the minutes a stage spends survive a call killed mid-stage."""

import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_demo_sam3 as script


def test_a_running_stage_saves_its_minutes_before_it_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(script, "HEARTBEAT_SECONDS", 0.02)
    recipe = script.Recipe(tmp_path, curve_points=1)
    saved_while_running = threading.Event()

    def train() -> None:
        # A SIGKILL at this point runs no `finally`: only what the heartbeat already wrote is kept.
        for _ in range(500):
            path = tmp_path / "recipe.json"
            if path.exists() and json.loads(path.read_text())["stages"]["s"]["seconds"] > 0:
                saved_while_running.set()
                return
            threading.Event().wait(0.01)

    recipe.run("s", 10, tmp_path / "s-out", train)
    assert saved_while_running.is_set()
    first = json.loads((tmp_path / "recipe.json").read_text())["stages"]["s"]
    assert first["steps"] == 10 and first["seconds"] > 0

    # Resumed by a new call (the stage's output is still incomplete): the minutes add up.
    again = script.Recipe(tmp_path, curve_points=1)
    again.run("s", 10, tmp_path / "s-out", lambda: None)
    assert again.state["stages"]["s"]["seconds"] >= first["seconds"]
