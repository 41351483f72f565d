"""labkit.paradigms.decoding: the known chain against brute-force enumeration, the decoders and filters,
the MSE-vs-CE pieces, the gradient estimators against exact gradients, and the exercise graders of 01b."""
import itertools
import math

import pytest
import torch

from labkit.contracts import ContractError
from labkit.exercises.decoding import check_score_function, check_top_p
from labkit.paradigms.decoding import (ConditionalTokens, IdPredictor, KnownChain, beam_search, best_gaussian_over_ids,
                                       count_outside_top_p, decode, distinct, ends_with_eos, estimator_stats,
                                       exact_gradient, gaussian_over_ids, kl_rows, length_distribution, mode_shortfall,
                                       must_end_by, plugin_entropy, random_chain, relaxed_grads, render_truncation,
                                       score_function_grads, score_id_heads, top_k_filter, top_p_filter,
                                       truncated_distribution)
from labkit.train import fit


def all_sequences(w: KnownChain):
    """Every sequence of the world: bodies of 0..max_len-1 words + <eos>, and max_len words without <eos>."""
    words = [i for i in range(w.V) if i not in (w.bos_id, w.eos_id)]
    out = [list(body) + [w.eos_id] for t in range(w.max_len) for body in itertools.product(words, repeat=t)]
    return out + [list(body) for body in itertools.product(words, repeat=w.max_len)]


@pytest.fixture(scope="module")
def small():
    return random_chain(3, n_tokens=3, max_len=4)


def test_enumeration_sums_to_one_and_matches_exact_quantities(small):
    seqs = all_sequences(small)
    lp = small.logprob(seqs)
    p = lp.exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    nz = p > 0
    assert small.entropy() == pytest.approx(float(-(p[nz] * lp[nz]).sum()), abs=1e-10)
    best = int(lp.argmax())
    seq, score = small.mode()
    assert score == pytest.approx(float(lp[best]), abs=1e-12) and seqs[best] == seq
    law = small.length_law()
    trunc = sum(float(pi) for s, pi in zip(seqs, p) if s[-1] != small.eos_id)
    assert law["truncated"] == pytest.approx(trunc, abs=1e-12)
    for t in range(1, small.max_len + 1):
        want = sum(float(pi) for s, pi in zip(seqs, p) if s[-1] == small.eos_id and len(s) == t)
        assert law["ends_at"][t - 1].item() == pytest.approx(want, abs=1e-12)


def test_conditioned_step_is_the_exact_conditional(small):
    """The look-ahead decoder's sequence probabilities equal p(y) / P(format) on formatted sequences."""
    step = small.conditioned_step()
    p_format = 1 - small.length_law()["truncated"]
    for seq in all_sequences(small):
        full = [small.bos_id] + seq
        lp = sum(float(step(torch.tensor([full[:t]]))[0, full[t]]) for t in range(1, len(full)))
        truth = float(small.logprob([seq]))
        if seq[-1] == small.eos_id:
            assert lp == pytest.approx(truth - math.log(p_format), abs=1e-9)
        else:
            assert lp == -math.inf


def test_beam_with_a_wide_beam_finds_the_mode():
    for seed in range(10):
        w = random_chain(seed, n_tokens=4, max_len=5)
        seq, score = beam_search(w.step, 4 ** 5, w.max_len, w.bos_id, w.eos_id)[0]
        assert score == pytest.approx(w.mode()[1], abs=1e-9)
        assert float(w.logprob([seq])) == pytest.approx(score, abs=1e-9)


def trap():
    rows = {"<bos>": {"a": .45, "b": .35, "c": .20}, "a": {"a": .20, "e": .18, "c": .17, "b": .16, "d": .15, "<eos>": .14},
            "b": {"d": .85, "a": .05, "<eos>": .10}, "c": {"e": .5, "c": .3, "<eos>": .2},
            "d": {"<eos>": .7, "b": .2, "e": .1}, "e": {"a": .4, "e": .4, "<eos>": .2}}
    return KnownChain(["<bos>", "<eos>", "a", "b", "c", "d", "e"], rows, max_len=6)


def test_greedy_falls_into_the_trap_and_beam_does_not():
    w = trap()
    g = decode(w.step, 3, w.max_len, w.bos_id, w.eos_id, temperature=0)
    assert g[0] == g[1] == g[2] and w.decode_names(g[0]) == "a a a a a a"
    seq, score = beam_search(w.step, 2, w.max_len, w.bos_id, w.eos_id)[0]
    assert w.decode_names(seq) == "b d <eos>" and score == pytest.approx(w.mode()[1])


