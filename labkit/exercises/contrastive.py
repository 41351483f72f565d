"""Exercise graders for labkit.paradigms.contrastive (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.exercises.common import fail
from labkit.paradigms.contrastive import info_nce, same_class_mask, similarity_logits


def check_info_nce(fn: Callable, seed: int = 0) -> None:
    """Grade a student's fn(q, k, tau) -> scalar InfoNCE (q->k, diagonal targets, cosine
    similarities, mean over queries). Raises AssertionError naming the likely misconception."""
    g = torch.Generator().manual_seed(seed)
    B, D, tau = 6, 5, 0.2
    q, k = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    got = fn(q.clone(), k.clone(), tau)
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        fail(f"return one scalar tensor (the mean over queries), got {type(got).__name__} "
                             f"{tuple(getattr(got, 'shape', ()))}")
    got = float(got.detach())
    want = float(info_nce(q, k, tau))
    if abs(got - want) < 1e-4:
        return
    s = similarity_logits(q, k, tau)
    tgt = torch.arange(B)
    wrong = {
        "you forgot to divide the similarities by the temperature tau": float(F.cross_entropy(s * tau, tgt)),
        "you used raw dot products: normalise q and k first (cosine similarity)": float(F.cross_entropy(q @ k.T / tau, tgt)),
        "you summed over queries instead of averaging": float(F.cross_entropy(s, tgt, reduction="sum")),
        "the softmax ran over the queries (columns): for q->k each ROW i is a B-way classification": float(F.cross_entropy(s.T, tgt)),
        "the target of query i is key i (the diagonal), not class 0": float(F.cross_entropy(s, torch.zeros_like(tgt))),
        "you multiplied by tau instead of dividing": float(F.cross_entropy(s * tau * tau, tgt)),
        "you returned the symmetric (CLIP) loss; this exercise asks for q->k only": float(info_nce(q, k, tau, symmetric=True)),
        "the positive must stay in the denominator (InfoNCE is a softmax over all B keys)": float(
            -(s.diagonal() - s.masked_fill(torch.eye(B, dtype=torch.bool), float("-inf")).logsumexp(-1)).mean()),
    }
    for why, value in wrong.items():
        if abs(got - value) < 1e-4:
            fail(f"InfoNCE is {want:.4f} here, you returned {got:.4f}: {why}")
    fail(f"InfoNCE is {want:.4f} here, you returned {got:.4f}. Recipe: s = normalize(q) @ normalize(k).T / tau, "
                         "then cross-entropy of each row with target arange(B), averaged over queries")


def check_false_negative_mask(fn: Callable, labels=None) -> None:
    """Grade a student's fn(labels [B]) -> [B,B] bool false-negative mask for in-batch pairs
    (True where key j has query i's label and j != i)."""
    labels = torch.tensor([3, 1, 3, 0, 1, 3, 2, 0]) if labels is None else torch.as_tensor(labels)
    got = fn(labels.clone())
    want = same_class_mask(labels)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        fail(f"return a [B,B] tensor, got {tuple(getattr(got, 'shape', ()))}")
    if got.dtype != torch.bool:
        fail(f"return a bool mask (True = drop this key), got {got.dtype}; fix: compare with == or .eq()")
    if torch.equal(got, want):
        return
    if got.diagonal().any():
        fail("your mask includes the diagonal: that removes each query's own positive and the loss has no "
                             "target. Fix: same label AND j != i")
    if torch.equal(got, ~want & ~torch.eye(len(labels), dtype=torch.bool)):
        fail("your mask marks the DIFFERENT-label keys: those are the true negatives to keep; mask same-label keys")
    fail(f"the false negatives of query i are the other keys with label labels[i]; expected\n{want.int()}\ngot\n{got.int()}")
