"""Notebook 13 (labkit.exercises.bughunt): the smoke-test table and the behavioural bug-hunt graders."""
import pytest
import torch

from labkit import IGNORE
from labkit.batch import pad
from labkit.exercises.bughunt import (assert_distillation_contract, assert_gathered_diagonal, check_lm_batch,
                            check_packed_attention, check_pad_eos_collate, smoke_test_table)
from labkit.checks import ContractError
from labkit.vocab import seed_vocab


def test_smoke_table_passes_correct_and_fails_broken_pipelines():
    table = smoke_test_table()
    assert len(table) == 16 and len({r["row"] for r in table}) == 8
    for r in table:
        assert r["passed"] == (r["pipeline"] == "correct"), r
        if not r["passed"]:
            assert "fix" in r["message"].lower(), r


def test_small_smoke_checks_name_the_bug():
    with pytest.raises(ContractError, match="arange"):
        assert_gathered_diagonal(torch.arange(4), rank=1, local_batch=4, world_size=2)
    assert_gathered_diagonal(torch.arange(4), rank=0, local_batch=4, world_size=2)
    tok = seed_vocab()
    with pytest.raises(ContractError, match="T=1.0"):
        assert_distillation_contract(tok, tok, 2.0, 1.0)


def test_lm_batch_grader_names_double_shift():
    with pytest.raises(AssertionError, match="double shift"):
        check_lm_batch(lambda x: {"input_ids": x[:, :-1], "labels": x[:, 1:]})


def test_pad_eos_grader_accepts_fix_and_names_misconceptions():
    def fixed(sents, pad_id):
        ids, mask = pad(sents, pad_id, "right")
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask.eq(0), IGNORE)}

    def masked_by_id(sents, pad_id):
        ids, mask = pad(sents, pad_id, "right")
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(ids.eq(pad_id), IGNORE)}

    def every_token(sents, pad_id):            # a typical wrong fix: stop masking at all
        ids, mask = pad(sents, pad_id, "right")
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}

    assert check_pad_eos_collate(fixed)["stop_rate"] > 0.8
    with pytest.raises(AssertionError, match="mask by attention_mask"):
        check_pad_eos_collate(masked_by_id)
    with pytest.raises(AssertionError, match="padding positions have labels"):
        check_pad_eos_collate(every_token)


