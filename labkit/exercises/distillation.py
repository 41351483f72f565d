"""Exercise graders for labkit.paradigms.distillation (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.exercises.common import fail
from labkit.paradigms.distillation import kd_loss


def _kd_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 3, 7, generator=g) * 2, torch.randn(2, 3, 7, generator=g) * 2
    mask = torch.tensor([[True, True, False], [True, False, False]])
    return s, t, mask


def check_kd_loss(fn: Callable, seed: int = 0) -> None:
    """Grade fn(student_logits [B,T,V], teacher_logits [B,T,V], T, mask [B,T]) -> scalar KD loss
    (T^2 KL(teacher_T || student_T) averaged over the supervised positions)."""
    s, t, mask = _kd_inputs(seed)
    T = 2.0
    got = fn(s.clone(), t.clone(), T, mask.clone())
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        fail(f"return one scalar tensor, got {type(got).__name__} {tuple(getattr(got, 'shape', ()))}")
    got = float(got.detach())
    want = float(kd_loss(s, t, T, mask=mask))
    if abs(got - want) < 1e-4:
        return
    log_ps, pt = F.log_softmax(s / T, -1), F.softmax(t / T, -1)
    sel = mask.bool()
    elem = F.kl_div(log_ps[sel], pt[sel], reduction="none")          # [N, V]
    N, V = elem.shape
    wrong = {
        "you forgot the T^2 factor": want / T**2,
        "KLDivLoss(reduction='mean') divides by positions x classes; use 'batchmean' on [N_positions, V]": float(elem.sum()) * T**2 / (N * V),
        "'batchmean' on [B,T,V] divides by B only (a sum over tokens): flatten the supervised positions to [N,V] first": float(elem.sum()) * T**2 / s.shape[0],
        "you averaged over all positions: padding/unsupervised positions must not count (use the mask)": float(kd_loss(s, t, T)),
        "you computed KL(student || teacher): the teacher's distribution comes first (F.kl_div(log_student, teacher))": float(
            (F.softmax(s / T, -1) * (F.log_softmax(s / T, -1) - F.log_softmax(t / T, -1))).sum(-1)[sel].mean()) * T**2,
        "you softened only the student: divide BOTH logits by T": float(kd_loss(s, t * T, T, mask=mask)),
        "you summed over positions instead of averaging": want * int(sel.sum()),
    }
    for why, value in wrong.items():
        if abs(got - value) < 1e-4:
            fail(f"the KD loss is {want:.4f} here, you returned {got:.4f}: {why}")
    fail(f"the KD loss is {want:.4f} here, you returned {got:.4f}. Recipe: T^2 * sum_v p_t (log p_t - log p_s) "
                         "with p = softmax(z / T), averaged over the positions where mask is True")


def check_kd_grad(fn: Callable, seed: int = 0) -> None:
    """Grade fn(student_logits [N,V], teacher_logits [N,V], T) -> the analytic gradient [N,V] of
    kd_loss (with T^2, mean over the N positions) with respect to the student logits."""
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(4, 6, generator=g) * 2, torch.randn(4, 6, generator=g) * 2
    for T in (1.0, 3.0):
        z = s.clone().requires_grad_(True)
        kd_loss(z, t, T).backward()
        want = z.grad
        got = fn(s.clone(), t.clone(), T)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            fail(f"return a [N,V] tensor like the logits, got {tuple(getattr(got, 'shape', ()))}")
        got = got.detach().float()
        if torch.allclose(got, want, atol=1e-5):
            continue
        if T != 1.0 and torch.allclose(got, want * T, atol=1e-5):
            fail(f"at T={T} your gradient is T times too large: softmax(z/T) brings a 1/T from the chain rule")
        if T != 1.0 and torch.allclose(got, want / T**2, atol=1e-5):
            fail(f"at T={T} your gradient is T^2 times too small: the loss carries a factor T^2")
        if torch.allclose(got, -want, atol=1e-5):
            fail("wrong sign: the gradient is (p_student - p_teacher), descent moves the student towards the teacher")
        if torch.allclose(got, want * s.shape[0], atol=1e-5):
            fail("the loss averages over the N positions: divide by N")
        fail(f"at T={T} the gradient differs from autograd's (max diff {float((got - want).abs().max()):.4f}); "
                             "recipe: T * (softmax(s/T) - softmax(t/T)) / N")