def test_decode_sequences_are_valid_and_seeded():
    w = trap()
    a = decode(w.step, 200, w.max_len, w.bos_id, w.eos_id, generator=torch.Generator().manual_seed(1))
    b = decode(w.step, 200, w.max_len, w.bos_id, w.eos_id, generator=torch.Generator().manual_seed(1))
    assert a == b
    w.logprob(a)                                    # validates every sequence
    assert 1 < distinct(a) <= 200 and 0 < plugin_entropy(a) <= math.log(200)


def test_must_end_by_holds_in_sampling_and_beam():
    w = trap()
    allowed = must_end_by(w.eos_id, w.max_len)
    s = decode(w.step, 500, w.max_len, w.bos_id, w.eos_id, allowed=allowed, generator=torch.Generator().manual_seed(0))
    assert bool(ends_with_eos(s, w.eos_id).all())
    for seq, _ in beam_search(w.step, 3, w.max_len, w.bos_id, w.eos_id, allowed=allowed):
        assert seq[-1] == w.eos_id
    free = decode(w.step, 500, w.max_len, w.bos_id, w.eos_id, generator=torch.Generator().manual_seed(0))
    assert not bool(ends_with_eos(free, w.eos_id).all())


def test_top_k_and_top_p_filters():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 1.0]])
    assert torch.isfinite(top_k_filter(z, 2)).sum(-1).tolist() == [2, 2]
    assert torch.equal(top_k_filter(z, 9), z)
    p = torch.softmax(z, -1)
    for q in (0.1, 0.5, 0.8, 0.95, 1.0):
        kept = torch.isfinite(top_p_filter(z, q))
        mass = (p * kept).sum(-1)
        assert bool((mass >= q - 1e-6).all())
        # dropping the least probable kept token would fall below q (smallest set)
        low = torch.where(kept, p, torch.full_like(p, 9.0)).min(-1).values
        assert bool((mass - low < q).all())
    assert torch.isfinite(top_p_filter(z, 1.0)).all()
    assert torch.equal(top_p_filter(z, 0.9)[torch.isfinite(top_p_filter(z, 0.9))], z[torch.isfinite(top_p_filter(z, 0.9))])
    q = truncated_distribution(z[0], temperature=0.5, top_p=0.8)
    assert q.sum().item() == pytest.approx(1.0) and (q == 0).sum().item() >= 1


def test_length_distribution_and_render():
    w = trap()
    s = decode(w.step, 300, w.max_len, w.bos_id, w.eos_id, generator=torch.Generator().manual_seed(2))
    d = length_distribution(s, w.max_len)
    assert d.sum().item() == pytest.approx(1.0) and d.shape == (w.max_len,)
    r = render_truncation(w.step(torch.tensor([[w.names.index("b")]]))[0], w.names, 1.0, 0.8)
    assert r["kept"] == 1 and "d" in r["text"] and "<table>" in r["html"]


def test_mse_head_learns_the_mean_and_ce_the_distribution():
    world = ConditionalTokens([{1: .5, 8: .5}, {3: 1.0}], n_tokens=10)
    data = world.sample(800, torch.Generator().manual_seed(0))
    out = {}
    for head in ("regression", "categorical"):
        torch.manual_seed(0)
        m = IdPredictor(2, 10, head, hidden=16)
        fit(m, [data], lambda mod, b: mod.loss(*b), steps=200, lr=1e-2, device="cpu", progress=False)
        with torch.no_grad():
            out[head] = m(torch.arange(2))
    emp = data[1][data[0] == 0].double().mean()
    assert abs(out["regression"][0].item() - emp.item()) < 0.05
    q = torch.softmax(out["categorical"].double(), -1)
    assert kl_rows(world.probs, q).max().item() < 0.05
    g = gaussian_over_ids(out["regression"].double(), 1.0, 10)
    assert kl_rows(world.probs, g)[0].item() > 1.0


def test_gaussian_over_ids_takes_one_sigma_or_one_per_row():
    m = torch.tensor([2.0, 5.0])
    assert gaussian_over_ids(m, 1.0, 8).sum(-1).tolist() == pytest.approx([1.0, 1.0])
    a = gaussian_over_ids(m, torch.tensor([0.5, 2.0]), 8)
    assert a[0].max() > a[1].max()


def test_exact_gradient_and_reinforce_expectation():
    theta = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=torch.float64)
    f = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    th = theta.clone().requires_grad_(True)
    (torch.softmax(th, -1) @ f).backward()
    exact = exact_gradient(theta, f)
    assert torch.allclose(exact, th.grad, atol=1e-12)
    p = torch.softmax(theta, -1)
    for b in (0.0, 1.7):
        g = score_function_grads(theta, torch.arange(4), f, b)
        assert torch.allclose((p[:, None] * g).sum(0), exact, atol=1e-12)