def test_packed_attention_grader_names_the_leak():
    def causal_only(doc):                      # a typical wrong fix: a causal mask over the whole row
        B, T = doc.shape
        return torch.ones(T, T, dtype=torch.bool).tril().expand(B, T, T)

    def fixed(doc):
        T = doc.shape[1]
        return (doc[:, :, None].eq(doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)

    assert check_packed_attention(fixed)["leak"] < 1e-5
    with pytest.raises(AssertionError, match="attend to each other"):
        check_packed_attention(causal_only)


def test_sentence_conditionals_match_sampled_sentences():
    """p(next | token, position) of length-limited sentences: rows are distributions, the last step must
    end the sentence, and the frequencies of sampled sentences agree with it."""
    from labkit.exercises.bughunt import _world, sentence_conditionals

    world = _world()
    eos, bos = world.tokenizer.eos_id, world.tokenizer.bos_id
    L = 8
    cond = sentence_conditionals(world, L)
    sums = cond.sum(-1)
    assert torch.allclose(sums[sums > 0], torch.ones_like(sums[sums > 0]))
    reach = cond[L - 2].sum(-1) > 0                               # a state that can still end in time must end now
    assert torch.allclose(cond[L - 2, reach, eos], torch.ones(int(reach.sum()), dtype=torch.float64))
    sents = world.sample_sentences(4000, torch.Generator().manual_seed(0), max_len=L)
    t = 3                                                          # the token after position t, given the token there
    ctx = torch.tensor([s[t] for s in sents if len(s) > t + 1])
    nxt = torch.tensor([s[t + 1] for s in sents if len(s) > t + 1])
    common = int(torch.bincount(ctx).argmax())
    freq = torch.bincount(nxt[ctx == common], minlength=world.vocab_size).double() / int((ctx == common).sum())
    assert (freq - cond[t, common]).abs().max() < 0.05
    assert (cond[L - 2, reach] - world.P[reach]).abs().max() > 0.1   # the length limit changes the conditionals


def test_bayes_on_positions_bounds_the_expected_accuracy():
    from labkit.exercises.bughunt import _world, bayes_on_positions

    world = _world()
    states = torch.tensor(world.states)
    cond = world.P[None]                                           # one position: the chain itself
    ctx = states.repeat(5)
    pos = torch.zeros_like(ctx)
    best = world.P[ctx].argmax(-1)
    bayes, expected = bayes_on_positions(cond, ctx, pos, best)
    assert expected == pytest.approx(bayes)
    _, worse = bayes_on_positions(cond, ctx, pos, (best + 1) % world.vocab_size)
    assert worse < bayes


def test_packed_pipeline_reports_the_bayes_limit_of_its_positions():
    from labkit.exercises.bughunt import train_packed_pipeline

    def fixed(doc):
        T = doc.shape[1]
        return (doc[:, :, None].eq(doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)

    r = train_packed_pipeline(fixed, steps=40)
    assert r["acc_expected"] <= r["bayes"] + 1e-12 and r["n_eval"] > 100
    assert 0.7 < r["bayes"] < 0.8


# ----------------------------------------------------------------------------- per-student bug hunts

def _fix(k, student):
    """A correct fix of pipeline k of `student`'s hunt (what a learner writes after reading the card)."""
    from labkit.exercises.bughunt import draw_bug_hunt

    o = draw_bug_hunt(student)[k - 1].options
    if k == 1:
        if o["loss_shifts"]:
            return lambda block: {"input_ids": block, "labels": block}
        return lambda block: {"input_ids": block[:, :-1], "labels": block[:, 1:]}
    if k == 2:
        def collate(sentences, pad_id):
            ids, mask = pad(sentences, pad_id, o["side"])
            labels = ids.masked_fill(mask.eq(0), IGNORE)
            labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1].eq(0), IGNORE)   # a label predicted from padding
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return collate

    def attention(doc):
        T = doc.shape[1]
        allowed = (doc[:, :, None].eq(doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)
        return allowed if o["convention"] == "keep" else ~allowed
    return attention


def _student_with(**want):
    from labkit.exercises.bughunt import draw_bug_hunt

    for i in range(500):
        sid = f"s{i:04d}"
        opts = {k: v for p in draw_bug_hunt(sid) for k, v in p.options.items()}
        if all(opts[k] == v for k, v in want.items()):
            return sid
    raise AssertionError(f"no id draws {want}")


def test_bug_hunt_draws_are_per_student_and_cover_every_variant():
    from labkit.exercises.bughunt import DEMO_ID, draw_bug_hunt, student_id, student_seed

    assert [p.bug for p in draw_bug_hunt(DEMO_ID)] == ["double-shift", "mask-by-id", "causal-only"]
    assert draw_bug_hunt("alice")[2].code == draw_bug_hunt("alice")[2].code
    assert student_seed("alice") == student_seed(" alice ") != student_seed("bob")
    draws = [draw_bug_hunt(f"s{i:04d}") for i in range(200)]
    seen = {(p.kind, p.bug, tuple(sorted(p.options.items()))) for d in draws for p in d}
    assert len(seen) == 4 + 4 + 4                                   # every bug under every contract
    assert len({tuple((p.bug, tuple(p.options.values())) for p in d) for d in draws}) >= 40
    for p in draws[0]:
        assert callable(p.buggy()) and p.code in p.card()
    with pytest.raises(ContractError, match="student id"):
        student_seed("")
    assert student_id("me") in ("me", __import__("os").environ.get("LABKIT_STUDENT_ID"))


@pytest.mark.slow
def test_a_fix_copied_from_another_student_fails():
    """Student A (non-shifting loss, left padding, True = blocked) passes with A's fixes; the demo's fixes fail."""
    from labkit.exercises.bughunt import DEMO_ID, check_hunt

    a = _student_with(loss_shifts=False, side="left", convention="block")
    for k in (1, 2, 3):
        check_hunt(_fix(k, a), k, a, seed=0)
    with pytest.raises(AssertionError, match="copies its input"):
        check_hunt(_fix(1, DEMO_ID), 1, a)
    with pytest.raises(AssertionError, match="pads on the left"):
        check_hunt(_fix(2, DEMO_ID), 2, a)
    with pytest.raises(AssertionError, match="BLOCKED"):
        check_hunt(_fix(3, DEMO_ID), 3, a)
