"""Per-token CE and every reduction, with its denominator."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import IGNORE
from labkit.batch import collate
from labkit.checks import ContractError
from labkit.memory import measure_peak_memory
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.reduce import (DP_REDUCTIONS, REDUCTIONS, chunked_cross_entropy, effective_weights, full_logits_cross_entropy,
                           micro_batch_mean_gaps, rank_loss, reduce, simulate_ranks, token_cross_entropy)


def losses_and_mask():
    l = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    return l, m


def test_token_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(7, (2, 5), generator=g)
    labels[0, 1] = IGNORE
    per = token_cross_entropy(logits, labels)
    assert per[0, 1] == 0
    ref = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(per.sum() / labels.ne(IGNORE).sum(), ref, atol=1e-6)


def test_reductions_and_denominators():
    l, m = losses_and_mask()
    r = reduce(l, m, "token_mean")
    assert r.value.item() == pytest.approx(10 / 4) and r.denominator.item() == 4
    r = reduce(l, m, "sequence_mean")
    assert r.value.item() == pytest.approx((2.0 + 4.0) / 2) and r.denominator.item() == 2
    r = reduce(l, m, "sum")
    assert r.value.item() == 10 and r.denominator.item() == 1
    r = reduce(l, m, "batch_mean")
    assert r.value.item() == 5 and r.denominator.item() == 2
    r = reduce(l, m, "token_mean", denominator=8)
    assert r.value.item() == pytest.approx(10 / 8) and r.denominator.item() == 8


def test_weights_per_sequence_and_per_token():
    l, m = losses_and_mask()
    r = reduce(l, m, "token_mean", weights=torch.tensor([1.0, 3.0]))
    assert r.value.item() == pytest.approx((6 + 12) / (3 + 3))
    r = reduce(l, m, "sequence_mean", weights=torch.tensor([1.0, 3.0]))
    assert r.value.item() == pytest.approx((1 * 2 + 3 * 4) / 4)
    w = torch.ones(2, 4)
    w[0, 2] = 0
    assert reduce(l, m, "token_mean", weights=w).value.item() == pytest.approx(7 / 3)


def test_gradient_accumulation_global_denominator():
    """Summing micro-batch losses divided by the global count == the token mean of the union."""
    l, m = losses_and_mask()
    full = reduce(l, m, "token_mean").value
    n = m.sum()
    parts = reduce(l[:1], m[:1], "sum", denominator=n).value + reduce(l[1:], m[1:], "sum", denominator=n).value
    mean_of_means = (reduce(l[:1], m[:1]).value + reduce(l[1:], m[1:]).value) / 2
    assert torch.allclose(parts, full) and not torch.allclose(mean_of_means, full)


@pytest.mark.parametrize("kwargs,match", [
    (dict(reduction="median"), "unknown reduction"),
    (dict(mask=torch.zeros(2, 4)), "no supervised target tokens"),
    (dict(reduction="sequence_mean", mask=torch.zeros(2, 4)), "no supervised target tokens"),
    (dict(weights=torch.ones(3)), "weights must be"),
    (dict(weights=-torch.ones(2)), "non-negative"),
    (dict(denominator=0), "positive"),
    (dict(reduction="sequence_mean", denominator=3), "does not combine"),
    (dict(mask=torch.ones(2, 3)), r"\[B,T\]"),
])
def test_reduce_refuses_bad_input(kwargs, match):
    l, m = losses_and_mask()
    args = dict(token_losses=l, mask=m)
    args.update(kwargs)
    with pytest.raises(ContractError, match=match):
        reduce(**args)


def test_token_cross_entropy_refuses_bad_input():
    with pytest.raises(ContractError, match="do not align"):
        token_cross_entropy(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ContractError, match="outside"):
        token_cross_entropy(torch.zeros(1, 2, 7), torch.tensor([[3, 9]]))
    with pytest.raises(ContractError, match="int64"):
        token_cross_entropy(torch.zeros(1, 2, 7), torch.tensor([[3.0, 1.0]]))


def problem(N=257, d=16, V=1000, ignore=0.2, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, d, generator=g, dtype=dtype).requires_grad_()
    weight = (torch.randn(V, d, generator=g, dtype=dtype) * d ** -0.5).requires_grad_()
    labels = torch.randint(V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < ignore] = IGNORE
    labels[0] = 3
    return hidden, weight, labels


def full_grads(hidden, weight, labels, reduction="mean"):
    loss = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE, reduction=reduction)
    return (loss, *torch.autograd.grad(loss, (hidden, weight)))


def _shards():
    g = torch.Generator().manual_seed(0)
    losses = [torch.rand(1, 3, generator=g) + 2.0, torch.rand(3, 6, generator=g)]
    masks = [torch.tensor([[1, 1, 0]]), torch.ones(3, 6, dtype=torch.long)]
    return losses, masks


MASK = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])


def test_effective_weights_of_every_reduction():
    w = {how: effective_weights(MASK, how) for how in REDUCTIONS}
    assert torch.allclose(w["token_mean"][MASK.bool()], torch.full((7,), 1 / 7, dtype=torch.float64))
    assert torch.allclose(w["sequence_mean"][0, :2], torch.full((2,), 1 / 4, dtype=torch.float64))
    assert torch.allclose(w["sequence_mean"][1], torch.full((5,), 1 / 10, dtype=torch.float64))
    assert torch.equal(w["sum"], MASK.double()) and torch.allclose(w["batch_mean"], MASK.double() / 2)
    assert (w["token_mean"][~MASK.bool()] == 0).all()
    weighted = effective_weights(MASK, "token_mean", weights=torch.tensor([2.0, 1.0]))
    assert torch.allclose(weighted[0, 0], torch.tensor(2 / 9, dtype=torch.float64))
    assert torch.allclose(effective_weights(MASK, "sum", denominator=14), MASK.double() / 14)
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        effective_weights(torch.ones(3), "sum")


def test_effective_weights_are_the_gradient_shares():
    """d reduce / d l equals the per-token weight: checked against the gradient of a real reduction."""
    l = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    for how in REDUCTIONS:
        l.grad = None
        reduce(l, MASK, how).value.backward()
        assert torch.allclose(l.grad * MASK, effective_weights(MASK, how))


def test_rank_loss_modes_and_simulation():
    losses, masks = _shards()
    S = [float((l * m).sum()) for l, m in zip(losses, masks)]
    n = [int(m.sum()) for m in masks]
    glob = simulate_ranks(losses, masks, "global_count")
    assert glob["counts"] == n and glob["global_count"] == sum(n)
    assert abs(glob["objective"].item() - sum(S) / sum(n)) < 1e-6      # the global token mean
    assert abs(glob["losses"][0].item() - 2 * S[0] / sum(n)) < 1e-6      # R * S_r / N
    local = simulate_ranks(losses, masks, "local_mean")
    mean_of_means = (S[0] / n[0] + S[1] / n[1]) / 2
    assert abs(local["objective"].item() - mean_of_means) < 1e-6
    assert abs(local["objective"].item() - glob["objective"].item()) > 0.5
    assert set(DP_REDUCTIONS) == {"local_mean", "global_count"}
    with pytest.raises(ContractError, match="global_count reduction needs"):
        rank_loss(losses[0], masks[0], "global_count")
    with pytest.raises(ContractError, match="unknown data-parallel reduction"):
        rank_loss(losses[0], masks[0], "average")
    with pytest.raises(ContractError, match="one mask per rank"):
        simulate_ranks(losses, masks[:1])


def test_gradient_accumulation_with_a_model():
    torch.manual_seed(0)
    model = TinyCausalLM(30, d_model=16, n_layers=1, n_heads=2, max_len=16)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, 30, (n,), generator=g).tolist() for n in (3, 12, 14, 9)]
    micro = [collate([{"input_ids": s} for s in seqs[:1]], 0), collate([{"input_ids": s} for s in seqs[1:]], 0)]
    full = collate([{"input_ids": s} for s in seqs], 0)
    N = sum(int(b.labels[:, 1:].ne(IGNORE).sum()) for b in micro)

    def grad(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    ref = grad(causal_lm_loss(model(**full.model_inputs()), full.labels))
    acc = grad(sum(causal_lm_loss(model(**b.model_inputs()), b.labels, reduction="sum", denominator=N) for b in micro))
    mom = grad(sum(causal_lm_loss(model(**b.model_inputs()), b.labels) for b in micro) / 2)
    assert torch.allclose(acc, ref, atol=1e-6) and not torch.allclose(mom, ref, atol=1e-4)


def test_micro_batch_mean_gaps_by_hand():
    """Two sequences per batch, one per micro-batch: the gap is computable by hand for every draw."""
    sums, counts = torch.tensor([2.0, 30.0]), torch.tensor([1, 10])
    gaps = micro_batch_mean_gaps(sums, counts, n_micro=2, micro_size=1, n_batches=5, generator=torch.Generator().manual_seed(0))
    token_mean, mean_of_means = 32 / 11, (2 / 1 + 30 / 10) / 2
    assert gaps.shape == (5,) and torch.allclose(gaps, torch.full((5,), (mean_of_means - token_mean) / token_mean,
                                                                  dtype=torch.float64))


def test_micro_batch_mean_gaps_vanish_with_equal_counts():
    """Equal token counts in every micro-batch: the mean of means IS the token mean."""
    g = torch.Generator().manual_seed(1)
    sums = torch.rand(40, generator=g) * 10
    gaps = micro_batch_mean_gaps(sums, torch.full((40,), 7), n_micro=4, micro_size=3, n_batches=50, generator=g)
    assert gaps.abs().max() < 1e-12
    unequal = micro_batch_mean_gaps(sums, torch.randint(1, 20, (40,), generator=g), 4, 3, 50, generator=g)
    assert unequal.abs().max() > 1e-3


def test_micro_batch_mean_gaps_refuse_bad_input():
    s, c = torch.ones(6), torch.ones(6, dtype=torch.long)
    with pytest.raises(ContractError, match="pool"):
        micro_batch_mean_gaps(s, c, n_micro=4, micro_size=2)
    with pytest.raises(ContractError, match="one entry per sequence"):
        micro_batch_mean_gaps(s, c[:5], 2, 2)
    with pytest.raises(ContractError, match="counts > 0"):
        micro_batch_mean_gaps(s, torch.tensor([1, 1, 0, 1, 1, 1]), 2, 2)
    with pytest.raises(ContractError, match=">= 1"):
        micro_batch_mean_gaps(s, c, 0, 2)


@pytest.mark.parametrize("chunk", [1, 7, 64, 256, 257, 5000, None])
def test_chunked_matches_full_logits_loss_and_grads(chunk):
    hidden, weight, labels = problem()
    ref, ref_h, ref_w = full_grads(hidden, weight, labels)
    loss = chunked_cross_entropy(hidden, weight, labels, chunk)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    assert abs(loss.item() - ref.item()) < 1e-5
    assert (gh - ref_h).abs().max() < 1e-5 and (gw - ref_w).abs().max() < 1e-5
    assert gh[labels == IGNORE].abs().max() == 0          # ignored rows get no gradient


def test_sum_reduction_and_batched_shapes():
    hidden, weight, labels = problem(N=96)
    ref, ref_h, ref_w = full_grads(hidden, weight, labels, reduction="sum")
    loss = chunked_cross_entropy(hidden, weight, labels, 10, reduction="sum")
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    assert abs(loss.item() - ref.item()) < 1e-3 and (gw - ref_w).abs().max() < 1e-4
    bt = chunked_cross_entropy(hidden.view(8, 12, -1), weight, labels.view(8, 12), 5)
    assert abs(bt.item() - full_logits_cross_entropy(hidden, weight, labels).item()) < 1e-5


def test_gradcheck_float64():
    hidden, weight, labels = problem(N=9, d=3, V=11, seed=1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h, w: chunked_cross_entropy(h, w, labels, 4), (hidden, weight))


def test_only_the_needed_gradient_and_input_dtypes():
    hidden, weight, labels = problem(N=40)
    w_frozen = weight.detach()
    (gh,) = torch.autograd.grad(chunked_cross_entropy(hidden, w_frozen, labels, 8), (hidden,))
    (gh_ref,) = torch.autograd.grad(full_logits_cross_entropy(hidden, w_frozen, labels), (hidden,))
    assert (gh - gh_ref).abs().max() < 1e-6
    hb = hidden.detach().bfloat16().requires_grad_()
    wb = weight.detach().bfloat16().requires_grad_()
    loss = chunked_cross_entropy(hb, wb, labels, 8)
    loss.backward()
    assert loss.dtype == torch.float32 and hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    assert abs(loss.item() - full_logits_cross_entropy(hidden, weight, labels).item()) < 0.05


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 40), V=st.integers(2, 60), d=st.integers(1, 8), chunk=st.integers(1, 50), seed=st.integers(0, 10**6))
def test_property_any_shape_and_chunk(N, V, d, chunk, seed):
    hidden, weight, labels = problem(N, d, V, ignore=0.3, seed=seed)
    labels[0] = V - 1
    ref, ref_h, ref_w = full_grads(hidden, weight, labels)
    loss = chunked_cross_entropy(hidden, weight, labels, chunk)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    assert abs(loss.item() - ref.item()) < 1e-5
    assert (gh - ref_h).abs().max() < 1e-5 and (gw - ref_w).abs().max() < 1e-5


@pytest.mark.parametrize("mutate,match", [
    (lambda h, w, y: (h, w.T.contiguous(), y, 4), "is weight transposed"),
    (lambda h, w, y: (h, w, y[:-1], 4), "one target id per hidden state"),
    (lambda h, w, y: (h, w, y.float(), 4), "int64"),
    (lambda h, w, y: (h, w, torch.full_like(y, 10_000), 4), "outside"),
    (lambda h, w, y: (h, w, y, 0), "chunk_size"),
    (lambda h, w, y: (h, w, y, True), "chunk_size"),
    (lambda h, w, y: (h, w, y, 2.5), "chunk_size"),
    (lambda h, w, y: (h, w, torch.full_like(y, IGNORE), 4), "no supervised target"),
    (lambda h, w, y: (h.long(), w, y, 4), "floating point"),
    (lambda h, w, y: (h, w[0], y, 4), r"\[V, d\]"),
])
def test_bad_input_is_a_contract_error(mutate, match):
    hidden, weight, labels = problem(N=12, d=4, V=20)
    with pytest.raises(ContractError, match=match):
        chunked_cross_entropy(*mutate(hidden.detach(), weight.detach(), labels))


def test_unknown_reduction():
    hidden, weight, labels = problem(N=4, d=2, V=5)
    with pytest.raises(ContractError, match="reduction"):
        chunked_cross_entropy(hidden, weight, labels, 2, reduction="token_mean")


def test_chunked_peak_is_a_fraction_of_the_full_paths():
    hidden, weight, labels = problem(N=512, d=32, V=32768, ignore=0.1)
    logits_bytes = 512 * 32768 * 4
    peaks = {}
    for name, fn in [("full", full_logits_cross_entropy), ("chunked", lambda h, w, y: chunked_cross_entropy(h, w, y, 32))]:
        hidden.grad = weight.grad = None
        peaks[name] = measure_peak_memory(lambda: fn(hidden, weight, labels).backward(), "cpu").peak_bytes
    assert peaks["full"] >= 2 * logits_bytes
    assert peaks["chunked"] < peaks["full"] / 4
