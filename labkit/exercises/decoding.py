"""Exercise graders for labkit.paradigms.decoding (notebook 01b).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the
misconception. Every correct solution passes: the graders test the contract (which tokens are kept,
which numbers come out), never one implementation's intermediate steps."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.exercises.common import close, fail, require_tensor
from labkit.paradigms.decoding import exact_gradient, score_function_grads

__all__ = ["check_top_p", "check_score_function"]


def _nucleus_size(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Size of the smallest set of most probable tokens with mass >= p, per row ([..., V] -> [...])."""
    s = probs.sort(-1, descending=True).values
    return ((s.cumsum(-1) - s) < p).sum(-1)


def _top_p_cases():
    """(logits, p) cases without ties and with no cumulative sum within 1e-4 of p (no boundary ambiguity)."""
    g = torch.Generator().manual_seed(11)
    cases = []
    for shape, scale in [((4, 7), 1.0), ((2, 3, 9), 2.0), ((5,), 3.0), ((3, 6), 0.3)]:
        for p in (0.3, 0.75, 0.9, 1.0):
            for _ in range(20):
                z = torch.randn(shape, generator=g) * scale
                s = torch.softmax(z.double(), -1).sort(-1, descending=True).values
                if p == 1.0 or bool(((s.cumsum(-1) - p).abs() > 1e-4).all()):
                    cases.append((z, p))
                    break
    cases.append((torch.tensor([[6.0, 0.0, -1.0, -2.0]]), 0.5))        # the top token alone holds more than p
    return cases


def check_top_p(fn) -> None:
    """Grade fn(logits [..., V], p) -> logits with -inf outside the nucleus: the smallest set of most
    probable tokens whose probabilities sum to >= p. Kept logits must be unchanged; any shape of
    leading dimensions; p = 1 keeps every token."""
    for z, p in _top_p_cases():
        out = require_tensor(fn(z.clone(), p), "my_top_p")
        if tuple(out.shape) != tuple(z.shape):
            fail(f"return logits of the input's shape {tuple(z.shape)}, got {tuple(out.shape)}")
        kept = torch.isfinite(out)
        if bool(torch.isnan(out).any()):
            fail("the output holds NaN: removed tokens get -inf, kept ones keep their logit")
        if bool((out[~kept] > 0).any()):
            fail("removed tokens must get -inf (so softmax gives them probability 0), not +inf")
        if not close(out[kept], z[kept], atol=1e-5):
            fail("kept logits must be unchanged (filtering removes tokens; it does not rescale the rest)")
        probs = torch.softmax(z.double(), -1)
        want = _nucleus_size(probs, p)
        got = kept.sum(-1)
        # the kept set must be the TOP tokens: its least probable member beats every removed token
        low_kept = torch.where(kept, probs, torch.full_like(probs, 2.0)).min(-1).values
        high_removed = torch.where(kept, torch.full_like(probs, -1.0), probs).max(-1).values
        if bool((low_kept < high_removed).any()):
            fail(f"p={p}: you kept a token while removing a more probable one. The nucleus is the MOST probable "
                 "tokens: sort probabilities in descending order")
        if torch.equal(got, want):
            continue
        mass = (probs * kept).sum(-1)
        if bool((got == want - 1).any()) and bool((mass < p).any()):
            fail(f"p={p}: your kept mass is below p: the token that crosses p must be kept. Keep a token when the "
                 "mass BEFORE it (cumsum minus itself) is < p, not when the cumsum including it is < p")
        if p == 1.0:
            fail("p = 1 must keep every token (the whole distribution)")
        if bool((got > want).any()):
            fail(f"p={p}: you kept {got.flatten().tolist()} tokens where the smallest set with mass >= p has "
                 f"{want.flatten().tolist()}: stop at the first token that brings the mass to p. (Cumulate "
                 "probabilities, not logits, and per row along the last dimension)")
        fail(f"p={p}: expected {want.flatten().tolist()} kept tokens per row, got {got.flatten().tolist()}")


def check_score_function(fn) -> None:
    """Grade fn(theta [K], x [N], fx [N], baseline) -> [N, K] per-sample score-function estimates
    (f(x_i) - b) * grad_theta log softmax(theta)[x_i] = (f(x_i) - b)(e_{x_i} - p)."""
    g = torch.Generator().manual_seed(7)
    for K, N, b in [(5, 12, 0.0), (3, 8, 0.7), (6, 20, -1.3)]:
        theta = torch.randn(K, generator=g, dtype=torch.float64)
        f = torch.randn(K, generator=g, dtype=torch.float64) + 2.0
        x = torch.multinomial(torch.softmax(theta, -1), N, replacement=True, generator=g)
        out = require_tensor(fn(theta.clone(), x.clone(), f[x].clone(), b), "my_reinforce")
        if tuple(out.shape) != (N, K):
            fail(f"return one gradient row per sample, shape [N, K] = {[N, K]}, got {list(out.shape)}")
        want = score_function_grads(theta, x, f[x], b)
        if close(out, want, atol=1e-6):
            # and unbiased: sum over every outcome weighted by its probability is the exact gradient
            every = torch.arange(K)
            est = require_tensor(fn(theta.clone(), every, f.clone(), b), "my_reinforce").double()
            if not close((torch.softmax(theta, -1)[:, None] * est).sum(0), exact_gradient(theta, f), atol=1e-6):
                fail("per-sample values match but E[estimate] over all outcomes is not the exact gradient")
            continue
        p = torch.softmax(theta, -1)
        onehot = F.one_hot(x, K).double()
        fx = f[x][:, None]
        if close(out, (fx - b) * onehot, atol=1e-6):
            fail("you returned (f - b) * onehot(x): the gradient of log softmax(theta)[x] is onehot(x) - p, not onehot(x)")
        if close(out, (fx - b) * p[x][:, None] * (onehot - p), atol=1e-6):
            fail("you differentiated p(x), not log p(x): the score function is grad log p = onehot(x) - p")
        if b != 0.0 and close(out, fx * (onehot - p), atol=1e-6):
            fail("the baseline was ignored: the estimate is (f(x) - baseline) * (onehot(x) - p)")
        if close(out, -want, atol=1e-6):
            fail("sign error: the estimate of the gradient of E[f] is +(f(x) - b) * grad log p(x)")
        fail(f"K={K}, N={N}, baseline {b}: your estimates differ from (f(x) - b)(onehot(x) - softmax(theta))")
