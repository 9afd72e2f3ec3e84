from __future__ import annotations

import pytest
import torch

from gazerm.model.fusion import fuse, position_ids_from_mask
from gazerm.model.projector import GazeProjector

# B = 2, T = 3, H = 2; row 1 is right-padded. Gaze exists on tokens 1-2 of row 0 and token 1 of row 1.
EMBEDS = torch.arange(12.0).reshape(2, 3, 2)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
GAZE_MASK = torch.tensor([[False, True, True], [False, True, False]])
GAZE = torch.zeros(2, 3, 5)
GAZE[..., 0] = torch.tensor([[7.0, 1.0, 2.0], [8.0, 3.0, 9.0]])


def doubling_projector(bias: float = 0.0) -> GazeProjector:
    """Feature 0 → (g, 2g) for g ≥ 0 (plus ``bias``), so fused embeddings can be written down."""
    projector = GazeProjector([1, 0, 0, 0, 0], hidden=1, out_dim=2, dropouts=(0.0, 0.0))
    with torch.no_grad():
        projector.net[0].weight.fill_(1.0)
        projector.net[0].bias.zero_()
        projector.net[3].weight.copy_(torch.tensor([[1.0], [2.0]]))
        projector.net[3].bias.fill_(bias)
    return projector


def test_position_ids_count_attended_slots_only():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_none_is_text_only():
    fused = fuse("none", None, EMBEDS, MASK)
    assert torch.equal(fused.inputs_embeds, EMBEDS)
    assert fused.attention_mask.tolist() == MASK.tolist()
    assert fused.position_ids.tolist() == [[0, 1, 2], [0, 1, 1]]
    assert fused.text_offset == 0


def test_add_adds_projected_gaze_where_there_is_gaze():
    fused = fuse("add", doubling_projector(), EMBEDS, MASK, GAZE, GAZE_MASK)
    expected = EMBEDS.clone()
    expected[0, 1] += torch.tensor([1.0, 2.0])
    expected[0, 2] += torch.tensor([2.0, 4.0])
    expected[1, 1] += torch.tensor([3.0, 6.0])
    assert torch.equal(fused.inputs_embeds, expected)
    assert fused.position_ids.tolist() == [[0, 1, 2], [0, 1, 1]]
    assert fused.text_offset == 0


def test_add_with_zero_gaze_and_zero_biases_equals_none():
    fused = fuse("add", doubling_projector(), EMBEDS, MASK, torch.zeros(2, 3, 5), MASK.bool())
    assert torch.equal(fused.inputs_embeds, fuse("none", None, EMBEDS, MASK).inputs_embeds)


def test_concat_prepends_the_gaze_sequence():
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, GAZE_MASK, compact=False)
    gaze_part = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [3.0, 6.0], [0.0, 0.0]]])
    assert torch.equal(fused.inputs_embeds, torch.cat([gaze_part, EMBEDS], dim=1))
    assert fused.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]]
    assert fused.position_ids.tolist() == [[0, 0, 1, 2, 3, 4], [0, 0, 0, 1, 2, 2]]
    assert fused.text_offset == 3


def test_compact_concat_packs_gaze_slots_and_keeps_text_positions():
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, GAZE_MASK)
    gaze_part = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[3.0, 6.0], [0.0, 0.0]]])
    assert torch.equal(fused.inputs_embeds, torch.cat([gaze_part, EMBEDS], dim=1))
    assert fused.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]]
    assert fused.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 2]]
    assert fused.text_offset == 2


def test_concat_without_any_gaze_is_text_only():
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, torch.zeros(2, 3, dtype=torch.bool))
    assert fused.text_offset == 0
    assert torch.equal(fused.inputs_embeds, EMBEDS)


def test_gaze_mask_defaults_to_the_attention_mask():
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE)
    assert fused.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0]]


def test_gaze_fusion_without_gaze_is_an_error():
    with pytest.raises(ValueError, match="needs a projector and gaze"):
        fuse("add", doubling_projector(), EMBEDS, MASK)


