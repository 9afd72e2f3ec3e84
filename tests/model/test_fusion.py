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
