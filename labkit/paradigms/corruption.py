"""One denoiser per corruption (notebook 08b): the corruption q(x~ | x) decides what a denoiser learns.

Every corruption here maps clean rows ids [B, L] to noisy rows of the SAME shape [B, L], so one
bidirectional model and one loss (reconstruct every clean token, `denoise_loss`) serve them all;
only q changes. Each returns (noisy, hit) with hit = noisy != clean, bool [B, L]: the positions a
plain copy of the input would get wrong. Special ids (<bos>, <eos>, ...) are never chosen.

    mask     each token -> <mask> with probability rate                      (BERT-style, mask only)
    span     spans of `span_len` tokens -> <mask>, about `rate` of the tokens (T5-style, no sentinel)
    replace  each token -> another word of `pool` with probability rate     (no marker where)
    delete   each token dropped with probability rate, the row closes up and is padded at the end
    swap     neighbouring pairs exchanged, about `rate` of the tokens moved  (local permutation)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from labkit.contracts import ContractError, count, finite, tensor, token_ids
from labkit.paradigms.masked import random_other_tokens

__all__ = ["CORRUPTIONS", "corrupt", "mask_tokens", "mask_spans", "replace_tokens", "close_up", "delete_tokens_padded",
           "swap_neighbours", "denoise_loss", "repair_rate", "denoiser_batches", "corruption_matrix",
           "compact_vocabulary"]

CORRUPTIONS = ("mask", "span", "replace", "delete", "swap")


def _rows(ids, name: str = "ids") -> torch.Tensor:
    ids = token_ids(ids, name)
    if ids.dim() != 2:
        raise ContractError(f"{name} must be clean rows [B, L], got shape {tuple(ids.shape)}; fix: ids[None] for one row")
    return ids


def _rate(rate) -> float:
    r = finite(rate, "rate")
    if not 0.0 <= r <= 1.0:
        raise ContractError(f"rate (the share of tokens a corruption touches) must lie in [0, 1], got {r}")
    return r


def _special(ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    return torch.isin(ids, torch.as_tensor([int(s) for s in special_ids], dtype=torch.long))


def mask_tokens(ids, rate: float, mask_id: int, special_ids: Sequence[int] = (),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token mask: each non-special token becomes mask_id with probability rate. [B,L] -> (noisy, hit)."""
    ids, rate = _rows(ids), _rate(rate)
    hit = (torch.rand(ids.shape, generator=generator) < rate) & ~_special(ids, special_ids)
    return torch.where(hit, torch.full_like(ids, int(mask_id)), ids), hit