SEPARATORS = torch.tensor([[100.0, 101.0], [200.0, 201.0]])  # <eye/>, </eye>
REFERENCE = {"layout": "reference", "separators": SEPARATORS}


def test_reference_concat_wraps_the_gaze_slots_in_separators_before_the_text():
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, GAZE_MASK, **REFERENCE)
    eye, end = SEPARATORS[0].expand(2, 1, 2), SEPARATORS[1].expand(2, 1, 2)
    gaze_part = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[3.0, 6.0], [0.0, 0.0]]])  # in text order
    assert torch.equal(fused.inputs_embeds, torch.cat([eye, gaze_part, end, EMBEDS], dim=1))
    assert fused.text_offset == 4
    assert torch.equal(fused.inputs_embeds[:, 0], SEPARATORS[0].expand(2, 2))  # <eye/> first
    assert torch.equal(fused.inputs_embeds[:, fused.text_offset - 1], SEPARATORS[1].expand(2, 2))
    assert fused.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1, 0]]
    assert fused.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6], [0, 1, 1, 2, 3, 4, 4]]


def test_reference_concat_keeps_its_separators_in_rows_without_gaze():
    no_gaze = torch.zeros(2, 3, dtype=torch.bool)
    fused = fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, no_gaze, **REFERENCE)
    assert fused.text_offset == 2
    assert torch.equal(fused.inputs_embeds, torch.cat([SEPARATORS.expand(2, 2, 2), EMBEDS], dim=1))
    assert fused.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    with pytest.raises(ValueError, match="separators"):
        fuse("concat", doubling_projector(), EMBEDS, MASK, GAZE, GAZE_MASK, layout="reference")


def test_reference_add_offsets_every_token_by_its_projected_gaze_or_that_of_zeros():
    torch.manual_seed(0)
    projector = GazeProjector([1, 1, 0, 1, 1], hidden=4, out_dim=2, dropouts=(0.0, 0.0), layer_norms=True)
    with torch.no_grad():
        projector.norm.weight.copy_(torch.tensor([2.0, 3.0]))
        projector.norm.bias.copy_(torch.tensor([0.5, -0.5]))
    gaze = torch.rand(2, 3, 5) + 1  # also where there is no gaze: the mask decides
    fused = fuse("add", projector, EMBEDS, MASK, gaze, GAZE_MASK, layout="reference")

    def ln_proj(features: torch.Tensor) -> torch.Tensor:
        hidden = projector.net(features[[0, 1, 3, 4]])
        return torch.nn.functional.layer_norm(hidden, (2,), projector.norm.weight, projector.norm.bias)

    for b in range(2):
        for t in range(3):
            has_gaze = bool(GAZE_MASK[b, t] and MASK[b, t])
            offset = ln_proj(gaze[b, t] if has_gaze else torch.zeros(5))
            torch.testing.assert_close(fused.inputs_embeds[b, t], EMBEDS[b, t] + offset)
    without = fused.inputs_embeds[0, 0] - EMBEDS[0, 0]
    assert without.abs().sum() > 0  # projector(0) is learned, not nothing
    assert fused.attention_mask.tolist() == MASK.tolist() and fused.text_offset == 0


@pytest.mark.parametrize("mode", ["none", "add", "concat"])
def test_padded_positions_count_every_slot_as_without_position_ids(mode):
    projector = None if mode == "none" else doubling_projector()
    fused = fuse(mode, projector, EMBEDS, MASK, GAZE, GAZE_MASK, **REFERENCE, positions="padded")
    length = fused.attention_mask.shape[1]
    assert fused.position_ids.tolist() == [list(range(length))] * 2
    attended = fuse(mode, projector, EMBEDS, MASK, GAZE, GAZE_MASK, **REFERENCE)
    assert torch.equal(fused.inputs_embeds, attended.inputs_embeds)
