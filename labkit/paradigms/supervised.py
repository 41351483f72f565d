"""Supervised targets: single-label CE, multi-label BCE, soft (annotator) targets, label smoothing, weights.

The loss formula is one line; the target decides the task. Softmax CE assumes the classes exclude
each other (one probability simplex); independent BCE assumes each label is its own Bernoulli
event; a soft target q asks the model to reproduce a distribution, CE(q, p) = H(q) + KL(q || p).
Every function checks that its target has the meaning it assumes and raises a ContractError
that names the right objective when it does not.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from labkit.contracts import IGNORE, ContractError
from labkit.reduce import Reduced, reduce

__all__ = ["single_label_ce", "soft_target_ce", "multilabel_bce", "normalise_multi_hot", "smoothed_targets",
           "ce_decomposition", "class_balanced_weights", "weighted_ce", "risk_shares", "vote_distribution",
           "majority_vote", "majority_law", "reliability", "expected_calibration_error", "f1_per_label",
           "ce_logit_grad", "temperature_push", "competitors_holding", "class_mass_at_prior"]


# ----------------------------------------------------------------------------- target contracts

def _logits_2d(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ContractError(f"logits must be a float tensor [N, K], got {getattr(logits, 'shape', type(logits).__name__)}")


def _is_multi_hot(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all()) and bool((t.sum(-1) > 1).any())


def single_label_ce(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
                    ignore_index: int = IGNORE) -> torch.Tensor:
    """Softmax cross-entropy for mutually exclusive classes: logits [N, K], labels [N] int64 class ids.

    l_i = -log softmax(z_i)[y_i]; "mean" divides by the number of supervised rows (labels != -100),
    "sum" does not, "none" returns [N] (0 on ignored rows). Multi-hot or soft targets are refused
    with the objective that fits them.
    """
    _logits_2d(logits)
    if reduction not in ("mean", "sum", "none"):
        raise ContractError(f"unknown reduction {reduction!r}; fix: 'mean', 'sum' or 'none'")
    if labels.is_floating_point() and labels.shape == logits.shape:
        if _is_multi_hot(labels):
            raise ContractError("single-label CE got a multi-hot target (rows with several 1s). Softmax puts all labels on ONE "
                                "probability simplex, so co-occurring labels must share mass (two present labels -> 0.5 each) "
                                "and raising one lowers the other. Fix: for labels that can be present together use "
                                "multilabel_bce (independent sigmoids); for mutually exclusive classes pass class ids [N]")
        raise ContractError("single-label CE takes class ids [N]; this target is a distribution per row. "
                            "Fix: soft_target_ce(logits, q) for soft (e.g. annotator-vote) targets")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ContractError(f"labels must be [N] = [{logits.shape[0]}] class ids, got {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise ContractError(f"labels must be int64 class ids, got {labels.dtype}")
    K = logits.shape[1]
    bad = labels.ne(ignore_index) & (labels.lt(0) | labels.ge(K))
    if bad.any():
        raise ContractError(f"labels hold ids outside [0, {K}) that are not {ignore_index}: {labels[bad][:5].tolist()}")
    if reduction == "mean" and not labels.ne(ignore_index).any():
        raise ContractError("no supervised row (all labels are -100): the mean would be 0/0")
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction=reduction)


def _check_distribution(q: torch.Tensor, logits: torch.Tensor, what: str = "soft target") -> None:
    if q.shape != logits.shape or not q.is_floating_point():
        raise ContractError(f"a {what} must be a float [N, K] = {tuple(logits.shape)} tensor, got {q.dtype} {tuple(q.shape)}; "
                            "fix: class ids go to single_label_ce")
    if (q < 0).any():
        raise ContractError(f"a {what} must be non-negative")
    sums = q.sum(-1)
    if ((sums - 1).abs() > 1e-4).any():
        if _is_multi_hot(q):
            raise ContractError(f"this {what} is multi-hot (rows sum to {float(sums.max()):.0f}), not a distribution. Fix: for "
                                "labels that co-occur use multilabel_bce; if you really want softmax over them, "
                                "normalise_multi_hot (each present label then gets 1/#labels)")
        raise ContractError(f"each {what} row must sum to 1 (a distribution over the K classes); got sums in "
                            f"[{float(sums.min()):.3f}, {float(sums.max()):.3f}]; fix: divide the vote counts by the number of votes")


def soft_target_ce(logits: torch.Tensor, q: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """CE with a distribution target: l_i = -sum_k q_ik log softmax(z_i)_k = H(q_i) + KL(q_i || p_i).

    logits [N, K], q [N, K] rows summing to 1 (one-hot rows give single-label CE). "mean" over
    rows, "sum", or "none" [N]. Its minimiser is p = q: the model learns the target distribution.
    """
    _logits_2d(logits)
    _check_distribution(q, logits)
    per = -(q * F.log_softmax(logits, -1)).sum(-1)
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[_reduction(reduction)]()


def _reduction(r: str) -> str:
    if r not in ("mean", "sum", "none"):
        raise ContractError(f"unknown reduction {r!r}; fix: 'mean', 'sum' or 'none'")
    return r


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                   pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Independent Bernoulli per label: l_i = -sum_k [y_ik log s(z_ik) + (1 - y_ik) log(1 - s(z_ik))].

    logits [N, K], targets [N, K] in [0, 1] (multi-hot). Per item the K label losses are SUMMED
    (each label is its own event); "mean" averages the items, "sum" adds them, "none" gives [N].
    pos_weight [K] multiplies the positive term (rare labels).
    """
    _logits_2d(logits)
    if not targets.is_floating_point():
        if targets.dim() == 1:
            raise ContractError("multilabel_bce needs a multi-hot target [N, K]; got class ids [N]. For mutually exclusive "
                                "classes use single_label_ce (softmax keeps the probabilities on one simplex); for "
                                "multi-label data build the multi-hot matrix")
        targets = targets.float()
    if targets.shape != logits.shape:
        raise ContractError(f"targets {tuple(targets.shape)} must match logits {tuple(logits.shape)}: one 0/1 entry per label")
    if (targets < 0).any() or (targets > 1).any():
        raise ContractError("BCE targets must lie in [0, 1] (1 = label present)")
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=pos_weight).sum(-1)
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[_reduction(reduction)]()