def test_relaxed_grads_bias_falls_with_tau_and_straight_through_softmax_stays_biased():
    theta = torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0], dtype=torch.float64)
    pos = torch.arange(5, dtype=torch.float64)
    f_soft = lambda y: (y @ pos - 2.5) ** 2  # noqa: E731
    exact = exact_gradient(theta, f_soft(torch.eye(5, dtype=torch.float64)))
    g = torch.Generator().manual_seed(0)
    hi = estimator_stats(relaxed_grads(theta, f_soft, 4000, "gumbel_softmax", 1.0, g), exact)
    lo = estimator_stats(relaxed_grads(theta, f_soft, 4000, "gumbel_softmax", 0.1, g), exact)
    assert hi["bias"] > 3 * lo["bias"] and lo["variance"] > 10 * hi["variance"]
    st = estimator_stats(relaxed_grads(theta, f_soft, 4000, "straight_through_softmax", 1.0, g), exact)
    assert st["bias_over_noise"] > 10
    x = torch.multinomial(torch.softmax(theta, -1), 4000, replacement=True, generator=g)
    rf = estimator_stats(score_function_grads(theta, x, f_soft(torch.eye(5, dtype=torch.float64))[x]), exact)
    assert rf["bias_over_noise"] < 4


@pytest.mark.parametrize("call", [
    lambda: KnownChain(["<bos>", "a"], {"<bos>": {"a": 1.0}}, 3),                         # no <eos>
    lambda: KnownChain(["<bos>", "<eos>", "a"], {"<bos>": {"a": 1.0}}, 3),                # a has no row
    lambda: KnownChain(["<bos>", "<eos>", "a"], {"<bos>": {"a": .5}, "a": {"<eos>": 1.0}}, 3),   # row sums to .5
    lambda: trap().logprob([[2, 1, 3]]),                                                   # <eos> in the middle
    lambda: top_p_filter(torch.zeros(3), 0.0),
    lambda: decode(trap().step, 2, 3, 0, 1, temperature=-1.0),
    lambda: score_function_grads(torch.zeros(3), torch.tensor([5]), torch.tensor([1.0])),
    lambda: relaxed_grads(torch.zeros(3), lambda y: y.sum(-1), 4, "gumbel"),
    lambda: IdPredictor(3, 5, "ordinal"),
])
def test_contracts(call):
    with pytest.raises(ContractError):
        call()


# ----------------------------------------------------------------------------- graders

def reference_top_p(logits, p):
    probs = torch.softmax(logits, -1)
    s, order = probs.sort(-1, descending=True)
    keep = torch.zeros_like(s, dtype=torch.bool).scatter(-1, order, (s.cumsum(-1) - s) < p)
    return logits.masked_fill(~keep, float("-inf"))


def loop_top_p(logits, p):
    """A different correct solution: a Python loop over rows, accumulating until the mass reaches p."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for r in range(flat.shape[0]):
        probs = torch.softmax(flat[r].double(), -1)
        mass = 0.0
        for i in probs.argsort(descending=True).tolist():
            out[r, i] = flat[r, i]
            mass += float(probs[i])
            if mass >= p:
                break
    return out.reshape(logits.shape)


def test_check_top_p_accepts_correct_solutions():
    check_top_p(reference_top_p)
    check_top_p(loop_top_p)
    check_top_p(top_p_filter)


def excludes_crossing_token(z, p):
    probs = torch.softmax(z, -1)
    s, order = probs.sort(-1, descending=True)
    keep = torch.zeros_like(s, dtype=torch.bool).scatter(-1, order, s.cumsum(-1) < p)
    return z.masked_fill(~keep, float("-inf"))


def ascending(z, p):
    return torch.where(torch.isfinite(reference_top_p(-z, p)), z, torch.tensor(float("-inf")))


@pytest.mark.parametrize("wrong, words", [
    (excludes_crossing_token, "crosses p"),
    (ascending, "more probable"),
    (lambda z, p: reference_top_p(z, p) * 2, "unchanged"),
])
def test_check_top_p_names_the_mistake(wrong, words):
    with pytest.raises(AssertionError, match=words):
        check_top_p(wrong)


def reference_reinforce(theta, x, fx, b):
    p = torch.softmax(theta, -1)
    return (fx - b)[:, None] * (torch.nn.functional.one_hot(x, theta.numel()).to(p.dtype) - p)


def autograd_reinforce(theta, x, fx, b):
    """A different correct solution: autograd of (f - b) log p(x), one sample at a time."""
    rows = []
    for xi, fi in zip(x.tolist(), fx.tolist()):
        th = theta.detach().clone().requires_grad_(True)
        ((fi - b) * torch.log_softmax(th, -1)[xi]).backward()
        rows.append(th.grad)
    return torch.stack(rows)


def test_check_score_function_accepts_correct_solutions():
    check_score_function(reference_reinforce)
    check_score_function(autograd_reinforce)


@pytest.mark.parametrize("wrong, words", [
    (lambda t, x, fx, b: (fx - b)[:, None] * torch.nn.functional.one_hot(x, t.numel()).double(), "onehot\\(x\\) - p"),
    (lambda t, x, fx, b: reference_reinforce(t, x, fx, 0.0), "baseline was ignored"),
    (lambda t, x, fx, b: -reference_reinforce(t, x, fx, b), "sign"),
    (lambda t, x, fx, b: reference_reinforce(t, x, fx, b)[:1], "shape"),
])
def test_check_score_function_names_the_mistake(wrong, words):
    with pytest.raises(AssertionError, match=words):
        check_score_function(wrong)


# ----------------------------------------------------------------------------- helpers added in review

def test_beam_search_can_return_a_less_probable_sequence_than_greedy():
    """The notebook says beam search is not guaranteed to beat greedy: here two beams keep y u and y v
    (0.175 each) and drop x <eos> (0.16), greedy's whole sequence; every continuation of y falls below it."""
    rows = {"<bos>": {"x": .4, "y": .35, "w": .25}, "x": {"<eos>": .4, "u": .3, "v": .3}, "y": {"u": .5, "v": .5},
            "u": {"<eos>": .5, "u": .5}, "v": {"<eos>": .5, "v": .5}, "w": {"u": .34, "v": .33, "<eos>": .33}}
    w = KnownChain(["<bos>", "<eos>", "x", "y", "u", "v", "w"], rows, max_len=4)
    g = decode(w.step, 1, w.max_len, w.bos_id, w.eos_id, temperature=0)[0]
    assert w.decode_names(g) == "x <eos>"
    seq, score = beam_search(w.step, 2, w.max_len, w.bos_id, w.eos_id)[0]
    assert score < float(w.logprob([g])) - 0.5
    assert mode_shortfall([w], beam_size=2)["beam_below_greedy"] == 1.0


