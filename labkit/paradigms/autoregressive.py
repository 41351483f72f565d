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
from labkit.contracts import ContractError, finite
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

    if finite(temperature, "temperature") < 0:
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


# ----------------------------------------------------------------------------- padding, positions, caches

def _model_device(model):
    return next(model.parameters()).device


@torch.no_grad()
def continuation_logits(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int,
                        positions: str = "mask") -> torch.Tensor:
    """The logits that predict each continuation token, from ONE forward over the left-padded
    prompt + continuation rows. Returns [B, K, V]: row b, step k = the logits after reading
    prompts[b] + continuations[b][:k] (what step k of greedy decoding sees). All continuations
    have the same length K >= 1. positions: "mask" (compact) or "arange" (column index).
    """
    from labkit.batch import arange_positions, pad, position_ids_from_mask

    if len(prompts) != len(continuations):
        raise ContractError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    K = {len(c) for c in continuations}
    if len(K) != 1 or 0 in K:
        raise ContractError(f"continuations must share one length >= 1, got lengths {sorted(K)}")
    if positions not in ("mask", "arange"):
        raise ContractError(f"unknown positions policy {positions!r}; fix: 'mask' or 'arange'")
    K = K.pop()
    dev = _model_device(model)
    ids, mask = pad([list(p) + list(c) for p, c in zip(prompts, continuations)], pad_id, side="left")
    ids, mask = ids.to(dev), mask.to(dev)
    pos = position_ids_from_mask(mask) if positions == "mask" else arange_positions(ids)
    logits = model(ids, attention_mask=mask, position_ids=pos).float()
    return logits[:, -K - 1:-1]


@torch.no_grad()
def decode_agreement(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                     positions: str = "mask") -> dict:
    """Batched greedy decoding of left-padded prompts vs decoding each prompt alone.

    Returns {"alone", "batched"} (new tokens per row), "mismatch" (rows whose tokens differ),
    "mismatch_rate", and "max_logit_diff": the largest |logit| difference over every step when
    the batch is fed each row's solo continuation (so the two runs read the same tokens).
    """
    alone = [generate(model, [p], max_new_tokens, pad_id)[0] for p in prompts]
    batched = generate(model, prompts, max_new_tokens, pad_id, positions=positions)
    solo = torch.cat([continuation_logits(model, [p], [a], pad_id) for p, a in zip(prompts, alone)])
    together = continuation_logits(model, prompts, alone, pad_id, positions=positions)
    rows = [b for b, (a, x) in enumerate(zip(alone, batched)) if a != x]
    return {"alone": alone, "batched": batched, "mismatch": rows, "mismatch_rate": len(rows) / len(prompts),
            "max_logit_diff": float((solo - together).abs().max())}


