"""Masked and denoising objectives: corrupt x into x~, train p(x_hidden | x~).

Only the corrupted positions are targets (labels IGNORE elsewhere); unmasked tokens teach nothing.
"""
from __future__ import annotations

from typing import Sequence

import torch

from labkit import IGNORE
from labkit.checks import ContractError


def mask_positions(ids: Sequence[int], positions: Sequence[int], mask_id: int) -> dict:
    """Replace the tokens at `positions` by mask_id; they become the only targets.

    [1, 42, 95, 317] with positions [2] -> input_ids [1, 42, MASK, 317], labels [-100, -100, 95, -100].
    """
    ids = [int(i) for i in ids]
    if mask_id is None:
        raise ContractError("mask id missing; fix: pass tokenizer.mask_id")
    chosen = sorted(set(int(p) for p in positions))
    if not chosen:
        raise ContractError("no position to mask: the example would have no target")
    bad = [p for p in chosen if not 0 <= p < len(ids)]
    if bad:
        raise ContractError(f"mask positions {bad} are outside the sequence of length {len(ids)}")
    inputs, labels = list(ids), [IGNORE] * len(ids)
    for p in chosen:
        labels[p] = ids[p]
        inputs[p] = mask_id
    return {"input_ids": inputs, "labels": labels}


def random_mask(ids: torch.Tensor, p: float, mask_id: int, special_ids: Sequence[int] = (),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbing-mask corruption: each non-special token becomes mask_id with probability p.

    ids [B,T] -> (input_ids [B,T], labels [B,T]); labels hold the clean id where masked, IGNORE
    elsewhere. (BERT's 80/10/10 variant is bert_mask.)
    """
    if not 0.0 <= p <= 1.0:
        raise ContractError(f"mask probability must lie in [0, 1], got {p}")
    if mask_id is None:
        raise ContractError("mask id missing; fix: pass tokenizer.mask_id")
    chosen = torch.rand(ids.shape, generator=generator) < p
    for s in special_ids:
        chosen &= ids.ne(s)
    inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels
