"""Teacher forcing vs free running, compounding errors, scheduled sampling (notebook 07)."""
import math
import time

import pytest
import torch
import torch.nn as nn

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.data import RunningSumTask
from labkit.paradigms.autoregressive import (ALPHA_SHAPES, after_injected_slip, alpha_schedule, causal_lm_loss,
                                             compounding, earlier_error, free_running_predictions,
                                             position_accuracy, scheduled_sampling_inputs, scheduled_sampling_loss,
                                             teacher_forced_predictions)
from labkit.exercises.autoregressive import check_compounding, check_scheduled_mix
from labkit.vocab import WordTokenizer


@pytest.fixture
def digits():
    return WordTokenizer([str(d) for d in range(10)])


@pytest.fixture
def task(digits):
    return RunningSumTask(n_steps=6, max_step=4, tokenizer=digits)


class RuleModel(nn.Module):
    """Follows the counting rule s_k = (its previous count) + a_k exactly, reading the row by
    column (no padding); with slip=j it adds one extra at answer index j (a model that is wrong
    exactly once per row under teacher forcing)."""

    def __init__(self, task, slip=None):
        super().__init__()
        self.task, self.slip = task, slip
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        task = self.task
        B, T = input_ids.shape
        V = len(task.tokenizer)
        logits = torch.zeros(B, T, V) + 0 * self.dummy
        values = task.values(input_ids)
        for t in range(T):
            j = t + 1 - task.prompt_len              # answer index predicted by logit t
            if not 0 <= j < task.n:
                continue
            prev = values[:, t] if j > 0 else torch.zeros(B, dtype=torch.long)
            nxt = (prev.clamp_min(0) + values[:, 1 + j]) % task.modulus
            if self.slip == j:
                nxt = (nxt + 1) % task.modulus
            logits[torch.arange(B), t, task.digit_ids[nxt]] = 10.0
        return logits


# ----------------------------------------------------------------------------- the task

def test_running_sum_layout_and_gold(task, digits):
    x = task.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, task.length) == (5, 14)
    assert (x[:, 0] == digits.bos_id).all() and (x[:, task.n + 1] == digits.sep_id).all()
    a = task.values(x[:, 1:task.n + 1])
    assert a.min() >= 0 and a.max() < task.max_step
    assert torch.equal(task.values(x[:, task.prompt_len:]), a.cumsum(1) % 10)
    assert torch.equal(task.gold(x[:, :task.prompt_len]), x[:, task.prompt_len:])
    labels = task.labels(x)
    assert (labels[:, :task.prompt_len] == IGNORE).all() and torch.equal(labels[:, task.prompt_len:], x[:, task.prompt_len:])
    assert not task.errors(x, x[:, task.prompt_len:]).any() and not task.local_errors(x, x[:, task.prompt_len:]).any()


def test_one_slip_derails_but_is_one_local_error(task):
    x = task.sample(3, torch.Generator().manual_seed(1))
    answers = x[:, task.prompt_len:].clone()
    v = task.values(answers)
    v[:, 2:] = (v[:, 2:] + 1) % 10                   # slip at index 2, then continue from it
    slipped = task.digit_ids[v]
    err, local = task.errors(x, slipped), task.local_errors(x, slipped)
    assert err[:, :2].sum() == 0 and err[:, 2:].all()
    assert local[:, 2].all() and local.sum() == 3    # only the slip itself breaks the rule


def test_running_sum_refuses_bad_input(digits):
    with pytest.raises(ContractError, match="max_step"):
        RunningSumTask(max_step=11, tokenizer=digits)
    with pytest.raises(ContractError, match="lacks"):
        RunningSumTask(tokenizer=WordTokenizer(["a", "b"]))
    task = RunningSumTask(n_steps=4, tokenizer=digits)
    x = task.sample(2)
    with pytest.raises(ContractError, match="answers must be"):
        task.errors(x, x[:, :3])


# ----------------------------------------------------------------------------- teacher forcing vs free running

