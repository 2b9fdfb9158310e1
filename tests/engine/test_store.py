import pyarrow as pa

from conceptengine.engine.store import MANIFEST, RunStore, StepRef, fingerprint_of, fingerprint_of_strings


def _table(n):
    return pa.table({"k": [str(i) for i in range(n)]})


def test_step_is_done_only_with_matching_manifest(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    ref = StepRef(1, "propose_nps")
    assert not store.is_done(ref, "cfg", "fp")
    m = store.write_step(ref, {"pairs": _table(3)}, "cfg", "fp", {"images": 2})
    assert m["rows"] == {"pairs": 3}
    assert store.is_done(ref, "cfg", "fp")
    assert not store.is_done(ref, "other-config", "fp")
    assert not store.is_done(ref, "cfg", "other-input")
    assert store.read_step(ref, "pairs").equals(_table(3))


def test_rewriting_a_step_drops_the_old_manifest_first(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    ref = StepRef(1, "commit")
    store.write_step(ref, {"a": _table(1)}, "cfg", "fp1")
    assert (tmp_path / "run" / "round-0001" / "commit" / MANIFEST).exists()
    store.write_step(ref, {"a": _table(2)}, "cfg", "fp2")
    assert store.is_done(ref, "cfg", "fp2") and not store.is_done(ref, "cfg", "fp1")


def test_a_part_without_manifest_is_not_done(tmp_path):
    """What a kill -9 between writing parts and writing the manifest leaves behind."""
    store = RunStore(str(tmp_path / "run"))
    ref = StepRef(2, "route")
    store.write_parquet(f"{ref.rel}/routed.parquet", _table(5))
    assert not store.is_done(ref, "cfg", "fp")


def test_works_on_an_fsspec_memory_url():
    store = RunStore("memory://runs/test-store")
    ref = StepRef(0, "ingest")
    store.write_step(ref, {"media": _table(4)}, "cfg", "fp")
    assert store.is_done(ref, "cfg", "fp")
    assert store.read_step(ref, "media").num_rows == 4


def test_a_pools_uris_fingerprint_a_slice_at_a_time_as_their_whole_list_would():
    uris = [f's3://pool/{i:07d}-é"q.jpg' for i in range(1, 12)]
    chunked = pa.chunked_array([uris[:4], uris[4:]])
    for rows in (1, 3, 50_000):
        assert fingerprint_of_strings(chunked, rows) == fingerprint_of(uris)
    assert fingerprint_of_strings(pa.array(uris[:1])) == fingerprint_of(uris[:1])
    assert fingerprint_of_strings(pa.array(uris[1:])) != fingerprint_of(uris)
