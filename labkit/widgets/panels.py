"""The nine panels: a pure render function each (tests and notebooks call them directly) and a few
lines of Panel subclass (labkit.widgets.base) naming its controls. Render functions call the
library's maths (CE gradient and temperature push from paradigms.supervised, entropy from
paradigms.distillation, hard-negative share and repulsive share from paradigms.contrastive, the DPO
loss from paradigms.preference, differentiated by autograd); none re-derives it."""
from __future__ import annotations

import html as _html
from typing import Sequence

import ipywidgets as W
import torch

from labkit.batch import collate
from labkit.checks import audit, golden_shift_table
from labkit.contracts import IGNORE, ContractError
from labkit.data import RunningSumTask
from labkit.paradigms.autoregressive import (ALPHA_SHAPES, alpha_schedule, ar_example, causal_lm_loss,
                                             scheduled_sampling_inputs)
from labkit.paradigms.contrastive import hard_negative_share, repulsive_share
from labkit.paradigms.distillation import entropy as predictive_entropy
from labkit.paradigms.masked import bert_mask, delete_tokens, random_mask, sentinel_tokenizer, span_corrupt
from labkit.paradigms.mixture import expected_epochs, mixture_weights
from labkit.paradigms.preference import dpo_loss
from labkit.paradigms.supervised import competitors_holding, temperature_push
from labkit.reduce import REDUCTIONS, effective_weights
from labkit.viz import contract_html, prob_bars_html, svg_bars, svg_curve, token_rows_html, token_rows_text
from labkit.vocab import WordTokenizer, seed_vocab
from labkit.widgets.base import Panel
from labkit.widgets.learned import MASK_RATIOS, TEMPERATURES, LearnedView, render_learned, state_key
from labkit.widgets.learned_finetune import DPO_BETAS, DPO_REDUCTIONS, SS_FT_STEPS

# Where the one-token shift happens, and what each choice does to the pipeline.
SHIFT_PLACES = {
    "dataset": ("external", False),  # builder shifts (labels = x[1:]), loss compares logit t with label t
    "loss": ("internal", True),      # labels = input_ids, the loss compares logit t with label t+1
    "both": ("external", True),      # the double shift
    "none": ("internal", False),     # no shift: the model is trained to copy its input
}
CHAPTER_RECORD = "<bos> the cat sat on the mat <eos>"


def render_shift(where: str = "loss", record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None) -> dict:
    """Pure render of the shift panel for one choice of where the shift happens.

    Builds the example, measures which token each logit is trained on (from the loss gradient,
    checks.golden_shift_table) and returns {"html", "text", "offset", "verdict", "rows"}: offset = k
    when logit t is trained on token t+k (1 is correct).
    """
    if where not in SHIFT_PLACES:
        raise ContractError(f"unknown shift place {where!r}; fix: one of {list(SHIFT_PLACES)}")
    tok = tokenizer or seed_vocab()
    record = list(record) if record is not None else tok.encode(CHAPTER_RECORD)
    builder_shift, loss_shifts = SHIFT_PLACES[where]
    build = lambda r: ar_example(r, shift=builder_shift)  # noqa: E731
    loss = lambda z, y: causal_lm_loss(z, y, shift=loss_shifts)  # noqa: E731
    rows = golden_shift_table(record, build, loss, len(tok))
    offsets = set()
    for r in rows:
        if r["trained_target"] is not None:
            later = [k - r["t"] for k in range(r["t"], len(record)) if record[k] == r["trained_target"]]
            offsets.add(later[0] if later else None)
    offset = offsets.pop() if len(offsets) == 1 else None
    verdict = {1: "correct: logit t is trained on token t+1",
               2: "DOUBLE SHIFT: logit t is trained on token t+2 (the loss still falls)",
               0: "NO SHIFT: logit t is trained on token t, its own input (a copy task)"}.get(offset, "inconsistent alignment")
    example = build(record)
    n_targets = sum(r["trained_target"] is not None for r in rows)
    text = (f"shift in: {where} | builder shift={builder_shift}, loss shift={loss_shifts} | "
            f"{n_targets} trained positions | {verdict}")
    html = contract_html(example, tokenizer=tok, targets=[r["trained_target"] for r in rows],
                         title=f"shift happens in: {where}") + f"<p><b>{verdict}</b></p>"
    return {"html": html, "text": text, "offset": offset, "verdict": verdict, "rows": rows}


# ----------------------------------------------------------------------------- contrastive temperature panel

# One query's cosine similarities to 12 keys: key 0 is its matched caption, keys 1-3 share its
# meaning (false negatives), the rest are other classes. Used when no similarities are given.
DEMO_SIMILARITIES = (0.80, 0.74, 0.70, 0.66, 0.35, 0.30, 0.22, 0.15, 0.10, 0.05, -0.05, -0.20)
DEMO_SAME_MEANING = (False, True, True, True) + (False,) * 8