def test_mode_shortfall_is_zero_for_a_beam_that_covers_everything():
    worlds = [random_chain(s, n_tokens=3, max_len=4) for s in range(3)]
    r = mode_shortfall(worlds, beam_size=3 ** 4)
    assert r["beam"] == pytest.approx(0.0, abs=1e-9) and r["greedy"] >= 0 and r["beam_below_greedy"] == 0.0


def test_best_gaussian_is_at_least_as_close_as_the_moment_matched_one():
    world = ConditionalTokens([{1: .5, 8: .5}, {3: .7, 4: .3}, {0: .5, 4: .5}], n_tokens=10)
    best = best_gaussian_over_ids(world.probs)
    ids = torch.arange(10.0, dtype=torch.float64)
    sd = (world.probs * (ids - world.mean_id[:, None]) ** 2).sum(-1).sqrt()
    moment = kl_rows(world.probs, gaussian_over_ids(world.mean_id, sd, 10))
    assert bool((best["kl"] <= moment + 1e-9).all())
    assert best["kl"][1].item() < 1e-4                  # two neighbouring ids: a narrow Gaussian between them fits
    assert best["kl"][0].item() > 1.0                   # two far modes: no Gaussian fits
    assert best["q"].sum(-1).tolist() == pytest.approx([1.0] * 3)


def test_score_id_heads_reads_both_heads():
    world = ConditionalTokens([{1: .5, 8: .5}, {3: 1.0}], n_tokens=10)
    data = world.sample(400, torch.Generator().manual_seed(0))
    heads = []
    for head in ("regression", "categorical"):
        torch.manual_seed(0)
        m = IdPredictor(2, 10, head, hidden=16)
        fit(m, [data], lambda mod, b: mod.loss(*b), steps=200, lr=1e-2, device="cpu", progress=False)
        heads.append(m)
    r = score_id_heads(world, heads[0], heads[1], data)
    assert r["mean_gap"] < 0.05 and r["reg_impossible"] == 0.5 and r["cat_impossible"] == 0.0
    assert r["kl_cat"] < r["kl_reg"] and r["q_cat"].shape == (2, 10)
    with pytest.raises(ContractError):
        score_id_heads(world, heads[1], heads[0], data)


def test_count_outside_top_p_counts_tokens_the_filter_removes():
    w = trap()
    inside = decode(w.step, 100, w.max_len, w.bos_id, w.eos_id, top_p=0.75, generator=torch.Generator().manual_seed(0))
    assert count_outside_top_p(w.step, inside, w.bos_id, 0.75) == 0
    b, a, eos = (w.names.index(n) for n in ("b", "a", "<eos>"))
    assert count_outside_top_p(w.step, [[b, a, eos]], w.bos_id, 0.75) == 2     # after b only d; after a no <eos>
