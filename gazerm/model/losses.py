"""Reward-model losses: pairwise (Bradley-Terry), regression on ratings, listwise (Plackett-Luce), and the
auxiliary next-token loss. Every loss is a mean, so it does not depend on the micro-batch size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean(-log σ(r_chosen - r_rejected - margin))``; the margin (e.g. a score difference) asks clearer
    preferences to be separated by more, as in Llama 2's reward model."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def regression_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE over present targets, ``(B,)`` or ``(B, K)`` attributes; ``mask`` defaults to ``~isnan(target)``,
    so missing ratings can be stored as NaN. Zero when nothing is present."""
    present = ~torch.isnan(target) if mask is None else mask.bool()
    sq_err = torch.where(present, (pred - target.nan_to_num()) ** 2, torch.zeros_like(pred))
    return sq_err.sum() / present.sum().clamp(min=1)


def list_scores(rewards: torch.Tensor, list_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat rewards of stacked lists → ``(B, N)`` scores and the mask of real entries (``list_index`` -1)."""
    mask = list_index >= 0
    return rewards[list_index.clamp(min=0)].masked_fill(~mask, 0.0), mask


def listwise_log_likelihood(scores: torch.Tensor, tiers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per list ``(B,)``, the log-likelihood :func:`listwise_loss` averages (its negative)."""
    present = mask.bool()
    competes = present[:, None, :] & (tiers[:, None, :] >= tiers[:, :, None])  # (B, i, j): j in i's set
    denominators = scores[:, None, :].masked_fill(~competes, float("-inf")).logsumexp(-1)
    # Padding scores nothing; pad tiers with 0 so a padded slot's set is never empty (no inf to mask).
    return torch.where(present, scores - denominators, torch.zeros_like(scores)).sum(-1)


def listwise_loss(scores: torch.Tensor, tiers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of ranked lists, with ties handled as in Breslow's method.

    ``scores`` ``(B, N)``; ``tiers`` ``(B, N)`` the rank of each response (0 = best; tied responses share
    a tier); ``mask`` ``(B, N)`` marks real responses (lists may be shorter than N). Each response is
    "chosen" among itself and every response in its tier or below: ``s_i - log Σ_{tier_j ≥ tier_i} exp s_j``.
    Without ties that is Plackett-Luce over the order; with N = 2 it is :func:`pairwise_loss`. The loss is
    a mean over lists of the summed log-likelihood terms.
    """
    return -listwise_log_likelihood(scores, tiers, mask).mean()


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, counted only where ``loss_mask`` marks the *predicted* token (e.g. the
    chosen response's tokens); ``logits`` ``(B, T, V)`` are aligned to ``input_ids`` ``(B, T)``."""
    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:].float()
    token_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (token_loss * weights.flatten()).sum() / weights.sum().clamp(min=1)
