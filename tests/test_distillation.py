"""Distillation: kd_loss against the formula and torch's KLDivLoss(batchmean), its denominator and
mask, the T^2 gradient scale, vocabulary checks, sequence-level data, the exercise checks and the
soft-target panel."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.models import MLPClassifier, TinyCausalLM
from labkit.paradigms.distillation import (assert_same_event_space, class_similarity, entropy, kd_loss,
                                           log_log_slope, sequence_distillation_data, soft_loss_grad_norm, soften)
from labkit.vocab import SPECIALS, WordTokenizer
from labkit.widgets import SoftTargetPanel, render_soft_targets


def logits(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 7.0])
def test_kd_loss_is_T2_times_batchmean_kl(T):
    s, t = logits(5, 9), logits(5, 9, seed=1)
    reference = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    assert torch.allclose(kd_loss(s, t, T), reference, atol=1e-5)
    assert torch.allclose(kd_loss(s, t, T, scale_T2=False), reference / T**2, atol=1e-6)
    # the formula written out: T^2 * mean_n sum_v p_t (log p_t - log p_s)
    pt, ps = F.softmax(t / T, -1), F.softmax(s / T, -1)
    by_hand = T**2 * (pt * (pt.log() - ps.log())).sum(-1).mean()
    assert torch.allclose(kd_loss(s, t, T), by_hand, atol=1e-5)


def test_kd_loss_averages_over_supervised_positions_not_classes():
    s, t = logits(2, 4, 11), logits(2, 4, 11, seed=1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    T = 3.0
    flat = F.kl_div(F.log_softmax(s[mask] / T, -1), F.softmax(t[mask] / T, -1), reduction="batchmean") * T**2
    assert torch.allclose(kd_loss(s, t, T, mask=mask), flat, atol=1e-5)
    everything = kd_loss(s, t, T)
    with pytest.warns(UserWarning, match="batchmean"):                              # torch warns about 'mean' itself
        mean_elem = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="mean") * T**2
    assert torch.allclose(mean_elem * 11, everything, atol=1e-4)                   # 'mean' also divides by V
    batchmean_3d = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    assert torch.allclose(batchmean_3d, everything * 4, atol=1e-4)                 # 3-D batchmean: sum over tokens
    # a 0/1 integer mask works like the bool mask; masked positions do not matter at all
    assert torch.allclose(kd_loss(s, t, T, mask=mask.long()), flat, atol=1e-6)
    s2 = s.clone()
    s2[~mask] = 100.0
    assert torch.allclose(kd_loss(s2, t, T, mask=mask), flat, atol=1e-5)


def test_kd_loss_properties():
    s, t = logits(4, 6), logits(4, 6, seed=1)
    assert float(kd_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(s, t, 2.0)) > 0
    # shifting logits by a constant changes nothing (softmax invariance)
    assert torch.allclose(kd_loss(s + 5, t - 3, 2.0), kd_loss(s, t, 2.0), atol=1e-5)
    # the teacher is a constant: no gradient reaches it
    teacher = t.clone().requires_grad_(True)
    student = s.clone().requires_grad_(True)
    kd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad is not None
    # one-hot-like teacher with -inf entries stays finite
    hard = torch.full((1, 4), float("-inf"))
    hard[0, 2] = 0.0
    assert torch.isfinite(kd_loss(torch.zeros(1, 4), hard, 1.0))
    assert float(kd_loss(torch.zeros(1, 4), hard, 1.0)) == pytest.approx(math.log(4), rel=1e-5)


def test_kd_gradient_is_T_times_difference_over_N():
    s, t = logits(6, 5), logits(6, 5, seed=2)
    for T in (1.0, 2.5, 8.0):
        z = s.clone().requires_grad_(True)
        kd_loss(z, t, T).backward()
        assert torch.allclose(z.grad, T * (soften(s, T) - soften(t, T)) / 6, atol=1e-6)


def test_kd_loss_refusals():
    with pytest.raises(ContractError, match="no shared event space"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 7), 2.0)
    with pytest.raises(ContractError, match="same inputs"):
        kd_loss(torch.zeros(2, 5), torch.zeros(3, 5), 2.0)
    with pytest.raises(ContractError, match="one flag per position"):
        kd_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, 5), 2.0, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ContractError, match="0/0"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), 2.0, mask=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ContractError, match="T must be > 0"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), 0.0)


def test_T2_keeps_the_gradient_scale():
    s, t = logits(64, 10, scale=1.0), logits(64, 10, seed=3, scale=4.0)
    temps = [3, 4, 6, 8, 10, 15]
    without = soft_loss_grad_norm(s, t, temps, scale_T2=False)
    with_T2 = soft_loss_grad_norm(s, t, temps, scale_T2=True)
    assert -2.1 < log_log_slope(temps, without) < -1.9
    assert max(with_T2) / min(with_T2) < 1.3
    assert log_log_slope([1, 2, 4], [3, 0.75, 0.1875]) == pytest.approx(-2.0)


def test_soften_similarity_and_entropy():
    z = logits(30, 10, scale=5.0)
    y = z.argmax(-1)
    assert torch.allclose(soften(z, 1.0), z.softmax(-1))
    M1, M5 = class_similarity(z, y, 1.0, 10), class_similarity(z, y, 5.0, 10)
    present = [c for c in range(10) if (y == c).any()]
    assert torch.allclose(M1[present].sum(-1), torch.ones(len(present)), atol=1e-5)
    off = ~torch.eye(10, dtype=torch.bool)
    assert M5[present][off[present]].sum() > M1[present][off[present]].sum()      # softer: more dark knowledge
    assert entropy(z, T=5.0) > entropy(z, T=1.0)
    assert entropy(torch.zeros(3, 4)) == pytest.approx(math.log(4))
    mask = torch.tensor([True, False, False])
    assert entropy(torch.stack([torch.zeros(4), z[0, :4], z[1, :4]]), mask) == pytest.approx(math.log(4))


def test_assert_same_event_space():
    a = WordTokenizer(["the", "cat", "sat"])
    assert_same_event_space(a, WordTokenizer(["the", "cat", "sat"]))
    with pytest.raises(ContractError, match="3 .*|tokens"):
        assert_same_event_space(a, WordTokenizer(["the", "cat"]))
    with pytest.raises(ContractError, match="differ at id"):
        assert_same_event_space(a, WordTokenizer(["cat", "the", "sat"]))


def test_sequence_distillation_data_masks_prompts_and_crosses_tokenizers():
    teacher_tok = WordTokenizer(["the", "cat", "sat", "on", "mat"])
    student_tok = WordTokenizer(["mat", "on", "sat", "cat", "the"], specials=tuple(reversed(SPECIALS)))   # same tokens, other ids
    torch.manual_seed(0)
    teacher = TinyCausalLM(len(teacher_tok), d_model=16, n_layers=1, n_heads=2, max_len=16).eval()
    prompts = [teacher_tok.encode("<bos> the"), teacher_tok.encode("<bos> the cat sat")]
    same = sequence_distillation_data(teacher, prompts, 4, teacher_tok)
    for p, ex in zip(prompts, same):
        assert ex["input_ids"][:len(p)] == p and ex["labels"][:len(p)] == [IGNORE] * len(p)
        assert ex["labels"][len(p):] == ex["input_ids"][len(p):] and len(ex["input_ids"]) == len(p) + 4
    crossed = sequence_distillation_data(teacher, prompts, 4, teacher_tok, student_tok)
    for a, b in zip(same, crossed):
        assert teacher_tok.decode(a["input_ids"]) == student_tok.decode(b["input_ids"])   # same text ...
        assert a["prompt_len"] == b["prompt_len"]
    assert same[0]["input_ids"] != crossed[0]["input_ids"]                                 # ... other ids


def test_mlp_classifier():
    m = MLPClassifier(64, 10, hidden=(16, 8))
    assert m(torch.rand(3, 64)).shape == (3, 10)
    assert MLPClassifier(4, 3, hidden=())(torch.rand(2, 4)).shape == (2, 3)
    with pytest.raises(ContractError, match="flatten"):
        m(torch.rand(3, 8, 8))
    with pytest.raises(ContractError):
        MLPClassifier(4, 1)


# ----------------------------------------------------------------------------- exercise checks


# ----------------------------------------------------------------------------- soft-target panel

def test_render_soft_targets():
    start = time.perf_counter()
    states = [render_soft_targets(T) for T in (0.5, 1, 4, 10)]
    assert (time.perf_counter() - start) / 4 < 0.1
    ents, dark = [s["entropy"] for s in states], [s["dark_mass"] for s in states]
    assert all(a < b for a, b in zip(ents, ents[1:])) and all(a < b for a, b in zip(dark, dark[1:]))
    assert math.isclose(sum(states[0]["probs"]), 1.0, rel_tol=1e-9)
    one = render_soft_targets(2.0, logits=[3.0, 1.0, 0.0], names=["a", "b", "c"], label=1)
    assert "p(b)" in one["text"] and "<table" in one["html"]
    with pytest.raises(ContractError):
        render_soft_targets(0.0)


def test_soft_target_panel_rerenders():
    panel = SoftTargetPanel(logits(5, 10), labels=[0, 1, 2, 3, 4])
    first = panel.output.value
    panel.control.value = 6.0
    assert panel.renders == 2 and panel.output.value != first and panel.state["text"].startswith("T 6.0")
    panel.example.value = 3
    assert panel.renders == 3 and "p(3)" in panel.state["text"]
    assert SoftTargetPanel().ui().children[0].description == "T"
