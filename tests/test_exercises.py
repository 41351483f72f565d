"""Tests of labkit.exercises: each grader accepts correct solutions and names the misconception of wrong ones."""
import pytest
import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.batch import arange_positions, position_ids_from_mask
from labkit.exercises.autoregressive import (check_block_mask, check_compounding, check_next_positions,
                                             check_position_ids, check_scheduled_mix, check_sft_labels)
from labkit.exercises.contrastive import check_false_negative_mask, check_info_nce
from labkit.exercises.distillation import check_kd_grad, check_kd_loss
from labkit.exercises.masked import check_bert_mask, check_diffusion_loss
from labkit.exercises.mixture import check_expected_epochs, check_mixture_weights
from labkit.exercises.preference import check_dpo_loss, check_sequence_logprob
from labkit.exercises.reductions import check_ddp_rank_loss, check_micro_batch_loss
from labkit.exercises.supervised import (check_ce_grad, check_chunked_logsumexp, check_class_weighted_ce,
                                         check_multilabel_loss)
from labkit.paradigms.autoregressive import compounding, earlier_error, scheduled_sampling_inputs
from labkit.paradigms.contrastive import info_nce
from labkit.paradigms.distillation import kd_loss
from labkit.paradigms.masked import bert_mask
from labkit.paradigms.mixture import expected_epochs, mixture_weights
from labkit.paradigms.preference import dpo_loss, sequence_logprob
from labkit.paradigms.supervised import ce_logit_grad


def _lse_full_matrix(h, w, c):
    return torch.logsumexp(h @ w.T, -1)


def _lse_sum_of_chunks(h, w, c):
    return sum(torch.logsumexp(h @ w[s:s + c].T, -1) for s in range(0, w.shape[0], c))


def _lse_overflow(h, w, c):
    return sum((h @ w[s:s + c].T).exp().sum(-1) for s in range(0, w.shape[0], c)).log()


def _lse_ok(h, w, c):
    out = None
    for s in range(0, w.shape[0], c):
        part = torch.logsumexp(h @ w[s:s + c].T, -1)
        out = part if out is None else torch.logaddexp(out, part)
    return out


def _ce_grad_no_n(z, y):
    g = z.softmax(-1)
    v = y != IGNORE
    g[v.nonzero().flatten(), y[v]] -= 1
    return g * v[:, None]


def _ce_grad_ok(z, y):
    return ce_logit_grad(z, y)


def _ce_grad_all_rows(z, y):
    return _ce_grad_no_n(z, y) / len(y)


def _reference_bert(ids, mask_id, vocab_size, special_ids, g):
    return bert_mask(ids, mask_id, vocab_size, special_ids=special_ids, generator=g)


def good_grad(s, t, T):
    return T * (F.softmax(s / T, -1) - F.softmax(t / T, -1)) / s.shape[0]


def good_kd(s, t, T, mask):
    return F.kl_div(F.log_softmax(s[mask] / T, -1), F.softmax(t[mask] / T, -1), reduction="batchmean") * T**2


def good_info_nce(q, k, tau):
    return F.cross_entropy(F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / tau, torch.arange(len(q)))


def _reference_rates(e):
    c = compounding(e)
    return c["after_error"], c["clean"]


def _message(check, fn):
    with pytest.raises(AssertionError) as err:
        check(fn)
    return str(err.value)


def test_check_position_ids():
    check_position_ids(position_ids_from_mask)
    check_position_ids(lambda m: (m.cumsum(-1) - 1).clamp_min(0))
    assert "arange" in _message(check_position_ids, arange_positions)
    assert "off by one" in _message(check_position_ids, lambda m: m.cumsum(-1))
    assert "clamp" in _message(check_position_ids, lambda m: m.cumsum(-1) - 1)
    assert "tensor" in _message(check_position_ids, lambda m: m.tolist())


def test_check_next_positions():
    check_next_positions(lambda m: m.sum(-1))
    assert "padded length" in _message(check_next_positions, lambda m: torch.full((m.shape[0],), m.shape[1]))
    assert "off by one" in _message(check_next_positions, lambda m: m.sum(-1) - 1)


def test_check_block_mask():
    def good(d):
        T, real = len(d), d.ge(0)
        same = d[:, None].eq(d[None, :]) & real[:, None] & real[None, :]
        return (same & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)

    check_block_mask(good)
    causal_only = lambda d: torch.ones(len(d), len(d), dtype=torch.bool).tril()  # noqa: E731
    assert "cross-document" in _message(check_block_mask, causal_only)
    assert "LATER" in _message(check_block_mask, lambda d: d[:, None].eq(d[None, :]))
    no_pad_key = lambda d: good(d) & d.ge(0)[:, None]  # noqa: E731
    assert "NaN" in _message(check_block_mask, no_pad_key)