def render_contrastive_temperature(tau: float = 0.1, similarities=None, positive: int = 0, same_meaning=None,
                                   names=None, k_hard: int = 3, top: int = 12) -> dict:
    """Pure render of the contrastive temperature panel: softmax(s / tau) over one query's keys.

    similarities [N] cosines of the query to each key, positive = index of its matched key,
    same_meaning [N] bool (false negatives). Returns {"html", "text", "probs", "p_positive",
    "hard_share" (share of the repulsive gradient on the k_hard most similar negatives),
    "false_negative_share", "effective_negatives" (exp of the entropy of the push over negatives)}.
    """
    if not tau > 0:
        raise ContractError(f"temperature must be > 0, got {tau}")
    sims = torch.tensor(DEMO_SIMILARITIES if similarities is None else similarities, dtype=torch.float64).flatten()
    N = len(sims)
    if same_meaning is None:
        same_meaning = DEMO_SAME_MEANING if similarities is None else [False] * N
    same = torch.tensor(same_meaning, dtype=torch.bool).flatten()
    if len(same) != N or not 0 <= positive < N:
        raise ContractError(f"need one same_meaning flag per key ({N}) and 0 <= positive < {N}")
    logits = sims / tau
    p = logits.softmax(-1)
    hard_share = hard_negative_share(logits, positive, k=k_hard)               # share of the push on the k hardest
    fn_share = repulsive_share(logits[None], same[None], targets=torch.tensor([positive]))
    neg = torch.ones(N, dtype=torch.bool)
    neg[positive] = False
    # the push is split over the negatives as softmax(s / tau) restricted to them: its entropy, as a count
    eff = float(torch.exp(torch.tensor(predictive_entropy(sims[neg], T=tau))))
    names = list(names) if names is not None else [f"key {j}" for j in range(N)]
    order = sims.argsort(descending=True).tolist()[:top]
    kinds = ["positive" if j == positive else "false_negative" if bool(same[j]) else "negative" for j in order]
    text = (f"tau {tau:.3g}: p(positive) {float(p[positive]):.2f} | push on the {k_hard} hardest negatives {hard_share:.0%} | "
            f"on same-meaning keys {fn_share:.0%} | effective number of negatives {eff:.1f} of {N - 1}")
    html = prob_bars_html([names[j] for j in order], [p[j] for j in order], kinds,
                          title=f"softmax(s / tau) over one query's keys (green: its pair, orange: same meaning)") + f"<p>{text}</p>"
    return {"html": html, "text": text, "probs": p.tolist(), "p_positive": float(p[positive]), "hard_share": hard_share,
            "false_negative_share": fn_share, "effective_negatives": eff}


# ----------------------------------------------------------------------------- distillation temperature panel

def render_soft_targets(T: float = 1.0, logits=None, names=None, label: int | None = None) -> dict:
    """Pure render of the distillation temperature panel: softmax(z / T) of one teacher output.

    logits [C]; label = the true class (green bar). Returns {"html", "text", "probs", "entropy"
    (nats), "dark_mass" (probability on the classes other than the label, or than the argmax)}.
    """
    if not T > 0:
        raise ContractError(f"temperature T must be > 0, got {T}")
    z = torch.tensor([6.0, 0.5, 1.0, 3.5, 0.0, 2.0, 0.5, 1.0, 4.0, 2.5] if logits is None else logits, dtype=torch.float64).flatten()
    C = len(z)
    names = list(names) if names is not None else [str(c) for c in range(C)]
    p = (z / T).softmax(-1)
    top = int(z.argmax()) if label is None else int(label)
    ent = predictive_entropy(z, T=T)
    dark = 1.0 - float(p[top])
    runner_up = [names[j] for j in p.argsort(descending=True).tolist() if j != top][:3]
    kinds = ["positive" if j == top else "plain" for j in range(C)]
    text = (f"T {T:.1f}: p({names[top]}) {float(p[top]):.2f} | dark knowledge (mass on other classes) {dark:.2f} | "
            f"entropy {ent:.2f} nats | next: {', '.join(runner_up)}")
    html = prob_bars_html(names, p.tolist(), kinds, title="teacher soft targets softmax(z / T)") + f"<p>{text}</p>"
    return {"html": html, "text": text, "probs": p.tolist(), "entropy": ent, "dark_mass": dark}


# ----------------------------------------------------------------------------- padding panel (notebook 04)

PADDING_PROMPTS = ("<bos> the cat sat on the", "<bos> the dog ran", "<bos> the")


def render_padding(side: str = "left", positions: str = "mask", prompts: Sequence[Sequence[int]] | None = None,
                   tokenizer: WordTokenizer | None = None) -> dict:
    """Pure render of the padding panel: the same prompts padded on `side` with `positions`
    ("mask" = position_ids_from_mask, "arange" = column index), as a decoding batch.

    Per row it checks the two things batched decoding needs: the real tokens carry the positions
    they have when the prompt is alone (0, 1, 2, ...), and the last column is a real token (the
    one whose logits pick the next token). Returns {"html", "text", "batch", "rows": [{"row",
    "positions_ok", "last_is_real"}], "findings": audit codes, "ok": every row fine}.
    """
    tok = tokenizer or seed_vocab()
    prompts = [list(p) for p in prompts] if prompts is not None else [tok.encode(p) for p in PADDING_PROMPTS]
    batch = collate([{"input_ids": p, "labels": [IGNORE] * len(p)} for p in prompts], tok.pad_id, side=side,
                    positions=positions)
    findings = [f.code for f in audit(batch) if f.code != "no_targets"]
    rows, tables = [], []
    for b, p in enumerate(prompts):
        real = batch.attention_mask[b].bool()
        pos_ok = batch.position_ids[b][real].tolist() == list(range(len(p)))
        last_real = bool(real[-1])
        rows.append({"row": b, "positions_ok": pos_ok, "last_is_real": last_real})
        verdict = ("same positions as alone" if pos_ok else "positions shifted vs alone") + " | " + \
                  ("next token read from a real token" if last_real else "last column is padding: the next token would be read from <pad>")
        tables.append(contract_html(batch, row=b, tokenizer=tok, title=f"row {b}: {verdict}"))
    ok = all(r["positions_ok"] and r["last_is_real"] for r in rows)
    n_pos = sum(r["positions_ok"] for r in rows)
    n_last = sum(r["last_is_real"] for r in rows)
    text = (f"padding {side}, positions {positions} | rows with their solo positions: {n_pos}/{len(rows)} | "
            f"rows ending in a real token: {n_last}/{len(rows)} | audit: {', '.join(findings) or 'nothing'} | "
            + ("batched decoding = decoding each prompt alone" if ok else "batched decoding differs from decoding alone"))
    html = "".join(tables) + f"<p><b>{text}</b></p>"
    return {"html": html, "text": text, "batch": batch, "rows": rows, "findings": findings, "ok": ok}