def normalise_multi_hot(y: torch.Tensor) -> torch.Tensor:
    """Multi-hot [N, K] -> rows that sum to 1 (each present label gets 1/#present): the target a
    softmax model is given when multi-label data is forced onto one simplex."""
    if y.dim() != 2:
        raise ContractError(f"multi-hot targets must be [N, K], got {tuple(y.shape)}")
    n = y.float().sum(-1, keepdim=True)
    if (n == 0).any():
        raise ContractError("a row has no label: it cannot be normalised into a distribution; fix: add a 'no finding' "
                            "class or use multilabel_bce, which handles empty rows")
    return y.float() / n


def smoothed_targets(labels: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Label smoothing: q = (1 - eps) onehot(y) + eps / K, [N] ids -> [N, K] (the target
    F.cross_entropy(label_smoothing=eps) uses)."""
    if not 0 <= eps < 1:
        raise ContractError(f"eps must lie in [0, 1), got {eps}")
    if labels.dim() != 1 or labels.dtype != torch.long or (labels < 0).any() or (labels >= n_classes).any():
        raise ContractError(f"labels must be [N] int64 ids in [0, {n_classes})")
    return (1 - eps) * F.one_hot(labels, n_classes).float() + eps / n_classes


def ce_decomposition(q: torch.Tensor, p: torch.Tensor) -> dict:
    """CE(q, p) = H(q) + KL(q || p) per row: q, p [N, K] distributions -> {"ce", "entropy", "kl"} each [N]
    (0 log 0 = 0). The model only controls the KL term; H(q) is the floor set by the target."""
    if q.shape != p.shape or q.dim() != 2:
        raise ContractError(f"q and p must both be [N, K], got {tuple(q.shape)} and {tuple(p.shape)}")
    for name, t in (("q", q), ("p", p)):
        if (t < 0).any() or ((t.sum(-1) - 1).abs() > 1e-4).any():
            raise ContractError(f"{name} rows must be probability distributions (non-negative, summing to 1)")
    if ((q > 0) & (p == 0)).any():
        raise ContractError("p is 0 where q is not: CE and KL are infinite; fix: compute p with softmax (never exactly 0)")
    logp = p.clamp_min(1e-300).log()
    ce = -(q * logp).sum(-1)
    ent = -(torch.where(q > 0, q * q.clamp_min(1e-300).log(), torch.zeros_like(q))).sum(-1)
    kl = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - logp), torch.zeros_like(q)).sum(-1)
    return {"ce": ce, "entropy": ent, "kl": kl}


def ce_logit_grad(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """d mean-CE / d logits = (softmax(z) - onehot(y)) / n, [N, K]; rows with label -100 get 0 and
    n counts the supervised rows. Every logit of a supervised row moves, not only the target's."""
    _logits_2d(logits)
    valid = labels.ne(ignore_index)
    n = int(valid.sum())
    if n == 0:
        raise ContractError("no supervised row (all labels are -100)")
    g = logits.softmax(-1)
    g[valid.nonzero().flatten(), labels[valid]] -= 1
    return g * valid[:, None] / n


def temperature_push(logits: torch.Tensor, target: int, T: float = 1.0, top: int = 10) -> dict:
    """Where one target's gradient goes at temperature T, for one position with logits z [V].

    loss = -log softmax(z / T)[target]; d loss / d z = (p - onehot(target)) / T with p = softmax(z / T).
    The target's logit gets -(1 - p_y) / T (descent raises it); every other logit k gets the push
    p_k / T > 0 (descent lowers it): all V - 1 others receive a gradient at any T, only its
    distribution over them changes. Returns {"p" [V], "grad" [V], "push" [V-1] (the others'
    gradients, sorted from the strongest competitor down), "cum_share" [V-1] (share of the total push
    held by the k strongest competitors, k = 1..V-1), "top_share" (cum_share at k = top), "top",
    "grad_sum" (0: the target's gain is the others' loss)}. float64 throughout.
    """
    if not T > 0:
        raise ContractError(f"temperature T must be > 0, got {T}")
    z = torch.as_tensor(logits, dtype=torch.float64).flatten()
    V = len(z)
    if not 0 <= int(target) < V or not 1 <= int(top) <= V - 1:
        raise ContractError(f"need 0 <= target < {V} and 1 <= top <= {V - 1}, got target {target}, top {top}")
    p = (z / T).softmax(-1)
    grad = p.clone()
    grad[int(target)] -= 1
    grad = grad / T
    others = torch.ones(V, dtype=torch.bool)
    others[int(target)] = False
    push = grad[others].sort(descending=True).values
    cum = push.cumsum(0) / push.sum()
    return {"p": p, "grad": grad, "push": push, "cum_share": cum, "top_share": float(cum[int(top) - 1]),
            "top": int(top), "grad_sum": float(grad.sum())}


def competitors_holding(cum_share: torch.Tensor, share: float) -> int:
    """The smallest k whose k strongest competitors hold at least `share` of the push
    (cum_share from temperature_push)."""
    if not 0 < share <= 1:
        raise ContractError(f"share must lie in (0, 1], got {share}")
    return int((cum_share < share - 1e-12).sum()) + 1


# ----------------------------------------------------------------------------- weights and reductions

def class_balanced_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """w_c = N / (K n_c) [K]: with these weights every class carries the same total weight (N/K)."""
    counts = torch.bincount(labels, minlength=n_classes).double()
    if (counts == 0).any():
        raise ContractError(f"classes {(counts == 0).nonzero().flatten().tolist()} have no example: their weight would be infinite")
    return (len(labels) / (n_classes * counts)).float()


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
                sample_weights: torch.Tensor | None = None) -> Reduced:
    """Weighted mean CE that keeps the weights' meaning: sum_i w_i l_i / sum_i w_i, with
    w_i = class_weights[y_i] * sample_weights[i]. Returns Reduced(value, denominator = sum w).

    Dividing by sum(w) (not N) makes a weight-2 example count exactly like two copies of it, and a
    batch of one class give the plain mean whatever its weight (as F.cross_entropy(weight=...) does).
    """
    per = single_label_ce(logits, labels, reduction="none")
    N = len(labels)
    w = torch.ones(N, dtype=per.dtype, device=per.device)
    if class_weights is not None:
        if class_weights.shape != (logits.shape[1],):
            raise ContractError(f"class_weights must be [K] = [{logits.shape[1]}], got {tuple(class_weights.shape)}")
        w = w * class_weights.to(per)[labels.clamp_min(0)]
    if sample_weights is not None:
        if sample_weights.shape != (N,):
            raise ContractError(f"sample_weights must be [N] = [{N}], got {tuple(sample_weights.shape)}")
        w = w * sample_weights.to(per)
    mask = labels.ne(IGNORE)
    return reduce(per[:, None], mask[:, None], "token_mean", weights=w[:, None])


