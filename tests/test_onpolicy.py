"""On-policy distillation and teacher signals (labkit.paradigms.onpolicy) and the 10b exercise grader."""
import pytest
import torch
import torch.nn.functional as F

from labkit.contracts import ContractError
from labkit.data import RunningSumTask
from labkit.exercises.onpolicy import check_overconfidence, check_reverse_kl
from labkit.models import TinyCausalLM
from labkit.paradigms.distillation import kd_loss
from labkit.paradigms.onpolicy import (CountingOracle, PlantedErrorTeacher, counting_context, distillation_loss,
                                       distinct_pairs, generated_mask, overconfidence, sample_rollouts, sequence_data,
                                       token_kl)
from labkit.vocab import WordTokenizer

tok = WordTokenizer([str(d) for d in range(10)])
task = RunningSumTask(n_steps=5, tokenizer=tok)
P, N = task.prompt_len, task.n


def lm(seed=0):
    torch.manual_seed(seed)
    return TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=task.length).eval()


class NoCache(torch.nn.Module):
    """The same model without forward_cached: sample_rollouts must re-read the prefix."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids, *args):
        return self.m(ids)


def logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_token_kl_forward_is_kd_loss_at_T1_and_reverse_is_the_formula():
    s, t = logits(2, 4, 7), logits(2, 4, 7, seed=1)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.allclose(token_kl(s, t, mask, "forward"), kd_loss(s, t, 1.0, mask=mask), atol=1e-6)
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    rev = (ls.exp() * (ls - lt)).sum(-1)[mask].mean()
    assert torch.allclose(token_kl(s, t, mask, "reverse"), rev, atol=1e-6)
    assert torch.allclose(token_kl(s, t, mask, "reverse", reduction="sum"), rev * mask.sum(), atol=1e-5)
    assert float(token_kl(s, s.clone(), mask)) == pytest.approx(0.0, abs=1e-6)


def test_token_kl_gradient_reaches_the_student_only():
    s, t = logits(1, 3, 5).requires_grad_(True), logits(1, 3, 5, seed=1).requires_grad_(True)
    token_kl(s, t, torch.ones(1, 3), "reverse").backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_cached_rollouts_equal_full_rereads():
    m = lm()
    prompts = task.sample(6, torch.Generator().manual_seed(0))[:, :P]
    cached = sample_rollouts(m, prompts, N, temperature=0.0)
    full = sample_rollouts(NoCache(m), prompts, N, temperature=0.0)
    assert torch.equal(cached, full)
    assert torch.equal(cached[:, :P], prompts) and cached.shape == (6, P + N)
    a = sample_rollouts(m, prompts, N, 1.0, torch.Generator().manual_seed(3))
    b = sample_rollouts(NoCache(m), prompts, N, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b), "the same coins give the same samples with and without the cache"


def test_generated_mask_marks_the_logits_of_written_tokens():
    m = generated_mask(torch.zeros(2, 7, dtype=torch.long), 3)
    assert m[0].tolist() == [False, False, True, True, True, True, False]
    with pytest.raises(ContractError):
        generated_mask(torch.zeros(2, 3, dtype=torch.long), 3)


def test_distillation_loss_policy_decides_who_writes():
    student, teacher = lm(0), CountingOracle(task, len(tok))
    prompts = task.sample(8, torch.Generator().manual_seed(1))[:, :P]
    _, off = distillation_loss(student, teacher, prompts, N, "off", temperature=0.0)
    assert torch.equal(off[:, P:], task.gold(prompts)), "off-policy: the (oracle) teacher writes the true counts"
    loss, on = distillation_loss(student, teacher, prompts, N, "on", temperature=0.0)
    assert torch.equal(on, sample_rollouts(student, prompts, N, temperature=0.0)), "on-policy: the student writes"
    loss.backward()
    assert any(p.grad is not None for p in student.parameters())


def test_counting_context_and_oracle_on_a_hand_made_row():
    # increments 1 3 2 3 0 -> counts 1 4 6 9 9; a wrong count 5 written at k=2
    row = torch.tensor([[tok.bos_id, *[tok.stoi[str(d)] for d in (1, 3, 2, 3, 0)], tok.sep_id,
                         *[tok.stoi[str(d)] for d in (1, 5, 7, 0, 0)]]])
    ctx = counting_context(task, row, prev=1, increment=3)
    assert ctx.nonzero()[:, 1].tolist() == [P], "count 1 read at position P, next increment 3"
    assert counting_context(task, row, prev=5, increment=2).nonzero()[:, 1].tolist() == [P + 1]
    assert not counting_context(task, row[:, :P], prev=0, increment=3).any()
    oracle = CountingOracle(task, len(tok))
    top = oracle(row).argmax(-1)[0, P - 1:P - 1 + N]
    assert task.values(top).tolist() == [1, 4, 6, 9, 9], "the oracle's target is the true count whatever the prefix"


def test_planted_error_fires_only_in_its_context_and_caches_like_full_reads():
    teacher = CountingOracle(task, len(tok))
    eight = tok.stoi["8"]
    buggy = PlantedErrorTeacher(teacher, lambda ids: counting_context(task, ids, 4, 3), eight)
    rows = task.sample(64, torch.Generator().manual_seed(2))
    fire = counting_context(task, rows, 4, 3)
    assert fire.any()
    z, z0 = buggy(rows), teacher(rows)
    assert (z.argmax(-1)[fire] == eight).all()
    assert torch.equal(z[~fire], z0[~fire])
    m = lm()
    wrapped = PlantedErrorTeacher(m, lambda ids: counting_context(task, ids, 4, 3), eight)
    prompts = rows[:, :P]
    assert torch.equal(sample_rollouts(wrapped, prompts, N, 0.0), sample_rollouts(NoCache(wrapped), prompts, N, 0.0))


def test_sequence_data_greedy_is_deterministic_and_masks_prompts():
    m = lm()
    prompts = [[tok.bos_id, tok.stoi["1"]], [tok.bos_id], [tok.bos_id, tok.stoi["2"], tok.stoi["3"]]]
    a, b = sequence_data(m, prompts, 4), sequence_data(m, prompts, 4)
    assert a == b
    for p, ex in zip(prompts, a):
        assert ex["input_ids"][:len(p)] == p and len(ex["input_ids"]) == len(p) + 4
        assert ex["labels"][:len(p)] == [-100] * len(p)
    assert distinct_pairs([{"input_ids": [1, 2, 3, 2, 3], "labels": [-100, 2, 3, 2, 3]}]) == 3


def test_overconfidence_is_zero_for_a_copy_and_positive_for_a_sharpened_student():
    t = logits(4, 6)
    assert overconfidence(t, t) == pytest.approx(0.0, abs=1e-6)
    assert overconfidence(t * 5, t) > 0.1


def test_check_reverse_kl_accepts_correct_solutions():
    def by_hand(s, t, mask):
        ls, lt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
        return (ls.exp() * (ls - lt)).sum(-1)[mask].mean()

    def with_kl_div(s, t, mask):          # F.kl_div(input=log q, target=log p, log_target=True) = KL(p || q)
        kl = F.kl_div(F.log_softmax(t, -1), F.log_softmax(s, -1), reduction="none", log_target=True).sum(-1)
        return (kl * mask).sum() / mask.sum()

    for fn in (by_hand, with_kl_div):
        check_reverse_kl(fn)
        check_reverse_kl(fn, seed=4)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda s, t, m: kd_loss(s, t, 1.0, mask=m), "forward KL"),
    (lambda s, t, m: (F.softmax(s, -1) * (F.log_softmax(s, -1) - F.log_softmax(t, -1))).sum(-1).mean(), "every position"),
    (lambda s, t, m: token_kl(s.detach(), t, m, "reverse"), "no gradient"),
])
def test_check_reverse_kl_names_the_misconception(wrong, phrase):
    with pytest.raises(AssertionError, match=phrase):
        check_reverse_kl(wrong)


def test_check_overconfidence_accepts_correct_and_names_wrong_solutions():
    def right(s, t):
        ps, pt = s.softmax(-1), t.softmax(-1)
        return (ps.max(-1).values - pt.gather(-1, ps.argmax(-1, keepdim=True))[:, 0]).mean().item()

    check_overconfidence(right)
    check_overconfidence(lambda s, t: overconfidence(s, t), seed=3)
    with pytest.raises(AssertionError, match="STUDENT's argmax"):
        check_overconfidence(lambda s, t: (s.softmax(-1).max(-1).values - t.softmax(-1).max(-1).values).mean())
    with pytest.raises(AssertionError, match="softmax"):
        check_overconfidence(lambda s, t: (s.max(-1).values - t.gather(-1, s.argmax(-1, keepdim=True))[:, 0]).mean())