# ----------------------------------------------------------------------------- reduction panel (notebook 06)

REDUCTION_LENGTHS = (2, 4, 10)


def render_reduction(reduction: str = "token_mean", lengths: Sequence[int] = REDUCTION_LENGTHS, weights=None) -> dict:
    """Pure render of the reduction panel: rows with `lengths` target tokens, each cell showing the
    token's effective weight d loss / d l[b,t] under `reduction` (labkit.reduce.effective_weights).

    Returns {"html", "text", "weights" [B,T] float64, "row_totals" [B], "per_token" (first
    token's weight per row)}.
    """
    if reduction not in REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r}; fix: one of {REDUCTIONS}")
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ContractError(f"every row needs at least one target token, got lengths {lengths}")
    T = max(lengths)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    w = effective_weights(mask, reduction, weights=None if weights is None else torch.as_tensor(weights, dtype=torch.float64))
    totals = w.sum(-1)
    top = float(w.max())
    cell = "padding:2px 5px;border:1px solid #ccc;text-align:center;font-family:monospace;font-size:11px;min-width:34px"
    out = ['<table style="border-collapse:collapse;margin:4px 0">',
           f"<caption style='text-align:left;font-weight:bold'>{_html.escape(reduction)}: each token's weight in the loss "
           "(and in the gradient)</caption>"]
    for b, n in enumerate(lengths):
        tds = []
        for t in range(T):
            if t < n:
                a = float(w[b, t]) / top if top > 0 else 0.0
                tds.append(f"<td style='{cell};background:rgba(46,139,87,{0.15 + 0.85 * a:.2f})'>{float(w[b, t]):.3f}</td>")
            else:
                tds.append(f"<td style='{cell};background:#f4f4f4'>·</td>")
        out.append(f"<tr><th style='{cell}'>row {b} ({n} tok)</th>{''.join(tds)}"
                   f"<td style='{cell};font-weight:bold'>Σ {float(totals[b]):.3f}</td></tr>")
    out.append("</table>")
    per_token = [float(w[b, 0]) for b in range(len(lengths))]
    text = f"{reduction}: " + " | ".join(f"row {b} ({n} tokens): {per_token[b]:.3f} per token, {float(totals[b]):.3f} in all"
                                   for b, n in enumerate(lengths))
    return {"html": "".join(out) + f"<p>{_html.escape(text)}</p>", "text": text, "weights": w,
            "row_totals": totals, "per_token": per_token}


# ----------------------------------------------------------------------------- CE temperature panel (notebook 01)

# "the cat sat on the ___": a handful of candidate next words (the target is "mat", not the argmax).
DEMO_CLASS_NAMES = ("cat", "mat", "dog", "rug", "sat", "on")
DEMO_CLASS_LOGITS = (3.0, 2.2, 1.5, 1.0, 0.0, -1.0)
DEMO_CLASS_TARGET = 1


def demo_vocab_logits(V: int = 2048, seed: int = 0):
    """Logits of one position over a whole vocabulary, sorted by rank: a Zipf-like decay
    -1.1 log(rank) plus N(0, 0.3^2) noise ([V] float64, deterministic for a seed)."""

    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, V + 1, dtype=torch.float64)
    z = -1.1 * ranks.log() + 0.3 * torch.randn(V, generator=g, dtype=torch.float64)
    return z.sort(descending=True).values


def _temperature_stats(z, target: int, T: float, top: int = 10) -> dict:
    """The library's temperature_push (supervised.py) plus what the panel prints: entropy, and how
    many competitors hold half of the push (every competitor receives some: p_k / T > 0)."""

    s = temperature_push(z, target, T, top=min(top, len(z) - 1))
    p = s["p"]
    return {"p": p, "grad": s["grad"], "p_target": float(p[target]), "target_grad": float(s["grad"][target]),
            "push_total": float(s["push"].sum()), "grad_sum": s["grad_sum"], "top_share": s["top_share"],
            "half_push": competitors_holding(s["cum_share"], 0.5),
            "entropy": predictive_entropy(torch.as_tensor(z), T=T)}


