"""Exercise graders for labkit.paradigms.autoregressive (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from labkit.batch import arange_positions, pack, position_ids_from_mask
from labkit.checks import audit
from labkit.contracts import IGNORE
from labkit.exercises.common import fail, require_tensor
from labkit.paradigms.autoregressive import (_field, compounding, earlier_error, next_positions, record_pairs,
                                             trained_pairs)


def check_position_ids(fn) -> None:
    """Grade position_ids = fn(attention_mask [B,T]) on right-, left- and un-padded masks: every
    real token must get position_ids_from_mask's value (0, 1, 2, ... from the row's first real
    token). Padding may hold any value in [0, T). Raises AssertionError naming the misconception."""

    cases = [torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
             torch.tensor([[0, 0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])]
    for mask in cases:
        got = require_tensor(fn(mask.clone()), "position_ids")
        if tuple(got.shape) != tuple(mask.shape):
            fail(f"position ids must have the mask's shape {tuple(mask.shape)}, got {tuple(got.shape)}")
        want, real, T = position_ids_from_mask(mask), mask.bool(), mask.shape[1]
        if torch.equal(got.long()[real], want[real]):
            if got.min() < 0 or got.max() >= T:
                fail(f"padding positions must stay in [0, {T}) (an embedding table lookup); got {got.tolist()}. "
                      "Fix: clamp_min(0) or masked_fill the padding with 0")
            continue
        if torch.equal(got.long()[real], arange_positions(mask)[real]):
            fail(f"with mask {mask.tolist()} you returned the column index (arange): a left-padded row's first real "
                  "token must sit at position 0, as when the prompt is alone. Fix: count real tokens, cumsum(mask) - 1")
        if torch.equal(got.long()[real], want[real] + 1):
            fail("off by one: the first real token sits at position 0. Fix: cumsum(mask) - 1")
        fail(f"mask {mask.tolist()}: expected positions {torch.where(real, want, 0).tolist()} on real tokens, got {got.tolist()}")


def check_next_positions(fn) -> None:
    """Grade fn(attention_mask [B,T]) -> [B]: the position of each row's NEXT token in cached decoding
    (its number of real tokens). Raises AssertionError naming the misconception."""
    cases = [torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1] * 6])]
    for mask in cases:
        got = require_tensor(fn(mask.clone()), "next positions").long().flatten()
        want = next_positions(mask)
        if got.shape != want.shape:
            fail(f"return one position per row: shape {tuple(want.shape)}, got {tuple(got.shape)}")
        if torch.equal(got, want):
            continue
        if bool(got.eq(mask.shape[1]).all()):
            fail(f"mask {mask.tolist()}: you gave every row the padded length {mask.shape[1]}. A left-padded row has fewer "
                  "real tokens: its next position is its own count, attention_mask.sum(-1)")
        if torch.equal(got, want - 1):
            fail("off by one: that is the position of the last real token; the next one sits one further")
        fail(f"mask {mask.tolist()}: expected next positions {want.tolist()}, got {got.tolist()}")


def check_block_mask(fn) -> None:
    """Grade fn(document_ids [T], -1 on padding) -> bool [T,T] (True = query t may attend key s)
    against labkit.batch.pack: causal inside a document, nothing across documents, and every
    padding query keeps one key (itself), so no softmax row is empty."""

    # each layout packs into two rows; the first (several documents) is padded to the second's length
    layouts = [([[11, 12, 13], [21, 22]], 7), ([[11], [21, 22, 23], [31, 32]], 8), ([[11, 12], [21, 22, 23, 24]], 6)]
    for docs, T in layouts:
        row = pack([{"input_ids": d} for d in docs] + [{"input_ids": list(range(40, 40 + T))}], max_len=T)
        doc_ids, want = row.document_ids[0].clone(), row.attention_mask[0]
        got = require_tensor(fn(doc_ids.clone()), "the mask")
        T = doc_ids.shape[0]
        if tuple(got.shape) != (T, T):
            fail(f"the mask is [T,T] = {(T, T)} for document_ids {doc_ids.tolist()}, got {tuple(got.shape)}")
        got = got.bool()
        real = doc_ids.ge(0)
        pair = real[:, None] & real[None, :]
        if (got & pair & torch.ones(T, T, dtype=torch.bool).triu(1)).any():
            fail(f"document_ids {doc_ids.tolist()}: a token reads a LATER token. Fix: AND with the causal mask (lower triangle)")
        cross = doc_ids[:, None].ne(doc_ids[None, :]) & pair
        if (got & cross).any():
            fail(f"document_ids {doc_ids.tolist()}: a later document can read an earlier one (cross-document attention). "
                  "Fix: allow only pairs with the same document id")
        if not torch.equal(got[real][:, real], want[real][:, real]):
            fail(f"document_ids {doc_ids.tolist()}: inside a document every earlier token (and itself) must be readable; "
                  f"expected {want[real][:, real].int().tolist()}")
        if (got[real] & ~real[None, :]).any():
            fail("a real token attends to padding. Fix: padding keys are closed to real queries")
        if not got[~real].any(-1).all():
            fail("a padding query has no key at all: softmax over an empty row is 0/0 (NaN). Fix: let padding attend to itself")


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
    got = require_tensor(fn(ids.clone(), attn.clone(), amask.clone()), "labels")
    if tuple(got.shape) != tuple(ids.shape):
        fail(f"labels must have the shape of input_ids {tuple(ids.shape)}, got {tuple(got.shape)}")
    want = torch.where(amask.bool() & attn.bool(), ids, torch.full_like(ids, IGNORE))
    if torch.equal(got.long(), want):
        return
    if torch.equal(got[:, :-1].long(), want[:, 1:]):
        fail("the labels are shifted by one: with a loss that shifts (causal_lm_loss, transformers) labels stay aligned "
              "with input_ids")
    real_eos = ids.eq(eos) & attn.bool() & amask.bool()
    if bool(got[real_eos].eq(IGNORE).all()) and pad_id == eos:
        fail("every real <eos> has label -100: you masked padding by token id, and here pad == eos, so the model never "
              "learns to stop. Fix: mask padding with attention_mask == 0, not input_ids == pad_id")
    if bool(got[attn.bool() & ~amask.bool()].ne(IGNORE).any()):
        fail("prompt tokens are targets: the model would learn to write the user's turn. Fix: IGNORE where assistant_mask is 0")
    if bool(got[~attn.bool()].ne(IGNORE).any()):
        fail("padding positions are targets (supervised padding). Fix: IGNORE where attention_mask is 0")
    fail(f"expected labels {want.tolist()}, got {got.tolist()}")


def check_fixed_batch(records: Sequence[Sequence[int]], batch, eos_id: int | None = None) -> None:
    """Grade a repaired batch for a loss that SHIFTS: it must train exactly the next-token pairs of
    `records` (record_pairs), the last one of each record (its <eos>) included, and nothing else.

    Accepts any correct layout (right or left padding, any pad id, the first label -100 or not, a
    Batch or a dict with input_ids, attention_mask, labels). Raises AssertionError naming the
    misconception: labels only, a double shift, supervised padding, or the fix that copies the
    colleague's input_ids (cut before the last token), so that no logit is trained on <eos>.
    """


    if isinstance(batch, torch.Tensor):
        fail("return the whole repaired batch (input_ids, attention_mask, labels), not labels alone: the colleague's "
              "input_ids stop one token early, so no labels can make them train the last next-token pair")
    ids, labels = _field(batch, "input_ids"), _field(batch, "labels")
    if ids is None or labels is None:
        fail(f"return a Batch or a dict with input_ids, attention_mask and labels; got {type(batch).__name__}")
    mask = _field(batch, "attention_mask")
    if mask is not None and mask.dim() != 2:
        fail(f"use a [B,T] padding attention_mask here, got {tuple(mask.shape)}")
    codes = {f.code: f for f in audit(batch, loss_shifts=True)}
    for code in ("double_shift", "supervised_padding", "no_targets", "arange_positions_with_left_padding"):
        if code in codes:
            fail(f"audit() still finds: {codes[code]}")
    got, want = Counter(trained_pairs(batch, shift=True)), Counter(record_pairs(records))
    if got == want:
        return
    missing, extra = want - got, got - want
    name = "<eos>" if eos_id is not None else "the last token"
    finals = Counter((tuple(int(i) for i in x[:-1]), int(x[-1])) for x in records)
    if not extra and missing == finals:
        fail(f"no logit is trained to predict the final token of a record ({name}): every other pair is trained, but the "
              "model never learns to stop. Copying input_ids keeps the colleague's cut: the external builder dropped the "
              "last token from input_ids. Fix: rebuild each full record (its first input token followed by its real "
              "labels) and use it as input_ids AND labels, with -100 on padding")
    if any(ctx and y == ctx[-1] for ctx, y in extra):
        fail("some logits are trained on the token they just read (a copy task): with a loss that shifts, labels are "
              "aligned with input_ids, not shifted by hand")
    if any(not ctx for ctx, _ in extra):
        fail("a logit that sits on padding has a target (it reads nothing). Fix: -100 on the first real token's label "
              "when you pad on the left, and on every padding position")
    example = next(iter(missing or extra))
    what = "missing" if missing else "not a pair of the records"
    fail(f"the batch trains {sum(got.values())} next-token pairs, the records have {sum(want.values())}; e.g. "
          f"context {list(example[0])} -> target {example[1]} is {what}. Every prefix of a record must predict its next "
          "token, the last one included")


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
    per_row = moved.sum(1).double()                  # independent coins: Binomial(T - start, 0.3) per row
    want_var = (T - start) * 0.3 * 0.7
    if float(per_row.var()) > 2.0 * want_var:
        raise AssertionError(f"the replaced tokens cluster by row (variance of replacements per row {float(per_row.var()):.1f}, "
                             f"independent tokens give about {want_var:.1f}): draw one coin per TOKEN, not one per sequence")


def check_scheduled_mix_on(fn, input_ids, predictions, alpha: float, start: int, seed: int = 3) -> None:
    """Grade fn on given rows (e.g. a notebook's validation batch) by behaviour, so that every correct way
    of drawing the coins passes (rand >= alpha, rand < 1 - alpha, bernoulli, ...): the prompt is kept,
    each changed token is the model's token for that position (predictions[:, t-1]), and among the
    answer positions where that token differs from the gold one the share replaced is 1 - alpha within
    4 binomial standard errors. Raises AssertionError naming the misconception."""
    out = fn(input_ids.clone(), predictions.clone(), alpha, start, torch.Generator().manual_seed(seed))
    out = out[0] if isinstance(out, tuple) else out
    if not isinstance(out, torch.Tensor) or out.shape != input_ids.shape:
        raise AssertionError(f"return the mixed input_ids with the shape {tuple(input_ids.shape)} of input_ids")
    if not torch.equal(out[:, :start], input_ids[:, :start]):
        raise AssertionError("prompt tokens (before `start`) were replaced; the prompt is never the model's")
    proposed = torch.cat([input_ids[:, :1], predictions[:, :-1]], 1)
    changed = out.ne(input_ids)
    if not torch.equal(out[changed], proposed[changed]):
        raise AssertionError("a changed token must be the model's token for that position, predictions[:, t-1]")
    can = proposed[:, start:].ne(input_ids[:, start:])          # a replacement is visible only where they differ
    n = int(can.sum())
    if n == 0:
        return
    rate = float(changed[:, start:][can].float().mean())
    se = (alpha * (1 - alpha) / n) ** 0.5
    if abs(rate - (1 - alpha)) > 4 * se + 1e-9:
        raise AssertionError(f"on these rows you replaced {rate:.2f} of the answer tokens that could change; expected "
                             f"about {1 - alpha:.2f} (keep the gold token with probability alpha = {alpha})")
