"""Exercise graders for labkit.paradigms.supervised (moved out of the paradigm module: it holds builders and objectives only).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.contracts import IGNORE
from labkit.exercises.common import close, fail
from labkit.memory import measure_peak_memory


def check_ce_grad(fn, large: bool = False) -> None:
    """Grade fn(logits [N, K], labels [N]) -> d mean-CE / d logits [N, K] against autograd.

    Labels may hold -100 (no target: zero gradient, not counted in the mean). large=True uses
    logits of magnitude ~100 (a softmax without the max subtracted overflows). Raises
    AssertionError naming the likely misconception."""
    g = torch.Generator().manual_seed(11)
    s = 60.0 if large else 1.0
    cases = [(s * torch.randn(4, 5, generator=g), torch.tensor([0, 3, 1, 4])),
             (3 * s * torch.randn(6, 7, generator=g), torch.tensor([2, IGNORE, 6, 0, IGNORE, 5]))]
    for logits, labels in cases:
        z = logits.clone().requires_grad_()
        F.cross_entropy(z, labels, ignore_index=IGNORE).backward()
        want = z.grad
        got = fn(logits.clone(), labels.clone())
        if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
            fail(f"return one gradient per logit, a tensor of shape {tuple(logits.shape)}; got {getattr(got, 'shape', type(got).__name__)}")
        if close(got, want):
            continue
        if not bool(torch.isfinite(got).all()):
            fail("your gradient has nan/inf for large logits: exp(z) overflowed. Subtract each row's max before exp "
                  "(softmax is unchanged by it), or use torch.softmax")
        valid = labels.ne(IGNORE)
        n, N = int(valid.sum()), len(labels)
        if close(got, -want):
            fail("the sign is flipped: d loss / d z = p - onehot (the loss goes DOWN along -gradient). You returned onehot - p")
        if close(got, want * n):
            fail("did you divide by the number of examples? The mean over N supervised rows gives each row (p - onehot) / N")
        if close(got, want * n / N) and n != N:
            fail(f"did you divide by all {N} rows? Only the {n} rows whose label is not -100 are counted in the mean")
        if close(got, want * n / logits.numel()) or close(got, want / logits.shape[1]):
            fail("you divided by N*K: the mean is over examples, not over examples x classes")
        if not bool(got[~valid].eq(0).all()):
            fail("rows with label -100 have no target: their gradient must be exactly 0")
        onehot = torch.zeros_like(logits)
        onehot[valid.nonzero().flatten(), labels[valid]] = 1
        if close(got, -onehot / n) or close(got, -onehot):
            fail("only the target logit moves in your gradient: softmax couples all logits, so every logit k gets p_k "
                  "(pushed down) and the target gets p_y - 1")
        if close(got, (logits - onehot) * valid[:, None] / n):
            fail("you used the raw logits where the gradient needs the probabilities p = softmax(z)")
        if close(got, (logits.log_softmax(-1) - onehot) * valid[:, None] / n):
            fail("you used log-probabilities: the gradient is softmax(z) - onehot, not log_softmax(z) - onehot")
        fail(f"your gradient differs from autograd by up to {float((got - want).abs().max()):.3g}")


def check_chunked_logsumexp(fn, memory: bool = True) -> None:
    """Grade fn(hidden [N, d], weight [V, d], chunk_size) -> logsumexp_k (hidden @ weight.T)_{ik}, [N],
    computed without the full [N, V] logits. Checks the value (also for logits near 1000, where a
    plain exp overflows) and, with memory=True, the peak memory (labkit.memory.measure_peak_memory)."""

    g = torch.Generator().manual_seed(12)
    for N, d, V, cs, scale in [(8, 4, 50, 16, 1.0), (5, 3, 37, 10, 1.0), (4, 3, 40, 16, 400.0)]:
        h = torch.randn(N, d, generator=g, dtype=torch.float64) * scale ** 0.5
        w = torch.randn(V, d, generator=g, dtype=torch.float64) * scale ** 0.5
        want = torch.logsumexp(h @ w.T, -1)
        got = fn(h.clone(), w.clone(), cs)
        if not isinstance(got, torch.Tensor) or got.shape != (N,):
            fail(f"return one logsumexp per row, shape ({N},); got {getattr(got, 'shape', type(got).__name__)}")
        if close(got, want, 1e-6 * max(1.0, scale)):
            continue
        if not bool(torch.isfinite(got).all()):
            fail("your result overflows (inf/nan) for large logits: exp(1000) is inf. Subtract a running maximum before exp "
                  "(logsumexp(z) = m + log sum exp(z - m))")
        parts = torch.stack([torch.logsumexp(h @ w[s:s + cs].T, -1) for s in range(0, V, cs)], -1)
        if close(got, parts.sum(-1), 1e-6 * max(1.0, scale)):
            fail("you added the chunks' logsumexps: log(a + b) is not log a + log b. Combine the partial results with a "
                  "logsumexp over chunks (or a running max and a running sum of exp)")
        if close(got, parts.max(-1).values, 1e-6 * max(1.0, scale)):
            fail("you kept the largest chunk's logsumexp: every chunk's mass counts. Combine them with a logsumexp")
        fail(f"your logsumexp differs from torch.logsumexp by up to {float((got - want).abs().max()):.3g}")
    if memory:
        N, d, V, cs = 64, 16, 40_000, 1_000
        h, w = torch.randn(N, d, generator=g), torch.randn(V, d, generator=g)
        full = N * V * 4
        m = measure_peak_memory(lambda: fn(h, w, cs), "cpu")
        if m.peak_bytes > full / 4:
            fail(f"your function allocated {m.peak_bytes / 2**20:.1f} MiB at its peak, the size of the full [N, V] logits is "
                  f"{full / 2**20:.1f} MiB: only [N, chunk] (or [chunk, V]) logits may exist at once")


def check_multilabel_loss(fn, large: bool = False) -> None:
    """Grade fn(logits [N, K], targets multi-hot [N, K]) -> per-item multi-label loss [N]:
    sum over the K labels of independent binary cross-entropies. large=True uses logits of
    magnitude ~40, where log(sigmoid(z)) computed naively becomes log(0)."""
    g = torch.Generator().manual_seed(13)
    for N, K in [(6, 5), (4, 3)]:
        z = (40.0 if large else 2.0) * torch.randn(N, K, generator=g)
        y = (torch.rand(N, K, generator=g) < 0.4).float()
        y[0] = 0
        y[0, :2] = 1
        y[1] = 0
        y[1, 0] = 1
        want = F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)
        got = fn(z.clone(), y.clone())
        if not isinstance(got, torch.Tensor) or got.shape != (N,):
            fail(f"return one loss per item, shape ({N},); got {getattr(got, 'shape', type(got).__name__)}")
        if close(got, want, 1e-4 * (20 if large else 1)):
            continue
        if not bool(torch.isfinite(got).all()):
            fail("your loss is inf/nan for large logits: log(sigmoid(z)) underflows to log(0). Use F.logsigmoid(z) and "
                  "F.logsigmoid(-z) = log(1 - sigmoid(z)), or F.binary_cross_entropy_with_logits")
        s = torch.sigmoid(z)
        if close(got, want / K, 1e-5):
            fail("you averaged over the labels: each label is its own Bernoulli event, so an item's loss SUMS its K label losses")
        if close(got, -(y * s.log()).sum(-1), 1e-5):
            fail("only the present labels are scored: add the (1 - y) log(1 - sigmoid(z)) term, or absent labels are never pushed down")
        q = y / y.sum(-1, keepdim=True).clamp_min(1)
        if close(got, -(q * z.log_softmax(-1)).sum(-1), 1e-5) or close(got, -(y * z.log_softmax(-1)).sum(-1), 1e-5):
            fail("this is softmax cross-entropy: the labels compete for one probability mass, so two present labels can each "
                  "reach only 0.5. Use an independent sigmoid per label (binary cross-entropy)")
        if close(got, F.binary_cross_entropy(z.clamp(1e-6, 1 - 1e-6), y, reduction="none").sum(-1), 1e-4):
            fail("you treated logits as probabilities: apply sigmoid first (or use binary_cross_entropy_with_logits)")
        fail(f"your per-item loss differs from the sum of binary cross-entropies by up to {float((got - want).abs().max()):.3g}")


def check_class_weighted_ce(fn, seed: int = 14) -> None:
    """Grade fn(logits [N, K], labels [N], class_weights [K]) -> scalar weighted mean CE
    sum_i w_{y_i} l_i / sum_i w_{y_i} (weights keep their meaning after the reduction).
    Another seed draws other logits, labels and weights."""
    g = torch.Generator().manual_seed(seed)
    K = 4
    w = torch.tensor([0.5, 1.0, 3.0, 2.0]) if seed == 14 else 0.2 + 4 * torch.rand(K, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0]) if seed == 14 else torch.randint(K, (12,), generator=g)
    cases = [(torch.randn(len(labels), K, generator=g), labels),
             (torch.randn(3, K, generator=g), torch.tensor([2, 2, 2]))]     # one class only: weights must cancel
    for z, y in cases:
        per = F.cross_entropy(z, y, reduction="none")
        want = (w[y] * per).sum() / w[y].sum()
        got = fn(z.clone(), y.clone(), w.clone())
        if not isinstance(got, torch.Tensor) or got.dim() != 0:
            fail(f"return one scalar tensor, got {getattr(got, 'shape', type(got).__name__)}")
        if close(got, want, 1e-5):
            continue
        if close(got, (w[y] * per).sum() / len(y), 1e-5):
            fail("you divided by the number of examples: then a batch holding only class 2 (weight 3) gets 3x the loss of "
                  "the same batch unweighted, and the weights change the learning rate instead of the balance. "
                  "Divide by the sum of the weights")
        if close(got, per.mean(), 1e-5):
            fail("the class weights are not applied: each example's loss must be multiplied by the weight of its label")
        pred = z.argmax(-1)
        if close(got, (w[pred] * per).sum() / w[pred].sum(), 1e-5):
            fail("you weighted by the predicted class: the weight belongs to the true label y_i")
        fail(f"your weighted loss {float(got):.4f} differs from sum(w l) / sum(w) = {float(want):.4f}")
