"""SAM 3 detector losses: each test fails on a wrong matching, a wrong sign or a wrong target."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy

from conceptengine.model.losses import (
    DetectorOutputs,
    LossWeights,
    PairTargets,
    Sam3Criterion,
    detector_outputs,
    dice_loss,
    sigmoid_focal_loss,
)
from conceptengine.model.matcher import (
    HungarianMatcher,
    MatcherWeights,
    OneToManyMatcher,
    OneToManyWeights,
    generalized_box_iou,
)

Q, H = 6, 16
# Three well-separated instances (cxcywh) and their masks.
BOXES = torch.tensor([[0.25, 0.25, 0.3, 0.3], [0.75, 0.3, 0.2, 0.4], [0.5, 0.8, 0.6, 0.2]])


def box_mask(box: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = (box_cxcywh_to_xyxy(box) * H).round().long().tolist()
    m = torch.zeros(H, H)
    m[y0:y1, x0:x1] = 1
    return m


MASKS = torch.stack([box_mask(b) for b in BOXES])


class FixedMatcher(HungarianMatcher):
    """A deliberately chosen assignment, to compare the loss of the Hungarian one against it."""

    def __init__(self, assignment: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.assignment = assignment

    def __call__(self, *args, **kwargs):
        return self.assignment


def perfect_outputs(
    query_of_target: list[int], layers: int = 2, negative_pair: bool = True
) -> DetectorOutputs:
    """Pair 0: the targets above predicted exactly by queries `query_of_target`; pair 1: a negative pair
    predicted absent. Unused queries predict 'no object' with junk boxes."""
    n = 2 if negative_pair else 1
    logits = torch.full((layers, n, Q), -12.0)
    boxes = torch.tensor([0.0, 0.0, 0.05, 0.05]).repeat(layers, n, Q, 1)
    masks = torch.full((n, Q, H, H), -12.0)
    for t, q in enumerate(query_of_target):
        logits[:, 0, q] = 12.0
        boxes[:, 0, q] = box_cxcywh_to_xyxy(BOXES[t])
        masks[0, q] = MASKS[t] * 24 - 12
    presence = torch.full((layers, n), -10.0)
    presence[:, 0] = 10.0
    semantic = torch.full((n, 1, H, H), -12.0)
    semantic[0, 0] = MASKS.amax(0) * 24 - 12
    return DetectorOutputs(logits, boxes, presence, masks, semantic)


def targets(order: list[int] | None = None, negative_pair: bool = True) -> PairTargets:
    order = order or [0, 1, 2]
    boxes, masks = [BOXES[order]], [MASKS[order]]
    if negative_pair:
        boxes.append(torch.zeros(0, 4))
        masks.append(torch.zeros(0, H, H))
    return PairTargets(boxes, masks)


def test_perfect_predictions_give_near_zero_loss_for_every_term():
    terms = Sam3Criterion()(perfect_outputs([4, 0, 2]), targets())
    for name, value in terms.items():
        assert float(value) < 0.05, (name, float(value))
    assert "cls_aux0" in terms and "bbox_aux0" in terms and "presence_aux0" in terms


def test_permuting_targets_gives_the_same_loss():
    out = perfect_outputs([4, 0, 2])
    base = Sam3Criterion()(out, targets())["loss"]
    noisy = DetectorOutputs(
        out.logits * 0.3, out.boxes + 0.02, out.presence * 0.2, out.masks * 0.1, out.semantic
    )
    base_noisy = Sam3Criterion()(noisy, targets())["loss"]
    for perm in itertools.permutations(range(3)):
        assert torch.allclose(Sam3Criterion()(out, targets(list(perm)))["loss"], base, atol=1e-5)
        assert torch.allclose(Sam3Criterion()(noisy, targets(list(perm)))["loss"], base_noisy, atol=1e-5)


def test_hungarian_assignment_beats_a_swapped_one():
    out = perfect_outputs([4, 0, 2])
    tgt = targets()
    good = Sam3Criterion()(out, tgt)
    # Swap which queries predict targets 0 and 1.
    swapped = [(torch.tensor([0, 4, 2]), torch.tensor([0, 1, 2])), (torch.zeros(0, dtype=torch.long),) * 2]
    bad = Sam3Criterion(matcher=FixedMatcher(swapped))(out, tgt)
    for name in ("bbox", "giou", "mask_dice", "mask_focal", "loss"):
        assert float(bad[name]) > float(good[name]) + 0.1, name


def test_matcher_recovers_the_query_of_each_target_and_is_optimal():
    out = perfect_outputs([4, 0, 2], negative_pair=False)
    noisy_boxes = out.boxes[-1] + 0.01 * torch.randn(
        out.boxes[-1].shape, generator=torch.Generator().manual_seed(0)
    )
    matcher = HungarianMatcher()
    ((q, t),) = matcher(out.logits[-1] * 0.1, noisy_boxes, [BOXES])
    assert t.tolist() == [0, 1, 2] and q.tolist() == [4, 0, 2]
    cost = matcher.cost_matrix(out.logits[-1, 0] * 0.1, noisy_boxes[0], BOXES)
    best = float(cost[q, t].sum())
    for perm in itertools.permutations(range(Q), 3):
        assert best <= float(cost[list(perm), [0, 1, 2]].sum()) + 1e-6
    # With more targets than queries the surplus stays unmatched instead of failing.
    few = HungarianMatcher()(out.logits[-1, :, :2], noisy_boxes[:, :2], [BOXES])
    assert len(few[0][0]) == 2


@pytest.mark.parametrize(
    "weights",
    [
        MatcherWeights(cost_class=0, cost_bbox=1, cost_giou=0),
        MatcherWeights(cost_class=0, cost_bbox=0, cost_giou=1),
    ],
    ids=["l1-only", "giou-only"],
)
def test_each_box_cost_alone_recovers_the_right_queries(weights):
    out = perfect_outputs([4, 0, 2], negative_pair=False)
    ((q, _),) = HungarianMatcher(weights)(torch.zeros(1, Q), out.boxes[-1], [BOXES])
    assert q.tolist() == [4, 0, 2]


def test_class_cost_alone_prefers_confident_queries():
    logits = torch.tensor([[-5.0, 4.0, -5.0, 5.0, -5.0, -5.0]])
    boxes = torch.rand(1, Q, 4, generator=torch.Generator().manual_seed(1))
    ((q, _),) = HungarianMatcher(MatcherWeights(cost_class=1, cost_bbox=0, cost_giou=0))(
        logits, boxes, [BOXES[:2]]
    )
    assert sorted(q.tolist()) == [1, 3]


def test_mask_cost_changes_the_assignment_when_boxes_are_ambiguous():
    # Two queries with the same box; only their masks tell which target (same box, different shapes) each is.
    box = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    full = torch.zeros(H, H)
    full[4:12, 4:12] = 1
    ring = full.clone()
    ring[6:10, 6:10] = 0
    tgt_masks = torch.stack([ring, full])
    logits = torch.zeros(1, 2)
    boxes = box_cxcywh_to_xyxy(box).repeat(1, 2, 1)
    pred_masks = torch.stack([full, ring])[None] * 20 - 10
    ((q, _),) = HungarianMatcher(MatcherWeights(cost_mask=5.0))(
        logits, boxes, [box.repeat(2, 1)], pred_masks, [tgt_masks]
    )
    assert q.tolist() == [1, 0]


def test_presence_logit_of_the_wrong_sign_costs_more():
    out = perfect_outputs([4, 0, 2])
    right = Sam3Criterion()(out, targets())
    flipped = DetectorOutputs(out.logits, out.boxes, -out.presence, out.masks, out.semantic)
    wrong = Sam3Criterion()(flipped, targets())
    assert float(wrong["presence"]) > 5.0 > float(right["presence"])
    assert float(wrong["presence_aux0"]) > 5.0


def test_gradient_directions():
    out = perfect_outputs([4, 0, 2])
    logits = torch.zeros_like(out.logits, requires_grad=True)
    presence = torch.zeros_like(out.presence, requires_grad=True)
    boxes = out.boxes.clone()
    boxes[:, 0, 4, 0] -= 0.05  # query 4's left edge sits left of its target's
    boxes.requires_grad_(True)
    semantic = torch.zeros_like(out.semantic, requires_grad=True)
    terms = Sam3Criterion()(DetectorOutputs(logits, boxes, presence, out.masks, semantic), targets())
    terms["loss"].backward()
    g = logits.grad[-1]
    assert (g[0, [4, 0, 2]] < 0).all(), "matched queries must be pushed up"
    assert (g[0, [1, 3, 5]] > 0).all(), "unmatched queries of a positive pair pushed down"
    assert (g[1] == 0).all(), "a negative pair's queries are left to the presence head (SAM 3's decoupling)"
    assert presence.grad[-1, 0] < 0 < presence.grad[-1, 1], (
        "presence up on the positive, down on the negative"
    )
    assert boxes.grad[-1, 0, 4, 0] < 0, "the left edge must move right, toward the target"
    union = MASKS.amax(0).bool()
    assert (semantic.grad[0, 0][union] < 0).all() and (semantic.grad[0, 0][~union] > 0).all()
    assert (semantic.grad[1] > 0).all(), "a negative pair's semantic map is pushed to background"


def test_focal_and_dice_reference_values():
    x = torch.tensor([-2.0, 0.0, 3.0])
    y = torch.tensor([0.0, 1.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(x, y, alpha=-1, gamma=0), bce)
    p = torch.sigmoid(x)
    p_t = torch.where(y == 1, p, 1 - p)
    expect = torch.where(y == 1, 0.25, 0.75) * (1 - p_t) ** 2 * bce
    assert torch.allclose(sigmoid_focal_loss(x, y), expect)
    m = MASKS[:1]
    assert float(dice_loss(m * 40 - 20, m)) < 1e-3
    assert float(dice_loss(-(m * 40 - 20), m)) > 0.95


def test_giou_reference_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.5, 1.0], [2.0, 0.0, 3.0, 1.0]])
    g = generalized_box_iou(a, b)[0]
    assert torch.allclose(g, torch.tensor([1.0, 1 / 3, -1 / 3]), atol=1e-5)


def test_class_loss_is_normalised_by_instances_and_all_negative_batches_work():
    out = perfect_outputs([4, 0, 2])
    neg_only = DetectorOutputs(
        out.logits[:, 1:], out.boxes[:, 1:], out.presence[:, 1:], out.masks[1:], out.semantic[1:]
    )
    terms = Sam3Criterion()(neg_only, PairTargets([torch.zeros(0, 4)], [torch.zeros(0, H, H)]))
    assert float(terms["bbox"]) == 0.0 and float(terms["mask_dice"]) == 0.0
    assert float(terms["loss"]) < 0.05
    no_aux = Sam3Criterion(LossWeights(aux=False))(out, targets())
    assert not any("_aux" in k for k in no_aux)


def test_negative_pair_cls_off_leaves_negative_pairs_to_the_presence_head():
    """SAM 3's decoupling, the default: a query that fires on a negative pair costs nothing in the class
    term (presence still pays for it); on a positive pair it still does. negative_pair_cls=True restores
    the coupled loss."""
    out = perfect_outputs([4, 0, 2])
    fired = out.logits.clone()
    fired[:, 1, 3] = 12.0  # a confident query on the negative pair
    on_negative = DetectorOutputs(fired, out.boxes, out.presence, out.masks, out.semantic)
    coupled, decoupled = Sam3Criterion(LossWeights(negative_pair_cls=True)), Sam3Criterion()
    assert float(coupled(on_negative, targets())["cls"]) > 1.0
    assert float(decoupled(on_negative, targets())["cls"]) < 0.05
    fired_pos = out.logits.clone()
    fired_pos[:, 0, 3] = 12.0  # an extra confident query on the positive pair
    on_positive = DetectorOutputs(fired_pos, out.boxes, out.presence, out.masks, out.semantic)
    assert float(decoupled(on_positive, targets())["cls"]) > 1.0
    wrong_presence = DetectorOutputs(out.logits, out.boxes, -out.presence, out.masks, out.semantic)
    assert float(decoupled(wrong_presence, targets())["presence"]) > 1.0


def test_iou_aware_class_targets_follow_the_matched_boxes_iou():
    """SAM 3's IABCE: a matched query's target is prob^a * IoU^(1 - a). A query whose box is exact is pulled
    toward 1; one whose box half-overlaps its instance is pulled toward its lower target, so a fully
    confident query with a poor box costs more than the same query with an exact box, and with gamma 0 and
    an exact box the term equals class-balanced BCE against 1."""
    weights = LossWeights(iou_aware_cls=True, focal_alpha=0.75, focal_gamma=0.0)
    criterion = Sam3Criterion(weights)
    out = perfect_outputs([4, 0, 2])
    exact = criterion(out, targets())["cls"]
    plain = Sam3Criterion(LossWeights(focal_alpha=0.75, focal_gamma=0.0))(out, targets())["cls"]
    assert float(exact) == pytest.approx(float(plain), abs=1e-4)
    shifted = out.boxes.clone()
    shifted[:, 0, 4, 0::2] += 0.15  # query 4's box slides by half its width: IoU 1/3
    poor = DetectorOutputs(out.logits, shifted, out.presence, out.masks, out.semantic)
    assert float(criterion(poor, targets())["cls"]) > float(exact) + 1.0
    # The gradient on that query's logit pushes its score down toward prob^a * IoU^(1 - a) < 1.
    logits = out.logits.clone().requires_grad_(True)
    logits_out = DetectorOutputs(logits, shifted, out.presence, out.masks, out.semantic)
    criterion(logits_out, targets())["cls"].backward()
    assert float(logits.grad[-1, 0, 4]) > 0 and abs(float(logits.grad[-1, 0, 0])) < 1e-4


def test_detector_outputs_match_the_models_own_last_layer(tiny_sam3):
    from transformers import Sam3Model

    from conceptengine.model.processing import load_sam3_inputs

    model = Sam3Model.from_pretrained(tiny_sam3).eval()
    tok = load_sam3_inputs(tiny_sam3).tokens(["red square", "polygon"])
    pixels = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine = detector_outputs(model, tok["input_ids"], tok["attention_mask"], pixel_values=pixels)
        ref = model(pixel_values=pixels, **tok)
    layers = model.config.detr_decoder_config.num_layers
    assert mine.logits.shape == (layers, 2, model.config.detr_decoder_config.num_queries)
    assert torch.allclose(mine.logits[-1], ref.pred_logits)
    assert torch.allclose(mine.boxes[-1], ref.pred_boxes, atol=1e-6)
    assert torch.allclose(mine.presence[-1], ref.presence_logits.squeeze(-1))
    assert torch.equal(mine.masks, ref.pred_masks)
    assert not torch.allclose(mine.boxes[0], mine.boxes[-1]), "earlier layers must be their own predictions"


def test_target_mask_size_mismatch_is_a_clear_error():
    out = perfect_outputs([4, 0, 2])
    bad = PairTargets([BOXES, torch.zeros(0, 4)], [torch.ones(3, H * 2, H * 2), torch.zeros(0, H * 2, H * 2)])
    with pytest.raises(ValueError, match="mask resolution"):
        Sam3Criterion(LossWeights(semantic_bce=0, semantic_dice=0))(
            DetectorOutputs(out.logits, out.boxes, out.presence, out.masks, None), bad
        )


def test_one_to_many_matcher_gives_each_target_its_best_queries_above_threshold():
    # Queries 0-2 sit on target 0 (1 exactly but unsure, 2 roughly but sure), 3 and 5 on target 1 (5 unsure),
    # 4 on neither.
    tgt = BOXES[:2]
    boxes = box_cxcywh_to_xyxy(torch.stack([tgt[0], tgt[0], tgt[0] + 0.03, tgt[1], BOXES[2], tgt[1]]))
    logits = torch.tensor([3.0, -2.0, 3.0, 3.0, 5.0, -3.0])
    rows, cols = OneToManyMatcher(OneToManyWeights(topk=2))(logits[None], boxes[None], [tgt])[0]
    pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert pairs == {(0, 0), (2, 0), (3, 1), (5, 1)}  # top 2 per target by 0.3 score + 0.7 IoU
    assert cols.tolist() == sorted(cols.tolist())
    strict = OneToManyMatcher(OneToManyWeights(topk=2, threshold=0.9))(logits[None], boxes[None], [tgt])[0]
    assert set(strict[0].tolist()) == {0, 3}  # only confident, exact queries pass a high threshold
    none = OneToManyMatcher()(logits[None], boxes[None], [torch.zeros(0, 4)])[0]
    assert none[0].numel() == 0 and none[1].numel() == 0


def test_one_to_many_terms_are_added_only_when_weighted_and_present():
    out = perfect_outputs([4, 0, 2])
    o2m = DetectorOutputs(
        out.logits, out.boxes, out.presence, out.masks, out.semantic, out.logits * 0.1, out.boxes + 0.05
    )
    plain = Sam3Criterion()(o2m, targets())
    assert not any(k.startswith("o2m_") for k in plain), "o2m weight 0: the branch is not trained"
    weighted = Sam3Criterion(LossWeights(o2m=2.0))(o2m, targets())
    assert {"o2m_cls", "o2m_bbox", "o2m_giou", "o2m_cls_aux0"} <= set(weighted)
    extra = sum(
        getattr(LossWeights, k.split("_")[1]) * float(v) for k, v in weighted.items() if k.startswith("o2m_")
    )
    assert float(weighted["loss"]) == pytest.approx(float(plain["loss"]) + 2.0 * extra, rel=1e-5)
    assert float(weighted["o2m_bbox"]) > 0.1  # the shifted boxes are penalised


def test_one_to_many_branch_reruns_the_decoder_without_self_attention(tiny_sam3):
    from transformers import Sam3Model

    from conceptengine.model.processing import load_sam3_inputs

    model = Sam3Model.from_pretrained(tiny_sam3).eval()
    tok = load_sam3_inputs(tiny_sam3).tokens(["red square", "polygon"])
    pixels = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    plain = detector_outputs(model, tok["input_ids"], tok["attention_mask"], pixel_values=pixels)
    both = detector_outputs(
        model, tok["input_ids"], tok["attention_mask"], pixel_values=pixels, one_to_many=True
    )
    assert plain.o2m_logits is None and both.o2m_logits.shape == both.logits.shape
    assert both.o2m_boxes.shape == both.boxes.shape
    assert torch.allclose(both.logits, plain.logits), "the one-to-one outputs are untouched"
    assert not torch.allclose(both.o2m_logits, both.logits), "no self-attention: other query states"
    assert all(type(layer.self_attn).__name__ == "Sam3Attention" for layer in model.detr_decoder.layers)
    both.o2m_logits.sum().backward()
    grads = [p.grad for p in model.detr_decoder.layers[0].text_cross_attn.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.detr_decoder.layers[0].self_attn.parameters())
