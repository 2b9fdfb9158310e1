"""The demo installs grounded MV and EV scorers: the shipped ones, or untrained ones over the world's slots."""

from pathlib import Path

from rich.console import Console

from conceptengine.pipelines import demo
from conceptengine.sim.taxonomy import shapes_graph
from conceptengine.verifiers.grounded.backend import grounded_task
from conceptengine.verifiers.grounded.model import GroundedMVModel
from conceptengine.verifiers.grounded.slots import ontology_slots


def test_without_shipped_weights_each_task_gets_an_untrained_scorer_of_its_kind(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(demo, "SHIPPED_VERIFIERS", tmp_path / "nothing-shipped")
    graph = shapes_graph()
    for task in ("mv", "ev"):
        demo.install_verifier(tmp_path / task, task, graph, 0, Console(quiet=True))
        assert grounded_task(str(tmp_path / task)) == task
    assert GroundedMVModel.from_pretrained(tmp_path / "mv").config.slots == ontology_slots(graph)


def test_shipped_scorers_are_copied_and_an_existing_checkpoint_is_kept(tmp_path: Path, monkeypatch) -> None:
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(demo, "SHIPPED_VERIFIERS", shipped)
    demo.install_verifier(
        shipped / "mv", "mv", shapes_graph(), 0, Console(quiet=True)
    )  # stands in for assets
    demo.install_verifier(tmp_path / "ws-mv", "mv", shapes_graph(), 1, Console(quiet=True))
    assert (tmp_path / "ws-mv" / "model.safetensors").read_bytes() == (
        shipped / "mv" / "model.safetensors"
    ).read_bytes()
    (tmp_path / "ws-mv" / "mine.txt").write_text("a checkpoint of the user's")
    demo.install_verifier(tmp_path / "ws-mv", "mv", shapes_graph(), 1, Console(quiet=True))
    assert (tmp_path / "ws-mv" / "mine.txt").exists()