def test_check_sft_labels():
    check_sft_labels(lambda i, a, m: torch.where(a.bool() & m.bool(), i, torch.full_like(i, IGNORE)))
    by_id = lambda i, a, m: torch.where(m.bool() & i.ne(2), i, torch.full_like(i, IGNORE))  # noqa: E731
    assert "pad == eos" in _message(check_sft_labels, by_id)
    every = lambda i, a, m: torch.where(a.bool(), i, torch.full_like(i, IGNORE))  # noqa: E731
    assert "imitate" not in _message(check_sft_labels, every) and "prompt tokens" in _message(check_sft_labels, every)
    shifted = lambda i, a, m: torch.nn.functional.pad(  # noqa: E731
        torch.where(a.bool() & m.bool(), i, torch.full_like(i, IGNORE))[:, 1:], (0, 1), value=IGNORE)
    assert "shifted" in _message(check_sft_labels, shifted)


def test_check_micro_batch_loss_names_the_misconception():
    check_micro_batch_loss(lambda l, m, n: (l * m).sum() / n)
    own_means = lambda l, m, n: (l * m).sum() / m.sum() / 3  # noqa: E731
    assert "own token count" in _message(check_micro_batch_loss, own_means)
    assert "summed the micro-batch means" in _message(check_micro_batch_loss, lambda l, m, n: (l * m).sum() / m.sum())
    assert "sequences instead of" in _message(check_micro_batch_loss, lambda l, m, n: (l * m).sum() / 6)
    assert "one scalar" in _message(check_micro_batch_loss, lambda l, m, n: float((l * m).sum() / n))


def test_check_ddp_rank_loss_names_the_misconception():
    check_ddp_rank_loss(lambda s, c, n, r: s * r / n)
    assert "world_size" in _message(check_ddp_rank_loss, lambda s, c, n, r: s / n)
    assert "own token mean" in _message(check_ddp_rank_loss, lambda s, c, n, r: s / c)


def test_check_compounding_accepts_and_names_misconceptions():
    check_compounding(_reference_rates)

    def inclusive(e):
        before = e.cummax(1).values
        return ((e & before).sum() / before.sum()).item(), ((e & ~before).sum() / (~before).sum()).item()

    def all_positions(e):
        E = earlier_error(e)
        return ((e & E).sum() / e.numel()).item(), ((e & ~E).sum() / e.numel()).item()

    with pytest.raises(AssertionError, match="own error"):
        check_compounding(inclusive)
    with pytest.raises(AssertionError, match="divided by all"):
        check_compounding(all_positions)
    with pytest.raises(AssertionError, match="swapped"):
        check_compounding(lambda e: _reference_rates(e)[::-1])


def test_check_scheduled_mix_accepts_and_names_misconceptions():
    check_scheduled_mix(lambda x, p, a, s, g: scheduled_sampling_inputs(x, p, a, s, g)[0])

    def misaligned(x, p, a, s, g):
        use = torch.rand(x.shape, generator=g) >= a
        use[:, :s] = False
        return torch.where(use, p, x)

    def touches_prompt(x, p, a, s, g):
        use = torch.rand(x.shape, generator=g) >= a
        use[:, 0] = False
        return torch.where(use, torch.cat([x[:, :1], p[:, :-1]], 1), x)

    def inverted(x, p, a, s, g):
        return scheduled_sampling_inputs(x, p, 1 - a, s, g)[0]

    with pytest.raises(AssertionError, match="logit t-1"):
        check_scheduled_mix(misaligned)
    with pytest.raises(AssertionError, match="prompt"):
        check_scheduled_mix(touches_prompt)
    with pytest.raises(AssertionError, match="keeping the GOLD"):
        check_scheduled_mix(inverted)


@pytest.mark.parametrize("wrong,message", [
    (lambda q, k, tau: F.cross_entropy(F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T, torch.arange(len(q))), "temperature"),
    (lambda q, k, tau: F.cross_entropy(q @ k.T / tau, torch.arange(len(q))), "normalise"),
    (lambda q, k, tau: F.cross_entropy(F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / tau, torch.arange(len(q)), reduction="sum"), "summed"),
    (lambda q, k, tau: F.cross_entropy(F.normalize(k, dim=-1) @ F.normalize(q, dim=-1).T / tau, torch.arange(len(q))), "ROW"),
    (lambda q, k, tau: F.cross_entropy(F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / tau, torch.zeros(len(q), dtype=torch.long)), "diagonal"),
    (lambda q, k, tau: info_nce(q, k, tau, symmetric=True), "symmetric"),
    (lambda q, k, tau: torch.ones(len(q)), "scalar"),
])
def test_check_info_nce_names_the_misconception(wrong, message):
    check_info_nce(good_info_nce)
    with pytest.raises(AssertionError, match=message):
        check_info_nce(wrong)


