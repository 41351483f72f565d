"""Autoregressive modelling: p(x) = prod_t p(x_t | x_<t), trained by next-token cross-entropy.

Two shift conventions, never both:
- external: the builder shifts (input_ids = x[:-1], labels = x[1:]); the loss does not.
- internal: labels = input_ids; the loss compares logit t with label t+1 (transformers' rule).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from labkit.batch import arange_positions, pack, pad, position_ids_from_mask
from labkit.contracts import IGNORE, ContractError, count, finite
from labkit.dist import all_reduce_sum
from labkit.reduce import DP_REDUCTIONS, REDUCTIONS, rank_loss, reduce, token_cross_entropy

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


def completion_example(prompt_ids: Sequence[int], completion_ids: Sequence[int], train_on_prompt: bool = False,
                       max_len: int | None = None) -> dict:
    """Prompt + completion -> dict(input_ids, labels, prompt_len), internal-shift labels.

    The prompt is context; only completion tokens are targets (labels IGNORE on the prompt)
    unless train_on_prompt=True, which also trains the model to write the user's text.
    max_len: keep the first max_len tokens (a collator's right truncation). An example whose
    prompt fills max_len keeps no completion token, so no answer target (a token mean over it
    is 0/0): refused with a ContractError naming the fixes.
    """
    prompt, completion = [int(i) for i in prompt_ids], [int(i) for i in completion_ids]
    if not completion:
        raise ContractError("completion is empty: nothing to learn; fix: drop the record or check truncation")
    labels = (list(prompt) if train_on_prompt else [IGNORE] * len(prompt)) + list(completion)
    ids = prompt + completion
    if max_len is not None:
        max_len = count(max_len, "max_len")
        if len(prompt) >= max_len:
            raise ContractError(f"truncation to max_len={max_len} keeps the {len(prompt)}-token prompt and none of the "
                                f"{len(completion)} answer tokens: the example has no answer target (a token mean over it "
                                "is 0/0 = NaN). Fix: drop the example, truncate the prompt from the left (keep its last "
                                "tokens), or raise max_len")
        ids, labels = ids[:max_len], labels[:max_len]
    return {"input_ids": ids, "labels": labels, "prompt_len": len(prompt)}


def next_token_targets(labels: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """The lab's one shift rule: the target of each logit position, [B,T] (IGNORE where none).

    shift=True: logit t predicts labels[t+1]; the last logit has no target. shift=False: labels[t]
    (the builder already shifted). Every loss and probe that aligns logits with tokens calls this.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE) if shift else labels


def causal_lm_token_losses(logits: torch.Tensor, labels: torch.Tensor, shift: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token losses and their mask, both [B,T].

    shift=True: logit t is scored against labels[t+1] (labels padded on the right with IGNORE, so
    the last logit has no target), as transformers' ForCausalLMLoss. shift=False: against labels[t].
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ContractError(f"causal LM loss needs logits [B,T,V] and labels [B,T] with the same B,T; got "
                            f"{tuple(logits.shape)} and {tuple(labels.shape)}. Fix: with shift=True pass unshifted labels "
                            "of the same length as input_ids")
    targets = next_token_targets(labels, shift)
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
    return reduce(losses, mask, reduction=reduction, weights=weights, denominator=denominator).value


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

    dev = _model_device(model)
    outs = []
    for a in (doc_a, doc_a_changed):
        row = pack([{"input_ids": list(a)}, {"input_ids": list(doc_b)}], max_len=len(a) + len(doc_b),
                   block_diagonal=block_diagonal)
        pos = row.position_ids if restart_positions else arange_positions(row.input_ids)
        logits = model(row.input_ids.to(dev), attention_mask=row.attention_mask.to(dev), position_ids=pos.to(dev))
        outs.append(logits[0, -len(doc_b):].float())
    return float((outs[0] - outs[1]).abs().max())


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


def teacher_forced_accuracy(model, rows: torch.Tensor, start: int) -> float:
    """Teacher-forced accuracy of `model` on rows [B,T], mean over the answer positions start..T-1."""
    return position_accuracy(teacher_forced_predictions(model, rows, start), rows[:, start:].cpu()).mean().item()


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


# ----------------------------------------------------------------------------- one data-parallel step (notebook 06)

def data_parallel_step(rank: int, world_size: int, model: torch.nn.Module, shards: Sequence[dict],
                       reductions: Sequence[str] = DP_REDUCTIONS) -> dict:
    """One data-parallel step of a causal LM on this rank's shard, as DDP does it, for each reduction.

    shards[rank]: dict of [B_r,T_r] tensors (input_ids, attention_mask, position_ids, labels).
    Each reduction (labkit.reduce.rank_loss): local loss -> backward -> gradients all-reduced (SUM) and
    divided by world_size (DDP's average). "global_count" all-reduces the target count first.
    Returns {"rank", "local_sum", "local_count", "global_sum", "global_count", "reductions": {reduction:
    {"loss", "grad" (flat averaged gradient, identical on every rank)}}}.
    """
    shard = shards[rank]
    model.eval()
    out: dict = {"rank": rank, "reductions": {}}
    for reduction in reductions:
        model.zero_grad(set_to_none=True)
        logits = model(shard["input_ids"], attention_mask=shard["attention_mask"], position_ids=shard["position_ids"])
        losses, mask = causal_lm_token_losses(logits, shard["labels"])
        local = torch.stack([(losses * mask).sum().detach().double(), mask.sum().double()])
        total = all_reduce_sum(local)
        loss = rank_loss(losses, mask, reduction, global_count=total[1], world_size=world_size).value
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        grad = all_reduce_sum(grad)
        out.update(local_sum=float(local[0]), local_count=int(local[1]), global_sum=float(total[0]),
                   global_count=int(total[1]))
        out["reductions"][reduction] = {"loss": float(loss.detach()), "grad": grad / world_size}
    return out
