from importlib.metadata import entry_points

import pytest

from conceptengine.config import EngineConfig, MediaConfig
from conceptengine.pipelines.demo import demo_sources
from conceptengine.round.context import RunInputs
from conceptengine.round.errors import RunError
from conceptengine.round.sources import SOURCES_GROUP, pool_uris, sources_for


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return str(path)


def test_a_pool_is_a_folder_a_glob_or_a_list_file(tmp_path):
    a = _touch(tmp_path / "photos" / "a.jpg")
    b = _touch(tmp_path / "photos" / "day2" / "B.PNG")
    _touch(tmp_path / "photos" / ".DS_Store")  # not an image: a folder pool leaves it out
    elsewhere = _touch(tmp_path / "elsewhere" / "c.webp")

    assert pool_uris(str(tmp_path / "photos")) == sorted([a, b])
    assert pool_uris(str(tmp_path / "photos" / "*.jpg")) == [a]

    listing = tmp_path / "pool.txt"
    listing.write_text(f"# the March batch\nphotos/a.jpg\n\n{elsewhere}\ns3://bucket/d.jpg\n")
    assert pool_uris(str(listing)) == sorted([a, elsewhere, "s3://bucket/d.jpg"])
    assert pool_uris(str(tmp_path / "nothing-*.jpg")) == []


def test_each_media_source_is_an_entry_point_loaded_when_a_run_asks_for_it(tmp_path):
    """`media.source` names an entry point of `conceptengine.sources`: nothing has to be imported first."""
    media = {"source": "files", "uri": str(tmp_path), "gold_json": "gold.json"}
    ontology = {"path": "ontology.yaml", "captioner": "ontology"}
    cfg = EngineConfig.model_validate({"media": media, "ontology": ontology})
    files = sources_for(RunInputs(cfg, tmp_path))
    assert files.reviewers is None and files.ground_truth is None  # people only, no oracle
    [sim] = entry_points(group=SOURCES_GROUP, name="sim")
    assert sim.load() is demo_sources

    unknown = EngineConfig.model_construct(media=MediaConfig.model_construct(source="nowhere"))
    with pytest.raises(RunError, match=r"media.source 'nowhere'.*installed: \['files', 'sim'\]"):
        sources_for(RunInputs(unknown, tmp_path))
