"""Exercise graders for labkit.paradigms.adversarial (notebook 10c).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.exercises.common import close, fail, require_tensor
from labkit.paradigms.adversarial import generator_loss


def check_generator_loss(fn: Callable, seed: int = 0) -> None:
    """Grade fn(fake_logits) -> scalar: the non-saturating generator loss, mean over samples of
    -log sigmoid(l), for logits of any shape. Checks the value, the gradient (which must be
    -(1 - sigmoid(l)) / n) and finiteness at very negative logits. Any correct formula passes
    (softplus(-l), BCE-with-logits against ones, -logsigmoid(l)). Raises AssertionError naming the
    misconception (the saturating loss, a sum, a sign, a probability instead of a logit, log(sigmoid))."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(16,), (8, 1), (3, 5)]
    for shape in shapes:
        logits = (torch.randn(shape, generator=g) * 3).requires_grad_(True)
        got = require_tensor(fn(logits), "your loss")
        if got.dim() != 0:
            fail(f"return one scalar (the mean over samples), got shape {tuple(got.shape)}")
        want = generator_loss(logits.detach())
        if not close(got, want, atol=1e-5):
            lv = logits.detach()
            n = lv.numel()
            wrong = {
                "that is the saturating loss log(1 - sigmoid(l)) (the minimax game as written); the fix minimises "
                "-log sigmoid(l) instead": float(-F.softplus(lv).mean()),
                "you returned log sigmoid(l): a loss to MINIMISE is -log sigmoid(l) (the generator wants the judge "
                "to say real)": float(F.logsigmoid(lv).mean()),
                "you summed over samples; take the mean": float(F.softplus(-lv).sum()),
                "that is the judge's loss on fakes (label 0), -log(1 - sigmoid(l)); the generator wants label 1":
                    float(F.softplus(lv).mean()),
                "you treated the logits as probabilities: apply the sigmoid inside the log (-log sigmoid(l))":
                    float(-torch.log(lv.clamp_min(1e-12)).mean()),
            }
            for why, value in wrong.items():
                if abs(float(got.detach()) - value) < 1e-5 * max(1.0, abs(value)):
                    fail(f"for these logits the loss is {float(want):.4f}, you returned {float(got.detach()):.4f}: {why}")
            fail(f"for these logits the loss is {float(want):.4f}, you returned {float(got.detach()):.4f}. Recipe: "
                 f"the mean over all {n} samples of -log sigmoid(l) = softplus(-l)")
        if not got.requires_grad:
            fail("your loss carries no gradient: compute it from the logits with torch operations (no .item(), no "
                 ".detach()), or the generator cannot learn from it")
        (grad,) = torch.autograd.grad(got, logits)
        want_grad = -(1 - torch.sigmoid(logits.detach())) / logits.numel()
        if not close(grad, want_grad, atol=1e-6):
            fail("the value is right but the gradient is not -(1 - sigmoid(l)) / n; did you detach part of it?")
    extreme = torch.tensor([-200.0, -50.0, 0.0, 50.0], requires_grad=True)
    got = fn(extreme)
    if not torch.isfinite(got.detach()):
        fail("at a logit of -200 (a judge that rejects confidently) your loss is not finite: log(sigmoid(l)) underflows "
             "to log(0). Fix: F.softplus(-l) or F.logsigmoid(l), which are computed stably")
    if not close(got, generator_loss(extreme.detach()), atol=1e-3):
        fail(f"at logits {extreme.tolist()} the loss is {float(generator_loss(extreme.detach())):.3f}, you returned "
             f"{float(got.detach()):.3f}: compute it stably (softplus(-l)), not via log(sigmoid(l))")
    (grad,) = torch.autograd.grad(got, extreme)
    if not bool(torch.isfinite(grad).all()):
        fail("the gradient at very negative logits is not finite; use F.softplus(-l) or F.logsigmoid(l)")
