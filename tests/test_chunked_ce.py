"""Notebook 01's machinery: chunked cross-entropy, honest peak-memory measurement, the temperature panel."""
import time
import tracemalloc

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.reduce import chunked_cross_entropy, full_logits_cross_entropy
from labkit.memory import ce_memory_benchmark, measure_peak_memory
from labkit.viz import reliability_figure, svg_bars
from labkit.widgets import TemperaturePanel, demo_vocab_logits, render_temperature


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


# ----------------------------------------------------------------------------- same loss, same gradients

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


# ----------------------------------------------------------------------------- bad input

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


# ----------------------------------------------------------------------------- memory, honestly

def test_profiler_sees_torch_tensors_tracemalloc_does_not():
    def alloc():
        a = torch.ones(4 * 2**20)          # 16 MiB
        b = a * 2                          # +16 MiB: peak 32 MiB
        del a
        c = b + 1                          # 16 + 16 again
        return float(c[0])

    tracemalloc.start()
    alloc()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    m = measure_peak_memory(alloc, "cpu")
    assert traced < 2**20
    assert abs(m.peak_bytes - 32 * 2**20) < 2**16 and m.result == 3.0 and m.seconds >= 0 and "profiler" in m.method


def test_measurement_hides_profiler_chatter_only(capfd):
    measure_peak_memory(lambda: torch.ones(1000).sum(), "cpu")
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err


def test_chunked_peak_is_a_fraction_of_the_full_paths():
    hidden, weight, labels = problem(N=512, d=32, V=32768, ignore=0.1)
    logits_bytes = 512 * 32768 * 4
    peaks = {}
    for name, fn in [("full", full_logits_cross_entropy), ("chunked", lambda h, w, y: chunked_cross_entropy(h, w, y, 32))]:
        hidden.grad = weight.grad = None
        peaks[name] = measure_peak_memory(lambda: fn(hidden, weight, labels).backward(), "cpu").peak_bytes
    assert peaks["full"] >= 2 * logits_bytes
    assert peaks["chunked"] < peaks["full"] / 4


def test_benchmark_rows():
    rows = ce_memory_benchmark((64, 256), n_tokens=32, d_model=8, device="cpu", chunk_size=8)
    assert [(r["V"], r["path"]) for r in rows] == [(64, "full"), (64, "chunked"), (256, "full"), (256, "chunked")]
    for a, b in zip(rows[::2], rows[1::2]):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["logits_bytes"] == b["logits_bytes"] == 32 * a["V"] * 4
    with pytest.raises(ContractError, match="cpu and cuda"):
        measure_peak_memory(lambda: None, "meta")


# ----------------------------------------------------------------------------- the temperature panel

@pytest.mark.parametrize("T", [0.2, 1.0, 4.0])
def test_render_temperature_gradient_is_autograds(T):
    state = render_temperature(T)
    for key, target, z in (("classes", 1, torch.tensor([3.0, 2.2, 1.5, 1.0, 0.0, -1.0], dtype=torch.float64)),
                           ("vocab", 20, demo_vocab_logits())):
        zz = z.clone().requires_grad_()
        F.cross_entropy((zz / T)[None], torch.tensor([target])).backward()
        s = state[key]
        assert torch.allclose(s["grad"], zz.grad, atol=1e-12)
        assert abs(float(s["p"].sum()) - 1) < 1e-12 and abs(s["grad_sum"]) < 1e-12
        assert abs(s["push_total"] + s["target_grad"]) < 1e-12


def test_temperature_spreads_the_push():
    low, mid, high = (render_temperature(T)["vocab"] for T in (0.3, 1.0, 3.0))
    # every logit receives a gradient at any T (p_k > 0); what changes is where the push goes
    assert all(bool((s["grad"] != 0).all()) for s in (low, mid, high))
    assert low["top_share"] > mid["top_share"] > high["top_share"]
    assert low["entropy"] < mid["entropy"] < high["entropy"]


def test_render_temperature_is_fast_and_refuses_bad_input():
    render_temperature(1.0)
    start = time.perf_counter()
    state = render_temperature(0.7)
    assert time.perf_counter() - start < 0.1
    assert "<svg" in state["html"] and "T 0.7" in state["text"]
    custom = render_temperature(1.0, logits=[1.0, 0.0], names=["yes", "no"], target=1)
    assert custom["classes"]["p_target"] < 0.5 and "p(no)" in custom["text"]
    with pytest.raises(ContractError, match="T must be > 0"):
        render_temperature(0.0)
    with pytest.raises(ContractError, match="one name per logit"):
        render_temperature(1.0, logits=[1.0, 0.0], names=["a"])


def test_temperature_panel_rerenders():
    panel = TemperaturePanel()
    assert panel.renders == 1
    first = panel.output.value
    panel.control.value = 3.0
    panel.target.value = 0
    assert panel.renders == 3 and panel.output.value != first
    assert panel.state["classes"]["p_target"] == pytest.approx(float((torch.tensor([3.0, 2.2, 1.5, 1.0, 0.0, -1.0]) / 3).softmax(-1)[0]))
    assert panel.ui().children[1] is panel.output


def test_svg_bars():
    small = svg_bars([0.5, -0.25, 0.1], names=["a", "b", "c"], highlight=1, title="t")
    assert small.count("<rect") == 3 and ">b<" in small and "#2e7d32" in small
    big = svg_bars([0.001 * k - 0.5 for k in range(1000)], highlight=3)
    assert "<path" in big and big.count("<rect") == 0
    with pytest.raises(ValueError):
        svg_bars([])


def test_reliability_figure_draws():
    from labkit.paradigms.supervised import reliability

    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    fig = reliability_figure({"a": reliability(p, torch.tensor([0, 1, 1]), 5), "b": reliability(p, torch.tensor([0, 0, 1]), 5)})
    assert len(fig.axes) == 2
    plt.close(fig)
