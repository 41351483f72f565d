"""Exercise graders for labkit.paradigms.masked (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Sequence

import torch

from labkit.exercises.common import fail
from labkit.paradigms.masked import corruption_stats, diffusion_weights


def check_bert_mask(fn, vocab_size: int = 64, mask_id: int = 3, special_ids: Sequence[int] = (0, 1, 2, 3)) -> None:
    """Grade (inputs, labels) = fn(ids, mask_id, vocab_size, special_ids, generator) on 120k tokens:
    15% of the non-special tokens chosen, of them 80% [MASK] / 10% random / 10% unchanged (each
    within 1.5 points), labels = clean ids exactly on the chosen, specials never chosen. Raises
    AssertionError naming the misconception."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(len(special_ids), vocab_size, (200, 600), generator=g)
    ids[:, 0], ids[:, -1] = special_ids[1], special_ids[2]          # <bos> ... <eos>
    out = fn(ids.clone(), mask_id, vocab_size, tuple(special_ids), torch.Generator().manual_seed(1))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail("return two tensors: (input_ids, labels)")
    inputs, labels = (torch.as_tensor(v) for v in out)
    if inputs.shape != ids.shape or labels.shape != ids.shape:
        fail(f"input_ids and labels must have the shape of ids {tuple(ids.shape)}")
    s = corruption_stats(ids, inputs, labels, mask_id, special_ids)
    if s["chosen"] > 0.5:
        fail(f"{s['chosen']:.0%} of the tokens have labels: only the chosen 15% are targets, every other "
                             "label is -100 (otherwise the model is graded on tokens it can read)")
    if s["special_chosen"]:
        fail(f"{s['special_chosen']} special tokens (<bos>, <eos>, ...) were chosen: they are never corrupted "
                             "nor targets. Fix: exclude special_ids before drawing")
    if s["unchosen_changed"]:
        fail(f"{s['unchosen_changed']} tokens changed although their label is -100: either they should be "
                             "targets, or the 80/10/10 split was applied to all tokens instead of the chosen 15%")
    if not s["labels_clean"]:
        fail("some labels are not the clean token (did you take them from the corrupted input?). "
                             "Fix: labels = the original ids at the chosen positions")
    if abs(s["chosen"] - 0.15) > 0.015:
        fail(f"{s['chosen']:.3f} of the non-special tokens were chosen; expected 0.15")
    if s["masked"] > 0.95:
        fail("every chosen token became [MASK]: BERT replaces 10% by a random token and keeps 10%, so "
                             "the model cannot assume that only [MASK] positions are graded")
    if s["masked"] < 0.05 and s["random"] < 0.05:
        fail("no chosen token became the mask id: 80% of the chosen tokens are shown as [MASK]")
    for name, want in (("masked", 0.8), ("random", 0.1), ("unchanged", 0.1)):
        if abs(s[name] - want) > 0.015:
            fail(f"of the chosen tokens, {s[name]:.3f} are {name}; expected {want}. Split the CHOSEN "
                                 "tokens (one draw each): 80% -> [MASK], 10% -> random, 10% -> unchanged")


def check_diffusion_loss(fn) -> None:
    """Grade loss = fn(token_losses [B,T], masked bool [B,T], t [B]) against the ELBO weighting:
    sum over masked tokens of ce / t_b, divided by all B*T tokens. Raises AssertionError naming the
    misconception (the |M| denominator, a missing 1/t, unmasked tokens counted)."""
    g = torch.Generator().manual_seed(0)
    B, T = 6, 10
    ce = torch.rand(B, T, generator=g) * 3
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 1.0])
    masked = torch.rand(B, T, generator=g) < t[:, None]
    masked[:, 0] = True
    got = fn(ce.clone(), masked.clone(), t.clone())
    got = float(got)
    want = float((diffusion_weights(masked, t, "elbo") * ce).sum())
    if abs(got - want) < 1e-5 * max(1.0, abs(want)):
        return
    m = masked.float()
    candidates = {
        "token_mean": float((diffusion_weights(masked, t, "token_mean") * ce).sum()),
        "sequence_mean": float((diffusion_weights(masked, t, "sequence_mean") * ce).sum()),
        "no_t": float((m * ce).sum() / (B * T)),
        "all_tokens": float((ce / t[:, None]).sum() / (B * T)),
        "masked_denominator": float((m * ce / t[:, None]).sum() / m.sum()),
    }
    hints = {
        "token_mean": "you averaged over the masked tokens of the batch (sum / |M|) without 1/t: that weights a row by its "
                      "number of masks, i.e. by t",
        "sequence_mean": "that is the |M_t|-normalised loss (each row's mean over its masked tokens); the ELBO weighting is "
                        "1/t per masked token, divided by ALL B*T tokens",
        "no_t": "the 1/t weight is missing: sum(ce over masked) / (B*T) undercounts low-noise rows",
        "all_tokens": "unmasked tokens were counted: only masked positions carry a loss (their input is the clean token)",
        "masked_denominator": "divide by all B*T tokens, not by the number of masked tokens (the 1/t already rescales each row)",
    }
    for name, value in candidates.items():
        if abs(got - value) < 1e-5 * max(1.0, abs(value)):
            fail(hints[name])
    fail(f"expected {want:.5f}, got {got:.5f}: sum over masked tokens of ce / t_b, divided by B*T")