def test_check_false_negative_mask_names_the_misconception():
    check_false_negative_mask(lambda y: y[:, None].eq(y[None]) & ~torch.eye(len(y), dtype=torch.bool))
    with pytest.raises(AssertionError, match="diagonal"):
        check_false_negative_mask(lambda y: y[:, None].eq(y[None]))
    with pytest.raises(AssertionError, match="true negatives"):
        check_false_negative_mask(lambda y: y[:, None].ne(y[None]))
    with pytest.raises(AssertionError, match="bool"):
        check_false_negative_mask(lambda y: (y[:, None].eq(y[None]) & ~torch.eye(len(y), dtype=torch.bool)).long())


@pytest.mark.parametrize("wrong,message", [
    (lambda s, t, T, m: good_kd(s, t, T, m) / T**2, "T\\^2"),
    (lambda s, t, T, m: F.kl_div(F.log_softmax(s[m] / T, -1), F.softmax(t[m] / T, -1), reduction="mean") * T**2, "'mean'"),
    (lambda s, t, T, m: F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1) * m[..., None], reduction="batchmean") * T**2,
     "flatten"),
    (lambda s, t, T, m: good_kd(s, t, T, torch.ones_like(m)), "mask"),
    (lambda s, t, T, m: good_kd(t, s, T, m), "KL\\(student"),
    (lambda s, t, T, m: F.kl_div(F.log_softmax(s[m] / T, -1), F.softmax(t[m], -1), reduction="batchmean") * T**2, "BOTH"),
    (lambda s, t, T, m: F.kl_div(F.log_softmax(s[m] / T, -1), F.softmax(t[m] / T, -1), reduction="sum") * T**2, "summed"),
    (lambda s, t, T, m: torch.zeros(2), "scalar"),
])
@pytest.mark.filterwarnings("ignore:reduction")
def test_check_kd_loss_names_the_misconception(wrong, message):
    check_kd_loss(good_kd)
    check_kd_loss(lambda s, t, T, m: kd_loss(s, t, T, mask=m))
    with pytest.raises(AssertionError, match=message):
        check_kd_loss(wrong)


@pytest.mark.parametrize("wrong,message", [
    (lambda s, t, T: good_grad(s, t, T) * T, "chain rule"),
    (lambda s, t, T: good_grad(s, t, T) / T**2, "T\\^2 times too small"),
    (lambda s, t, T: -good_grad(s, t, T), "sign"),
    (lambda s, t, T: good_grad(s, t, T) * s.shape[0], "divide by N"),
    (lambda s, t, T: good_grad(s, t, T)[:2], "\\[N,V\\]"),
])
def test_check_kd_grad_names_the_misconception(wrong, message):
    check_kd_grad(good_grad)
    with pytest.raises(AssertionError, match=message):
        check_kd_grad(wrong)


def test_check_bert_mask_accepts_and_names_misconceptions():
    check_bert_mask(_reference_bert)

    def all_labels(ids, m, v, s, g):
        x, _ = bert_mask(ids, m, v, special_ids=s, generator=g)
        return x, ids.clone()

    def only_mask(ids, m, v, s, g):
        return bert_mask(ids, m, v, mask_frac=1.0, random_frac=0.0, special_ids=s, generator=g)

    def specials_too(ids, m, v, s, g):
        return bert_mask(ids, m, v, special_ids=(), generator=g)

    def corrupted_labels(ids, m, v, s, g):
        x, y = bert_mask(ids, m, v, special_ids=s, generator=g)
        return x, torch.where(y.ne(IGNORE), x, y)

    def split_everything(ids, m, v, s, g):
        x, y = bert_mask(ids, m, v, special_ids=s, generator=g)
        u = torch.rand(ids.shape, generator=g)
        special = torch.isin(ids, torch.tensor(s))
        x = torch.where((u < 0.05) & ~special, torch.full_like(ids, m), x)     # extra masking outside the chosen set
        return x, y

    with pytest.raises(AssertionError, match="only the chosen 15%"):
        check_bert_mask(all_labels)
    with pytest.raises(AssertionError, match="every chosen token became"):
        check_bert_mask(only_mask)
    with pytest.raises(AssertionError, match="special tokens"):
        check_bert_mask(specials_too)
    with pytest.raises(AssertionError, match="clean token"):
        check_bert_mask(corrupted_labels)
    with pytest.raises(AssertionError, match="changed although their label is -100"):
        check_bert_mask(split_everything)


