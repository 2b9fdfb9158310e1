"""The grounded EV scorer: dense targets from the objects in view, and a verdict that needs the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptengine.verifiers.choices import EV
from conceptengine.verifiers.grounded.ev_model import (
    GroundedEVConfig,
    GroundedEVModel,
    candidate_cells,
    crop_objects,
)
from conceptengine.verifiers.grounded.ev_train import (
    SceneObject,
    accept_probs,
    box_channel,
    halves,
    loss_on,
    predicted_foreground,
    prepare,
    train,
    train_foreground,
    train_judge,
)
from conceptengine.verifiers.grounded.phrases import PhraseEmbedder
from conceptengine.verifiers.train_metrics import auroc

SLOTS = [["leaf", ["square"]], ["colour", ["red", "blue"]]]
SIZE, SIDE = 32, 6


@pytest.fixture(scope="module")
def embedder() -> PhraseEmbedder:
    return PhraseEmbedder()


def _scenes(n_images: int, seed: int) -> tuple[list[dict], dict[str, np.ndarray], list[list[SceneObject]]]:
    """Images of 1-3 red or blue squares; per image two EV items ("red square", "blue square"), each
    showing a random subset of that colour's squares boxed: Accept iff none of them is left unboxed."""
    rng = np.random.default_rng(seed)
    rows, images, objects = [], {}, []
    names = ["red", "blue"]
    for k in range(n_images):
        uri = f"mem://{seed}-{k}"
        image = np.full((SIZE, SIZE, 3), 30, dtype=np.uint8)
        placed = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = (int(v) for v in rng.integers(0, SIZE - SIDE, 2))
            colour = int(rng.integers(0, 2))
            image[y : y + SIDE, x : x + SIDE] = (220, 20, 20) if colour == 0 else (20, 20, 220)
            placed.append((x, y, colour))
        images[uri] = image
        for asked in (0, 1):
            shown, objs = [], []
            for x, y, colour in placed:
                boxed = colour == asked and rng.random() < 0.6
                if boxed:
                    shown.append({"box_xyxy": [x, y, x + SIDE, y + SIDE]})
                box = (x / SIZE, y / SIZE, (x + SIDE) / SIZE, (y + SIDE) / SIZE)
                objs.append(SceneObject(box, {"leaf": "square", "colour": names[colour]}, boxed))
            missed = any(c == asked and not o.boxed for (_, _, c), o in zip(placed, objs, strict=True))
            rows.append({"uri": uri, "height": SIZE, "width": SIZE, "noun_phrase": f"{names[asked]} square",
                         "masks": shown, "choice": "Reject" if missed else "Accept"})  # fmt: skip
            objects.append(objs)
    return rows, images, objects


def _trainable_config(**options: bool) -> GroundedEVConfig:
    """A scorer small enough to learn the toy squares in a few hundred steps."""
    return GroundedEVConfig(
        slots=SLOTS,
        detector_channels=[8, 16],
        context_layers=1,
        judge_channels=[8, 16],
        candidates=4,
        crop_size=16,
        image_size=SIZE,
        **options,
    )


def _data(n_images: int, seed: int, config: GroundedEVConfig):
    rows, images, objects = _scenes(n_images, seed)
    return prepare(rows, images.__getitem__, SLOTS, objects, config.image_size, config.grid)


def test_boxes_fill_their_channel() -> None:
    channel = box_channel(np.array([[0.25, 0.5, 0.5, 1.0]]), 8)
    assert channel.sum() == 2 * 4 and channel[4:, 2:4].all()


def test_prepare_marks_unboxed_centres_and_slot_values_on_the_grid() -> None:
    config = GroundedEVConfig(
        slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], crop_size=16, image_size=SIZE
    )
    rows, images, objects = _scenes(3, 0)
    data = prepare(rows, images.__getitem__, SLOTS, objects, config.image_size, config.grid)
    assert data.images.shape == (3, 3, SIZE, SIZE) and data.media.tolist() == [0, 0, 1, 1, 2, 2]
    for n, objs in enumerate(objects):
        assert int(data.missed[n].sum()) <= sum(not o.boxed for o in objs)
        assert int(data.missed[n].sum()) >= 1 if any(not o.boxed for o in objs) else data.missed[n].sum() == 0
    assert [len(o) for o in data.objects] == [len(objects[2 * k]) for k in range(3)]
    assert data.object_slots[0].shape == (len(objects[0]), 2) and (data.object_slots[0][:, 0] == 0).all()
    assert set(torch.cat(data.object_slots)[:, 1].tolist()) <= {0, 1}  # the colours, none unknown here
    assert data.choices.tolist() == [EV.index(r["choice"]) for r in rows]


