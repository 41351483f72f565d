"""Tests of labkit.widgets_panels."""
import time

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from labkit.checks import ContractError
from labkit.paradigms.autoregressive import ALPHA_SHAPES, alpha_schedule
from labkit.reduce import REDUCTIONS
from labkit.viz import token_weights_figure
from labkit.widgets import (PaddingPanel, ReductionPanel, TemperaturePanel, demo_vocab_logits, render_padding,
                            render_reduction, render_temperature)


def test_render_padding_states(tok):
    states = {(s, p): render_padding(s, p) for s in ("left", "right") for p in ("mask", "arange")}
    assert states[("left", "mask")]["ok"] and states[("left", "mask")]["findings"] == []
    assert not states[("left", "arange")]["ok"]
    assert states[("left", "arange")]["findings"] == ["arange_positions_with_left_padding"]
    assert [r["positions_ok"] for r in states[("left", "arange")]["rows"]] == [True, False, False]
    assert all(not st["ok"] and st["findings"] == [] for (s, _), st in states.items() if s == "right")
    assert "<table" in states[("right", "mask")]["html"] and "padding right" in states[("right", "mask")]["text"]
    custom = render_padding("left", "arange", prompts=[[1, 42], [1, 42, 95]], tokenizer=tok)
    assert [r["positions_ok"] for r in custom["rows"]] == [False, True]
    with pytest.raises(ContractError, match="padding side"):
        render_padding("middle")


def test_padding_panel_rerenders():
    panel = PaddingPanel()
    assert panel.renders == 1 and panel.state["ok"]
    panel.positions.value = "arange"
    assert panel.renders == 2 and not panel.state["ok"] and "arange" in panel.output.value
    panel.side.value = "right"
    assert panel.renders == 3 and "padding right" in panel.state["text"]
    assert panel.ui().children[0] is panel.side


def test_render_reduction_and_panel():
    st = render_reduction("sequence_mean", lengths=(2, 4, 10))
    assert abs(st["per_token"][0] / st["per_token"][2] - 5) < 1e-9
    assert torch.allclose(st["row_totals"], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert "<table" in st["html"] and "sequence_mean" in st["text"]
    assert render_reduction("sum")["per_token"] == [1.0, 1.0, 1.0]
    with pytest.raises(ContractError, match="unknown reduction"):
        render_reduction("median")
    with pytest.raises(ContractError, match="at least one target"):
        render_reduction("sum", lengths=(0, 2))
    start = time.perf_counter()
    panel = ReductionPanel()
    for how in REDUCTIONS:
        panel.control.value = how
    assert panel.renders == len(REDUCTIONS) and (time.perf_counter() - start) / panel.renders < 0.1
    assert "batch_mean" in panel.output.value and panel.ui().children[0] is panel.control
    fig = token_weights_figure({how: render_reduction(how)["weights"] for how in REDUCTIONS})
    assert len(fig.axes) == len(REDUCTIONS)
    plt.close(fig)


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


@pytest.mark.parametrize("shape", ALPHA_SHAPES)
def test_render_scheduled_sampling(shape):
    from labkit.widgets import render_scheduled_sampling

    render_scheduled_sampling()                      # warm the imports
    start = time.perf_counter()
    state = render_scheduled_sampling(0.5, shape, 100, 200)
    assert time.perf_counter() - start < 0.1
    assert state["alpha"] == pytest.approx(alpha_schedule(100, 200, shape, 0.5))
    assert "<svg" in state["html"] and "target (gold)" in state["text"] and shape in state["text"]
    zero = render_scheduled_sampling(0.0, "linear", 200, 200)
    assert zero["alpha"] == 0.0 and zero["n_replaced"] == 2 == zero["expected_replaced"]   # the demo's two slips


def test_scheduled_sampling_panel_rerenders():
    from labkit.widgets import ScheduledSamplingPanel

    panel = ScheduledSamplingPanel()
    assert panel.renders == 1 and panel.state["alpha"] == pytest.approx(0.875)      # half-way down to 0.75
    panel.step.value = panel.step.value + 3 * panel.step.step                           # as the browser test does
    assert panel.renders == 2 and panel.state["alpha"] < 0.875
    panel.shape.value = "constant"
    panel.alpha_min.value = 0.0
    panel.step.value = 0
    assert panel.renders == 5 and panel.state["alpha"] == 0.0 and panel.state["n_replaced"] == 2
    assert panel.ui().children[0] is panel.shape


def test_finetune_panels_show_the_stored_run_of_the_selected_state():
    from labkit.widgets import DPOWeightsPanel, ScheduledSamplingPanel, render_learned, stored_runs
    from labkit.widgets.learned_finetune import DPO_BETAS

    d = DPOWeightsPanel()
    assert [v for _, v in d.beta.options] == list(DPO_BETAS)             # the slider stops are the stored betas
    assert "state <code>0.3/sum</code>" in d.learned.output.value and "stored run" in d.learned.output.value
    d.mode.value = "token_mean"
    d.beta.value = 1.0
    view = d.learned.output.value
    assert "state <code>1/token_mean</code>" in view and "filler words per answer" in view and view.count("<svg") == 2
    assert "reference line: log 2" in view                               # a reference value, not a floor
    with pytest.raises(ContractError, match="stop"):
        DPOWeightsPanel(beta=0.2)
    s = ScheduledSamplingPanel()
    assert "state <code>linear/0.75</code>" in s.learned.output.value
    before = s.learned.output.value
    s.step.value = 10                                                    # the contract view moves, the run does not
    assert s.learned.output.value == before
    s.alpha_min.value = 1.0
    assert "state <code>teacher_forcing</code>" in s.learned.output.value
    s.alpha_min.value = 0.3
    assert "between the stored settings" in s.learned.output.value and s.learned.button.disabled   # nothing to train
    s.shape.value = "constant"
    s.alpha_min.value = 0.0
    assert "free-running accuracy" in s.learned.output.value and "answer position" in s.learned.output.value
    live = dict(stored_runs("scheduled_sampling")["runs"]["constant/0.00"], seconds=1.0)
    both = render_learned("scheduled_sampling", "constant/0.00", live=live)["html"]
    assert "trained now" in both and "(trained now)</title>" in both      # the live series drawn over the stored one