def test_check_diffusion_loss_accepts_and_names_misconceptions():
    def elbo(ce, m, t):
        return (ce * m / t[:, None]).sum() / ce.numel()

    check_diffusion_loss(elbo)
    with pytest.raises(AssertionError, match=r"\|M_t\|-normalised"):
        check_diffusion_loss(lambda ce, m, t: ((ce * m).sum(1) / m.sum(1)).mean())
    with pytest.raises(AssertionError, match="1/t weight is missing"):
        check_diffusion_loss(lambda ce, m, t: (ce * m).sum() / ce.numel())
    with pytest.raises(AssertionError, match="not by the number of masked"):
        check_diffusion_loss(lambda ce, m, t: (ce * m / t[:, None]).sum() / m.sum())
    with pytest.raises(AssertionError, match="unmasked tokens were counted"):
        check_diffusion_loss(lambda ce, m, t: (ce / t[:, None]).sum() / ce.numel())
    with pytest.raises(AssertionError, match="by t"):
        check_diffusion_loss(lambda ce, m, t: (ce * m).sum() / m.sum())


def test_check_mixture_weights_names_mistakes():
    check_mixture_weights(lambda n, g: mixture_weights(n, g))
    t = lambda n: torch.tensor(n, dtype=torch.float64)  # noqa: E731
    wrong = {
        "divide n\\^gamma by its sum": lambda n, g: t(n) ** g,
        "1/gamma": lambda n, g: t(n) ** (1 / g) / (t(n) ** (1 / g)).sum() if g > 0 else torch.full((len(n),), 1 / len(n)),
        "size proportions": lambda n, g: t(n) / t(n).sum(),
        "uniform weights": lambda n, g: torch.full((len(n),), 1 / len(n)),
        "one weight per source": lambda n, g: mixture_weights(n, g)[:-1],
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_mixture_weights(fn)


def test_check_expected_epochs_names_mistakes():
    check_expected_epochs(lambda n, w, S: expected_epochs(n, w, S))
    t = lambda n: torch.tensor(n, dtype=torch.float64)  # noqa: E731
    wrong = {
        "divide it by the source's size": lambda n, w, S: w * S,
        "forgot the budget": lambda n, w, S: w / t(n),
        "upside down": lambda n, w, S: t(n) / (w * S),
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_expected_epochs(fn)


def test_check_sequence_logprob_accepts_the_reference_and_names_mistakes():
    check_sequence_logprob(lambda z, y, m: sequence_logprob(z, y, m))

    def nxt(z, y):
        return z.log_softmax(-1)[:, :-1].gather(-1, y[:, 1:, None]).squeeze(-1)

    wrong = {
        "divided by the number of response tokens": lambda z, y, m: sequence_logprob(z, y, m, reduction="token_mean"),
        "scored against token t": lambda z, y, m: (z.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1) * m).sum(-1),
        "off by one in the mask": lambda z, y, m: (nxt(z, y) * m[:, :-1]).sum(-1),
        "prompt tokens were counted": lambda z, y, m: nxt(z, y).sum(-1),
        "sign is flipped": lambda z, y, m: -sequence_logprob(z, y, m),
        "shape": lambda z, y, m: sequence_logprob(z, y, m).sum(),
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_sequence_logprob(fn)


def test_check_dpo_loss_accepts_the_reference_and_names_mistakes():
    check_dpo_loss(dpo_loss)
    ls = F.logsigmoid
    wrong = {
        "forget the reference": lambda pc, pr, rc, rr, b: -ls(b * (pc - pr)).mean(),
        "swapped": lambda pc, pr, rc, rr, b: -ls(-b * ((pc - rc) - (pr - rr))).mean(),
        "inside the sigmoid": lambda pc, pr, rc, rr, b: (-b * ls((pc - rc) - (pr - rr))).mean(),
        "summed over pairs": lambda pc, pr, rc, rr, b: -ls(b * ((pc - rc) - (pr - rr))).sum(),
        "no gradient": lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).detach(),
        "log of the sigmoid": lambda pc, pr, rc, rr, b: -torch.sigmoid(b * ((pc - rc) - (pr - rr))).mean(),
    }
    for message, fn in wrong.items():
        with pytest.raises(AssertionError, match=message):
            check_dpo_loss(fn)


@pytest.mark.parametrize("fn,match", [
    (lambda z, y: -_ce_grad_ok(z, y), "sign is flipped"),
    (_ce_grad_no_n, "divide by the number of examples"),
    (_ce_grad_all_rows, "Only the .* rows whose label is not -100"),
    (lambda z, y: _ce_grad_ok(z, y) - z.softmax(-1) * (y != IGNORE)[:, None] / (y != IGNORE).sum(), "only the target logit moves"),
    (lambda z, y: _ce_grad_ok(z, y) + (z - z.softmax(-1)) * (y != IGNORE)[:, None] / (y != IGNORE).sum(), "raw logits"),
    (lambda z, y: torch.zeros(3), "shape"),
])
def test_check_ce_grad_messages(fn, match):
    check_ce_grad(_ce_grad_ok)
    with pytest.raises(AssertionError, match=match):
        check_ce_grad(fn)


def test_check_chunked_logsumexp_messages():
    check_chunked_logsumexp(_lse_ok)
    with pytest.raises(AssertionError, match="log\\(a \\+ b\\) is not log a \\+ log b"):
        check_chunked_logsumexp(_lse_sum_of_chunks, memory=False)
    with pytest.raises(AssertionError, match="overflows"):
        check_chunked_logsumexp(_lse_overflow, memory=False)
    check_chunked_logsumexp(_lse_full_matrix, memory=False)     # the value is right ...
    with pytest.raises(AssertionError, match="full \\[N, V\\] logits"):
        check_chunked_logsumexp(_lse_full_matrix, memory=True)  # ... the memory is not


@pytest.mark.parametrize("fn,match", [
    (lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(-1), "averaged over the labels"),
    (lambda z, y: -(y * F.logsigmoid(z)).sum(-1), r"\(1 - y\) log\(1 - sigmoid\(z\)\)"),
    (lambda z, y: -(y / y.sum(-1, keepdim=True).clamp_min(1) * z.log_softmax(-1)).sum(-1), "softmax cross-entropy"),
    (lambda z, y: F.binary_cross_entropy(z.clamp(1e-6, 1 - 1e-6), y, reduction="none").sum(-1), "apply sigmoid"),
])
def test_check_multilabel_loss_messages(fn, match):
    check_multilabel_loss(lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1))
    with pytest.raises(AssertionError, match=match):
        check_multilabel_loss(fn)


