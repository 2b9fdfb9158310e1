import json

import pytest

from conceptengine.ontology.captioner import PrecomputedCaptioner


def test_captions_are_found_by_media_id_uri_or_file_name(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(
        json.dumps({"0123abcd": ["a red square"], "s3://pool/b.jpg": ["a star"], "c.png": ["a blue kite"]})
    )
    captioner = PrecomputedCaptioner.from_json(path)
    assert captioner.caption("0123abcd", "/pool/a.jpg") == ["a red square"]
    assert captioner.caption("ffff", "s3://pool/b.jpg") == ["a star"]
    assert captioner.caption("eeee", "/data/photos/c.png") == ["a blue kite"]
    assert captioner.caption("dddd", "/data/photos/unlisted.png") == []


def test_a_captions_file_of_the_wrong_shape_names_what_it_must_be(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"a.jpg": "a red square"}))
    with pytest.raises(ValueError, match=r"must map each image \(media_id, URI or file name\) to a list"):
        PrecomputedCaptioner.from_json(path)