def next_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Where each row's next token sits, [B,T] -> [B]: its number of real tokens so far.

    With left padding this is NOT the padded length T: a row with 3 pads in front has 3 fewer.
    """
    if attention_mask.dim() != 2:
        raise ContractError(f"next_positions needs a [B,T] padding mask, got {tuple(attention_mask.shape)}")
    return attention_mask.long().sum(-1)


CACHE_POSITIONS = ("own", "padded")


@torch.no_grad()
def generate_cached(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                    next_position: str = "own") -> dict:
    """Greedy decoding with a key/value cache: one forward over the left-padded prompts, then one
    token per step (model.forward_cached, e.g. TinyCausalLM).

    next_position: "own" gives each new token its row's own position (next_positions(mask): the
    number of real tokens so far); "padded" gives it the padded length (the column index), which
    is right only for the longest prompt. Returns {"tokens": list of lists, "logits": [B, K, V]}.
    """
    from labkit.batch import pad, position_ids_from_mask

    if next_position not in CACHE_POSITIONS:
        raise ContractError(f"unknown next_position {next_position!r}; fix: one of {CACHE_POSITIONS}")
    if max_new_tokens < 1:
        raise ContractError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    dev = _model_device(model)
    ids, mask = pad(prompts, pad_id, side="left")
    ids, mask = ids.to(dev), mask.to(dev)
    logits, past = model.forward_cached(ids, mask, position_ids_from_mask(mask))
    steps, out = [], []
    for _ in range(max_new_tokens):
        last = logits[:, -1].float()
        steps.append(last)
        nxt = last.argmax(-1)
        out.append(nxt)
        pos = next_positions(mask) if next_position == "own" else torch.full_like(nxt, mask.shape[1])
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        logits, past = model.forward_cached(nxt[:, None], mask, pos[:, None], past)
    tokens = torch.stack(out, 1).tolist()
    return {"tokens": tokens, "logits": torch.stack(steps, 1)}


@torch.no_grad()
def cross_document_sensitivity(model, doc_a: Sequence[int], doc_a_changed: Sequence[int], doc_b: Sequence[int],
                               block_diagonal: bool = True, restart_positions: bool = True) -> float:
    """max |change| of document B's logits when the document packed before it changes from A to A'.

    Packs [A, B] and [A', B] into one row each (labkit.batch.pack). With the block-diagonal mask
    and positions restarted per document the answer is exactly 0: B reads nothing of A.
    restart_positions=False numbers the whole row 0..T-1, so a longer A' also moves B's positions.
    """
    from labkit.batch import arange_positions, pack

    dev = _model_device(model)
    outs = []
    for a in (doc_a, doc_a_changed):
        row = pack([{"input_ids": list(a)}, {"input_ids": list(doc_b)}], max_len=len(a) + len(doc_b),
                   block_diagonal=block_diagonal)
        pos = row.position_ids if restart_positions else arange_positions(row.input_ids)
        logits = model(row.input_ids.to(dev), attention_mask=row.attention_mask.to(dev), position_ids=pos.to(dev))
        outs.append(logits[0, -len(doc_b):].float())
    return float((outs[0] - outs[1]).abs().max())


# ----------------------------------------------------------------------------- exercise checks (notebooks 04, 05)

def _fail(message: str):
    raise AssertionError(message)


def _as_long(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        _fail(f"{what} must return a torch tensor, got {type(x).__name__}")
    return x


def check_position_ids(fn) -> None:
    """Grade position_ids = fn(attention_mask [B,T]) on right-, left- and un-padded masks: every
    real token must get position_ids_from_mask's value (0, 1, 2, ... from the row's first real
    token). Padding may hold any value in [0, T). Raises AssertionError naming the misconception."""
    from labkit.batch import arange_positions, position_ids_from_mask

    cases = [torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
             torch.tensor([[0, 0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])]
    for mask in cases:
        got = _as_long(fn(mask.clone()), "position_ids")
        if tuple(got.shape) != tuple(mask.shape):
            _fail(f"position ids must have the mask's shape {tuple(mask.shape)}, got {tuple(got.shape)}")
        want, real, T = position_ids_from_mask(mask), mask.bool(), mask.shape[1]
        if torch.equal(got.long()[real], want[real]):
            if got.min() < 0 or got.max() >= T:
                _fail(f"padding positions must stay in [0, {T}) (an embedding table lookup); got {got.tolist()}. "
                      "Fix: clamp_min(0) or masked_fill the padding with 0")
            continue
        if torch.equal(got.long()[real], arange_positions(mask)[real]):
            _fail(f"with mask {mask.tolist()} you returned the column index (arange): a left-padded row's first real "
                  "token must sit at position 0, as when the prompt is alone. Fix: count real tokens, cumsum(mask) - 1")
        if torch.equal(got.long()[real], want[real] + 1):
            _fail("off by one: the first real token sits at position 0. Fix: cumsum(mask) - 1")
        _fail(f"mask {mask.tolist()}: expected positions {torch.where(real, want, 0).tolist()} on real tokens, got {got.tolist()}")


def check_next_positions(fn) -> None:
    """Grade fn(attention_mask [B,T]) -> [B]: the position of each row's NEXT token in cached decoding
    (its number of real tokens). Raises AssertionError naming the misconception."""
    cases = [torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1] * 6])]
    for mask in cases:
        got = _as_long(fn(mask.clone()), "next positions").long().flatten()
        want = next_positions(mask)
        if got.shape != want.shape:
            _fail(f"return one position per row: shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if torch.equal(got, want):
            continue
        if bool(got.eq(mask.shape[1]).all()):
            _fail(f"mask {mask.tolist()}: you gave every row the padded length {mask.shape[1]}. A left-padded row has fewer "
                  "real tokens: its next position is its own count, attention_mask.sum(-1)")
        if torch.equal(got, want - 1):
            _fail("off by one: that is the position of the last real token; the next one sits one further")
        _fail(f"mask {mask.tolist()}: expected next positions {want.tolist()}, got {got.tolist()}")


def check_block_mask(fn) -> None:
    """Grade fn(document_ids [T], -1 on padding) -> bool [T,T] (True = query t may attend key s)
    against labkit.batch.pack: causal inside a document, nothing across documents, and every
    padding query keeps one key (itself), so no softmax row is empty."""
    from labkit.batch import pack

    # each layout packs into two rows; the first (several documents) is padded to the second's length
    layouts = [([[11, 12, 13], [21, 22]], 7), ([[11], [21, 22, 23], [31, 32]], 8), ([[11, 12], [21, 22, 23, 24]], 6)]
    for docs, T in layouts:
        row = pack([{"input_ids": d} for d in docs] + [{"input_ids": list(range(40, 40 + T))}], max_len=T)
        doc_ids, want = row.document_ids[0].clone(), row.attention_mask[0]
        got = _as_long(fn(doc_ids.clone()), "the mask")
        T = doc_ids.shape[0]
        if tuple(got.shape) != (T, T):
            _fail(f"the mask is [T,T] = {(T, T)} for document_ids {doc_ids.tolist()}, got {tuple(got.shape)}")
        got = got.bool()
        real = doc_ids.ge(0)
        pair = real[:, None] & real[None, :]
        if (got & pair & torch.ones(T, T, dtype=torch.bool).triu(1)).any():
            _fail(f"document_ids {doc_ids.tolist()}: a token reads a LATER token. Fix: AND with the causal mask (lower triangle)")
        cross = doc_ids[:, None].ne(doc_ids[None, :]) & pair
        if (got & cross).any():
            _fail(f"document_ids {doc_ids.tolist()}: a later document can read an earlier one (cross-document attention). "
                  "Fix: allow only pairs with the same document id")
        if not torch.equal(got[real][:, real], want[real][:, real]):
            _fail(f"document_ids {doc_ids.tolist()}: inside a document every earlier token (and itself) must be readable; "
                  f"expected {want[real][:, real].int().tolist()}")
        if (got[real] & ~real[None, :]).any():
            _fail("a real token attends to padding. Fix: padding keys are closed to real queries")
        if not got[~real].any(-1).all():
            _fail("a padding query has no key at all: softmax over an empty row is 0/0 (NaN). Fix: let padding attend to itself")


def check_sft_labels(fn, pad_id: int = 2) -> None:
    """Grade labels = fn(input_ids, attention_mask, assistant_mask) (all [B,T], right padding with
    pad_id == the EOS id 2): the assistant's tokens, its <eos> included, are targets; prompt and
    padding are IGNORE. Raises AssertionError naming the misconception (masking by pad id hides EOS)."""
    eos = 2
    rows = [([5, 210, 141, 142, 6, 142, 141, eos], [0, 0, 0, 0, 0, 1, 1, 1]),
            ([5, 213, 160, 6, 142, eos], [0, 0, 0, 0, 1, 1])]
    T = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), T), pad_id)
    attn = torch.zeros(len(rows), T, dtype=torch.long)
    amask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, (r, m) in enumerate(rows):
        ids[b, :len(r)], attn[b, :len(r)], amask[b, :len(r)] = torch.tensor(r), 1, torch.tensor(m)
    got = _as_long(fn(ids.clone(), attn.clone(), amask.clone()), "labels")
    if tuple(got.shape) != tuple(ids.shape):
        _fail(f"labels must have the shape of input_ids {tuple(ids.shape)}, got {tuple(got.shape)}")
    want = torch.where(amask.bool() & attn.bool(), ids, torch.full_like(ids, IGNORE))
    if torch.equal(got.long(), want):
        return
    if torch.equal(got[:, :-1].long(), want[:, 1:]):
        _fail("the labels are shifted by one: with a loss that shifts (causal_lm_loss, transformers) labels stay aligned "
              "with input_ids")
    real_eos = ids.eq(eos) & attn.bool() & amask.bool()
    if bool(got[real_eos].eq(IGNORE).all()) and pad_id == eos:
        _fail("every real <eos> has label -100: you masked padding by token id, and here pad == eos, so the model never "
              "learns to stop. Fix: mask padding with attention_mask == 0, not input_ids == pad_id")
    if bool(got[attn.bool() & ~amask.bool()].ne(IGNORE).any()):
        _fail("prompt tokens are targets: the model would learn to write the user's turn. Fix: IGNORE where assistant_mask is 0")
    if bool(got[~attn.bool()].ne(IGNORE).any()):
        _fail("padding positions are targets (supervised padding). Fix: IGNORE where attention_mask is 0")
    _fail(f"expected labels {want.tolist()}, got {got.tolist()}")



# ----------------------------------------------------------------------------- what a batch trains (notebook 03)

def _field(batch, name: str):
    if isinstance(batch, dict):
        return batch.get(name)
    return getattr(batch, name, None)


def trained_pairs(batch, shift: bool = True) -> list[tuple[tuple[int, ...], int]]:
    """Every (context, target) pair a batch trains under a causal LM loss, as token tuples.

    batch: a Batch or a dict with input_ids, labels and an optional [B,T] attention_mask (all [B,T]).
    The logit at position t reads the real tokens at positions <= t and is trained on
    labels[t+1] (shift=True, transformers' rule) or labels[t] (shift=False) when that label is not
    IGNORE. A logit that sits on padding reads nothing: its context is (). Returned row by row.
    """
    ids, labels, mask = _field(batch, "input_ids"), _field(batch, "labels"), _field(batch, "attention_mask")
    if not isinstance(ids, torch.Tensor) or not isinstance(labels, torch.Tensor) or ids.dim() != 2 or ids.shape != labels.shape:
        raise ContractError("trained_pairs needs input_ids and labels, two [B,T] tensors of the same shape; got "
                            f"{type(ids).__name__} and {type(labels).__name__}")
    if mask is None:
        mask = torch.ones_like(ids)
    if mask.shape != ids.shape:
        raise ContractError(f"trained_pairs reads a [B,T] padding mask, got attention_mask {tuple(mask.shape)}")
    targets = next_token_targets(labels, shift)
    pairs = []
    for b in range(ids.shape[0]):
        real = mask[b].bool().tolist()
        row, y = ids[b].tolist(), targets[b].tolist()
        for t in range(ids.shape[1]):
            if y[t] != IGNORE:
                context = tuple(row[s] for s in range(t + 1) if real[s]) if real[t] else ()
                pairs.append((context, int(y[t])))
    return pairs


def record_pairs(records: Sequence[Sequence[int]]) -> list[tuple[tuple[int, ...], int]]:
    """The next-token pairs of whole records: (x[:t+1], x[t+1]) for t = 0 .. len(x)-2 (what a
    correct pipeline trains on each record, its last token, e.g. <eos>, included)."""
    return [(tuple(int(i) for i in x[:t + 1]), int(x[t + 1])) for x in records for t in range(len(x) - 1)]


def check_fixed_batch(records: Sequence[Sequence[int]], batch, eos_id: int | None = None) -> None:
    """Grade a repaired batch for a loss that SHIFTS: it must train exactly the next-token pairs of
    `records` (record_pairs), the last one of each record (its <eos>) included, and nothing else.

    Accepts any correct layout (right or left padding, any pad id, the first label -100 or not, a
    Batch or a dict with input_ids, attention_mask, labels). Raises AssertionError naming the
    misconception: labels only, a double shift, supervised padding, or the fix that copies the
    colleague's input_ids (cut before the last token), so that no logit is trained on <eos>.
    """
    from collections import Counter

    from labkit.checks import audit

    if isinstance(batch, torch.Tensor):
        _fail("return the whole repaired batch (input_ids, attention_mask, labels), not labels alone: the colleague's "
              "input_ids stop one token early, so no labels can make them train the last next-token pair")
    ids, labels = _field(batch, "input_ids"), _field(batch, "labels")
    if ids is None or labels is None:
        _fail(f"return a Batch or a dict with input_ids, attention_mask and labels; got {type(batch).__name__}")
    mask = _field(batch, "attention_mask")
    if mask is not None and mask.dim() != 2:
        _fail(f"use a [B,T] padding attention_mask here, got {tuple(mask.shape)}")
    codes = {f.code: f for f in audit(batch, loss_shifts=True)}
    for code in ("double_shift", "supervised_padding", "no_targets", "arange_positions_with_left_padding"):
        if code in codes:
            _fail(f"audit() still finds: {codes[code]}")
    got, want = Counter(trained_pairs(batch, shift=True)), Counter(record_pairs(records))
    if got == want:
        return
    missing, extra = want - got, got - want
    name = "<eos>" if eos_id is not None else "the last token"
    finals = Counter((tuple(int(i) for i in x[:-1]), int(x[-1])) for x in records)
    if not extra and missing == finals:
        _fail(f"no logit is trained to predict the final token of a record ({name}): every other pair is trained, but the "
              "model never learns to stop. Copying input_ids keeps the colleague's cut: the external builder dropped the "
              "last token from input_ids. Fix: rebuild each full record (its first input token followed by its real "
              "labels) and use it as input_ids AND labels, with -100 on padding")
    if any(ctx and y == ctx[-1] for ctx, y in extra):
        _fail("some logits are trained on the token they just read (a copy task): with a loss that shifts, labels are "
              "aligned with input_ids, not shifted by hand")
    if any(not ctx for ctx, _ in extra):
        _fail("a logit that sits on padding has a target (it reads nothing). Fix: -100 on the first real token's label "
              "when you pad on the left, and on every padding position")
    example = next(iter(missing or extra))
    what = "missing" if missing else "not a pair of the records"
    _fail(f"the batch trains {sum(got.values())} next-token pairs, the records have {sum(want.values())}; e.g. "
          f"context {list(example[0])} -> target {example[1]} is {what}. Every prefix of a record must predict its next "
          "token, the last one included")


# ----------------------------------------------------------------------------- teacher forcing vs free running (notebook 07)

@torch.no_grad()
def teacher_forced_predictions(model, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Greedy choices with GOLD prefixes, as training sees them: ids [B,T] -> [B, T-start].

    Column k is argmax p(x_{start+k} | gold x_{<start+k}); one parallel forward for all positions.
    """
    if ids.dim() != 2 or not 1 <= start < ids.shape[1]:
        raise ContractError(f"need ids [B,T] and 1 <= start < T, got {tuple(ids.shape)} and start={start}")
    logits = model(ids.to(next(model.parameters()).device))
    return logits[:, start - 1:-1].argmax(-1).cpu()


@torch.no_grad()
def free_running_predictions(model, prompts: torch.Tensor, max_new_tokens: int, pad_id: int) -> torch.Tensor:
    """Greedy decoding from the model's OWN prefixes: prompts [B,P] -> [B, max_new_tokens].

    Token k is argmax p(x | prompt, x̂_1..x̂_{k-1}), the x̂ being the model's earlier choices.
    """
    if prompts.dim() != 2:
        raise ContractError(f"prompts must be [B,P] (all the same length), got {tuple(prompts.shape)}")
    return torch.tensor(generate(model, prompts.tolist(), max_new_tokens, pad_id), dtype=torch.long)


def position_accuracy(predictions: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Accuracy at each answer position: [B,n] vs [B,n] -> [n] (mean over rows)."""
    if predictions.shape != gold.shape:
        raise ContractError(f"predictions {tuple(predictions.shape)} and gold {tuple(gold.shape)} must have one shape")
    return predictions.cpu().eq(gold.cpu()).float().mean(0)


def earlier_error(errors: torch.Tensor) -> torch.Tensor:
    """Bool [B,n]: some position BEFORE t (strictly) is an error; position 0 has no earlier one."""
    errors = errors.bool()
    before = errors.cummax(1).values
    return torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], 1)


def compounding(errors: torch.Tensor) -> dict:
    """P(error at t | an earlier error) vs P(error at t | clean prefix), pooled over positions.

    errors bool [B,n]. Each (row, t) is counted once, under the condition its own prefix meets:
    after_error = sum(e & E) / sum(E), clean = sum(e & ~E) / sum(~E), E = earlier_error(e).
    Returns {"after_error", "clean", "n_after_error", "n_clean"} (nan when a condition never occurs).
    """
    if errors.dim() != 2:
        raise ContractError(f"errors must be [B, n] booleans, got {tuple(errors.shape)}")
    e = errors.bool().cpu()
    E = earlier_error(e)
    n_after, n_clean = int(E.sum()), int((~E).sum())
    return {"after_error": float((e & E).sum()) / n_after if n_after else float("nan"),
            "clean": float((e & ~E).sum()) / n_clean if n_clean else float("nan"),
            "n_after_error": n_after, "n_clean": n_clean}


@torch.no_grad()
def after_injected_slip(model, ids: torch.Tensor, start: int, candidates: torch.Tensor,
                        generator: torch.Generator | None = None) -> dict:
    """Plant one wrong token in each gold row and read the model's very next (greedy) choice.

    ids [B,T] gold rows whose answer starts at `start`; candidates [C] the ids an answer token can
    take (every answer token must be one of them). Per row a position k is drawn uniformly from
    [start, T-2] (an answer token followed by another) and its token replaced by a different
    candidate, uniformly. One forward over the corrupted rows; the prefix up to k is gold except
    at k. Returns {"slipped": corrupted ids [B,T], "k": [B], "next": argmax p(x_{k+1} | slipped
    prefix) [B]}: compare "next" with the gold x_{k+1} (recovered) or with the continuation of the
    planted token (derailed).
    """
    if ids.dim() != 2 or not 1 <= start <= ids.shape[1] - 2:
        raise ContractError(f"need ids [B,T] and 1 <= start <= T-2 (an answer of >= 2 tokens), got {tuple(ids.shape)} "
                            f"and start={start}")
    ids = ids.cpu()
    cand = candidates.cpu().long().flatten()
    if cand.numel() < 2:
        raise ContractError("need at least 2 candidate tokens to plant a wrong one")
    B, T = ids.shape
    k = torch.randint(start, T - 1, (B,), generator=generator)
    rows = torch.arange(B)
    match = ids[rows, k][:, None].eq(cand[None, :])
    if not bool(match.any(1).all()):
        raise ContractError("an answer token is not among the candidates; fix: pass every id an answer token can take")
    offset = torch.randint(1, cand.numel(), (B,), generator=generator)
    slipped = ids.clone()
    slipped[rows, k] = cand[(match.float().argmax(1) + offset) % cand.numel()]
    logits = model(slipped.to(next(model.parameters()).device))
    return {"slipped": slipped, "k": k, "next": logits[rows.to(logits.device), k.to(logits.device)].argmax(-1).cpu()}


# ----------------------------------------------------------------------------- scheduled sampling (notebook 07)

ALPHA_SHAPES = ("constant", "linear", "exponential", "inverse_sigmoid")


def alpha_schedule(step: int, total_steps: int, shape: str = "linear", alpha_min: float = 0.5,
                   sharpness: float = 10.0) -> float:
    """alpha = the probability of feeding the GOLD token at a training step (1 = teacher forcing).

    With u = step / total_steps in [0, 1], alpha falls from 1 to alpha_min:
    linear 1 - (1 - a_min) u; exponential a_min^u; inverse_sigmoid a_min + (1 - a_min) g(u), g a
    logistic step centred at u = 0.5 rescaled so g(0) = 1, g(1) = 0; constant: a_min throughout.
    """
    if shape not in ALPHA_SHAPES:
        raise ContractError(f"unknown schedule shape {shape!r}; fix: one of {ALPHA_SHAPES}")
    if not 0.0 <= alpha_min <= 1.0:
        raise ContractError(f"alpha_min is a probability (of keeping the gold token), got {alpha_min}")
    if total_steps < 1 or step < 0:
        raise ContractError(f"need total_steps >= 1 and step >= 0, got {total_steps}, {step}")
    import math

    u = min(step / total_steps, 1.0)
    if shape == "constant":
        return float(alpha_min)
    if shape == "linear":
        return float(1 - (1 - alpha_min) * u)
    if shape == "exponential":
        return float(alpha_min ** u) if alpha_min > 0 else float(u == 0)
    f = lambda v: 1.0 / (1.0 + math.exp(sharpness * (v - 0.5)))  # noqa: E731
    g = (f(u) - f(1.0)) / (f(0.0) - f(1.0))
    return float(alpha_min + (1 - alpha_min) * g)


def scheduled_sampling_inputs(input_ids: torch.Tensor, predictions: torch.Tensor, alpha: float, start: int,
                              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix gold and model tokens in the INPUT; the labels are not touched (targets stay gold).

    input_ids [B,T]; predictions [B,T]: predictions[:, t] is the model's token for position t+1
    (the choice made by logit t). Each input token at t >= start is kept with probability alpha,
    else replaced by predictions[:, t-1]; tokens before `start` (the prompt) are never replaced.
    Returns (mixed [B,T], replaced bool [B,T]).
    """
    if input_ids.shape != predictions.shape or input_ids.dim() != 2:
        raise ContractError(f"input_ids and predictions must both be [B,T], got {tuple(input_ids.shape)} and {tuple(predictions.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ContractError(f"alpha is the probability of keeping the gold token, in [0, 1]; got {alpha}")
    if not 1 <= start <= input_ids.shape[1]:
        raise ContractError(f"start must lie in [1, T={input_ids.shape[1]}] (position 0 has no prediction), got {start}")
    coin = torch.rand(input_ids.shape, generator=generator).to(input_ids.device) >= alpha
    coin[:, :start] = False
    model_tokens = torch.cat([input_ids[:, :1], predictions[:, :-1]], 1)     # the token proposed for position t
    mixed = torch.where(coin, model_tokens, input_ids)
    return mixed, coin & mixed.ne(input_ids)


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
    return flat.view(probs.shape[:-1]).to(logits.device)


SS_MODES = ("parallel", "sequential")


def scheduled_sampling_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, alpha: float, start: int,
                            generator: torch.Generator | None = None, mode: str = "parallel",
                            temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss on a prefix where each answer token is, with probability 1 - alpha, the
    model's own choice x̂ ~ p(. | prefix) instead of the gold token. Targets stay gold.

    mode "parallel": one no-grad pass over the GOLD prefix proposes every token at once, then one
    pass with gradients over the mixed input (2 forwards a step). mode "sequential": tokens are
    proposed left to right from the already mixed prefix (T - start extra forwards), as in
    free-running generation. temperature 0 = greedy proposals. Returns (loss, mixed input [B,T]).
    """
    if mode not in SS_MODES:
        raise ContractError(f"unknown scheduled-sampling mode {mode!r}; fix: one of {SS_MODES}")
    if finite(temperature, "temperature") < 0:
        raise ContractError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if mode == "parallel":
        with torch.no_grad():
            proposals = _choose(model(input_ids), temperature, generator)
        mixed, _ = scheduled_sampling_inputs(input_ids, proposals, alpha, start, generator)
    else:
        coin = torch.rand(input_ids.shape, generator=generator).to(input_ids.device) >= alpha
        mixed = input_ids.clone()
        with torch.no_grad():
            for t in range(start, input_ids.shape[1]):
                if bool(coin[:, t].any()):
                    proposal = _choose(model(mixed[:, :t])[:, -1], temperature, generator)
                    mixed[:, t] = torch.where(coin[:, t], proposal, mixed[:, t])
    return causal_lm_loss(model(mixed), labels), mixed


# ----------------------------------------------------------------------------- exercise checks (notebook 07)

def check_compounding(fn) -> None:
    """Grade fn(errors bool [B,n]) -> (p_after_error, p_clean) against compounding(). Raises
    AssertionError naming the misconception (the error itself counted as 'earlier', wrong denominator)."""
    cases = [torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.bool),
             torch.rand(64, 12, generator=torch.Generator().manual_seed(5)) < 0.2]
    for e in cases:
        got = fn(e.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise AssertionError("return two numbers: (P(error | an earlier error), P(error | clean prefix))")
        want = compounding(e)
        after, clean = float(got[0]), float(got[1])
        if abs(after - want["after_error"]) < 1e-6 and abs(clean - want["clean"]) < 1e-6:
            continue
        if abs(after - want["clean"]) < 1e-6 and abs(clean - want["after_error"]) < 1e-6:
            raise AssertionError("the two numbers are swapped: first P(error | an earlier error), then P(error | clean prefix)")
        inclusive = e.cummax(1).values
        if abs(clean) < 1e-9 and abs(after - float((e & inclusive).sum()) / float(inclusive.sum())) < 1e-6:
            raise AssertionError("P(error | clean prefix) came out 0: you counted position t's own error as an 'earlier' "
                                 "error. The condition looks only at positions before t: shift the running max by one")
        total = e.numel()
        if abs(after - float((e & earlier_error(e)).sum()) / total) < 1e-6:
            raise AssertionError("you divided by all B*n positions; a conditional probability divides by the number of "
                                 "positions that meet the condition (those with an earlier error, or with a clean prefix)")
        raise AssertionError(f"errors {e.int().tolist() if e.numel() <= 16 else '(random 64x12)'}: expected "
                             f"({want['after_error']:.4f}, {want['clean']:.4f}), got ({after:.4f}, {clean:.4f})")


def check_scheduled_mix(fn) -> None:
    """Grade mixed = fn(input_ids [B,T], predictions [B,T], alpha, start, generator) against the
    contract of scheduled_sampling_inputs: prompt untouched, token t replaced (prob 1 - alpha) by
    the model's choice for t, i.e. predictions[:, t-1]. Raises AssertionError naming the misconception."""
    B, T, start = 400, 12, 4
    g = torch.Generator().manual_seed(0)
    gold = torch.randint(10, 20, (B, T), generator=g)
    preds = torch.randint(30, 40, (B, T), generator=g) + 10 * torch.arange(T)   # never gold; the column is readable
    def run(alpha):
        out = fn(gold.clone(), preds.clone(), alpha, start, torch.Generator().manual_seed(1))
        out = out[0] if isinstance(out, tuple) else out
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, T):
            raise AssertionError(f"return the mixed input_ids, a [B,T] tensor like input_ids, got {type(out).__name__}")
        return out
    same = run(1.0)
    if not torch.equal(same, gold):
        if bool(same.ne(gold).float().mean() > 0.5):
            raise AssertionError("alpha = 1 replaced tokens: alpha is the probability of keeping the GOLD token "
                                 "(alpha = 1 is plain teacher forcing)")
        raise AssertionError("alpha = 1 must return the gold input unchanged (teacher forcing)")
    allm = run(0.0)
    if bool(allm[:, :start].ne(gold[:, :start]).any()):
        raise AssertionError("prompt tokens (before `start`) were replaced: the prompt is given, only answer tokens are "
                             "ever the model's own")
    if torch.equal(allm[:, start:], preds[:, start:]):
        raise AssertionError("position t got predictions[:, t], the model's guess for t+1: the token proposed for "
                             "position t is made by logit t-1, so use predictions[:, t-1]")
    if not torch.equal(allm[:, start:], preds[:, start - 1:-1]):
        raise AssertionError("with alpha = 0 every answer input t >= start must be the model's token predictions[:, t-1]")
    half = run(0.7)
    rate = float(half[:, start:].ne(gold[:, start:]).float().mean())
    if abs(rate - 0.3) > 0.03:
        raise AssertionError(f"with alpha = 0.7 you replaced {rate:.2f} of the answer tokens; expected about 0.30 "
                             "(each token independently, probability 1 - alpha)")
    moved = half[:, start:].ne(gold[:, start:])
    if not torch.equal(half[:, start:][moved], preds[:, start - 1:-1][moved]):
        raise AssertionError("a replaced token must be the model's token for that position, predictions[:, t-1]")