def test_exposure_bias_in_miniature(task, digits):
    """A model wrong at exactly one answer index under gold prefixes: teacher forcing sees one bad
    position; free running, which reads its own slip, is wrong from there on."""
    x = task.sample(64, torch.Generator().manual_seed(2))
    P, gold = task.prompt_len, x[:, task.prompt_len:]
    perfect, slipping = RuleModel(task), RuleModel(task, slip=2)
    assert position_accuracy(teacher_forced_predictions(perfect, x, P), gold).eq(1).all()
    assert position_accuracy(free_running_predictions(perfect, x[:, :P], task.n, digits.pad_id), gold).eq(1).all()
    tf = position_accuracy(teacher_forced_predictions(slipping, x, P), gold)
    fr_tokens = free_running_predictions(slipping, x[:, :P], task.n, digits.pad_id)
    fr = position_accuracy(fr_tokens, gold)
    assert tf.tolist() == [1, 1, 0, 1, 1, 1]
    assert fr.tolist() == [1, 1, 0, 0, 0, 0]
    c = compounding(task.errors(x, fr_tokens))
    assert c["after_error"] == 1.0 and c["clean"] == pytest.approx(1 / 3)
    assert not task.local_errors(x, fr_tokens)[:, 3:].any()    # derailed, not confused


def test_prediction_helpers_refuse_bad_shapes(task):
    m = RuleModel(task)
    x = task.sample(2)
    with pytest.raises(ContractError, match="start"):
        teacher_forced_predictions(m, x, 0)
    with pytest.raises(ContractError, match="prompts"):
        free_running_predictions(m, x[0], 3, 0)
    with pytest.raises(ContractError, match="one shape"):
        position_accuracy(x[:, :2], x[:, :3])


def test_compounding_and_earlier_error():
    e = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    assert earlier_error(e).tolist() == [[False, False, True, True], [False] * 4, [False, True, True, True]]
    c = compounding(e)
    # after an error: row0 t2,t3 (1 of 2 wrong), row2 t1..t3 (2 of 3 wrong) -> 3/5
    assert c["n_after_error"] == 5 and c["after_error"] == pytest.approx(3 / 5)
    assert c["n_clean"] == 7 and c["clean"] == pytest.approx(2 / 7)
    assert math.isnan(compounding(torch.zeros(2, 3, dtype=torch.bool))["after_error"])   # no error, no condition
    with pytest.raises(ContractError):
        compounding(torch.zeros(3, dtype=torch.bool))


def test_after_injected_slip_plants_one_wrong_token_and_reads_the_next(task):
    """The exact rule model continues from the planted count every time and never recovers."""
    x = task.sample(200, torch.Generator().manual_seed(4))
    P = task.prompt_len
    out = after_injected_slip(RuleModel(task), x, P, task.digit_ids, torch.Generator().manual_seed(0))
    rows, k = torch.arange(len(x)), out["k"]
    changed = out["slipped"].ne(x)
    assert changed.sum(1).eq(1).all() and changed[rows, k].all()           # exactly one token, at k
    assert k.min() >= P and k.max() <= x.shape[1] - 2 and len(set(k.tolist())) > 1
    assert torch.isin(out["slipped"][rows, k], task.digit_ids).all()
    continued = task.digit_ids[(task.values(out["slipped"][rows, k]) + task.values(x[rows, k - P + 2])) % 10]
    assert torch.equal(out["next"], continued) and not out["next"].eq(x[rows, k + 1]).any()
    again = after_injected_slip(RuleModel(task), x, P, task.digit_ids, torch.Generator().manual_seed(0))
    assert torch.equal(again["slipped"], out["slipped"])                  # the generator fixes the draw


def test_after_injected_slip_refuses_bad_input(task):
    x = task.sample(4, torch.Generator().manual_seed(5))
    with pytest.raises(ContractError, match="start"):
        after_injected_slip(RuleModel(task), x, x.shape[1] - 1, task.digit_ids)
    with pytest.raises(ContractError, match="candidates"):
        after_injected_slip(RuleModel(task), x, task.prompt_len, task.digit_ids[:3])
    with pytest.raises(ContractError, match="at least 2"):
        after_injected_slip(RuleModel(task), x, task.prompt_len, task.digit_ids[:1])