def test_candidates_are_peaks_so_one_object_takes_one_place() -> None:
    missed = torch.full((1, 6, 6), -5.0)
    missed[0, 1, 1], missed[0, 1, 2] = 3.0, 2.5  # one object, seen from two neighbouring cells
    missed[0, 4, 4] = 1.0  # another, fainter
    assert sorted(candidate_cells(missed, 2)[0].tolist()) == [1 * 6 + 1, 4 * 6 + 4]


def test_crops_frame_their_object_whatever_the_order_of_their_images() -> None:
    """Each crop is centred and scaled on its own image's object, whichever images the crops interleave."""
    images = torch.zeros((3, 3, 64, 64))
    centres = torch.tensor([[16.0, 16.0], [40.0, 24.0], [48.0, 48.0]])
    for b, (x, y) in enumerate(centres.int().tolist()):
        images[b, b, y - 4 : y + 4, x - 4 : x + 4] = 1.0  # an 8 px square in channel b
    which = torch.tensor([2, 0, 1, 0, 2])
    sides = torch.full((5,), 10.0, requires_grad=True)  # 13 px crops: above MIN_SIDE
    crops = crop_objects(images, which, centres[which], sides, 16)
    for i, b in enumerate(which.tolist()):
        assert crops[i, b, 8, 8] == 1.0  # the object fills the crop's centre ...
        assert crops[i, b, 0, 0] == 0.0  # ... with a margin around it (CROP_SCALE)
        assert crops[i, [c for c in range(3) if c != b]].abs().sum() == 0  # and no other image's object
        alone = crop_objects(images, which[i : i + 1], centres[which[i : i + 1]], sides[i : i + 1], 16)
        assert torch.equal(crops[i], alone[0])
    crops.sum().backward()  # differentiable in the sides, as the judge's training needs
    assert sides.grad is not None and sides.grad.abs().sum() > 0


def test_a_saved_scorer_answers_ev_choices(tmp_path) -> None:
    config = GroundedEVConfig(
        slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], crop_size=16, image_size=SIZE
    )
    model = GroundedEVModel(config).eval()
    pixels, embeds = torch.rand(2, 4, SIZE, SIZE), torch.randn(2, 384)
    probs = model.choice_probs(pixels, embeds)
    assert probs.shape == (2, len(EV.names)) and torch.allclose(probs.sum(-1), torch.ones(2))
    model.save_pretrained(tmp_path)
    assert torch.allclose(
        GroundedEVModel.from_pretrained(tmp_path).eval().choice_probs(pixels, embeds), probs
    )


def test_training_finds_the_unboxed_instance_of_the_phrase(embedder) -> None:
    torch.manual_seed(0)
    config = _trainable_config()
    model = GroundedEVModel(config)
    data, test = _data(400, 0, config), _data(100, 1, config)
    accepted = (test.choices == 0).numpy()
    before = auroc(accept_probs(model, test, embedder), accepted)
    train(model, data, embedder, steps=300, batch_size=32, lr=5e-3)
    p = accept_probs(model, test, embedder)
    after = auroc(p, accepted)
    assert before is not None and after is not None and after > 0.9 and after > before + 0.2
    recoloured = test.images[:, [2, 1, 0]]  # every red square blue and every blue one red, boxes kept
    assert np.abs(p - accept_probs(model, test, embedder, images=recoloured)).mean() > 0.2
    both = halves(model, test)  # each half on its own: unboxed squares found, their colours told apart
    assert both["candidate_recall"] > 0.9 and both["judge_accuracy"]["colour"] > 0.9


def test_verdicts_without_known_objects_train_no_missed_cells() -> None:
    config = GroundedEVConfig(
        slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], crop_size=16, image_size=SIZE
    )
    rows, images, _ = _scenes(4, 2)
    data = prepare(rows, images.__getitem__, SLOTS, [None] * len(rows), config.image_size, config.grid)
    assert not data.dense.any() and data.missed.sum() == 0
    model, idx, embeds = GroundedEVModel(config), torch.arange(len(rows)), torch.randn(len(rows), 384)
    torch.manual_seed(0)
    plain = loss_on(model, data, idx, embeds)
    data.missed.fill_(1.0)  # whatever the cells say, they are no target without known objects
    torch.manual_seed(0)
    assert torch.allclose(loss_on(model, data, idx, embeds), plain)


def test_the_judge_learns_its_slots_alone_and_the_detector_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    config = GroundedEVConfig(
        slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], crop_size=16, image_size=SIZE
    )
    model = GroundedEVModel(config)
    data, test = _data(100, 0, config), _data(40, 1, config)
    detector = {k: v.clone() for k, v in model.detector.state_dict().items()}
    before = halves(model, test)["judge_accuracy"]["colour"]
    trained = train_judge(model, data, steps=60, batch_size=32, lr=5e-3)
    assert trained["steps"] == 60
    assert halves(model, test)["judge_accuracy"]["colour"] > max(0.95, before)
    assert all(torch.equal(v, model.detector.state_dict()[k]) for k, v in detector.items())