@pytest.mark.parametrize("fn,match", [
    (lambda z, y, w: (w[y] * F.cross_entropy(z, y, reduction="none")).sum() / len(y), "divided by the number of examples"),
    (lambda z, y, w: F.cross_entropy(z, y), "not applied"),
    (lambda z, y, w: (w[z.argmax(-1)] * F.cross_entropy(z, y, reduction="none")).sum() / w[z.argmax(-1)].sum(), "predicted class"),
])
def test_check_class_weighted_ce_messages(fn, match):
    check_class_weighted_ce(lambda z, y, w: F.cross_entropy(z, y, weight=w))
    with pytest.raises(AssertionError, match=match):
        check_class_weighted_ce(fn)


def test_checks_on_large_logits_and_other_seeds():
    check_ce_grad(_ce_grad_ok, large=True)
    naive = lambda z, y: (z.exp() / z.exp().sum(-1, keepdim=True) - F.one_hot(y.clamp_min(0), z.shape[1]) * 1.0) \
        * (y != IGNORE)[:, None] / (y != IGNORE).sum()  # noqa: E731
    check_ce_grad(naive)                                     # fine on small logits ...
    with pytest.raises(AssertionError, match="overflowed"):
        check_ce_grad(naive, large=True)                     # ... not on large ones
    good = lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)  # noqa: E731
    check_multilabel_loss(good, large=True)
    naive_bce = lambda z, y: -(y * torch.sigmoid(z).log() + (1 - y) * (1 - torch.sigmoid(z)).log()).sum(-1)  # noqa: E731
    check_multilabel_loss(naive_bce)
    with pytest.raises(AssertionError, match="logsigmoid"):
        check_multilabel_loss(naive_bce, large=True)
    check_class_weighted_ce(lambda z, y, w: F.cross_entropy(z, y, weight=w), seed=3)
    with pytest.raises(AssertionError, match="number of examples"):
        check_class_weighted_ce(lambda z, y, w: (w[y] * F.cross_entropy(z, y, reduction="none")).mean(), seed=3)
