"""Autoregressive modelling: p(x) = prod_t p(x_t | x_<t), trained by next-token cross-entropy.

Two shift conventions, never both:
- external: the builder shifts (input_ids = x[:-1], labels = x[1:]); the loss does not.
- internal: labels = input_ids; the loss compares logit t with label t+1 (transformers' rule).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.reduce import REDUCTIONS, reduce, token_cross_entropy

SHIFTS = ("external", "internal")


def ar_example(ids: Sequence[int], shift: str = "internal") -> dict:
    """One record -> dict(input_ids, labels), lists.

    internal: input_ids = labels = x (the loss shifts); external: input_ids = x[:-1], labels = x[1:].
    """
    if shift not in SHIFTS:
        raise ContractError(f"unknown shift {shift!r}; fix: 'internal' (the loss shifts) or 'external' (the builder shifts)")
    ids = [int(i) for i in ids]
    if len(ids) < 2:
        raise ContractError(f"a next-token example needs at least 2 tokens, got {len(ids)}")
    if shift == "external":
        return {"input_ids": ids[:-1], "labels": ids[1:]}
    return {"input_ids": list(ids), "labels": list(ids)}


def completion_example(prompt_ids: Sequence[int], completion_ids: Sequence[int], train_on_prompt: bool = False) -> dict:
    """Prompt + completion -> dict(input_ids, labels, prompt_len), internal-shift labels.

    The prompt is context; only completion tokens are targets (labels IGNORE on the prompt)
    unless train_on_prompt=True, which also trains the model to write the user's text.
    """
    prompt, completion = [int(i) for i in prompt_ids], [int(i) for i in completion_ids]
    if not completion:
        raise ContractError("completion is empty: nothing to learn; fix: drop the record or check truncation")
    labels = (list(prompt) if train_on_prompt else [IGNORE] * len(prompt)) + list(completion)
    return {"input_ids": prompt + completion, "labels": labels, "prompt_len": len(prompt)}


def causal_lm_token_losses(logits: torch.Tensor, labels: torch.Tensor, shift: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token losses and their mask, both [B,T].

    shift=True: logit t is scored against labels[t+1] (labels padded on the right with IGNORE, so
    the last logit has no target), as transformers' ForCausalLMLoss. shift=False: against labels[t].
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ContractError(f"causal LM loss needs logits [B,T,V] and labels [B,T] with the same B,T; got "
                            f"{tuple(logits.shape)} and {tuple(labels.shape)}. Fix: with shift=True pass unshifted labels "
                            "of the same length as input_ids")
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE) if shift else labels
    losses = token_cross_entropy(logits, targets)
    return losses, targets.ne(IGNORE)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, shift: bool = True, reduction: str = "token_mean",
                   denominator=None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy reduced to a scalar.

    loss = sum_{b,t} m[b,t] l[b,t] / sum m   (token_mean; see labkit.reduce for the others).
    denominator=N gives sum / N, the num_items_in_batch path of transformers (gradient accumulation).
    """
    if reduction not in REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r}; fix: one of {REDUCTIONS}")
    losses, mask = causal_lm_token_losses(logits, labels, shift)
    return reduce(losses, mask, how=reduction, weights=weights, denominator=denominator).value


def next_token_targets(labels: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """The target of each logit position, [B,T] (IGNORE where none)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE) if shift else labels


def offset_accuracy(logits: torch.Tensor, ids: torch.Tensor, k: int = 1) -> float:
    """Share of positions t where argmax(logits[:, t]) == ids[:, t+k]; logits [B,T,V], ids [B,T].

    k=1 is next-token accuracy; a double-shifted model scores high at k=2 instead.
    """
    if k < 0 or k >= ids.shape[1]:
        raise ContractError(f"offset k={k} must lie in [0, T={ids.shape[1]})")
    pred = logits.argmax(-1)
    T = ids.shape[1]
    return float(pred[:, : T - k].eq(ids[:, k:]).float().mean())


# ----------------------------------------------------------------------------- decoding

@torch.no_grad()
def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int, temperature: float = 0.0,
             positions: str = "mask", eos_id: int | None = None, generator: torch.Generator | None = None,
             device=None) -> list[list[int]]:
    """Batched decoding with left padding; returns the new tokens of each prompt.

    temperature 0 = greedy (argmax); > 0 samples from softmax(z / temperature). positions="mask"
    gives each row compact positions from its own first real token; "arange" counts from column 0
    (the left-padding bug). Recomputes the whole prefix each step (tiny models, no cache).
    """
    from labkit.batch import arange_positions, pad, position_ids_from_mask

    if temperature < 0:
        raise ContractError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if positions not in ("mask", "arange"):
        raise ContractError(f"unknown positions policy {positions!r}; fix: 'mask' or 'arange'")
    device = device or next(model.parameters()).device
    ids, mask = pad(prompts, pad_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    new: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        pos = position_ids_from_mask(mask) if positions == "mask" else arange_positions(ids)
        logits = model(ids, attention_mask=mask, position_ids=pos)[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(device)
        for b in range(len(prompts)):
            if not done[b]:
                new[b].append(int(nxt[b]))
        if eos_id is not None:
            done |= nxt.eq(eos_id)
            if bool(done.all()):
                break
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return new
