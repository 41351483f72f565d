"""Exercise graders for labkit.paradigms.policy (notebook 11b): group-relative advantages and the clipped
surrogate. Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the
misconception; every correct solution passes (either standard deviation convention, any small eps)."""
from __future__ import annotations

from typing import Callable

import torch

from labkit.exercises.common import close, fail, require_tensor
from labkit.paradigms.policy import clipped_surrogate_loss


def _advantage_case(seed: int) -> tuple[torch.Tensor, int]:
    """Rewards of 4 prompts x 6 answers, on different scales per prompt; the last prompt's answers all tie."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(4, 6, generator=g) * torch.tensor([[1.0], [3.0], [0.5], [0.0]]) + torch.tensor([[0.0], [5.0], [-2.0], [1.0]])
    return r.flatten(), 6


def _group_normalised(got: torch.Tensor, centred: torch.Tensor, g: torch.Tensor, max_eps: float = 2e-3) -> bool:
    """True when each group of got [G, n] is centred / (std + eps) for one std convention (unbiased or not) and
    some eps in [0, max_eps] (eps inside the square root included), and tied groups are 0."""
    for got_k, c_k, g_k in zip(got, centred, g):
        if float(c_k.abs().max()) < 1e-12:                    # the group ties: advantage 0
            if float(got_k.abs().max()) > 1e-6:
                return False
            continue
        denom = float(c_k @ c_k) / float(c_k @ got_k) if float(c_k @ got_k) != 0 else float("inf")
        stds = [float(g_k.std(unbiased=u)) for u in (True, False)]
        if not any(-1e-5 <= denom - sd <= max_eps for sd in stds):
            return False
        if not close(got_k, c_k / denom, atol=1e-4, rtol=1e-4):
            return False
    return True


def check_group_advantages(fn: Callable, seed: int = 0, rewards: torch.Tensor | None = None, group_size: int = 8) -> None:
    """Grade fn(rewards [N], group_size) -> advantages [N]: A_i = (r_i - mean of i's group) / (std of i's group
    + a small eps), rewards ordered prompt by prompt. Either std convention (unbiased or not) and any eps up to
    1e-3 pass; a group whose answers all tie must get advantage 0 (not NaN). rewards (with group_size): grade on
    these rewards instead of the seeded case (e.g. a notebook's own rollout)."""
    if rewards is None:
        rewards, n = _advantage_case(seed)
    else:
        rewards, n = torch.as_tensor(rewards, dtype=torch.float32).flatten(), int(group_size)
        if n < 2 or rewards.numel() == 0 or rewards.numel() % n:
            raise ValueError(f"rewards must be [N] with N a multiple of group_size >= 2, got {tuple(rewards.shape)}, {n}")
    got = require_tensor(fn(rewards.clone(), n), "your function")
    if tuple(got.shape) != tuple(rewards.shape):
        fail(f"return one advantage per answer, shape {tuple(rewards.shape)}; got {tuple(got.shape)} (flatten the groups back)")
    if not bool(torch.isfinite(got).all()):
        fail("some advantages are NaN or inf: a prompt whose answers all score the same has std 0; add a small "
             "eps to the denominator (its advantages are then 0: a group that ties teaches nothing)")
    g = rewards.double().view(-1, n)
    centred = g - g.mean(-1, keepdim=True)
    if _group_normalised(got.detach().double().view(-1, n), centred, g):
        return
    wants = [(centred / (g.std(-1, unbiased=u, keepdim=True) + 1e-4)).flatten() for u in (True, False)]
    r = rewards.double()
    wrong = [
        (centred.flatten(), "you centred each group but did not divide by its std: GRPO normalises by the group's std"),
        ((r - r.mean()) / (r.std() + 1e-4), "you used the mean (and std) of ALL answers: the baseline of an answer is the "
                                            "other answers to the SAME prompt (view the rewards as [prompts, group_size])"),
        ((g / (g.std(-1, keepdim=True) + 1e-4)).flatten(), "subtract the group's mean first: A = (r - mean) / std"),
        (-wants[0], "the sign is flipped: answers better than their group's mean get a POSITIVE advantage"),
        ((centred / (centred.std() + 1e-4)).flatten(), "you divided by the std of all answers: use each group's own std"),
    ]
    for value, message in wrong:
        if close(got, value, atol=2e-3, rtol=2e-3):
            fail(message)
    fail(f"your advantages differ from (r - group mean) / (group std + eps); first group: "
         f"{[round(float(v), 3) for v in got[:n]]} vs {[round(float(v), 3) for v in wants[0][:n]]}")


def _surrogate_case(seed: int):
    """8 samples with ratios on both sides of [1 - 0.2, 1 + 0.2] and advantages of both signs."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(8, generator=g, dtype=torch.float64) * 3 - 0.5
    shift = torch.tensor([0.5, -0.5, 0.5, -0.5, 0.05, -0.05, 0.3, -0.4], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.7, -0.7, -0.4, 0.9], dtype=torch.float64)
    adv = adv * (1 + torch.rand(8, generator=g, dtype=torch.float64))
    new = (old + shift).clamp(max=-1e-3)
    return new, old, adv, 0.2


def check_clipped_surrogate(fn: Callable, seed: int = 0) -> None:
    """Grade fn(logps [B], old_logps [B], advantages [B], clip) -> the PPO clipped surrogate LOSS, the mean over
    samples of -min(rho A, clip(rho, 1 - clip, 1 + clip) A) with rho = exp(logps - old_logps), differentiable in
    logps."""
    new, old, adv, eps = _surrogate_case(seed)
    logps = new.clone().requires_grad_(True)
    got = require_tensor(fn(logps, old.clone(), adv.clone(), eps), "your function")
    if got.dim() != 0:
        fail(f"return the mean loss as a 0-d tensor, got shape {tuple(got.shape)} (average over the samples)")
    if not got.requires_grad:
        fail("the loss has no gradient with respect to logps: keep it a tensor (no .item(), no float(), no torch.no_grad)")
    want = clipped_surrogate_loss(new, old, adv, eps)
    if close(got, want, atol=1e-6, rtol=1e-6):
        (grad,) = torch.autograd.grad(got, logps)
        ratio = torch.exp(new - old)
        want_grad = torch.where(((ratio > 1 + eps) & (adv > 0)) | ((ratio < 1 - eps) & (adv < 0)),
                                torch.zeros_like(adv), -adv * ratio) / len(adv)
        if not close(grad, want_grad, atol=1e-6, rtol=1e-6):
            fail("the value is right but the gradient is not: the ratio must be computed from logps (with gradient), "
                 "exp(logps - old_logps), and the clipped branch must be the clamped ratio times A")
        return
    rho = torch.exp(new - old)
    clipped = rho.clamp(1 - eps, 1 + eps)
    wrong = [
        ((-torch.maximum(rho * adv, clipped * adv)).mean(), "you took the max of the two terms: PPO takes the MIN "
                                                            "(the pessimistic bound), so the clip only removes incentives"),
        ((-rho * adv).mean(), "there is no clipping: the unclipped surrogate -rho A lets one step move rho arbitrarily far"),
        ((-clipped * adv).mean(), "you kept only the clipped term: take min(rho A, clip(rho) A), so a ratio that moved the "
                                  "WRONG way is still corrected"),
        ((-torch.minimum(rho * adv, rho * adv.clamp(-eps, eps))).mean(), "clip the RATIO to [1 - clip, 1 + clip], not "
                                                                         "the advantage"),
        ((-torch.minimum((new - old) * adv, (new - old).clamp(1 - eps, 1 + eps) * adv)).mean(),
         "the ratio is exp(logps - old_logps), a probability ratio, not the log-ratio itself"),
        ((torch.minimum(rho * adv, clipped * adv)).mean(), "the sign is flipped: return the LOSS, minus the surrogate"),
        ((-torch.minimum(rho * adv, clipped * adv)).sum(), "you summed over samples: average them"),
        ((-torch.minimum(rho * adv, rho.clamp(max=1 + eps) * adv)).mean(), "clip both sides: clamp(rho, 1 - clip, 1 + clip)"),
    ]
    for value, message in wrong:
        if close(got, value, atol=1e-6, rtol=1e-6):
            fail(message)
    fail(f"your loss {float(got):.5f} differs from -mean min(rho A, clip(rho) A) = {float(want):.5f}")