def render_temperature(T: float = 1.0, logits=None, names=None, target: int | None = None, vocab_logits=None,
                       vocab_target: int = 20) -> dict:
    """Pure render of the CE temperature panel: p = softmax(z / T) and the gradient of -log p_y
    with respect to the logits, (p - onehot(y)) / T, for a handful of classes and for a vocabulary.

    Returns {"html", "text", "classes": stats, "vocab": stats}; stats = {"p", "grad", "p_target",
    "target_grad", "push_total" (sum of the push on the other logits = -target_grad), "grad_sum"
    (0: what the target gains the others lose), "half_push" (how many of the strongest competitors
    hold half of the push; every competitor gets p_k / T > 0), "entropy", "top_share" (share of the
    push on the 10 strongest competitors)}.
    """
    if not T > 0:
        raise ContractError(f"temperature T must be > 0, got {T}")
    z = torch.tensor(DEMO_CLASS_LOGITS if logits is None else logits, dtype=torch.float64).flatten()
    names = list(names) if names is not None else (list(DEMO_CLASS_NAMES) if logits is None else [str(k) for k in range(len(z))])
    target = DEMO_CLASS_TARGET if target is None and logits is None else (0 if target is None else int(target))
    zv = demo_vocab_logits() if vocab_logits is None else torch.as_tensor(vocab_logits, dtype=torch.float64).flatten()
    if len(names) != len(z) or not 0 <= target < len(z) or not 0 <= vocab_target < len(zv):
        raise ContractError(f"need one name per logit ({len(z)}), 0 <= target < {len(z)} and 0 <= vocab_target < {len(zv)}")
    c = _temperature_stats(z, target, T)
    v = _temperature_stats(zv, vocab_target, T)
    V = len(zv)
    text = (f"T {T:.2g} | {len(z)} classes: p({names[target]}) {c['p_target']:.2f}, gradient on its logit "
            f"{c['target_grad']:+.2f} (descent raises it), on the other {len(z) - 1} {c['push_total']:+.2f} in total "
            f"(descent lowers them) | vocabulary V={V}: "
            f"p(target) {v['p_target']:.4f}, every one of the {V - 1} others pushed; the 10 strongest competitors hold "
            f"{v['top_share']:.0%} of the push, {v['half_push']} hold half; entropy {v['entropy']:.2f} nats")
    row = '<div style="display:flex;gap:8px;flex-wrap:wrap">{}</div>'
    html = (row.format(svg_bars(c["p"].tolist(), names, target, title=f"softmax(z/T), target '{names[target]}' in green")
                       + svg_bars(c["grad"].tolist(), names, target, title="d loss / d z = (p - onehot) / T"))
            + row.format(svg_bars(v["p"].tolist(), None, vocab_target, title=f"vocabulary of {V}: softmax, by rank")
                         + svg_bars(v["grad"].tolist(), None, vocab_target, title="vocabulary: gradient on each logit, by rank"))
            + f"<p>{text}</p>")
    return {"html": html, "text": text, "classes": c, "vocab": v}


# ----------------------------------------------------------------------------- scheduled-sampling panel (notebook 07)

def _demo_ss_example(tokenizer: WordTokenizer | None = None) -> dict:
    """A RunningSumTask row with stand-in proposals: the correct next token except two slips."""

    task = RunningSumTask(n_steps=8, tokenizer=tokenizer or seed_vocab())
    ids = task.sample(1, torch.Generator().manual_seed(0))[0]
    preds = torch.cat([ids[1:], ids[-1:]])
    for t in (task.prompt_len + 1, task.prompt_len + 4):      # proposals for positions t+1: two slips
        preds[t] = task.digit_ids[(int(task.values(preds[t:t + 1])[0]) + 1) % task.modulus]
    return {"input_ids": ids, "predictions": preds, "start": task.prompt_len, "tokenizer": task.tokenizer}


