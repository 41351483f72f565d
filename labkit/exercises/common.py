"""Helpers shared by every exercise grader: one way to fail, one tensor requirement, one closeness test."""
from __future__ import annotations

import torch


def fail(message: str):
    """Raise the AssertionError a grader reports: the message names the misconception and the fix."""
    raise AssertionError(message)


def require_tensor(x, what: str) -> torch.Tensor:
    """Return x if it is a torch tensor, else fail naming what the learner's function must return."""
    if not isinstance(x, torch.Tensor):
        fail(f"{what} must return a torch tensor, got {type(x).__name__}")
    return x


def close(a, b, atol: float = 1e-6, rtol: float = 0.0) -> bool:
    """True when a (a tensor or a number) has b's shape and |a - b| <= atol + rtol |b| everywhere (float64)."""
    try:
        a64 = torch.as_tensor(a.detach() if isinstance(a, torch.Tensor) else a, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return False
    b64 = torch.as_tensor(b, dtype=torch.float64)
    return a64.shape == b64.shape and bool(((a64 - b64).abs() <= atol + rtol * b64.abs()).all())
