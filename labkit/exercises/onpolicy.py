"""Exercise graders for labkit.paradigms.onpolicy (notebook 10b).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from labkit.exercises.common import close, fail, require_tensor
from labkit.paradigms.onpolicy import overconfidence, token_kl


def _cases(seed: int):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(3, 5, 7, generator=g) * 2
    t = torch.randn(3, 5, 7, generator=g) * 2
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    return s, t, mask


def check_reverse_kl(fn: Callable, seed: int = 0) -> None:
    """Grade fn(student_logits [B,T,V], teacher_logits [B,T,V], mask [B,T] bool) -> scalar
    mean over the masked positions of KL(p_S || p_T) = sum_v p_S (log p_S - log p_T), with a
    gradient with respect to the student's logits equal to token_kl's (direction "reverse")."""
    s, t, mask = _cases(seed)
    z = s.clone().requires_grad_(True)
    got = fn(z, t.clone(), mask.clone())
    got = require_tensor(got, "your loss function")
    if got.dim() != 0:
        fail(f"return one scalar (the mean over the generated positions), got shape {tuple(got.shape)}")
    ref_z = s.clone().requires_grad_(True)
    want = token_kl(ref_z, t, mask, "reverse")
    if not close(got, want, atol=1e-4):
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
        rev = (log_s.exp() * (log_s - log_t)).sum(-1)
        fwd = (log_t.exp() * (log_t - log_s)).sum(-1)
        m = mask.float()
        wrong = {
            "this is the forward KL(teacher || student): on-policy distillation here weights by the STUDENT's "
            "probabilities, sum_v p_S (log p_S - log p_T)": float((fwd * m).sum() / m.sum()),
            "you averaged over every position: only the generated positions (mask True) count": float(rev.mean()),
            "you summed over the positions instead of averaging over the masked ones": float((rev * m).sum()),
            "you divided by B*T*V (a mean over classes too): sum over the vocabulary, average over positions":
                float((rev * m).sum() / (m.numel() * s.shape[-1])),
            "you divided by the batch size: average over the masked positions, not the rows": float((rev * m).sum() / s.shape[0]),
            "you used raw logits where log-probabilities belong: apply log_softmax to both first":
                float(((s.softmax(-1) * (s - t)).sum(-1) * m).sum() / m.sum()),
        }
        for why, value in wrong.items():
            if abs(float(got.detach()) - value) < 1e-4:
                fail(f"the reverse KL is {float(want.detach()):.4f} here, you returned {float(got.detach()):.4f}: {why}")
        fail(f"the reverse KL is {float(want.detach()):.4f} here, you returned {float(got.detach()):.4f}. Recipe: log_softmax both "
             "logits, kl = sum_v p_S (log p_S - log p_T) at each position, then the mean over positions where mask is True")
    if not got.requires_grad:
        fail("your loss carries no gradient to the student's logits (did you detach them or use .item()?): the student "
             "learns through it")
    got.backward()
    want.backward()
    if z.grad is None or not close(z.grad, ref_z.grad, atol=1e-5):
        fail("the value is right but the gradient with respect to the student's logits is not: compute the loss from "
             "the student's logits with differentiable torch operations (no sampling, no argmax)")


def check_overconfidence(fn: Callable, seed: int = 0) -> None:
    """Grade fn(student_logits [N,V], teacher_logits [N,V]) -> the mean over positions of
    max_v p_S(v) - p_T(argmax_v p_S): the student's confidence in its top token minus the teacher's
    probability of that same token (a float or a 0-d tensor)."""
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(16, 6, generator=g) * 3, torch.randn(16, 6, generator=g) * 1.5
    want = overconfidence(s, t)

    def as_number(x, what):
        try:
            return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
        except (TypeError, ValueError, RuntimeError):
            fail(f"{what}: return one number (the mean over the positions), got {type(x).__name__}")

    got = as_number(fn(s.clone(), t.clone()), "your function")
    if abs(got - want) < 1e-5:
        same = as_number(fn(t.clone(), t.clone()), "your function")
        if abs(same) > 1e-5:
            fail(f"a student identical to the teacher must score 0, yours scores {same:.4f}")
        return
    ps, pt = s.softmax(-1), t.softmax(-1)
    conf, top = ps.max(-1)
    wrong = {
        "you read the teacher's probability at the TEACHER's top token: take p_T at the STUDENT's argmax":
            float((conf - pt.max(-1).values).mean()),
        "you compared the student's probability at the teacher's top token: the question is how much the student "
        "trusts ITS OWN top token": float((ps.gather(-1, pt.argmax(-1, keepdim=True))[:, 0] - pt.max(-1).values).mean()),
        "you took absolute values: a student less confident than the teacher scores below 0 (underconfident)":
            float((conf - pt.gather(-1, top[:, None])[:, 0]).abs().mean()),
        "you used raw logits: apply softmax to both first":
            float((s.max(-1).values - t.gather(-1, s.argmax(-1, keepdim=True))[:, 0]).mean()),
        "the sign is flipped: student confidence minus the teacher's probability": -want,
    }
    for why, value in wrong.items():
        if abs(got - value) < 1e-5:
            fail(f"overconfidence is {want:.4f} here, you returned {got:.4f}: {why}")
    fail(f"overconfidence is {want:.4f} here, you returned {got:.4f}. Recipe: p = softmax of each; top = argmax of the "
         "student's p; mean over positions of p_S[top] - p_T[top]")