def risk_shares(losses: torch.Tensor, labels: torch.Tensor, n_classes: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Each class's share of the empirical risk sum_i w_i l_i: [K] summing to 1. With uniform
    weights the frequent classes dominate; class_balanced_weights evens it out."""
    if losses.shape != labels.shape or losses.dim() != 1:
        raise ContractError(f"losses and labels must both be [N], got {tuple(losses.shape)} and {tuple(labels.shape)}")
    w = torch.ones_like(losses) if weights is None else weights.to(losses)
    per_class = torch.zeros(n_classes, dtype=losses.dtype, device=losses.device).index_add_(0, labels, w * losses)
    total = per_class.sum()
    if float(total) <= 0:
        raise ContractError("the weighted risk is 0: no share to compute")
    return per_class / total


# ----------------------------------------------------------------------------- annotators and calibration

def _votes(votes: torch.Tensor, n_classes: int) -> None:
    if votes.dim() != 2 or votes.dtype != torch.long:
        raise ContractError(f"votes must be int64 class ids [N, A] (A annotators), got {votes.dtype} {tuple(votes.shape)}")
    if (votes < 0).any() or (votes >= n_classes).any():
        raise ContractError(f"votes must lie in [0, {n_classes})")


def vote_distribution(votes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[N, A] votes -> [N, K] shares (counts / A): the soft target that keeps the annotators' disagreement."""
    _votes(votes, n_classes)
    return F.one_hot(votes, n_classes).float().mean(1)


def majority_vote(votes: torch.Tensor, n_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, A] votes -> [N] the most voted class (ties broken uniformly at random with `generator`)."""
    counts = vote_distribution(votes, n_classes)
    top = counts.eq(counts.max(-1, keepdim=True).values).float()
    noise = torch.rand(counts.shape, generator=generator)
    return (top * (1 + noise)).argmax(-1)


def majority_law(q: torch.Tensor, n_annotators: int) -> torch.Tensor:
    """The law of the majority vote when n_annotators vote independently from q: [N, K] -> [N, K].

    Exact: sums the multinomial probability of every vote-count vector c (sum_k c_k = A) onto its
    most voted class (a tie split evenly between the tied classes, as majority_vote breaks it
    uniformly). Sharper than q: with q = (0.7, 0.3) and 5 annotators the majority says class 0
    with probability 0.84. This is what a model trained on majority votes is asked to learn.
    """
    if q.dim() != 2 or (q < 0).any() or ((q.sum(-1) - 1).abs() > 1e-4).any():
        raise ContractError(f"q must be [N, K] probability rows, got {tuple(q.shape)}")
    A, K = int(n_annotators), q.shape[1]
    if A < 1:
        raise ContractError(f"n_annotators must be >= 1, got {A}")
    counts = torch.tensor([c for c in itertools.product(range(A + 1), repeat=K) if sum(c) == A], dtype=torch.float64)
    if len(counts) > 200_000:
        raise ContractError(f"{len(counts)} vote patterns for K={K}, A={A}: too many to enumerate")
    log_coef = torch.lgamma(torch.tensor(A + 1.0, dtype=torch.float64)) - torch.lgamma(counts + 1).sum(-1)   # [M]
    qd = q.double()
    logq = torch.where(qd > 0, qd.clamp_min(1e-300).log(), torch.zeros_like(qd))
    prob = (log_coef + logq @ counts.T).exp() * ((qd[:, None, :] > 0) | (counts[None] == 0)).all(-1)   # [N, M]
    winners = counts.eq(counts.max(-1, keepdim=True).values).double()
    return (prob @ (winners / winners.sum(-1, keepdim=True))).to(q.dtype)


def reliability(probs: torch.Tensor, truth: torch.Tensor, n_bins: int = 10) -> dict:
    """Reliability table of predicted probabilities probs [N, K] (rows sum to 1).

    truth: class ids [N] (accuracy = 1[argmax p = y]) or the true label distributions [N, K]
    (expected accuracy = q[argmax p], exact when q is known). Bins of equal width on the
    confidence max_k p. Returns {"confidence" [B], "accuracy" [B], "count" [B], "ece"}:
    ECE = sum_b (n_b / N) |accuracy_b - confidence_b| (empty bins are NaN and skipped).
    """
    if probs.dim() != 2:
        raise ContractError(f"probs must be [N, K], got {tuple(probs.shape)}")
    if ((probs.sum(-1) - 1).abs() > 1e-3).any():
        raise ContractError("probs rows must sum to 1 (softmax outputs); sigmoid outputs are not one distribution, so "
                            "'confidence' is undefined for them")
    conf, pred = probs.max(-1)
    if truth.dim() == 1:
        acc = truth.eq(pred).float()
    elif truth.shape == probs.shape:
        acc = truth.gather(1, pred[:, None]).squeeze(1).float()
    else:
        raise ContractError(f"truth must be [N] ids or [N, K] distributions, got {tuple(truth.shape)}")
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = torch.bucketize(conf.clamp(0, 1).cpu(), edges[1:-1])
    count = torch.bincount(idx, minlength=n_bins).float()
    sum_conf = torch.zeros(n_bins).index_add_(0, idx, conf.float().cpu())
    sum_acc = torch.zeros(n_bins).index_add_(0, idx, acc.cpu())
    c, a = sum_conf / count, sum_acc / count
    ece = float(((count / count.sum()) * (a - c).abs()).nan_to_num(0.0).sum())
    return {"confidence": c, "accuracy": a, "count": count, "ece": ece, "edges": edges}


def expected_calibration_error(probs: torch.Tensor, truth: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of reliability(probs, truth, n_bins)."""
    return reliability(probs, truth, n_bins)["ece"]


def f1_per_label(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """F1 of each label when it is predicted present at probs >= threshold: [N, K], [N, K] -> [K]."""
    if probs.shape != targets.shape or probs.dim() != 2:
        raise ContractError(f"probs and targets must both be [N, K], got {tuple(probs.shape)} and {tuple(targets.shape)}")
    pred, t = probs.ge(threshold).float(), targets.float()
    tp = (pred * t).sum(0)
    return (2 * tp / (pred.sum(0) + t.sum(0)).clamp_min(1e-12))


def class_mass_at_prior(probs: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor) -> dict:
    """Where each class's predicted probability mass goes, on a population with class prior `prior`.

    probs [N, K] (rows sum to 1), labels [N] ids of a test set whose class mix may differ from the
    prior; each item is reweighted by w_i = prior[y_i] / test_share[y_i], so the sums below are those
    of a population drawn with `prior` (e.g. the training mix). Returns [K] tensors:
    "count_ratio"_c = sum_i w_i p_ic / sum_i w_i 1[y_i = c] (predicted / true count of class c, 1 is right),
    "leak_share"_c  = sum_{i: y_i != c} w_i p_ic / sum_i w_i p_ic (share of class c's mass on non-members).
    """
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ContractError(f"probs must be [N, K] and labels [N], got {tuple(probs.shape)} and {tuple(labels.shape)}")
    K = probs.shape[1]
    prior = torch.as_tensor(prior, dtype=torch.float64)
    test = torch.bincount(labels, minlength=K).double() / len(labels)
    if prior.shape != (K,) or (test == 0).any():
        raise ContractError(f"prior must be [K] = [{K}] and every class must occur in the test labels")
    w = (prior / test)[labels]
    p = probs.double() * w[:, None]
    member = F.one_hot(labels, K).double() * w[:, None]
    mass = p.sum(0)
    return {"count_ratio": mass / member.sum(0), "leak_share": (p * (1 - F.one_hot(labels, K).double())).sum(0) / mass}
