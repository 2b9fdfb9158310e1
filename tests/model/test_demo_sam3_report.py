"""The report helpers of scripts/train_demo_sam3.py: how a gold NP is classified for the per-kind table."""

import sys
from pathlib import Path

import pytest

from conceptengine.sim.taxonomy import shapes_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import demo_sam3_report as report


@pytest.mark.parametrize(
    ("noun_phrase", "kind"),
    [
        ("shape", "root"),
        ("red object", "root + colour"),
        ("striped blue polygon", "family + colour + pattern"),
        ("dotted sign", "family + pattern"),
        ("triangle", "group"),
        ("red right triangle", "leaf + colour"),
        ("oval", "leaf"),  # a synonym resolves to its leaf
        ("teapot", None),  # not in the ontology: left out of every group
    ],
)
def test_phrase_kind_names_level_and_attributes(noun_phrase, kind):
    assert report.phrase_kind(shapes_graph(), noun_phrase) == kind


def test_phrase_kind_markdown_has_a_row_per_kind():
    counts = {"pairs": 10, "positive_pairs": 4, "il_tp": 3}
    table = report.phrase_kind_markdown(
        {"root": {"cgF1": 12.34, "IL_MCC": 0.5, "pmF1": 0.25, "counts": counts}}
    )
    assert table.splitlines()[-1] == "| root | 10 (4) | 12.3 | 0.50 | 0.25 | 3 of 4 |"


class _FixedDetector:
    """Returns the given detections for each NP: the report's input, so each error kind is known."""

    def __init__(self, answers):
        self.answers = answers

    def detect(self, image, noun_phrases, score_threshold=0.5):
        return [self.answers[n] for n in noun_phrases]


def test_error_kinds_names_each_false_positive_and_miss(tmp_path):
    import numpy as np
    import pyarrow as pa

    from conceptengine.engine import rle
    from conceptengine.model.sam3_backend import Detection
    from conceptengine.sim.world import build_world

    world = build_world(tmp_path / "w", 0, 6, seed=3, image_size=64)
    media_id = next(m for m in sorted(world.media_ids("gold")) if len(world.record(m)["instances"]) >= 2)
    first, second = (i["rle"] for i in world.record(media_id)["instances"][:2])
    empty = np.zeros((64, 64), bool)
    corner = empty.copy()
    corner[0:2, 0:2] = True  # no instance is that small: background
    uri = str(world.image_path(media_id))
    rows = [
        {"media_id": media_id, "uri": uri, "noun_phrase": "asked", "is_negative": False,
         "masks": [{"rle": first}]},
        {"media_id": media_id, "uri": uri, "noun_phrase": "unanswered", "is_negative": False,
         "masks": [{"rle": first}, {"rle": second}]},
        {"media_id": media_id, "uri": uri, "noun_phrase": "absent", "is_negative": True, "masks": []},
    ]  # fmt: skip
    detector = _FixedDetector({
        "asked": Detection(1.0, masks=[first, second, first, rle.encode(corner)]),
        "unanswered": Detection(0.1),
        "absent": Detection(1.0, masks=[second]),
    })  # fmt: skip
    kinds = report.error_kinds(detector, world, pa.Table.from_pylist(rows))
    assert kinds["false_positives"] == {
        "wrong object": 1, "duplicate": 1, "background": 1, "negative pair: wrong object": 1,
    }  # fmt: skip
    assert kinds["missed"] == {"pair not answered": 2}


def test_text_separation_is_one_number_per_attribute_kind_and_for_leaves(tmp_path):
    from conceptengine.model.sam3_backend import Sam3Detector
    from conceptengine.model.tiny import build_tiny_sam3
    from conceptengine.pipelines.demo import ontology_vocabulary

    graph = shapes_graph()
    det = Sam3Detector.from_pretrained(build_tiny_sam3(str(tmp_path / "m"), ontology_vocabulary(graph), 112))
    sep = report.text_separation(det.model, det.inputs, graph)
    assert set(sep) == {*graph.attribute_kinds, "leaf"}
    # Even an untrained tower tells different words apart a little: below 1, the value of identical phrases.
    assert all(-1.0 <= v < 0.9999 for v in sep.values())
