"""Exercise graders for labkit.paradigms.mixture (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch

from labkit.exercises.common import fail
from labkit.paradigms.mixture import expected_epochs, mixture_weights


def check_mixture_weights(fn: Callable) -> None:
    """Grade fn(sizes: list[int], gamma: float) -> weights (list or tensor, one per source) against
    n^gamma / sum n^gamma. Raises AssertionError naming the misconception."""
    for sizes, gamma in [([1000, 100, 10], 0.5), ([5000, 50], 0.3), ([400, 300, 200, 100], 0.0), ([90, 10], 1.0)]:
        got = torch.as_tensor(fn(list(sizes), gamma), dtype=torch.float64).flatten()
        want = mixture_weights(sizes, gamma)
        if got.shape != want.shape:
            fail(f"return one weight per source: {len(sizes)} for sizes {sizes}, got {got.numel()}")
        if torch.allclose(got, want, atol=1e-6):
            continue
        n = torch.tensor(sizes, dtype=torch.float64)
        if abs(float(got.sum()) - 1) > 1e-6:
            if torch.allclose(got / got.sum(), want, atol=1e-6):
                fail(f"your weights sum to {float(got.sum()):.4g}: divide n^gamma by its sum so they form a distribution")
            fail(f"your weights sum to {float(got.sum()):.4g}, not 1: they must be sampling probabilities")
        if gamma > 0 and torch.allclose(got, n ** (1 / gamma) / (n ** (1 / gamma)).sum(), atol=1e-6):
            fail("you raised the sizes to 1/gamma: the exponent is gamma itself (gamma < 1 flattens the weights)")
        if torch.allclose(got, n / n.sum(), atol=1e-6):
            fail(f"these are the size proportions (gamma = 1) for gamma = {gamma}: raise each size to the power gamma first")
        if torch.allclose(got, torch.full_like(n, 1 / len(sizes)), atol=1e-6):
            fail(f"uniform weights are gamma = 0 only; for gamma = {gamma} use n^gamma / sum n^gamma")
        if torch.allclose(got, (gamma * n) / (gamma * n).sum(), atol=1e-6) if gamma > 0 else False:
            fail("you multiplied the sizes by gamma: raise them to the power gamma")
        fail(f"for sizes {sizes} and gamma {gamma}: got {[round(float(x), 4) for x in got]}, expected "
              f"{[round(float(x), 4) for x in want]}")


def check_expected_epochs(fn: Callable) -> None:
    """Grade fn(sizes, weights, total_samples) -> expected epochs per source, alpha_k * S / n_k.
    Raises AssertionError naming the misconception."""
    for sizes, gamma, S in [([1000, 100, 10], 0.5, 5000), ([20000, 200], 0.3, 8000)]:
        w = mixture_weights(sizes, gamma)
        got = torch.as_tensor(fn(list(sizes), w.clone(), S), dtype=torch.float64).flatten()
        want = expected_epochs(sizes, w, S)
        if got.shape != want.shape:
            fail(f"return one number per source ({len(sizes)}), got {got.numel()}")
        if torch.allclose(got, want, rtol=1e-6):
            continue
        n = torch.tensor(sizes, dtype=torch.float64)
        if torch.allclose(got, w * S, rtol=1e-6):
            fail("that is how many examples each source contributes; epochs divide it by the source's size n_k")
        if torch.allclose(got, w / n, rtol=1e-6):
            fail("you forgot the budget: multiply by the total number of sampled examples S")
        if torch.allclose(got, n / (w * S), rtol=1e-6):
            fail("upside down: epochs = alpha_k * S / n_k (more samples -> more epochs)")
        if torch.allclose(got, torch.full_like(n, S / float(n.sum())), rtol=1e-6):
            fail("S / sum(n) is the epoch count when sampling by size (gamma = 1) only: use each source's weight")
        fail(f"got {[round(float(x), 3) for x in got]}, expected {[round(float(x), 3) for x in want]}")
