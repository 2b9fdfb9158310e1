from conceptengine.round.sources import pool_uris


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
