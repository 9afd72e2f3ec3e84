from __future__ import annotations

import math

import pytest
import torch

from gazerm.model.losses import listwise_loss, lm_loss, pairwise_loss, regression_loss


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_pairwise_is_bradley_terry():
    assert pairwise_loss(t(2.0), t(0.0)).item() == pytest.approx(math.log(1 + math.exp(-2)))
    both = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert pairwise_loss(t(2.0, 0.0), t(0.0, 0.0)).item() == pytest.approx(both)


def test_pairwise_margin_is_subtracted():
    assert pairwise_loss(t(2.0), t(0.0), margin=t(1.0)).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_regression_skips_missing_targets():
    assert regression_loss(t(1.0, 2.0, 3.0), t(1.0, float("nan"), 5.0)).item() == pytest.approx(2.0)
    pred, target = torch.tensor([[1.0, 0.0], [3.0, 1.0]]), torch.tensor([[2.0, 9.0], [3.0, 3.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert regression_loss(pred, target, mask).item() == pytest.approx((1 + 0 + 4) / 3)


def test_regression_with_nothing_present_is_zero_and_finite():
    loss = regression_loss(t(1.0), t(float("nan")))
    assert loss.item() == 0.0


def test_listwise_is_plackett_luce():
    scores = t(2.0, 1.0, 0.0)[None]
    lse = torch.logsumexp
    expected = -((2 - lse(t(2.0, 1.0, 0.0), 0)) + (1 - lse(t(1.0, 0.0), 0)))
    loss = listwise_loss(scores, torch.tensor([[0, 1, 2]]), torch.ones(1, 3))
    assert loss.item() == pytest.approx(expected.item())


def test_listwise_order_comes_from_tiers_not_positions():
    scores = t(0.0, 2.0, 1.0)[None]
    shuffled = listwise_loss(scores, torch.tensor([[2, 0, 1]]), torch.ones(1, 3))
    ordered = listwise_loss(t(2.0, 1.0, 0.0)[None], torch.tensor([[0, 1, 2]]), torch.ones(1, 3))
    assert shuffled.item() == pytest.approx(ordered.item())


def test_listwise_on_two_items_or_a_padded_list_is_pairwise():
    pair = pairwise_loss(t(2.0), t(1.0)).item()
    assert listwise_loss(t(2.0, 1.0)[None], torch.tensor([[0, 1]]), torch.ones(1, 2)).item() == pytest.approx(
        pair
    )
    padded = listwise_loss(t(2.0, 1.0, 9.0)[None], torch.tensor([[0, 1, 0]]), torch.tensor([[1, 1, 0]]))
    assert padded.item() == pytest.approx(pair)


def test_listwise_ties_share_the_denominator():
    """Breslow: two tied best responses each compete with the whole list, the last one with itself."""
    scores = t(2.0, 1.0, 0.0)
    lse = torch.logsumexp
    expected = -((2 - lse(scores, 0)) + (1 - lse(scores, 0)))
    loss = listwise_loss(scores[None], torch.tensor([[0, 0, 1]]), torch.ones(1, 3))
    assert loss.item() == pytest.approx(expected.item())


def test_lm_loss_counts_only_masked_targets():
    logits = torch.zeros(1, 3, 2)
    logits[0, 1, 0] = math.log(3)  # position 1 predicts token 0 with p = 3/4
    input_ids = torch.tensor([[1, 1, 0]])
    both = lm_loss(logits, input_ids, torch.tensor([[0, 1, 1]]))
    assert both.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    last = lm_loss(logits, input_ids, torch.tensor([[1, 0, 1]]))  # the first token is never a target
    assert last.item() == pytest.approx(math.log(4 / 3))