def test_the_phrase_side_learns_what_the_ontology_says_each_phrase_accepts(embedder) -> None:
    """Needs targets make what "red square" accepts crisp; otherwise only the verdicts, a product over the
    candidates and slots, say it."""
    told = {"red square": np.array([1, 1, 0], np.float32), "blue square": np.array([1, 0, 1], np.float32)}
    errors = []
    for needs in (told.get, None):
        torch.manual_seed(0)
        config = GroundedEVConfig(
            slots=SLOTS, detector_channels=[8, 16], judge_channels=[8, 16], crop_size=16, image_size=SIZE
        )
        rows, images, objects = _scenes(40, 0)
        data = prepare(rows, images.__getitem__, SLOTS, objects, config.image_size, config.grid, needs)
        assert (data.needs is None) == (needs is None)
        model = GroundedEVModel(config)
        train(model, data, embedder, steps=100, batch_size=16, lr=1e-2)
        with torch.no_grad():
            learned = torch.sigmoid(model.needs(embedder(list(told))))
        errors.append(float((learned - torch.from_numpy(np.stack(list(told.values())))).abs().mean()))
    assert errors[0] < 0.15 and errors[0] < errors[1] - 0.05


def _with_foreground(n_images: int, seed: int, config: GroundedEVConfig):
    rows, images, objects = _scenes(n_images, seed)

    def on_object(row: dict) -> np.ndarray:  # the squares: every pixel not the background's grey
        return (images[row["uri"]] != 30).any(-1)

    return prepare(rows, images.__getitem__, SLOTS, objects, config.image_size, config.grid, None, on_object)


def test_a_silhouette_scorer_learns_the_foreground_its_judge_reads(embedder, tmp_path) -> None:
    torch.manual_seed(0)
    config = _trainable_config(silhouette=True)
    model = GroundedEVModel(config)
    data, test = _with_foreground(200, 0, config), _with_foreground(60, 1, config)
    assert data.foreground.shape == (200, SIZE, SIZE) and set(data.foreground.unique().tolist()) == {0, 1}
    before = halves(model, test)["foreground_iou"]
    trained = train_foreground(model, data, steps=100, batch_size=32, lr=5e-3)
    assert trained["steps"] == 100 and halves(model, test)["foreground_iou"] > max(0.8, before + 0.3)
    fg = predicted_foreground(model, data)  # what the judge learns on: what it will read when scoring
    assert fg.shape == (200, SIZE, SIZE) and 0 <= float(fg.min()) and float(fg.max()) <= 1
    truth = data.foreground.bool()
    assert ((fg > 0.5) & truth).sum() / ((fg > 0.5) | truth).sum() > 0.8
    train_judge(model, data, steps=60, batch_size=32, lr=5e-3, foreground=fg)
    assert halves(model, test)["judge_accuracy"]["colour"] > 0.9
    train(model, data, embedder, steps=100, batch_size=32, lr=5e-3)  # the whole scorer, foreground included
    both = halves(model, test)
    assert both["foreground_iou"] > 0.8 and both["judge_accuracy"]["colour"] > 0.9
    pixels, embeds = torch.rand(2, 4, SIZE, SIZE), torch.randn(2, 384)
    out = model.eval()(pixels, embeds)
    assert out.foreground_logits.shape == (2, SIZE // 2, SIZE // 2)
    model.save_pretrained(tmp_path)
    again = GroundedEVModel.from_pretrained(tmp_path).eval()
    assert again.config.silhouette
    assert torch.allclose(again.choice_probs(pixels, embeds), model.choice_probs(pixels, embeds))


def test_a_silhouette_scorer_without_object_masks_says_what_is_missing() -> None:
    config = _trainable_config(silhouette=True)
    data = _data(4, 0, config)  # objects known, their masks not
    with pytest.raises(ValueError, match="pass `foreground` to ev_train.prepare"):
        train_judge(GroundedEVModel(config), data, steps=1, batch_size=4)


def test_centre_offsets_place_candidates_on_their_objects(embedder) -> None:
    torch.manual_seed(0)
    config = _trainable_config(centre_offsets=True)
    assert config.centre_jitter < GroundedEVConfig().centre_jitter  # the judge trains on tighter crops
    model = GroundedEVModel(config)
    data, test = _data(400, 0, config), _data(100, 1, config)
    before = halves(model, test)["centre_error_px"]
    train(model, data, embedder, steps=300, batch_size=32, lr=5e-3)
    after = halves(model, test)
    # a centre anywhere in its 4 px cell is ~1.5 px off on average; the offsets take it well below that
    assert after["centre_error_px"] < min(1.0, before - 0.3) and after["candidate_recall"] > 0.9
    assert model.eval()(torch.rand(2, 4, SIZE, SIZE), torch.randn(2, 384)).offset_logits.shape == (
        2, 2, config.grid, config.grid,
    )  # fmt: skip
