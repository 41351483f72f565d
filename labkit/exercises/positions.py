"""Exercise graders for rotary positions (notebook 04b).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the
misconception. Every correct solution passes: check_rope accepts both standard layouts of the
rotated pairs (rotate-half, as GPT-NeoX / LLaMA in transformers, and interleaved, as the RoFormer
paper), and check_continuation_positions accepts any formula that gives the right position per row.
"""
from __future__ import annotations

import torch

from labkit.batch import pad, position_ids_from_mask
from labkit.exercises.common import close, fail, require_tensor
from labkit.models import apply_rope


def rope_interleaved(x: torch.Tensor, position_ids: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE with adjacent pairs (2i, 2i+1) turned by position * base^(-2i/d): the RoFormer layout.
    x [B,H,T,d], position_ids [B,T] -> [B,H,T,d]. Same scores as apply_rope up to a permutation of dims."""
    d = x.shape[-1]
    inv_freq = base ** -(torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = position_ids.double()[:, None, :, None] * inv_freq                 # [B,1,T,d/2]
    x1, x2 = x.double()[..., 0::2], x.double()[..., 1::2]
    out = torch.stack([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()], -1)
    return out.flatten(-2).to(x.dtype)


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q.double() @ k.double().transpose(-1, -2)


def check_rope(fn) -> None:
    """Grade fn(x [B,H,T,d], position_ids [B,T]) -> [B,H,T,d], rotary positions with base 10000.

    Accepted: the rotate-half layout (dims i and i + d/2 form a pair) or the interleaved one (dims
    2i and 2i+1), pair i turning by position * 10000^(-2i/d). Diagnosed: shape, position 0 not the
    identity, a changed vector length, scores that depend on absolute positions, wrong frequencies.
    """
    g = torch.Generator().manual_seed(0)
    B, H, T, d = 2, 3, 7, 8
    q, k = torch.randn(B, H, T, d, generator=g), torch.randn(B, H, T, d, generator=g)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9]])

    def call(x, p):
        out = require_tensor(fn(x.clone(), p.clone()), "your rotation")
        if tuple(out.shape) != tuple(x.shape):
            fail(f"the rotated queries/keys keep x's shape [B,H,T,d] = {tuple(x.shape)}, got {tuple(out.shape)}")
        if not out.is_floating_point():
            fail(f"return floating point queries/keys, got {out.dtype}")
        return out

    rq = call(q, pos)
    zero = torch.zeros_like(pos)
    if not close(call(q, zero), q, atol=1e-5):
        fail("at position 0 every angle is 0: the rotation must return x unchanged. Fix: angle = position * frequency, "
             "then x * cos + rotated(x) * sin")
    if close(rq, q, atol=1e-5):
        fail("your function returns x unchanged at positions 1 .. 9: nothing turns. Fix: angle = position * frequency")
    if not close(rq.double().norm(dim=-1), q.double().norm(dim=-1), atol=1e-4, rtol=1e-5):
        fail("a rotation keeps the length of every head vector, yours changes it. Fix: each pair (a, b) becomes "
             "(a cos - b sin, a sin + b cos), with the SAME angle for both members of a pair")
    shifted = pos + 11
    if not close(_scores(call(q, shifted), call(k, shifted)), _scores(rq, call(k, pos)), atol=1e-3):
        fail("shifting every position by 11 changed the scores q'.k': with rotary positions they must depend on the "
             "offset m - n only. Fix: rotate q AND k, each by its own position, with angles linear in the position")
    half, inter = apply_rope(q, pos).double(), rope_interleaved(q, pos).double()
    if close(rq, half, atol=1e-4) or close(rq, inter, atol=1e-4):
        return
    fail("your rotation is a rotation with relative scores, but not with RoPE's frequencies: pair i turns by "
         "position * 10000^(-2i/d) (i = 0 .. d/2 - 1, so the first pair turns fastest, one radian per position); "
         "pairs are dims (i, i + d/2) or (2i, 2i + 1)")


def check_continuation_positions(fn) -> None:
    """Grade fn(position_ids [B,T], attention_mask [B,T]) -> [B]: the position of the token that
    continues each LEFT-padded row, whatever numbering the cached prompt used (compact from the
    mask, the column index, or any per-row offset): the row's last real position + 1."""
    prompts = [[5, 6, 7, 8, 9], [5, 6], [5, 6, 7]]
    ids, mask = pad(prompts, 0, side="left")
    T = mask.shape[1]
    compact = position_ids_from_mask(mask)
    columns = torch.arange(T).expand_as(mask).clone()
    offsets = torch.where(mask.bool(), compact + torch.tensor([[7], [0], [30]]), torch.zeros_like(compact))
    for name, pos in [("compact positions (from the mask)", compact), ("column positions (arange)", columns),
                      ("positions with a different offset per row", offsets)]:
        got = require_tensor(fn(pos.clone(), mask.clone()), "the next positions").long().flatten()
        want = pos[:, -1] + 1
        if got.shape != want.shape:
            fail(f"return one position per row: shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if torch.equal(got, want):
            continue
        if torch.equal(got, mask.sum(-1)):
            fail(f"{name}: you returned each row's count of real tokens. That is right only when the prompt was "
                 "numbered from 0 by the mask; the cached keys sit where the prompt's position_ids put them. Fix: "
                 "continue the row's own numbering, its last real position + 1")
        if bool(got.eq(T).all()):
            fail(f"{name}: you gave every row the padded length {T}; that continues the column numbering only. Fix: "
                 "the row's last real position + 1")
        if torch.equal(got, want - 1):
            fail("off by one: that is the position of the last real token; the new token sits one further")
        fail(f"{name} {pos.tolist()} with mask {mask.tolist()}: expected {want.tolist()}, got {got.tolist()}")
