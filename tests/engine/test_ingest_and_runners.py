import io

import pyarrow as pa
import pytest
from PIL import Image

from conceptengine.engine.ingest import IngestStage
from conceptengine.engine.runner import LocalRunner, RayRunner, run_stage
from conceptengine.engine.stage import StageConfig
from conceptengine.engine.tables import MEDIA


@pytest.fixture
def pool(tmp_path):
    uris = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (20 + i, 10), (i * 40, 0, 0)).save(p)
        uris.append(str(p))
    good = io.BytesIO()
    Image.new("RGB", (30, 30), (0, 255, 0)).save(good, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    uris += [str(truncated), str(garbage), str(tmp_path / "missing.png")]
    return pa.table({"uri": uris, "split": ["train"] * len(uris), "domain": ["test"] * len(uris)})


def _check(media):
    assert media.schema.equals(MEDIA)
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in media.to_pylist()}
    assert rows["img3.png"]["width"] == 23 and rows["img3.png"]["error"] is None
    for bad in ("truncated.png", "garbage.png", "missing.png"):
        assert rows[bad]["error"], bad
        assert bad in rows[bad]["error"]
    assert len({r["media_id"] for r in rows.values()}) == len(rows)


def test_ingest_quarantines_corrupt_files_in_process(pool):
    media = run_stage(LocalRunner(), IngestStage, StageConfig(batch_size=3), {}, pool, "uri", MEDIA)
    _check(media)


def test_ray_runner_gives_the_same_rows_on_an_actor_pool(pool, ray_session):
    cfg = StageConfig(batch_size=2, concurrency=2, num_cpus=0.5)
    via_ray = run_stage(RayRunner(), IngestStage, cfg, {}, pool, "uri", MEDIA)
    _check(via_ray)
    local = run_stage(LocalRunner(), IngestStage, StageConfig(batch_size=3), {}, pool, "uri", MEDIA)
    assert via_ray.equals(local)


def test_empty_input_gives_the_output_schema():
    out = run_stage(
        LocalRunner(),
        IngestStage,
        StageConfig(),
        {},
        pa.table({"uri": pa.array([], pa.string())}),
        "uri",
        MEDIA,
    )
    assert out.num_rows == 0 and out.schema.equals(MEDIA)


def test_a_chain_that_would_starve_ray_data_fails_fast(pool, ray_session):
    from conceptengine.engine.runner import Link

    heavy = [Link(IngestStage, StageConfig(num_cpus=1)), Link(IngestStage, StageConfig(num_cpus=0.5))]
    with pytest.raises(ValueError, match="claim 1.5 of the cluster's 2 CPUs"):
        RayRunner().run_chain(heavy, pool, "uri", MEDIA)
    one_pool = [Link(IngestStage, StageConfig(num_cpus=1, concurrency=2))]  # hung the demo's verify step
    with pytest.raises(ValueError, match=r"ingest \(1.0 x 2\) claim 2 of the cluster's 2 CPUs"):
        RayRunner().run_chain(one_pool, pool, "uri", MEDIA)
