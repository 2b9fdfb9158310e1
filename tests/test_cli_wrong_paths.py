"""A wrong path or a missing model given to the CLI: one clear line, exit 2, and nothing created."""

import pytest
from typer.testing import CliRunner

from conceptengine.cli import app

runner = CliRunner()


def said(result) -> str:
    """The output as one line: rich wraps long messages at the terminal width."""
    return " ".join(result.output.split())


def test_status_export_and_eval_on_a_missing_run_create_nothing(tmp_path):
    missing = tmp_path / "no-run"
    for args in (
        ["status", str(missing)],
        ["export", str(missing)],
        ["eval", "--model", str(tmp_path / "model"), "--gold", str(missing)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no such run directory" in said(result)
        assert not missing.exists()


def test_status_on_a_file_asks_for_the_run_directory(tmp_path):
    run_json = tmp_path / "run.json"
    run_json.write_text("{}")
    result = runner.invoke(app, ["status", str(run_json)])
    assert result.exit_code == 2 and "is a file; give the run's directory" in said(result)


def test_eval_of_a_predictions_file_against_a_run_directory_says_what_to_give(tmp_path):
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    result = runner.invoke(app, ["eval", "--gold", str(tmp_path), "--pred", str(pred)])
    assert result.exit_code == 2, result.output
    assert "SA-Co/Gold .json" in said(result) and "--model" in said(result)


def test_run_with_a_missing_model_fails_before_ray_and_writes_no_run(tmp_path, monkeypatch):
    from conceptengine.round import driver

    runners_made = []
    monkeypatch.setattr(driver, "make_runner", lambda *a: runners_made.append(a))  # Ray starts in there
    config = tmp_path / "team.yaml"
    config.write_text("sam3: {model: checkpoints/sam3}\n")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2, result.output
    assert "sam3.model: checkpoints/sam3 is neither a folder at" in said(result)
    assert runners_made == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["team.yaml"]  # no run/ beside the config


def _team_config(tmp_path, **files: str) -> str:
    """A files pool whose config names photos/, captions.json, gold.json and ontology.yaml; `files` says
    which of them exist."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tmp_path / "team.yaml"
    config.write_text(
        "media: {source: files, uri: photos/*.jpg, gold_json: gold.json}\n"
        "ontology: {path: ontology.yaml, captions_path: captions.json}\n"
    )
    return str(config)


@pytest.mark.parametrize(
    ("present", "said_line"),
    [
        (
            ("ontology.yaml", "gold.json", "photos/a.jpg"),
            "ontology.captions_path: no file at {root}/captions.json",
        ),
        (
            ("ontology.yaml", "gold.json", "captions.json"),
            "media.uri: no image at {root}/photos/*.jpg (a folder, a glob",
        ),
    ],
)
def test_a_team_pool_with_something_missing_names_its_key_in_one_line_and_writes_nothing(
    tmp_path, present, said_line
):
    config = _team_config(tmp_path, **dict.fromkeys(present, "{}"))
    result = runner.invoke(app, ["run", config])
    assert result.exit_code == 2, result.output
    assert said_line.format(root=tmp_path) in said(result)
    assert not (tmp_path / "run").exists()


def test_a_run_dir_that_cannot_be_created_is_refused_before_anything_starts(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the run dir's parent should be")
    config = tmp_path / "demo.yaml"
    config.write_text("seed: 0\n")
    result = runner.invoke(app, ["run", str(config), "--run-dir", str(blocker / "run")])
    assert result.exit_code == 2, result.output
    assert f"run dir {blocker / 'run'}: cannot write under {blocker}; choose another --run-dir" in said(
        result
    )


def test_a_captioner_model_that_is_not_there_is_named_before_anything_starts(tmp_path):
    _team_config(tmp_path, **{"ontology.yaml": "", "gold.json": "{}", "photos/a.jpg": "x"})
    (tmp_path / "models" / "sam3").mkdir(parents=True)  # there: the captioner is the one missing
    config = tmp_path / "team.yaml"
    config.write_text(
        "media: {source: files, uri: photos/*.jpg, gold_json: gold.json}\n"
        "ontology: {path: ontology.yaml, captioner: model, captioner_model: models/captioner}\n"
    )
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2, result.output
    assert "ontology.captioner_model: models/captioner is neither a folder at" in said(result)
    assert not (tmp_path / "run").exists()
