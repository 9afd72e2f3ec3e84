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


def listwise_loss(scores: torch.Tensor, ranking_mask: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of the order ``scores[:, 0] > scores[:, 1] > …``.

    ``scores`` ``(B, N)`` are ordered best-first; ``ranking_mask`` ``(B, N)`` marks real responses (rows may
    rank fewer than N; padding goes after the real ones). With N = 2 this is :func:`pairwise_loss`.
    """
    present = ranking_mask.bool()
    masked = scores.masked_fill(~present, float("-inf"))
    # log Σ_{j ≥ i} exp(s_j): the normaliser of choosing item i among those not yet placed.
    tail_lse = masked.flip(-1).logcumsumexp(-1).flip(-1)
    log_probs = torch.where(present, scores - tail_lse, torch.zeros_like(scores))
    return -log_probs.sum(-1).mean()


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, counted only where ``loss_mask`` marks the *predicted* token (e.g. the
    chosen response's tokens); ``logits`` ``(B, T, V)`` are aligned to ``input_ids`` ``(B, T)``."""
    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:].float()
    token_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (token_loss * weights.flatten()).sum() / weights.sum().clamp(min=1)
