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

from labkit.contracts import IGNORE, ContractError, binary_mask, finite, tensor, weight_tensor

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


def reduce(token_losses: torch.Tensor, mask: torch.Tensor, reduction: str = "token_mean",
           weights: torch.Tensor | None = None, denominator=None) -> Reduced:
    """Reduce [B,T] per-token losses over the supervised positions mask [B,T].

    token_mean:    sum(w m l) / sum(w m)            every target token counts the same
    sequence_mean: sum_b w_b mean_t(l_b) / sum_b w_b  every sequence with a target counts the same
    sum:           sum(w m l)                       (denominator 1)
    batch_mean:    sum(w m l) / B                   per row, whatever its length
    denominator=N: sum(w m l) / N                    a global count (gradient accumulation, ranks)
    weights: per sequence [B] or per token [B,T], default 1.
    """
    if reduction not in REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r}; fix: one of {REDUCTIONS}")
    token_losses, mask = tensor(token_losses, "token_losses"), binary_mask(mask, "mask")
    if token_losses.dim() != 2 or mask.shape != token_losses.shape:
        raise ContractError(f"reduce() needs [B,T] losses and a [B,T] mask, got {tuple(token_losses.shape)} and {tuple(mask.shape)}")
    if not token_losses.is_floating_point():
        raise ContractError(f"token_losses must be floating point, got {token_losses.dtype}")
    B, T = token_losses.shape
    if B * T == 0:
        raise ContractError(f"reduce() got an empty batch {(B, T)}: every mean would be 0/0; fix: skip empty batches")
    m = mask.to(token_losses.dtype)
    bad = ~torch.isfinite(token_losses) & mask.bool()
    if bad.any():
        raise ContractError(f"token losses are NaN or inf at {int(bad.sum())} supervised positions; fix: find the NaN "
                            "(logits, a -inf mask on a target) before reducing")
    # a non-finite loss at an unsupervised position is not part of the objective: select, never multiply by 0
    # (0 * inf = NaN would poison the sum)
    token_losses = torch.where(mask.bool(), token_losses, torch.zeros_like(token_losses))
    if weights is None:
        w = torch.ones_like(m)
    else:
        weights = weight_tensor(weights, "weights")
        if weights.shape == (B,):
            w = weights.to(token_losses.dtype)[:, None].expand(B, T)
        elif weights.shape == (B, T):
            w = weights.to(token_losses.dtype)
        else:
            raise ContractError(f"weights must be [B]={B} or [B,T]={(B, T)}, got {tuple(weights.shape)}")
    total = (w * m * token_losses).sum()
    if denominator is not None:
        if reduction == "sequence_mean":
            raise ContractError("an explicit denominator replaces the token count; it does not combine with reduction='sequence_mean'")
        value = finite(denominator, "denominator")
        if value <= 0:
            raise ContractError(f"denominator must be positive, got {value}; fix: count the target tokens of the whole "
                                "accumulated / distributed batch (labels != -100)")
        den = torch.as_tensor(value, dtype=token_losses.dtype, device=token_losses.device)
        return Reduced(total / den, den)
    if reduction == "sum":
        return Reduced(total, torch.ones((), dtype=token_losses.dtype, device=token_losses.device))
    if reduction == "batch_mean":
        den = torch.tensor(float(B), dtype=token_losses.dtype, device=token_losses.device)
        return Reduced(total / den, den)
    if reduction == "token_mean":
        den = (w * m).sum()
        if float(m.sum()) == 0:
            raise ContractError("batch has no supervised target tokens (all labels are -100); token_mean would be 0/0. "
                                "Fix: check the masks, or pass the global denominator= when this is one micro-batch of many")
        if float(den) == 0:
            raise ContractError("every supervised token has weight 0: token_mean would be 0/0; fix: positive weights on "
                                "the tokens that should count")
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


# ----------------------------------------------------------------------------- chunked cross-entropy

CHUNK_ELEMENTS = 2 ** 24   # default chunk: rows whose logits hold about 16M floats (64 MiB in float32)


def _check_chunked_inputs(hidden, weight, labels, chunk_size, ignore_index, reduction):
    if reduction not in ("mean", "sum"):
        raise ContractError(f"unknown reduction {reduction!r}; fix: 'mean' (over supervised tokens) or 'sum'")
    if not (isinstance(hidden, torch.Tensor) and isinstance(weight, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise ContractError("hidden, weight and labels must be tensors")
    if not (hidden.is_floating_point() and weight.is_floating_point()):
        raise ContractError(f"hidden and weight must be floating point, got {hidden.dtype} and {weight.dtype}")
    if weight.dim() != 2:
        raise ContractError(f"weight must be the output embedding [V, d], got {tuple(weight.shape)}")
    if hidden.dim() < 2 or hidden.shape[-1] != weight.shape[1]:
        hint = (" (is weight transposed? pass lm_head.weight, which is [V, d])"
                if hidden.dim() >= 1 and weight.shape[0] == hidden.shape[-1] else "")
        raise ContractError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} do not align: need hidden "
                            f"[N, d] (or [..., d]) and weight [V, d] with the same d{hint}")
    if labels.shape != hidden.shape[:-1]:
        raise ContractError(f"labels {tuple(labels.shape)} must be hidden.shape[:-1] = {tuple(hidden.shape[:-1])}: one "
                            "target id per hidden state; fix: for a causal LM shift first (hidden[:, :-1], labels[:, 1:])")
    if labels.dtype != torch.long:
        raise ContractError(f"labels must be int64 class ids, got {labels.dtype}")
    if not (hidden.device == weight.device == labels.device):
        raise ContractError(f"hidden, weight and labels live on {hidden.device}, {weight.device}, {labels.device}; fix: .to() one device")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ContractError(f"chunk_size must be a positive number of rows (or None for automatic), got {chunk_size!r}")
    V = weight.shape[0]
    bad = labels.ne(ignore_index) & (labels.lt(0) | labels.ge(V))
    if bad.any():
        raise ContractError(f"labels hold ids outside [0, {V}) that are not {ignore_index}: {labels[bad][:5].tolist()}; "
                            "fix: the output embedding must cover the tokenizer, and ignored positions use -100")


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Sum over supervised rows of logsumexp(z_i) - z_i[y_i] with z = hidden @ weight.T, chunk by chunk.

    forward keeps only lse [N]; backward recomputes each chunk's logits z_c [C, V] and turns them in
    place into g (softmax(z_c) - onehot(y_c)), then grad_hidden_c = G_c W and grad_weight += G_c^T H_c.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size, ignore_index):
        ctype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        w = weight.to(ctype)
        N = hidden.shape[0]
        lse = torch.empty(N, dtype=ctype, device=hidden.device)
        row_loss = torch.empty(N, dtype=ctype, device=hidden.device)   # summed once at the end (pairwise, accurate)
        buf = torch.empty(min(chunk_size, N), w.shape[0], dtype=ctype, device=hidden.device)
        for s in range(0, N, chunk_size):
            h, y = hidden[s:s + chunk_size].to(ctype), labels[s:s + chunk_size]
            z = buf[: h.shape[0]]
            torch.mm(h, w.T, out=z)
            valid = y.ne(ignore_index)
            target = z.gather(1, y.clamp(0, w.shape[0] - 1)[:, None]).squeeze(1)
            m = z.amax(-1)
            z.sub_(m[:, None]).exp_()                       # z now holds exp(z - max): no second [C, V] buffer
            l = z.sum(-1).log_().add_(m)
            lse[s:s + chunk_size] = l
            row_loss[s:s + chunk_size] = (l - target) * valid
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk_size, ctx.ignore_index = chunk_size, ignore_index
        return row_loss.sum()

    @staticmethod
    def backward(ctx, grad_total):
        hidden, weight, labels, lse = ctx.saved_tensors
        cs, ign = ctx.chunk_size, ctx.ignore_index
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctype = lse.dtype
        w = weight.to(ctype)
        N = hidden.shape[0]
        grad_h = torch.empty(hidden.shape, dtype=ctype, device=hidden.device) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=ctype, device=hidden.device) if need_w else None
        buf = torch.empty(min(cs, N), w.shape[0], dtype=ctype, device=hidden.device)
        g = grad_total.to(ctype)
        for s in range(0, N, cs):
            h, y = hidden[s:s + cs].to(ctype), labels[s:s + cs]
            z = buf[: h.shape[0]]
            torch.mm(h, w.T, out=z)                             # recompute this chunk's logits
            z.sub_(lse[s:s + cs, None]).exp_()                  # softmax, in place
            valid = y.ne(ign)
            rows = valid.nonzero().squeeze(1)
            z[rows, y[rows]] -= 1                               # softmax - onehot
            z.mul_((valid.to(ctype) * g)[:, None])              # ignored rows get no gradient
            if need_h:
                torch.mm(z, w, out=grad_h[s:s + cs])
            if need_w:
                grad_w.addmm_(z.T, h)
        return (None if grad_h is None else grad_h.to(hidden.dtype),
                None if grad_w is None else grad_w.to(weight.dtype), None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None,
                          *, ignore_index: int = IGNORE, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits hidden @ weight.T without materialising them ([N, V] never exists).

    hidden [N, d] (or [..., d]), weight [V, d] (the output embedding / LM head), labels [N] (or
    [...]) int64 with -100 where nothing is learned. Returns a 0-d tensor equal, in value and in
    gradients for hidden and weight, to F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100):
        loss = (1/n) sum_{i: y_i != -100} [logsumexp_k z_ik - z_i,y_i],   n = #supervised rows
    ("sum" skips the 1/n, for an explicit global denominator). Rows go chunk_size at a time: the
    forward keeps only logsumexp [N]; the backward recomputes each chunk's logits and forms
    d loss / d z = (softmax(z) - onehot(y)) / n, so at most [chunk_size, V] floats live at once.
    chunk_size=None: enough rows for about 2**24 logits per chunk.
    """
    _check_chunked_inputs(hidden, weight, labels, chunk_size, ignore_index, reduction)
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // weight.shape[0])
    n = int(y.ne(ignore_index).sum())
    if reduction == "mean" and n == 0:
        raise ContractError("batch has no supervised target tokens (all labels are -100); the mean would be 0/0. "
                            "Fix: check the masks, or use reduction='sum' with the global denominator")
    total = _ChunkedCrossEntropy.apply(h, weight, y, chunk_size, ignore_index)
    return total / n if reduction == "mean" else total


def full_logits_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                              ignore_index: int = IGNORE) -> torch.Tensor:
    """The reference path: materialise logits = hidden @ weight.T ([N, V]) and call F.cross_entropy (token mean)."""
    _check_chunked_inputs(hidden, weight, labels, None, ignore_index, "mean")
    logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.T
    return F.cross_entropy(logits.float(), labels.reshape(-1), ignore_index=ignore_index)


# ----------------------------------------------------------------------------- effective weights, ranks

def effective_weights(mask: torch.Tensor, reduction: str = "token_mean", weights: torch.Tensor | None = None,
                      denominator=None) -> torch.Tensor:
    """How much each token's loss counts: d reduce(l) / d l[b,t], [B,T] (0 where mask is 0).

    Every reduction is linear in the per-token losses, so this is also each token's share of the
    gradient: token_mean gives 1/N to every target, sequence_mean gives 1/(B n_b) (short rows
    weigh more per token), sum gives 1, batch_mean 1/B.
    """
    if mask.dim() != 2:
        raise ContractError(f"effective_weights needs a [B,T] mask, got {tuple(mask.shape)}")
    losses = torch.zeros(mask.shape, dtype=torch.float64, requires_grad=True)
    w = weights.double() if weights is not None else None
    reduce(losses, mask, reduction, weights=w, denominator=denominator).value.backward()
    return losses.grad * mask.to(torch.float64)


DP_REDUCTIONS = ("local_mean", "global_count")


def rank_loss(token_losses: torch.Tensor, mask: torch.Tensor, reduction: str = "global_count",
              global_count=None, world_size: int = 1) -> Reduced:
    """The loss one data-parallel rank backpropagates, for [B,T] losses and mask of its shard.

    DDP averages gradients over the R ranks, so the objective descended is (1/R) sum_r loss_r.
    local_mean:   loss_r = S_r / n_r          -> (1/R) sum_r S_r / n_r   (mean of rank means)
    global_count: loss_r = R S_r / N, N = sum_r n_r -> sum_r S_r / N     (the global token mean)
    global_count needs N, all-reduced over ranks (labkit.dist.all_reduce_sum) before the loss.
    """
    if reduction not in DP_REDUCTIONS:
        raise ContractError(f"unknown data-parallel reduction {reduction!r}; fix: one of {DP_REDUCTIONS}")
    if world_size < 1:
        raise ContractError(f"world_size must be >= 1, got {world_size}")
    if reduction == "local_mean":
        return reduce(token_losses, mask, "token_mean")
    if global_count is None:
        raise ContractError("global_count reduction needs the target count of ALL ranks; fix: all-reduce (sum) the local "
                            "counts first, e.g. labkit.dist.all_reduce_sum(mask.sum())")
    summed = reduce(token_losses, mask, "sum").value
    den = torch.as_tensor(global_count, dtype=summed.dtype, device=summed.device) / world_size
    if float(den) <= 0:
        raise ContractError(f"global_count must be positive, got {float(global_count)}")
    return Reduced(summed / den, den)


def simulate_ranks(token_losses: list, masks: list, reduction: str = "global_count") -> dict:
    """Data-parallel ranks simulated in one process: shard r has losses [B_r,T_r] and mask [B_r,T_r].

    Returns {"losses": per-rank losses (what each rank backpropagates), "objective": their mean
    (what DDP's averaged gradients descend), "counts": per-rank target counts, "global_count",
    "sums": per-rank loss sums}. Backpropagating "objective" gives the averaged gradients.
    """
    if len(token_losses) != len(masks) or not token_losses:
        raise ContractError(f"need one mask per rank, got {len(token_losses)} losses and {len(masks)} masks")
    R = len(token_losses)
    counts = [int(m.sum()) for m in masks]
    N = sum(counts)
    losses = [rank_loss(l, m, reduction, global_count=N, world_size=R).value for l, m in zip(token_losses, masks)]
    return {"losses": losses, "objective": torch.stack(losses).mean(), "counts": counts, "global_count": N,
            "sums": [reduce(l, m, "sum").value for l, m in zip(token_losses, masks)]}


# ----------------------------------------------------------------------------- mean of means on random batches (notebook 06)

def micro_batch_mean_gaps(sums: torch.Tensor, counts: torch.Tensor, n_micro: int, micro_size: int,
                          n_batches: int = 2000, generator: torch.Generator | None = None) -> torch.Tensor:
    """How far the mean of micro-batch means lands from the token mean, over random batches.

    sums [S], counts [S]: each sequence's summed token loss and its number of target tokens, for a
    pool of S sequences. Each of n_batches batches draws n_micro * micro_size distinct sequences
    (uniformly, without replacement) and splits them into n_micro micro-batches of micro_size:
        token mean  = sum_i S_i / sum_i n_i
        mean of means = (1/K) sum_k (sum_{i in k} S_i / sum_{i in k} n_i)
    Returns the signed relative gaps (mean of means − token mean) / token mean, [n_batches].
    """
    if sums.dim() != 1 or counts.shape != sums.shape:
        raise ContractError(f"sums and counts must both be [S] (one entry per sequence), got {tuple(sums.shape)} and "
                            f"{tuple(counts.shape)}")
    if n_micro < 1 or micro_size < 1 or n_batches < 1:
        raise ContractError(f"need n_micro, micro_size, n_batches >= 1, got {n_micro}, {micro_size}, {n_batches}")
    S, B = sums.shape[0], n_micro * micro_size
    if B > S:
        raise ContractError(f"a batch of {n_micro} x {micro_size} = {B} sequences needs a pool of at least {B}, got {S}")
    if bool((counts <= 0).any()):
        raise ContractError("every sequence of the pool needs at least one target token (counts > 0)")
    idx = torch.rand(n_batches, S, generator=generator).argsort(1)[:, :B].view(n_batches, n_micro, micro_size)
    s, n = sums.double()[idx], counts.double()[idx]
    token_mean = s.sum((1, 2)) / n.sum((1, 2))
    mean_of_means = (s.sum(2) / n.sum(2)).mean(1)
    return (mean_of_means - token_mean) / token_mean
