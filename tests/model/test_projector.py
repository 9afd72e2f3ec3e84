from __future__ import annotations

import pytest
import torch
from torch import nn

from gazerm.model.projector import GazeProjector


def test_maps_tokens_to_hidden_size():
    projector = GazeProjector([1, 1, 1, 1, 1], hidden=16, out_dim=8, dropouts=(0.1, 0.3))
    assert projector(torch.rand(2, 7, 5)).shape == (2, 7, 8)
    assert projector.net[0].in_features == 5


def test_only_used_columns_reach_the_output():
    projector = GazeProjector([0, 1, 0, 1, 0], hidden=16, out_dim=8, dropouts=(0.0, 0.0))
    assert projector.net[0].in_features == 2
    gaze = torch.rand(2, 3, 5)
    changed = gaze.clone()
    changed[..., [0, 2, 4]] = torch.rand(2, 3, 3) + 5
    assert torch.equal(projector(gaze), projector(changed))
    changed[..., 1] += 1
    assert not torch.allclose(projector(gaze), projector(changed))


def test_hand_computed_output_and_no_persisted_column_buffer():
    projector = GazeProjector([0, 0, 1, 0, 0], hidden=1, out_dim=2, dropouts=(0.0, 0.0))
    with torch.no_grad():
        projector.net[0].weight.fill_(2.0)
        projector.net[0].bias.fill_(-1.0)
        projector.net[3].weight.copy_(torch.tensor([[1.0], [-3.0]]))
        projector.net[3].bias.zero_()
    gaze = torch.zeros(1, 2, 5)
    gaze[0, :, 2] = torch.tensor([1.5, 0.25])  # relu(2x - 1) = 2, 0
    assert torch.equal(projector(gaze), torch.tensor([[[2.0, -6.0], [0.0, 0.0]]]))
    assert set(projector.state_dict()) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}


def test_dropout_is_active_in_training_only():
    projector = GazeProjector([1, 1, 1, 1, 1], hidden=64, out_dim=64, dropouts=(0.5, 0.5))
    gaze = torch.rand(1, 4, 5)
    assert (projector.train()(gaze) == 0).float().mean() > 0.3
    assert torch.equal(projector.eval()(gaze), projector(gaze))


def test_needs_a_used_feature():
    with pytest.raises(ValueError, match="at least one"):
        GazeProjector([0, 0, 0, 0, 0], hidden=4, out_dim=4, dropouts=(0.0, 0.0))


def test_the_reference_projector_adds_the_papers_two_layer_norms():
    projector = GazeProjector([1, 1, 0, 1, 1], hidden=16, out_dim=8, dropouts=(0.1, 0.3), layer_norms=True)
    kinds = [type(layer) for layer in projector.net]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Dropout, nn.Linear, nn.Dropout]
    assert projector.net[1].normalized_shape == (16,) and projector.norm.normalized_shape == (8,)
    assert [layer.p for layer in projector.net if isinstance(layer, nn.Dropout)] == [0.1, 0.3]
    gaze = torch.rand(2, 7, 5)
    out = projector.eval()(gaze)
    assert out.shape == (2, 7, 8)
    hidden = projector.net[4](torch.relu(projector.net[1](projector.net[0](gaze[..., [0, 1, 3, 4]]))))
    torch.testing.assert_close(out, nn.functional.layer_norm(hidden, (8,)))  # fresh LayerNorm: 1, 0
    # The gazerm projector's parameter names are unchanged, so its saved models still load.
    plain = GazeProjector([1, 1, 1, 1, 1], hidden=16, out_dim=8, dropouts=(0.0, 0.0))
    assert plain.norm is None and [type(layer) for layer in plain.net][:2] == [nn.Linear, nn.ReLU]
