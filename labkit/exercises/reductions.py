"""Exercise graders for labkit.reduce (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

import torch

from labkit.exercises.common import fail


def _micro_batches():
    """Three micro-batches with unequal target counts (1, 5 and 11 targets) and distinct losses."""
    g = torch.Generator().manual_seed(6)
    shapes = [(1, 2), (2, 3), (3, 4)]
    out = []
    for k, (B, T) in enumerate(shapes):
        l = torch.rand(B, T, generator=g, dtype=torch.float64) + 2.0 * k
        m = torch.ones(B, T, dtype=torch.long)
        m[0, -1] = 0
        out.append((l, m))
    return out


def check_micro_batch_loss(fn) -> None:
    """Grade fn(token_losses [B,T], mask [B,T], global_count) -> one micro-batch's loss: summed over
    the micro-batches of one step it must equal the token mean of the whole batch (and so give
    the full-batch gradient). Raises AssertionError naming the misconception."""
    parts = _micro_batches()
    N = sum(int(m.sum()) for _, m in parts)
    full = sum(float((l * m).sum()) for l, m in parts) / N
    got = 0.0
    for l, m in parts:
        value = fn(l.clone(), m.clone(), N)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            fail(f"return one scalar tensor per micro-batch, got {type(value).__name__} {getattr(value, 'shape', '')}")
        got += float(value)
    if abs(got - full) < 1e-9:
        return
    means = [float((l * m).sum() / m.sum()) for l, m in parts]
    n_seq = sum(l.shape[0] for l, _ in parts)
    if abs(got - sum(means) / len(parts)) < 1e-9:
        fail(f"your losses add up to {got:.4f}, the mean of the micro-batch means; the full batch's token mean is {full:.4f}. "
              "Did you divide by each micro-batch's own token count (and by the number of micro-batches)? "
              "Divide every micro-batch's sum by the global count instead")
    if abs(got - sum(means)) < 1e-9:
        fail("you summed the micro-batch means: each micro-batch is divided by its own count and nothing by the global "
              "count. Divide every micro-batch's SUM by the global target count")
    if abs(got - full * N / n_seq) < 1e-9:
        fail("did you divide by the number of sequences instead of the number of target tokens?")
    if abs(got - full * N) < 1e-9:
        fail("your losses add up to the plain sum: divide each micro-batch's sum by global_count")
    fail(f"your micro-batch losses add up to {got:.4f}; the full-batch token mean is {full:.4f}")


def check_ddp_rank_loss(fn) -> None:
    """Grade fn(local_sum, local_count, global_count, world_size) -> the loss one rank backpropagates
    when DDP averages gradients over ranks: the average over ranks must be the global token mean.
    Raises AssertionError naming the misconception."""
    for sums, counts in [([3.0, 40.0], [2, 20]), ([6.0, 1.0, 30.0], [3, 1, 12])]:
        R, N = len(sums), sum(counts)
        got = [float(fn(torch.tensor(s, dtype=torch.float64), c, N, R)) for s, c in zip(sums, counts)]
        averaged, want = sum(got) / R, sum(sums) / N
        if abs(averaged - want) < 1e-9:
            continue
        if abs(averaged * R - want) < 1e-9:
            fail("DDP divides the summed gradients by world_size: with loss = local_sum / global_count the step is R times "
                  "too small. Multiply by world_size (or all-reduce gradients with SUM)")
        if all(abs(g - s / c) < 1e-9 for g, s, c in zip(got, sums, counts)):
            fail(f"each rank returns its own token mean: a rank with {min(counts)} tokens weighs as much as one with "
                  f"{max(counts)} (mean of rank means {averaged:.3f} vs global token mean {want:.3f}). Divide the local SUM "
                  "by the all-reduced global count")
        fail(f"averaged over ranks your losses give {averaged:.4f}; the global token mean is {want:.4f}")
