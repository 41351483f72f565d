"""Exercise graders for labkit.paradigms.preference (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.exercises.common import close, fail
from labkit.paradigms.preference import dpo_loss, sequence_logprob


def _logprob_case(seed: int):
    """Random logits [3,7,11], ids and suffix response masks of lengths 1, 3, 4 (prompts of 6, 4, 3)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 11, generator=g) * 2
    ids = torch.randint(11, (3, 7), generator=g)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for b, n in enumerate((1, 3, 4)):
        mask[b, 7 - n:] = 1
    return logits, ids, mask


def check_sequence_logprob(fn: Callable, seed: int = 0) -> None:
    """Grade fn(logits [B,T,V], input_ids [B,T], response_mask [B,T]) -> log pi(y|x) [B]: the SUM over
    response tokens of log softmax(logit t)[token t+1]. Raises AssertionError naming the misconception."""
    logits, ids, mask = _logprob_case(seed)
    got = fn(logits.clone(), ids.clone(), mask.clone())
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (3,):
        fail(f"return one log-prob per sequence, a tensor of shape [B]=(3,); got {type(got).__name__} "
              f"{tuple(getattr(got, 'shape', ()))}")
    want = sequence_logprob(logits, ids, mask)
    if close(got, want, atol=1e-5, rtol=1e-5):
        return
    logp = logits.log_softmax(-1)
    nxt = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)           # logit t scores token t+1
    same = logp.gather(-1, ids[..., None]).squeeze(-1)                      # logit t scores token t
    m = mask.float()
    wrong = [
        (want / m.sum(-1), "you divided by the number of response tokens: log pi(y|x) is the SUM of the token "
                           "log-probs (the per-token mean, reduction='token_mean', is a different, length-normalised objective)"),
        ((same * m).sum(-1), "logit t was scored against token t, which it has already read: in a causal LM logit t "
                             "predicts token t+1 (shift once, as causal_lm_loss(shift=True) does)"),
        ((nxt * m[:, :-1]).sum(-1), "off by one in the mask: you kept logit t where response_mask[t] = 1, but logit t "
                                    "scores token t+1, so select with response_mask[t+1] (the first response token is "
                                    "predicted by the last prompt position)"),
        (nxt.sum(-1), "prompt tokens were counted: only response tokens belong to log pi(y|x); the prompt is given"),
        ((nxt.exp() * m[:, 1:]).sum(-1), "you summed probabilities: sum the LOG-probabilities (log_softmax)"),
        (-(nxt * m[:, 1:]).sum(-1), "the sign is flipped: that is the negative log-likelihood; return log pi (<= 0)"),
    ]
    for value, message in wrong:
        if close(got, value, atol=1e-5, rtol=1e-5):
            fail(message)
    fail(f"your log-probs {[round(float(v), 3) for v in got]} differ from the expected {[round(float(v), 3) for v in want]}")


def check_dpo_loss(fn: Callable, seed: int = 0) -> None:
    """Grade fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta) -> the DPO loss (mean over pairs,
    differentiable in the policy log-probs). Raises AssertionError naming the misconception."""
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = ((torch.randn(6, generator=g, dtype=torch.float64) * 3 - 8).clamp(max=-0.1) for _ in range(4))  # log-probs <= 0
    beta = 0.3
    pc.requires_grad_(True)
    got = fn(pc, pr, rc, rr, beta)
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        fail(f"return the mean loss as a 0-d tensor, got {type(got).__name__} {tuple(getattr(got, 'shape', ()))}")
    if not got.requires_grad:
        fail("the loss has no gradient with respect to the policy log-probs: keep it a tensor (no .item(), no float())")
    want = dpo_loss(pc, pr, rc, rr, beta)
    if close(got.detach(), want.detach(), atol=1e-5, rtol=1e-5):
        return
    pc = pc.detach()
    d = (pc - rc) - (pr - rr)
    ls = F.logsigmoid
    wrong = [
        (-ls(beta * (pc - pr)).mean(), "did you forget the reference? DPO compares log-RATIOS: (log pi - log ref) of "
                                       "chosen minus that of rejected"),
        (-ls(-beta * d).mean(), "chosen and rejected are swapped: the loss must fall when the chosen answer gains"),
        ((-beta * ls(d)).mean(), "beta belongs inside the sigmoid: -log sigma(beta * delta), not -beta * log sigma(delta)"),
        (-ls(d).mean(), "beta is missing: -log sigma(beta * delta)"),
        (-ls(beta * d).sum(), "you summed over pairs: average the per-pair losses"),
        (ls(beta * d).mean(), "the sign is flipped: the loss is MINUS log sigma(beta * delta), which is >= 0"),
        (-torch.sigmoid(beta * d).mean(), "use the log of the sigmoid (F.logsigmoid), not the sigmoid itself"),
        ((1 - torch.sigmoid(beta * d)).mean(), "use -log sigma(beta * delta) (F.logsigmoid), not 1 - sigma"),
        (-ls(beta * ((pc + rc) - (pr + rr))).mean(), "the reference log-probs are SUBTRACTED: log pi - log ref"),
    ]
    for value, message in wrong:
        if close(got.detach(), value, atol=1e-5, rtol=1e-5):
            fail(message)
    fail(f"your loss {float(got):.4f} differs from -mean log sigma(beta * delta) = {float(want):.4f}")