def test_fit_callback_sees_every_step_and_changes_nothing(task):
    """fit(callback=...) is called after each update with (step, model, loss) and leaves training as it was."""
    from labkit.models import TinyCausalLM
    from labkit.train import fit

    data = [task.sample(8, torch.Generator().manual_seed(i)) for i in range(3)]

    def run(callback=None):
        torch.manual_seed(0)
        lm = TinyCausalLM(len(task.tokenizer), d_model=16, n_layers=1, n_heads=2, max_len=task.length)
        hist = fit(lm, data, lambda m, x: causal_lm_loss(m(x), task.labels(x)), steps=5, lr=1e-2, device="cpu",
                   progress=False, callback=callback)
        return lm, hist

    seen = []
    lm_cb, hist_cb = run(lambda step, m, loss: seen.append((step, m.training, loss)))
    lm_plain, hist_plain = run()
    assert [s for s, _, _ in seen] == list(range(5)) and all(training for _, training, _ in seen)
    assert [l for _, _, l in seen] == hist_cb.loss == hist_plain.loss
    assert all(torch.equal(a, b) for a, b in zip(lm_cb.state_dict().values(), lm_plain.state_dict().values()))


# ----------------------------------------------------------------------------- scheduled sampling

@pytest.mark.parametrize("shape", ALPHA_SHAPES)
def test_alpha_schedules(shape):
    alphas = [alpha_schedule(s, 100, shape, 0.4) for s in range(0, 101, 10)]
    assert alphas == sorted(alphas, reverse=True) and all(0.4 - 1e-9 <= a <= 1 for a in alphas)
    assert alphas[-1] == pytest.approx(0.4)
    assert alphas[0] == pytest.approx(0.4 if shape == "constant" else 1.0)


def test_alpha_schedule_refuses_bad_input():
    with pytest.raises(ContractError, match="shape"):
        alpha_schedule(0, 10, "cosine")
    with pytest.raises(ContractError, match="probability"):
        alpha_schedule(0, 10, "linear", 1.5)
    with pytest.raises(ContractError, match="total_steps"):
        alpha_schedule(0, 0)


def test_scheduled_sampling_inputs_contract():
    g = torch.Generator().manual_seed(0)
    gold = torch.randint(10, 20, (300, 10), generator=g)
    preds = torch.randint(30, 40, (300, 10), generator=g)
    same, replaced = scheduled_sampling_inputs(gold, preds, 1.0, 4)
    assert torch.equal(same, gold) and not replaced.any()
    allm, replaced = scheduled_sampling_inputs(gold, preds, 0.0, 4)
    assert torch.equal(allm[:, :4], gold[:, :4]) and torch.equal(allm[:, 4:], preds[:, 3:-1])
    assert replaced[:, 4:].all() and not replaced[:, :4].any()
    half, replaced = scheduled_sampling_inputs(gold, preds, 0.7, 4, torch.Generator().manual_seed(1))
    assert abs(replaced[:, 4:].float().mean().item() - 0.3) < 0.03
    with pytest.raises(ContractError, match="alpha"):
        scheduled_sampling_inputs(gold, preds, 1.2, 4)
    with pytest.raises(ContractError, match="start"):
        scheduled_sampling_inputs(gold, preds, 0.5, 0)


def test_scheduled_sampling_loss_modes(task):
    x = task.sample(8, torch.Generator().manual_seed(3))
    y = task.labels(x)
    torch.manual_seed(0)
    from labkit.models import TinyCausalLM

    lm = TinyCausalLM(len(task.tokenizer), d_model=16, n_layers=1, n_heads=2, max_len=task.length)
    loss, mixed = scheduled_sampling_loss(lm, x, y, 1.0, task.prompt_len)
    assert torch.equal(mixed, x) and torch.allclose(loss, causal_lm_loss(lm(x), y))
    calls = {"n": 0}
    lm.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    for mode, want in [("parallel", 2), ("sequential", 1 + task.n)]:
        calls["n"] = 0
        _, mixed = scheduled_sampling_loss(lm, x, y, 0.0, task.prompt_len, torch.Generator().manual_seed(0), mode=mode)
        assert calls["n"] == want and torch.equal(mixed[:, :task.prompt_len], x[:, :task.prompt_len])
    # an exact model proposes the gold tokens: even alpha = 0 reproduces the gold prefix
    _, mixed = scheduled_sampling_loss(RuleModel(task), x, y, 0.0, task.prompt_len, temperature=0.0)
    assert torch.equal(mixed, x)
    with pytest.raises(ContractError, match="mode"):
        scheduled_sampling_loss(lm, x, y, 0.5, task.prompt_len, mode="both")


# ----------------------------------------------------------------------------- exercise checks

def _reference_rates(e):
    c = compounding(e)
    return c["after_error"], c["clean"]


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


# ----------------------------------------------------------------------------- the panel

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
