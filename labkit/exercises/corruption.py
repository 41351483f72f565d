"""Exercise graders for labkit.paradigms.corruption (notebook 08b).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch

from labkit.exercises.common import fail, require_tensor
from labkit.paradigms.corruption import close_up


def _cases(seed: int):
    g = torch.Generator().manual_seed(seed)
    yield torch.tensor([[11, 12, 13, 14, 15]]), torch.tensor([[False, True, False, False, False]])
    yield torch.tensor([[11, 12, 13, 14], [21, 22, 23, 24]]), torch.tensor([[True, False, False, True],
                                                                            [False, False, False, False]])
    ids = torch.randint(5, 40, (6, 12), generator=g)
    yield ids, torch.rand(6, 12, generator=g) < 0.3


def check_close_up(fn: Callable, pad_id: int = 0, seed: int = 0) -> None:
    """Grade fn(ids [B,L], drop bool [B,L], pad_id) -> [B,L]: each row without its dropped tokens,
    the survivors in their order from the left, padded with pad_id at the end. The answer is unique,
    so any correct implementation passes. Raises AssertionError naming the misconception (tokens
    replaced in place, padding at the front, order changed, length changed, the kept tokens dropped)."""
    for ids, drop in _cases(seed):
        got = require_tensor(fn(ids.clone(), drop.clone(), pad_id), "your function")
        want = close_up(ids, drop, pad_id)
        if tuple(got.shape) != tuple(ids.shape):
            fail(f"the output must keep the shape {tuple(ids.shape)} (pad the end of each row), got {tuple(got.shape)}")
        if torch.equal(got.long(), want):
            continue
        in_place = torch.where(drop, torch.full_like(ids, pad_id), ids)
        keep_only = close_up(ids, ~drop, pad_id)
        front = torch.stack([torch.cat([torch.full((int(d.sum()),), pad_id, dtype=ids.dtype), r[~d]]) for r, d in zip(ids, drop)])
        if torch.equal(got.long(), in_place):
            fail("you replaced the dropped tokens by padding where they stood: that marks WHERE text was deleted (it "
                 "is a mask, not a deletion). The survivors must close up, leaving no trace of the gap")
        if torch.equal(got.long(), front):
            fail("the padding went to the front of the row: keep the survivors left-aligned (position 0 holds the first "
                 "kept token) and pad at the end")
        if torch.equal(got.long(), keep_only):
            fail("you removed the tokens to KEEP: drop is True where a token is deleted")
        fail(f"ids {ids[0].tolist()} with drop {drop[0].int().tolist()}: expected {want[0].tolist()}, got "
             f"{got[0].tolist()}. Each row: the kept tokens in their order, then pad_id up to the original length")