def mask_spans(ids, rate: float, mask_id: int, span_len: int = 3, special_ids: Sequence[int] = (),
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Span mask: each position starts a span of span_len masks with probability rate / span_len
    (so about `rate` of the tokens are covered, fewer where spans overlap); specials stay visible.
    The row keeps its length: every hidden token is one mask (no sentinel). [B,L] -> (noisy, hit)."""
    ids, rate, span_len = _rows(ids), _rate(rate), count(span_len, "span_len")
    starts = (torch.rand(ids.shape, generator=generator) < rate / span_len).float()
    # position t is covered when a span starts in [t - span_len + 1, t]
    covered = F.max_pool1d(F.pad(starts[:, None], (span_len - 1, 0)), span_len, stride=1)[:, 0].bool()
    hit = covered & ~_special(ids, special_ids)
    return torch.where(hit, torch.full_like(ids, int(mask_id)), ids), hit


def replace_tokens(ids, rate: float, pool: Sequence[int], special_ids: Sequence[int] = (),
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random replacement: each non-special token becomes another id of `pool` (never itself,
    random_other_tokens) with probability rate. Nothing marks where. [B,L] -> (noisy, hit)."""
    ids, rate = _rows(ids), _rate(rate)
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ~_special(ids, special_ids)
    noisy = torch.where(chosen, random_other_tokens(ids, pool, generator), ids)
    return noisy, noisy.ne(ids)


def close_up(ids, drop, pad_id: int) -> torch.Tensor:
    """Remove the positions `drop` (bool [B,L]) from each row, move the survivors left in order and
    fill the end with pad_id: [B,L] -> [B,L]. [[a, b, c, d]] with drop [[0, 1, 0, 0]] -> [[a, c, d, pad]]."""
    ids = _rows(ids)
    drop = tensor(drop, "drop")
    if drop.dtype != torch.bool or drop.shape != ids.shape:
        raise ContractError(f"drop must be a bool mask of the ids' shape {tuple(ids.shape)}, got {drop.dtype} "
                            f"{tuple(drop.shape)}; fix: drop = torch.rand(ids.shape) < rate")
    keep = ~drop
    dest = keep.long().cumsum(-1) - 1                       # where each kept token lands
    out = torch.full_like(ids, int(pad_id))
    rows = torch.arange(ids.shape[0])[:, None].expand_as(ids)
    out[rows[keep], dest[keep]] = ids[keep]
    return out


def delete_tokens_padded(ids, rate: float, pad_id: int, special_ids: Sequence[int] = (),
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion: each non-special token is dropped with probability rate; the survivors close up
    (close_up: left-aligned) and the row is padded with pad_id at the end to length L. Nothing marks
    where a token was dropped; only the number of pads says how many. [B,L] -> (noisy, hit)."""
    ids, rate = _rows(ids), _rate(rate)
    drop = (torch.rand(ids.shape, generator=generator) < rate) & ~_special(ids, special_ids)
    noisy = close_up(ids, drop, pad_id)
    return noisy, noisy.ne(ids)


def swap_neighbours(ids, rate: float, special_ids: Sequence[int] = (),
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Local permutation: scanning left to right, a pair (t, t+1) of non-special tokens that are
    different and untouched is exchanged with probability rate / 2 (each swap moves two tokens, so
    about `rate` of the tokens move; a bit fewer, as pairs cannot overlap). [B,L] -> (noisy, hit)."""
    ids, rate = _rows(ids), _rate(rate)
    B, L = ids.shape
    special = _special(ids, special_ids)
    u = torch.rand(B, L, generator=generator)
    noisy = ids.clone()
    free = torch.ones(B, dtype=torch.bool)
    for t in range(L - 1):
        go = (free & (u[:, t] < rate / 2) & ~special[:, t] & ~special[:, t + 1] & ids[:, t].ne(ids[:, t + 1]))
        noisy[go, t], noisy[go, t + 1] = ids[go, t + 1], ids[go, t]
        free = ~go                                           # the next pair may not reuse position t + 1
    return noisy, noisy.ne(ids)


def corrupt(kind: str, ids, rate: float, *, mask_id: int, pad_id: int, pool: Sequence[int],
            special_ids: Sequence[int] = (), span_len: int = 3,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the corruption `kind` (one of CORRUPTIONS) at `rate`: [B,L] -> (noisy [B,L], hit [B,L])."""
    if kind not in CORRUPTIONS:
        raise ContractError(f"unknown corruption {kind!r}; fix: one of {CORRUPTIONS}")
    if kind == "mask":
        return mask_tokens(ids, rate, mask_id, special_ids, generator)
    if kind == "span":
        return mask_spans(ids, rate, mask_id, span_len, special_ids, generator)
    if kind == "replace":
        return replace_tokens(ids, rate, pool, special_ids, generator)
    if kind == "delete":
        return delete_tokens_padded(ids, rate, pad_id, special_ids, generator)
    return swap_neighbours(ids, rate, special_ids, generator)


def denoise_loss(model, noisy: torch.Tensor, clean: torch.Tensor, reduction: str = "token_mean") -> torch.Tensor:
    """-log p(x | x~): cross-entropy of every clean token given the whole noisy row.

    model(noisy [B,L]) -> logits [B,L,V]; clean [B,L]. reduction "token_mean" (all B*L tokens
    alike) or "sum". The same loss for every corruption: the targets are the clean row, always.
    """
    noisy, clean = _rows(noisy, "noisy"), _rows(clean, "clean")
    if noisy.shape != clean.shape:
        raise ContractError(f"noisy {tuple(noisy.shape)} and clean {tuple(clean.shape)} must have one shape; fix: "
                            "corruptions here keep the row length (deletion pads at the end)")
    if reduction not in ("token_mean", "sum"):
        raise ContractError(f"reduction must be 'token_mean' or 'sum', got {reduction!r}")
    logits = model(noisy)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), clean.reshape(-1),
                           reduction="mean" if reduction == "token_mean" else "sum")


@torch.no_grad()
def repair_rate(model, noisy: torch.Tensor, clean: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Share of the positions `where` (default: hit = noisy != clean) at which argmax model(noisy)
    is the clean token. A model that copies its input scores 0 on the hit positions."""
    noisy, clean = _rows(noisy, "noisy"), _rows(clean, "clean")
    where = noisy.ne(clean) if where is None else where.bool()
    if where.shape != clean.shape or not bool(where.any()):
        raise ContractError("where must be a bool [B,L] mask with at least one position to score")
    dev = next(model.parameters()).device
    pred = model(noisy.to(dev)).argmax(-1).cpu()
    return float(pred[where.cpu()].eq(clean[where.cpu()]).float().mean())


def denoiser_batches(rows: torch.Tensor, kind: str, rate: float, batch_size: int, seed: int, **corrupt_kw):
    """step -> (noisy, clean): batch `step` of `rows` (cycled), corrupted by `kind` with a generator
    seeded by (seed, step) only, so every corruption reads the same clean rows in the same order."""
    rows = _rows(rows, "rows")
    batch_size = count(batch_size, "batch_size")
    if kind not in CORRUPTIONS:
        raise ContractError(f"unknown corruption {kind!r}; fix: one of {CORRUPTIONS}")
    n = rows.shape[0]

    def get(step: int):
        start = (step * batch_size) % n
        clean = rows[start:start + batch_size]
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        noisy, _ = corrupt(kind, clean, rate, generator=g, **corrupt_kw)
        return noisy, clean

    return get


def corruption_matrix(models: dict, probes: dict) -> dict:
    """{(trained kind, probe kind): repair_rate} for models {kind: model} and probes {kind: (noisy, clean)}."""
    if not models or not probes:
        raise ContractError("corruption_matrix needs at least one model and one probe: {kind: model}, {kind: (noisy, clean)}")
    return {(m, p): repair_rate(model, noisy, clean) for m, model in models.items() for p, (noisy, clean) in probes.items()}


def compact_vocabulary(ids_in_use: Sequence[int], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel the few ids a corpus uses as 0..K-1 (a K-row embedding instead of vocab_size rows).

    Returns (to_compact [vocab_size] long, -1 for ids not in use; from_compact [K] long):
    to_compact[ids] turns full ids into compact ones, from_compact[c] turns them back.
    """
    used = sorted({int(i) for i in ids_in_use})
    vocab_size = count(vocab_size, "vocab_size")
    if not used or used[0] < 0 or used[-1] >= vocab_size:
        raise ContractError(f"ids_in_use must be a non-empty list of ids in [0, {vocab_size}), got {used[:5]}...")
    from_compact = torch.tensor(used, dtype=torch.long)
    to_compact = torch.full((vocab_size,), -1, dtype=torch.long)
    to_compact[from_compact] = torch.arange(len(used))
    return to_compact, from_compact
