"""Distillation: a student learns from a teacher's outputs instead of (or besides) hard labels.

Token/logit level: L = T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the supervised
positions (not over classes, not over sequences). The T^2 undoes the 1/T^2 that softening puts on
the gradient: d L / d z_s = T (p_s^T - p_t^T) before averaging, and p_s^T - p_t^T itself shrinks
like 1/T, so without T^2 the gradient falls like 1/T^2.
Sequence level: the teacher writes complete outputs (here: greedy) and the student is fine-tuned on
them; only the chosen tokens are seen, so the teacher's other plausible tokens are lost.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from labkit.contracts import ContractError, binary_mask, finite, tensor
from labkit.paradigms.autoregressive import completion_example, generate


def _check_T(T) -> float:
    t = finite(T, "temperature T")
    if not t > 0:
        raise ContractError(f"temperature T must be > 0, got {t}; fix: T = 1 leaves the distribution as is, T > 1 softens it")
    return t


def soften(logits: torch.Tensor, T: float) -> torch.Tensor:
    """p^T = softmax(z / T) over the last dimension (float)."""
    return (logits.float() / _check_T(T)).softmax(-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, scale_T2: bool = True,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge-distillation loss, logits [..., V] (e.g. [N,V] or [B,T,V]), mask [...] (True = supervised).

    L = T^2 * sum_pos m * KL(p_t^T || p_s^T) / sum_pos m,  KL = sum_v p_t (log p_t - log p_s),
    p^T = softmax(z / T). The teacher is a constant (detached). scale_T2=False drops the T^2.
    Both models must score the SAME event space (one vocabulary): otherwise there is no KL to take.
    """
    t = _check_T(T)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ContractError(f"student scores {student_logits.shape[-1]} classes/tokens but the teacher scores "
                            f"{teacher_logits.shape[-1]}: there is no shared event space, so KL(teacher || student) is "
                            "undefined. Fix: use the same tokenizer for both, or distil at the sequence level (the teacher "
                            "writes text, the student is fine-tuned on it in its own tokenizer)")
    if student_logits.shape != teacher_logits.shape:
        raise ContractError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                            "do not align position by position; fix: run both models on the same inputs")
    log_ps = F.log_softmax(student_logits.float() / t, -1)
    log_pt = F.log_softmax(teacher_logits.detach().float() / t, -1)
    pt = log_pt.exp()
    kl = torch.where(pt > 0, pt * (log_pt - log_ps), torch.zeros_like(pt)).sum(-1)      # [...]
    if mask is None:
        m = torch.ones_like(kl)
    else:
        m = binary_mask(tensor(mask, "mask"), "mask").to(kl.device)   # labels (-100) or soft values are refused
        if m.shape != kl.shape:
            raise ContractError(f"mask must be {tuple(kl.shape)} (one flag per position), got {tuple(m.shape)}")
        m = m.to(kl.dtype)
    n = m.sum()
    if float(n) == 0:
        raise ContractError("kd_loss: no supervised position (the mask is all False); the average would be 0/0")
    return (t * t if scale_T2 else 1.0) * (m * kl).sum() / n


def soft_loss_grad_norm(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperatures: Sequence[float],
                        scale_T2: bool = True) -> list[float]:
    """||d kd_loss / d student_logits|| for each T (Frobenius norm over [N,V])."""
    out = []
    for T in temperatures:
        z = student_logits.detach().float().clone().requires_grad_(True)
        kd_loss(z, teacher_logits, T, scale_T2=scale_T2).backward()
        out.append(float(z.grad.norm()))
    return out


def log_log_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (y ~ x^slope)."""
    lx, ly = torch.tensor(xs, dtype=torch.float64).log(), torch.tensor(ys, dtype=torch.float64).log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


@torch.no_grad()
def class_similarity(teacher_logits: torch.Tensor, labels: torch.Tensor, T: float, n_classes: int | None = None) -> torch.Tensor:
    """Mean soft target per true class: M[c] = mean over items of class c of softmax(z / T), [C,C].
    Off-diagonal mass is the 'dark knowledge': which classes the teacher finds alike."""
    p = soften(teacher_logits, T)
    C = n_classes or p.shape[-1]
    labels = torch.as_tensor(labels, device=p.device)
    return torch.stack([p[labels == c].mean(0) for c in range(C)])


def entropy(logits: torch.Tensor, mask: torch.Tensor | None = None, T: float = 1.0) -> float:
    """Mean predictive entropy (nats) of softmax(z / T) over positions (mask [...] selects them)."""
    logp = F.log_softmax(logits.float() / _check_T(T), -1)
    h = -(logp.exp() * logp).nan_to_num().sum(-1)
    if mask is None:
        return float(h.mean())
    m = torch.as_tensor(mask, device=h.device).bool()
    return float(h[m].mean())


def assert_same_event_space(teacher_tokenizer, student_tokenizer) -> None:
    """Token-level KD compares distributions id by id: both tokenizers must map every id to the same
    token. Raises a ContractError naming the first disagreement."""
    a, b = list(teacher_tokenizer.itos), list(student_tokenizer.itos)
    if len(a) != len(b):
        raise ContractError(f"teacher vocabulary has {len(a)} tokens, student's has {len(b)}: token-level distillation "
                            "has no shared event space. Fix: share the tokenizer, or distil at the sequence level")
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if diff:
        i = diff[0]
        raise ContractError(f"teacher and student vocabularies differ at id {i} ({a[i]!r} vs {b[i]!r}, {len(diff)} ids in all): "
                            "KL id by id would compare different tokens. Fix: share the tokenizer, or distil at the sequence level")


@torch.no_grad()
def sequence_distillation_data(teacher, prompts: Sequence[Sequence[int]], max_new_tokens: int, teacher_tokenizer,
                               student_tokenizer=None) -> list[dict]:
    """Sequence-level distillation data: the teacher continues each prompt greedily; each output
    becomes an SFT example (completion_example: prompt tokens are not targets) in the STUDENT's
    tokenizer (text is decoded with the teacher's and re-encoded with the student's)."""

    student_tokenizer = student_tokenizer or teacher_tokenizer
    outputs = generate(teacher, [list(p) for p in prompts], max_new_tokens=max_new_tokens,
                       pad_id=teacher_tokenizer.pad_id, temperature=0.0)
    examples = []
    for p, o in zip(prompts, outputs):
        prompt_text, output_text = teacher_tokenizer.decode(p), teacher_tokenizer.decode(o)
        examples.append(completion_example(student_tokenizer.encode(prompt_text), student_tokenizer.encode(output_text)))
    return examples
