"""Per-token losses and the reductions that turn them into one number.

The denominator is part of the objective: token_mean weights every target token equally,
sequence_mean weights every sequence equally, sum and an explicit denominator let gradient
accumulation and data-parallel ranks reproduce the global token mean. Every reduction returns
what it divided by.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError

REDUCTIONS = ("token_mean", "sequence_mean", "sum", "batch_mean")


class Reduced(NamedTuple):
    """value: the reduced loss (a 0-d tensor); denominator: what the weighted sum was divided by."""

    value: torch.Tensor
    denominator: torch.Tensor


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Per-position CE, [..., V] logits and [...] labels -> [...] losses (0 where label == ignore_index).

    l[b,t] = -log softmax(z[b,t])[y[b,t]]   (no shift: logit t is scored against label t)
    """
    if logits.shape[:-1] != labels.shape:
        raise ContractError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not align: logits must be "
                            "labels.shape + (vocab,); fix: for a causal LM use causal_lm_loss, which shifts")
    if labels.dtype != torch.long:
        raise ContractError(f"labels must be int64 class ids, got {labels.dtype}")
    V = logits.shape[-1]
    bad = labels.ne(ignore_index) & (labels.lt(0) | labels.ge(V))
    if bad.any():
        raise ContractError(f"labels hold ids outside [0, {V}) that are not {ignore_index}: {labels[bad][:5].tolist()}; "
                            "fix: the model's vocabulary must cover the tokenizer, and ignored positions use -100")
    flat = F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=ignore_index, reduction="none")
    return flat.view(labels.shape)


def reduce(token_losses: torch.Tensor, mask: torch.Tensor, how: str = "token_mean",
           weights: torch.Tensor | None = None, denominator=None) -> Reduced:
    """Reduce [B,T] per-token losses over the supervised positions mask [B,T].

    token_mean:    sum(w m l) / sum(w m)            every target token counts the same
    sequence_mean: sum_b w_b mean_t(l_b) / sum_b w_b  every sequence with a target counts the same
    sum:           sum(w m l)                       (denominator 1)
    batch_mean:    sum(w m l) / B                   per row, whatever its length
    denominator=N: sum(w m l) / N                    a global count (gradient accumulation, ranks)
    weights: per sequence [B] or per token [B,T], default 1.
    """
    if how not in REDUCTIONS:
        raise ContractError(f"unknown reduction {how!r}; fix: one of {REDUCTIONS}")
    if token_losses.dim() != 2 or mask.shape != token_losses.shape:
        raise ContractError(f"reduce() needs [B,T] losses and a [B,T] mask, got {tuple(token_losses.shape)} and {tuple(mask.shape)}")
    B, T = token_losses.shape
    m = mask.to(token_losses.dtype)
    if weights is None:
        w = torch.ones_like(m)
    elif weights.shape == (B,):
        w = weights.to(token_losses.dtype)[:, None].expand(B, T)
    elif weights.shape == (B, T):
        w = weights.to(token_losses.dtype)
    else:
        raise ContractError(f"weights must be [B]={B} or [B,T]={(B, T)}, got {tuple(weights.shape)}")
    if (w < 0).any():
        raise ContractError("weights must be non-negative")
    total = (w * m * token_losses).sum()
    if denominator is not None:
        if how == "sequence_mean":
            raise ContractError("an explicit denominator replaces the token count; it does not combine with how='sequence_mean'")
        den = torch.as_tensor(denominator, dtype=token_losses.dtype, device=token_losses.device)
        if float(den) <= 0:
            raise ContractError(f"denominator must be positive, got {float(den)}; fix: count the target tokens of the whole "
                                "accumulated / distributed batch (labels != -100)")
        return Reduced(total / den, den)
    if how == "sum":
        return Reduced(total, torch.ones((), dtype=token_losses.dtype, device=token_losses.device))
    if how == "batch_mean":
        den = torch.tensor(float(B), dtype=token_losses.dtype, device=token_losses.device)
        return Reduced(total / den, den)
    if how == "token_mean":
        den = (w * m).sum()
        if float(m.sum()) == 0:
            raise ContractError("batch has no supervised target tokens (all labels are -100); token_mean would be 0/0. "
                                "Fix: check the masks, or pass the global denominator= when this is one micro-batch of many")
        return Reduced(total / den, den)
    # sequence_mean
    per_seq_count = m.sum(-1)
    has = per_seq_count.gt(0)
    if not has.any():
        raise ContractError("batch has no supervised target tokens (all labels are -100); sequence_mean is undefined")
    seq_mean = (w * m * token_losses).sum(-1)[has] / (w * m).sum(-1)[has].clamp_min(1e-12)
    seq_w = (w * m).sum(-1)[has] / per_seq_count[has]
    den = seq_w.sum()
    return Reduced((seq_w * seq_mean).sum() / den, den)