def render_scheduled_sampling(alpha_min: float = 0.75, shape: str = "linear", step: int | None = None,
                              total_steps: int = 200, example: dict | None = None, seed: int = 0) -> dict:
    """Pure render of the scheduled-sampling panel.

    alpha(step) = the probability of feeding the gold token (alpha_schedule); the schedule over
    training as an inline SVG with `step` marked (default: the last step); and one row with its
    gold prefix, the model's proposals and the mixed prefix drawn at alpha(step) (generator seeded
    by `seed`, so a render is deterministic). example: {"input_ids" [T], "predictions" [T]
    (predictions[t] = the model's token for t+1), "start", "tokenizer"}; default: a demo row.
    Returns {"html", "text", "alpha", "alphas", "mixed", "n_replaced", "expected_replaced"}.
    """
    step = total_steps if step is None else int(step)
    alpha = alpha_schedule(step, total_steps, shape, alpha_min)
    grid = list(range(0, total_steps + 1, max(1, total_steps // 50)))
    if grid[-1] != total_steps:
        grid.append(total_steps)
    alphas = [alpha_schedule(s, total_steps, shape, alpha_min) for s in grid]
    ex = example or _demo_ss_example()
    ids = torch.as_tensor(ex["input_ids"]).flatten()
    preds = torch.as_tensor(ex["predictions"]).flatten()
    start, tok = int(ex["start"]), ex.get("tokenizer") or seed_vocab()
    mixed, replaced = scheduled_sampling_inputs(ids[None], preds[None], alpha, start, torch.Generator().manual_seed(seed))
    mixed, replaced = mixed[0], replaced[0]
    T = ids.shape[0]
    name = lambda i: tok.token(int(i))  # noqa: E731
    proposal = ["·" if t < start else name(preds[t - 1]) for t in range(T)]
    rows = [{"name": "gold prefix", "cells": [name(i) for i in ids], "kinds": ["plain"] * T},
            {"name": "model proposes", "cells": proposal,
             "kinds": ["plain" if t < start or int(preds[t - 1]) == int(ids[t]) else "bad" for t in range(T)]},
            {"name": f"input at alpha={alpha:.2f}", "cells": [name(i) for i in mixed],
             "kinds": ["bad" if bool(r) else "plain" for r in replaced]},
            {"name": "target (gold)", "cells": ["·" if t < start else name(ids[t]) for t in range(T)],
             "kinds": ["ignored" if t < start else "supervised" for t in range(T)]}]
    n_answer = T - start
    expected = (1 - alpha) * float(sum(int(preds[t - 1]) != int(ids[t]) for t in range(start, T)))
    head = (f"schedule {shape}, alpha_min {alpha_min:.2f} | step {step}/{total_steps}: alpha = {alpha:.2f} "
            f"(each answer token is gold with prob alpha) | {int(replaced.sum())} of {n_answer} answer inputs differ "
            f"from gold (expected {expected:.1f}); the targets stay gold")
    curve = svg_curve(grid, alphas, marker=grid.index(step) if step in grid else None,
                      title=f"alpha over training ({shape})")
    html = (f"<p>{head}</p>{curve}" + token_rows_html(rows, title="gold vs mixed prefix (red: a model token that "
            "differs from gold)"))
    return {"html": html, "text": head + "\n" + token_rows_text(rows), "alpha": alpha, "alphas": alphas,
            "mixed": mixed, "n_replaced": int(replaced.sum()), "expected_replaced": expected}


# ----------------------------------------------------------------------------- mask-ratio panel (notebook 08)

CORRUPTIONS = ("token", "span", "bert", "deletion")
CORRUPTION_RECORD = "the cat sat on the mat and the dog ran to the rug"


def render_corruption(ratio: float = 0.3, kind: str = "token", record: str | None = None, tokenizer=None,
                      seed: int = 0) -> dict:
    """Pure render of the mask-ratio panel: corrupt one record and show the corrupted input, its
    labels and the number of targets.

    kind: token (each token -> <mask> with prob ratio), bert (choose `ratio` of the tokens, then
    80/10/10), span (T5: noise density `ratio`, mean span 3, one sentinel per span), deletion
    (each token dropped with prob ratio; the target is the whole clean sequence). token, bert and
    deletion keep <bos>/<eos> out of reach; span runs on the raw words (T5 appends its end token
    afterwards). Returns {"html", "text", "inputs", "targets", "n_targets", "kind", "ratio"}.
    """
    if kind not in CORRUPTIONS:
        raise ContractError(f"unknown corruption {kind!r}; fix: one of {CORRUPTIONS}")
    if not 0.0 < ratio < 1.0:
        raise ContractError(f"ratio must lie in (0, 1), got {ratio}")
    if tokenizer is None:
        tokenizer, sentinels = sentinel_tokenizer(16)
    else:
        sentinels = [i for i, w in enumerate(tokenizer.itos) if w.startswith("<extra_id_")]
    tok = tokenizer
    words = tok.encode(record or CORRUPTION_RECORD)
    ids = torch.tensor([tok.bos_id] + words + [tok.eos_id]) if kind != "span" else torch.tensor(words)
    g = torch.Generator().manual_seed(seed)
    specials = [i for i in (tok.bos_id, tok.eos_id, tok.pad_id) if i is not None]
    name = lambda i: tok.token(int(i))  # noqa: E731
    T = len(ids)
    if kind in ("token", "bert"):
        if kind == "token":
            inputs, labels = random_mask(ids[None], ratio, tok.mask_id, special_ids=specials, generator=g)
            inputs, labels = inputs[0], labels[0]
        else:
            inputs, labels = bert_mask(ids, tok.mask_id, len(tok), p=ratio, special_ids=specials, generator=g)
        sup = labels.ne(IGNORE)
        rows = [{"name": "clean", "cells": [name(i) for i in ids], "kinds": ["plain"] * T},
                {"name": "input", "cells": [name(i) for i in inputs],
                 "kinds": ["bad" if bool(c) else "plain" for c in inputs.ne(ids)]},
                {"name": "labels", "cells": [name(y) if int(y) != IGNORE else "-100" for y in labels],
                 "kinds": ["supervised" if bool(s) else "ignored" for s in sup]}]
        n_targets, targets = int(sup.sum()), labels
        note = ("every chosen token is a target, even one left unchanged or replaced at random" if kind == "bert"
                else "only masked positions are targets; the rest is read, not graded")
        tables = [(rows, f"{kind} corruption")]
    elif kind == "span":
        inputs, targets = span_corrupt(ids, sentinels, density=ratio, mean_span=3.0, generator=g)
        n_targets = len(targets)
        n_spans = int(sum(int(i) in set(sentinels) for i in inputs))
        in_rows = [{"name": "input", "cells": [name(i) for i in inputs],
                    "kinds": ["bad" if int(i) in set(sentinels) else "plain" for i in inputs]}]
        tgt_rows = [{"name": "targets", "cells": [name(i) for i in targets],
                     "kinds": ["ignored" if int(i) in set(sentinels) else "supervised" for i in targets]}]
        note = (f"{T - (len(inputs) - n_spans)} noise tokens in {n_spans} span(s), each replaced by ONE sentinel; "
                "the targets are written as a sequence: sentinel, its span, next sentinel ...")
        tables = [(in_rows, "encoder input"), (tgt_rows, "decoder targets")]
    else:
        inputs, targets = delete_tokens(ids, ratio, special_ids=specials, generator=g)
        n_targets = len(targets)
        in_rows = [{"name": "input", "cells": [name(i) for i in inputs], "kinds": ["plain"] * len(inputs)}]
        tgt_rows = [{"name": "targets", "cells": [name(i) for i in targets], "kinds": ["supervised"] * len(targets)}]
        note = (f"{T - len(inputs)} tokens deleted without a trace: the model must find WHERE text is missing, and "
                "writes the whole clean sequence")
        tables = [(in_rows, "input"), (tgt_rows, "targets")]
    head = f"{kind} corruption, ratio {ratio:.2f}: {n_targets} targets for {T} clean tokens | {note}"
    html = f"<p>{head}</p>" + "".join(token_rows_html(r, title=t) for r, t in tables)
    text = head + "\n" + "\n".join(token_rows_text(r) for r, _ in tables)
    return {"html": html, "text": text, "inputs": inputs, "targets": targets, "n_targets": n_targets,
            "kind": kind, "ratio": ratio}


# ----------------------------------------------------------------------------- mixture (gamma) panel

MIXTURE_DEMO_SOURCES = {"web": 2_000_000, "code": 400_000, "papers": 100_000, "low-resource language": 10_000}
MIXTURE_DEMO_BUDGET = 1_000_000


def render_mixture(gamma: float = 0.5, sizes=None, names=None, total_samples: int = MIXTURE_DEMO_BUDGET) -> dict:
    """Pure render of the mixture panel: weights n^gamma / sum n^gamma, expected epochs per source
    (alpha_k * S / n_k for S sampled examples) and how often the smallest source repeats.

    sizes: per-source example counts (default MIXTURE_DEMO_SOURCES). Returns {"html", "text",
    "weights", "epochs", "smallest_repetition"}.
    """
    if sizes is None:
        names, sizes = list(MIXTURE_DEMO_SOURCES), list(MIXTURE_DEMO_SOURCES.values())
    names = list(names) if names is not None else [f"source {k}" for k in range(len(sizes))]
    w = mixture_weights(sizes, gamma)
    e = expected_epochs(sizes, w, total_samples)
    small = min(range(len(sizes)), key=lambda k: sizes[k])
    cell = "padding:2px 8px;border:1px solid #ddd;font-family:monospace;font-size:12px"
    rows = []
    for k, name in enumerate(names):
        bar = f"<div style='background:#4c8bf5;height:10px;width:{200 * float(w[k]):.0f}px'></div>"
        flag = " style='color:#b00020;font-weight:bold'" if float(e[k]) > 4 else ""
        rows.append(f"<tr><td style='{cell}'>{_html.escape(name)}</td><td style='{cell};text-align:right'>{int(sizes[k]):,}</td>"
                    f"<td style='{cell}'>{float(w[k]):.3f} {bar}</td><td style='{cell};text-align:right'><span{flag}>"
                    f"{float(e[k]):.2f}</span></td></tr>")
    head = "".join(f"<th style='{cell}'>{h}</th>" for h in ("source", "size n", "weight n^γ/Σ", f"epochs in {total_samples:,}"))
    text = (f"gamma {gamma:.2f} | weights " + ", ".join(f"{n} {float(x):.3f}" for n, x in zip(names, w))
            + f" | the smallest source ({names[small]}) is seen {float(e[small]):.1f} times")
    html = (f"<table style='border-collapse:collapse'><tr>{head}</tr>{''.join(rows)}</table>"
            f"<p>{_html.escape(text)}</p>")
    return {"html": html, "text": text, "weights": [float(x) for x in w], "epochs": [float(x) for x in e],
            "smallest_repetition": float(e[small])}


# ----------------------------------------------------------------------------- DPO token-weight panel

DPO_DEMO_PAIR = {"chosen": ("3", "good", "and", "the", "<eos>"), "rejected": ("5", "<eos>"),
                 "chosen_logratios": (0.3, 0.1, 0.1, 0.1, 0.2), "rejected_logratios": (-0.4, -0.2)}


def render_dpo_weights(beta: float = 0.3, reduction: str = "sum", pair: dict | None = None) -> dict:
    """Pure render of the DPO panel: how one pair's loss spreads over its response tokens.

    pair: {"chosen", "rejected": token strings; "chosen_logratios", "rejected_logratios": per-token
    log pi - log ref}. With s = sum (reduction="sum") or mean (reduction="token_mean") of a response's log-ratios,
    delta = s(y+) - s(y-), L = -log sigma(beta * delta), and the gradient with respect to one token's
    log-prob is -beta * sigma(-beta * delta) * w, with w = 1 (sum) or 1/|y| (mean), positive for rejected
    tokens. Both are computed by labkit's dpo_loss and autograd (the closed form is the test). Returns {"html", "text", "delta", "loss", "chosen_weights", "rejected_weights"}.
    """
    pair = pair or DPO_DEMO_PAIR
    if not beta > 0:
        raise ContractError(f"beta must be > 0, got {beta}")
    for side in ("chosen", "rejected"):
        if len(pair[side]) != len(pair[f"{side}_logratios"]) or not pair[side]:
            raise ContractError(f"{side}: one log-ratio per token needed")
    c = torch.tensor(pair["chosen_logratios"], dtype=torch.float64, requires_grad=True)
    r = torch.tensor(pair["rejected_logratios"], dtype=torch.float64, requires_grad=True)
    if reduction not in ("sum", "token_mean"):
        raise ContractError(f"unknown reduction {reduction!r} for a response's log-ratios; fix: 'sum' or 'token_mean'")
    agg = torch.mean if reduction == "token_mean" else torch.sum
    s_c, s_r = agg(c), agg(r)
    # the log-ratios ride on a reference log-prob (any constant <= -max|s| - 1 keeps every input a log-prob)
    ref = torch.full((1,), -(abs(float(s_c.detach())) + abs(float(s_r.detach())) + 1.0), dtype=torch.float64)
    L = dpo_loss(s_c[None] + ref, s_r[None] + ref, ref, ref, beta)
    L.backward()
    delta, loss = float((s_c - s_r).detach()), float(L.detach())
    wc, wr = (-c.grad).tolist(), r.grad.tolist()                    # descent raises chosen, lowers rejected
    scale = max(wc + wr)
    cell = "padding:2px 6px;border:1px solid #ddd;font-family:monospace;font-size:12px;text-align:center"

    def row(name, tokens, weights, color):
        bars = "".join(f"<td style='{cell}'>{_html.escape(t)}<div style='background:{color};height:{40 * w / scale:.0f}px;"
                       f"width:14px;margin:auto'></div>{w:.3f}</td>" for t, w in zip(tokens, weights))
        return f"<tr><th style='{cell}'>{name}</th>{bars}</tr>"

    mode = "mean (length-normalised)" if reduction == "token_mean" else "sum"
    text = (f"{mode}, beta {beta:g}: delta {delta:.3f}, loss {loss:.3f}; push per token: chosen "
            f"{wc[0]:.3f} x {len(wc)} tokens (total {sum(wc):.3f}), rejected {wr[0]:.3f} x {len(wr)} (total {sum(wr):.3f})")
    html = (f"<table style='border-collapse:collapse'>{row('chosen (raise)', pair['chosen'], wc, '#2e9d4a')}"
            f"{row('rejected (lower)', pair['rejected'], wr, '#c0392b')}</table><p>{_html.escape(text)}</p>")
    return {"html": html, "text": text, "delta": delta, "loss": loss, "chosen_weights": wc, "rejected_weights": wr}




# ----------------------------------------------------------------------------- the panels (controls -> render)

class _LearnedPanel(Panel):
    """A panel with a "what the model learns" view (labkit.widgets.learned) under its contract view:
    the stored run of the selected state, and a button that trains it now."""

    learned_panel = ""

    def __init__(self):
        self.learned = LearnedView(self.learned_panel)
        super().__init__()

    def learned_state(self, **values) -> str | None:
        raise NotImplementedError

    def on_render(self):
        self.learned_view = self.learned.show(self.learned_state(**self.values()))

    def extra(self) -> list:
        return [self.learned.box]

    def static_html(self) -> str:
        return self.state["html"] + self.learned_view["html"]


class ShiftPanel(_LearnedPanel):
    """Toggle where the shift happens (dataset / loss / both / none); the contract table re-renders,
    beside a tiny LM trained with that shift."""

    learned_panel = "shift"

    def __init__(self, record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None, value: str = "loss"):
        self.record, self.tokenizer, self.value = record, tokenizer, value
        super().__init__()

    def build_controls(self):
        return {"control": W.ToggleButtons(options=list(SHIFT_PLACES), value=self.value, description="shift in")}

    def render(self, control):
        return render_shift(control, self.record, self.tokenizer)

    def learned_state(self, control):
        return state_key("shift", where=control)


def shift_panel(record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None):
    """The shift panel as a widget to display."""
    return ShiftPanel(record, tokenizer).ui()


class ContrastiveTemperaturePanel(Panel):
    """A log slider for tau; the softmax over one query's keys and the split of its push re-render."""

    def __init__(self, similarities=None, positive: int = 0, same_meaning=None, names=None, tau: float = 0.1):
        self.kwargs = dict(similarities=similarities, positive=positive, same_meaning=same_meaning, names=names)
        self.tau = tau
        super().__init__()

    def build_controls(self):
        return {"control": W.FloatLogSlider(value=self.tau, base=10, min=-2, max=0, step=0.05, description="tau",
                                            readout_format=".3f", continuous_update=False)}

    def render(self, control):
        return render_contrastive_temperature(control, **self.kwargs)


class SoftTargetPanel(Panel):
    """A slider for T in [0.5, 10] (and one for the example when logits is [N, C])."""

    def __init__(self, logits=None, names=None, labels=None, T: float = 1.0):
        z = None if logits is None else torch.as_tensor(logits, dtype=torch.float64)
        self.rows = None if z is None else (z if z.dim() == 2 else z[None])
        self.labels, self.names, self.T = labels, names, T
        super().__init__()

    def build_controls(self):
        n = 1 if self.rows is None else len(self.rows)
        return {"control": W.FloatSlider(value=self.T, min=0.5, max=10.0, step=0.5, description="T", continuous_update=False),
                "example": W.IntSlider(value=0, min=0, max=n - 1, description="example", continuous_update=False)}

    def render(self, control, example):
        logits = None if self.rows is None else self.rows[example].tolist()
        label = None if self.labels is None else int(self.labels[example])
        return render_soft_targets(control, logits, self.names, label)


class PaddingPanel(_LearnedPanel):
    """Choose the padding side and the position policy; the contract tables re-render, beside a tiny
    LM trained on batches padded that way."""

    learned_panel = "padding"

    def __init__(self, prompts: Sequence[Sequence[int]] | None = None, tokenizer: WordTokenizer | None = None,
                 side: str = "left", positions: str = "mask"):
        self.prompts, self.tokenizer, self.start = prompts, tokenizer, (side, positions)
        super().__init__()

    def build_controls(self):
        return {"side": W.ToggleButtons(options=["left", "right"], value=self.start[0], description="padding"),
                "positions": W.ToggleButtons(options=["mask", "arange"], value=self.start[1], description="positions")}

    def render(self, side, positions):
        return render_padding(side, positions, self.prompts, self.tokenizer)

    def learned_state(self, side, positions):
        return state_key("padding", side=side, positions=positions)


class ReductionPanel(_LearnedPanel):
    """Choose the reduction; the table of effective token weights re-renders, beside a tiny LM trained with it."""

    learned_panel = "reduction"

    def __init__(self, lengths: Sequence[int] = REDUCTION_LENGTHS, value: str = "token_mean"):
        self.lengths, self.value = lengths, value
        super().__init__()

    def build_controls(self):
        return {"control": W.ToggleButtons(options=list(REDUCTIONS), value=self.value, description="reduction")}

    def render(self, control):
        return render_reduction(control, self.lengths)

    def learned_state(self, control):
        return state_key("reduction", reduction=control)


class TemperaturePanel(_LearnedPanel):
    """A log slider for T (stops at 10^(k/4), where the stored runs are) and a choice of the target
    class; the softmax and gradient bars re-render, beside a tiny LM trained with the loss at T."""

    learned_panel = "temperature"

    def __init__(self, T: float = 1.0, logits=None, names=None, target: int | None = None):
        self.logits, self.names, self.T = logits, names, T
        self.options = list(names) if names is not None else (list(DEMO_CLASS_NAMES) if logits is None else
                                                              [str(k) for k in range(len(logits))])
        self.start = DEMO_CLASS_TARGET if target is None and logits is None else (target or 0)
        super().__init__()

    def build_controls(self):
        return {"control": W.FloatLogSlider(value=self.T, base=10, min=-1, max=1, step=0.25, description="T",
                                            readout_format=".2f", continuous_update=False),
                "target": W.Dropdown(options=[(n, i) for i, n in enumerate(self.options)], value=self.start,
                                     description="target")}

    def arrange(self, controls, output):
        return [W.HBox(controls), output]

    def render(self, control, target):
        return render_temperature(control, self.logits, self.names, target)

    def learned_state(self, control, target):
        return state_key("temperature", T=control)


class ScheduledSamplingPanel(_LearnedPanel):
    """Pick the schedule shape, alpha_min (stops at 0, 0.25, 0.5, 0.75, 1: where the stored runs are) and
    the training step (default: half-way through training); the schedule and the mixed prefix re-render,
    beside notebook 07's checkpoint fine-tuned with that schedule (alpha_min 1: teacher forcing)."""

    learned_panel = "scheduled_sampling"

    def __init__(self, example: dict | None = None, total_steps: int = SS_FT_STEPS, alpha_min: float = 0.75,
                 shape: str = "linear", step: int | None = None):
        self.example, self.total_steps = example, total_steps
        self.start = (shape, alpha_min, total_steps // 2 if step is None else step)
        super().__init__()

    def build_controls(self):
        shape, alpha_min, step = self.start
        return {"shape": W.ToggleButtons(options=list(ALPHA_SHAPES), value=shape, description="shape"),
                "alpha_min": W.FloatSlider(value=alpha_min, min=0.0, max=1.0, step=0.25, description="alpha_min",
                                           continuous_update=False),
                "step": W.IntSlider(value=step, min=0, max=self.total_steps, step=max(1, self.total_steps // 50),
                                    description="step", continuous_update=False)}

    def arrange(self, controls, output):
        return [controls[0], W.HBox(controls[1:]), output]

    def render(self, shape, alpha_min, step):
        return render_scheduled_sampling(alpha_min, shape, step, self.total_steps, self.example)

    def learned_state(self, shape, alpha_min, step):
        return state_key("scheduled_sampling", shape=shape, alpha_min=alpha_min)


class MaskRatioPanel(_LearnedPanel):
    """Pick the corruption type and the ratio (stops at 0.1 ... 0.9, where the stored runs are) and a
    seed; the corrupted record and its labels re-render, beside a tiny masked LM trained that way."""

    learned_panel = "mask_ratio"

    def __init__(self, record: str | None = None, ratio: float = 0.3, kind: str = "token", seed: int = 0):
        self.record, self.start = record, (kind, ratio, seed)
        self.tokenizer = sentinel_tokenizer(16)[0]
        super().__init__()

    def build_controls(self):
        kind, ratio, seed = self.start
        return {"kind": W.ToggleButtons(options=list(CORRUPTIONS), value=kind, description="corruption"),
                "ratio": W.FloatSlider(value=ratio, min=MASK_RATIOS[0], max=MASK_RATIOS[-1], step=0.1,
                                       description="ratio", continuous_update=False, readout_format=".1f"),
                "seed": W.IntSlider(value=seed, min=0, max=20, description="seed", continuous_update=False)}

    def arrange(self, controls, output):
        return [controls[0], W.HBox(controls[1:]), output]

    def render(self, kind, ratio, seed):
        return render_corruption(ratio, kind, self.record, self.tokenizer, seed)

    def learned_state(self, kind, ratio, seed):
        return state_key("mask_ratio", kind=kind, ratio=ratio)


class MixturePanel(Panel):
    """A gamma slider (0 = uniform over sources, 1 = by size); weights, epochs and repetition re-render."""

    def __init__(self, sizes=None, names=None, total_samples: int = MIXTURE_DEMO_BUDGET, gamma: float = 0.5):
        self.kwargs, self.gamma = dict(sizes=sizes, names=names, total_samples=total_samples), gamma
        super().__init__()

    def build_controls(self):
        return {"control": W.FloatSlider(value=self.gamma, min=0.0, max=1.0, step=0.05, description="gamma",
                                         continuous_update=False, readout_format=".2f")}

    def render(self, control):
        return render_mixture(control, **self.kwargs)


class DPOWeightsPanel(_LearnedPanel):
    """A beta slider (stops at DPO_BETAS, where the stored runs are) and a sum/mean toggle; the per-token
    push of one preference pair re-renders, beside notebook 11's SFT reference trained with DPO that way."""

    learned_panel = "dpo"

    def __init__(self, pair: dict | None = None, beta: float = 0.3, reduction: str = "sum"):
        if not any(abs(float(beta) - b) <= 1e-9 for b in DPO_BETAS):
            raise ContractError(f"beta {beta} is not a stop of the panel's slider; fix: one of {DPO_BETAS}")
        if reduction not in DPO_REDUCTIONS:
            raise ContractError(f"unknown reduction {reduction!r}; fix: one of {DPO_REDUCTIONS}")
        self.pair, self.start = pair, (float(beta), reduction)
        super().__init__()

    def build_controls(self):
        beta, reduction = self.start
        return {"beta": W.SelectionSlider(options=[(f"{b:g}", b) for b in DPO_BETAS], value=beta, description="beta",
                                          continuous_update=False),
                "mode": W.ToggleButtons(options=list(DPO_REDUCTIONS), value=reduction, description="log-prob")}

    def arrange(self, controls, output):
        return [W.HBox(controls), output]

    def render(self, beta, mode):
        return render_dpo_weights(beta, mode, self.pair)

    def learned_state(self, beta, mode):
        return state_key("dpo", beta=beta, reduction=mode)
