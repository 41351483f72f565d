"""Shift conventions, the golden 5-token check, completion masks, decoding."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit import IGNORE
from labkit.batch import arange_positions, collate, pad, position_ids_from_mask
from labkit.checks import ContractError, assert_golden_shift, golden_shift_table, trained_targets
from labkit.exercises.autoregressive import check_fixed_batch
from labkit.models import HFLogits, TinyCausalLM
from labkit.paradigms.autoregressive import (ALPHA_SHAPES, after_injected_slip, alpha_schedule, ar_example,
                                             causal_lm_loss, completion_example, compounding, continuation_logits,
                                             cross_document_sensitivity, decode_agreement, earlier_error,
                                             free_running_predictions, generate, generate_cached, next_positions,
                                             position_accuracy, record_pairs, scheduled_sampling_inputs,
                                             scheduled_sampling_loss, teacher_forced_predictions, trained_pairs)

RECORD = [1, 42, 95, 317, 18]  # <bos> the cat sat on


def test_ar_example_conventions():
    assert ar_example(RECORD, "external") == {"input_ids": [1, 42, 95, 317], "labels": [42, 95, 317, 18]}
    assert ar_example(RECORD, "internal") == {"input_ids": RECORD, "labels": RECORD}
    with pytest.raises(ContractError, match="unknown shift"):
        ar_example(RECORD, "both")
    with pytest.raises(ContractError, match="at least 2"):
        ar_example([1], "internal")


def test_golden_alignment_correct_pipelines_pass():
    internal = lambda r: ar_example(r, "internal")  # noqa: E731
    external = lambda r: ar_example(r, "external")  # noqa: E731
    rows = assert_golden_shift(RECORD, internal, lambda z, y: causal_lm_loss(z, y, shift=True), 512)
    assert [r["trained_target"] for r in rows] == [42, 95, 317, 18, None]
    rows = assert_golden_shift(RECORD, external, lambda z, y: causal_lm_loss(z, y, shift=False), 512)
    assert [r["trained_target"] for r in rows] == [42, 95, 317, 18]


def test_golden_alignment_catches_double_and_missing_shift():
    external = lambda r: ar_example(r, "external")  # noqa: E731
    internal = lambda r: ar_example(r, "internal")  # noqa: E731
    with pytest.raises(ContractError, match="t\\+2.*double_shift"):
        assert_golden_shift(RECORD, external, lambda z, y: causal_lm_loss(z, y, shift=True), 512)
    with pytest.raises(ContractError, match="copy"):
        assert_golden_shift(RECORD, internal, lambda z, y: causal_lm_loss(z, y, shift=False), 512)
    rows = golden_shift_table(RECORD, external, lambda z, y: causal_lm_loss(z, y, shift=True), 512)
    assert [r["trained_target"] for r in rows] == [95, 317, 18, None]


def test_trained_targets_reads_the_gradient():
    labels = torch.tensor([[5, IGNORE, 7]])
    assert trained_targets(lambda z, y: causal_lm_loss(z, y, shift=False), labels, 10) == [5, None, 7]


def test_causal_lm_loss_shapes_and_reductions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, generator=g)
    labels = torch.randint(9, (2, 4), generator=g)
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    assert torch.allclose(causal_lm_loss(logits, labels), manual, atol=1e-6)
    total = causal_lm_loss(logits, labels, reduction="sum")
    assert torch.allclose(causal_lm_loss(logits, labels, denominator=12), total / 12)
    with pytest.raises(ContractError, match="same length"):
        causal_lm_loss(logits, labels[:, 1:])
    with pytest.raises(ContractError, match="unknown reduction"):
        causal_lm_loss(logits, labels, reduction="mean")
    with pytest.raises(ContractError, match="no supervised"):
        causal_lm_loss(logits, torch.full((2, 4), IGNORE))


def test_completion_example_masks_prompt():
    ex = completion_example([5, 210, 141], [6, 141, 2])
    assert ex["labels"] == [IGNORE] * 3 + [6, 141, 2] and ex["prompt_len"] == 3
    ex = completion_example([5, 210], [141], train_on_prompt=True)
    assert ex["labels"] == [5, 210, 141]
    with pytest.raises(ContractError, match="empty"):
        completion_example([5], [])


def test_generate_greedy_and_sampled():
    torch.manual_seed(0)
    model = TinyCausalLM(20, d_model=16, n_layers=1, n_heads=2, max_len=16).eval()
    prompts = [[1, 2, 3], [4]]
    greedy = generate(model, prompts, max_new_tokens=4, pad_id=0)
    assert [len(r) for r in greedy] == [4, 4]
    alone = generate(model, [[4]], max_new_tokens=4, pad_id=0)
    assert greedy[1] == alone[0]   # positions from the mask: batching does not change the answer
    g1 = generate(model, prompts, 4, 0, temperature=1.0, generator=torch.Generator().manual_seed(1))
    g2 = generate(model, prompts, 4, 0, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert g1 == g2
    with pytest.raises(ContractError, match="temperature"):
        generate(model, prompts, 2, 0, temperature=-1)
    stop = generate(model, prompts, 6, 0, eos_id=greedy[0][0])
    assert stop[0] == greedy[0][:1]


# ----------------------------------------------------------------------------- what a batch trains (notebook 03, exercise 2)

EOS, PAD = 2, 0
RECORDS = [[1, 42, 95, 317, EOS], [1, 43, 96, 318, 20, 42, 509, EOS], [1, 42, EOS]]


def _colleague():
    return collate([ar_example(r, "external") for r in RECORDS], PAD)


def _full_rows(b):
    return [[int(b.input_ids[i, 0])] + [y for y in b.labels[i].tolist() if y != IGNORE] for i in range(b.input_ids.shape[0])]


def fix_rebuild(b):
    return collate([ar_example(x, "internal") for x in _full_rows(b)], PAD)


def fix_tensors(b):
    """Append each row's last label to its inputs, all in tensors (the first label is -100)."""
    real = b.labels.ne(IGNORE)
    ids = torch.cat([b.input_ids[:, :1], torch.where(real, b.labels, torch.full_like(b.labels, PAD))], 1)
    mask = torch.cat([torch.ones_like(real[:, :1]), real], 1).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.cat([torch.full_like(b.labels[:, :1], IGNORE), b.labels], 1)}


def fix_left_padded(b):
    ids, mask = pad(_full_rows(b), 7, side="left")
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
    labels[mask.bool() & mask.cumsum(-1).eq(1)] = IGNORE   # no target predicted from the last pad
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": position_ids_from_mask(mask)}


def fix_copies_input_ids(b):
    labels = b.input_ids.clone()
    labels[b.attention_mask == 0] = IGNORE
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": labels}


def test_trained_pairs_reads_contexts_and_targets():
    b = fix_rebuild(_colleague())
    assert sorted(trained_pairs(b)) == sorted(record_pairs(RECORDS))
    assert record_pairs([[1, 42, EOS]]) == [((1,), 42), ((1, 42), EOS)]
    # without the shift, logit t is trained on label t; a logit on padding reads nothing
    one = {"input_ids": torch.tensor([[PAD, 1, 42]]), "attention_mask": torch.tensor([[0, 1, 1]]),
           "labels": torch.tensor([[5, 42, EOS]])}
    assert trained_pairs(one, shift=False) == [((), 5), ((1,), 42), ((1, 42), EOS)]
    with pytest.raises(ContractError, match="same shape"):
        trained_pairs({"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.zeros(2, 2, dtype=torch.long)})


@pytest.mark.parametrize("fix", [fix_rebuild, fix_tensors, fix_left_padded])
def test_check_fixed_batch_accepts_every_correct_fix(fix):
    check_fixed_batch(RECORDS, fix(_colleague()), eos_id=EOS)


def _message(fix, **kw):
    with pytest.raises(AssertionError) as err:
        check_fixed_batch(RECORDS, fix(_colleague()), **kw)
    return str(err.value)


def test_check_fixed_batch_refuses_the_fix_that_drops_eos():
    msg = _message(fix_copies_input_ids, eos_id=EOS)
    assert "<eos>" in msg and "never learns to stop" in msg and "input_ids" in msg
    assert "the last token" in _message(fix_copies_input_ids)


def test_check_fixed_batch_names_other_misconceptions():
    assert "double_shift" in _message(lambda b: b)
    assert "labels alone" in _message(lambda b: fix_copies_input_ids(b)["labels"])

    def supervised_padding(b):
        out = fix_rebuild(b)
        out.labels = out.input_ids.clone()
        return out
    assert "supervised_padding" in _message(supervised_padding)

    def left_first_label_kept(b):
        out = fix_left_padded(b)
        out["labels"] = torch.where(out["attention_mask"].bool(), out["input_ids"], torch.full_like(out["input_ids"], IGNORE))
        return out
    assert "padding" in _message(left_first_label_kept)

    def copy_task(b):   # labels delayed by one token: after the loss's shift, logit t is trained on token t
        return collate([{"input_ids": x, "labels": [IGNORE] + x[:-1]} for x in _full_rows(b)], PAD)
    assert "copy" in _message(copy_task)

    def one_record_dropped(b):
        out = fix_rebuild(b)
        out.labels[2] = IGNORE
        return out
    assert "missing" in _message(one_record_dropped)


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


def tiny_gpt2(vocab=40):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      initializer_range=0.05, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()


def tiny(vocab=40, **kw):
    torch.manual_seed(0)
    return TinyCausalLM(vocab, d_model=16, n_layers=2, n_heads=2, max_len=32, **kw).eval()


PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1], [1, 12, 13, 14]]


def test_decode_agreement_mask_vs_arange():
    model = tiny()
    good = decode_agreement(model, PROMPTS, 5, pad_id=0, positions="mask")
    assert good["mismatch"] == [] and good["max_logit_diff"] < 1e-5 and good["batched"] == good["alone"]
    bad = decode_agreement(model, PROMPTS, 5, pad_id=0, positions="arange")
    assert bad["max_logit_diff"] > 1e-2
    assert 0 not in bad["mismatch"], "the longest prompt has no padding: its positions are right either way"


def test_continuation_logits_equal_stepwise_decoding():
    model = tiny()
    new = generate(model, PROMPTS, 4, pad_id=0)
    logits = continuation_logits(model, PROMPTS, new, pad_id=0)
    assert logits.shape == (len(PROMPTS), 4, 40)
    assert logits.argmax(-1).tolist() == new     # greedy: each step's argmax is the token generated
    with pytest.raises(ContractError, match="share one length"):
        continuation_logits(model, PROMPTS[:2], [[1], [1, 2]], pad_id=0)
    with pytest.raises(ContractError, match="continuations"):
        continuation_logits(model, PROMPTS, new[:1], pad_id=0)


def test_kv_cache_prefill_equals_forward():
    model = tiny()
    ids, mask = pad(PROMPTS, 0, side="left")
    pos = position_ids_from_mask(mask)
    logits, past = model.forward_cached(ids, mask, pos)
    assert torch.allclose(logits, model(ids, attention_mask=mask, position_ids=pos), atol=1e-5)
    assert len(past) == 2 and past[0][0].shape == (4, 2, ids.shape[1], 8)


def test_kv_cache_positions_own_vs_padded():
    model = tiny()
    full = generate(model, PROMPTS, 6, pad_id=0)
    own = generate_cached(model, PROMPTS, 6, pad_id=0, next_position="own")
    assert own["tokens"] == full
    assert torch.allclose(own["logits"], continuation_logits(model, PROMPTS, own["tokens"], 0), atol=1e-5)
    padded = generate_cached(model, PROMPTS, 6, pad_id=0, next_position="padded")
    ref = continuation_logits(model, PROMPTS, padded["tokens"], 0)
    assert (padded["logits"] - ref).abs().amax((1, 2))[1:].min() > 1e-3, "every padded row continues at the wrong position"
    assert torch.allclose(padded["logits"][0], ref[0], atol=1e-5), "the longest row is unaffected"
    with pytest.raises(ContractError, match="next_position"):
        generate_cached(model, PROMPTS, 2, 0, next_position="column")


def test_forward_cached_refuses_bad_input():
    model = tiny()
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ContractError, match="position_ids"):
        model.forward_cached(ids, torch.ones(1, 3), None)
    with pytest.raises(ContractError, match="P\\+S"):
        model.forward_cached(ids, torch.ones(1, 2), torch.arange(3)[None])
    with pytest.raises(ContractError, match="window"):
        tiny(window=2).forward_cached(ids, torch.ones(1, 3), torch.arange(3)[None])
    _, past = model.forward_cached(ids, torch.ones(1, 3), torch.arange(3)[None])
    with pytest.raises(ContractError, match="layers"):
        model.forward_cached(ids[:, :1], torch.ones(1, 4), torch.tensor([[3]]), past[:1])


def test_next_positions():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert next_positions(mask).tolist() == [2, 4]
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        next_positions(torch.ones(1, 2, 2))


def test_gpt2_generate_uses_mask_positions_and_plain_forward_does_not():
    """Cross-check: labkit's greedy loop with mask positions == transformers generate(); arange == plain forward."""
    gpt2 = tiny_gpt2()
    ids, mask = pad(PROMPTS, 0, side="left")
    theirs = gpt2.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                           pad_token_id=0)[:, ids.shape[1]:].tolist()
    assert generate(HFLogits(gpt2), PROMPTS, 5, pad_id=0, positions="mask") == theirs
    with torch.no_grad():
        plain = gpt2(input_ids=ids, attention_mask=mask).logits
        arange = HFLogits(gpt2)(ids, attention_mask=mask, position_ids=arange_positions(ids))
    assert torch.allclose(plain, arange, atol=1e-6), "a plain forward numbers the columns"
    bad = decode_agreement(HFLogits(gpt2), PROMPTS, 5, pad_id=0, positions="arange")
    assert bad["max_logit_diff"] > 1e-2
    with pytest.raises(ContractError, match="padding mask"):
        HFLogits(gpt2)(ids, attention_mask=torch.ones(4, 6, 6))


def test_cross_document_sensitivity_is_exactly_zero_only_with_block_mask_and_restart():
    model = tiny()
    a, a2, a_long, b = [1, 5, 6, 2], [1, 7, 8, 2], [1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 2]
    assert cross_document_sensitivity(model, a, a2, b) == 0.0
    assert cross_document_sensitivity(model, a, a_long, b) < 1e-5
    assert cross_document_sensitivity(model, a, a2, b, block_diagonal=False) > 1e-3
    assert cross_document_sensitivity(model, a, a_long, b, restart_positions=False) > 1e-3


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


# ----------------------------------------------------------------- the SFT builder's truncation guard (notebook 05)

def test_truncation_keeps_prompt_and_cuts_the_answer_from_the_right():
    ex = completion_example([1, 2, 3], [4, 5, 6], max_len=5)
    assert ex == {"input_ids": [1, 2, 3, 4, 5], "labels": [IGNORE] * 3 + [4, 5], "prompt_len": 3}
    assert completion_example([1, 2, 3], [4, 5], max_len=99) == completion_example([1, 2, 3], [4, 5])


@pytest.mark.parametrize("max_len", [1, 2, 3])
def test_an_example_without_answer_targets_is_refused_with_the_fixes(max_len):
    with pytest.raises(ContractError) as err:
        completion_example([1, 2, 3], [4, 5], max_len=max_len)
    msg = str(err.value)
    assert "no answer target" in msg and "drop the example" in msg and "from the left" in msg and "raise max_len" in msg


def test_what_the_guard_prevents_is_a_nan_token_mean():
    ids, labels = [1, 2, 3, 4, 5], [IGNORE] * 3 + [4, 5]
    b = collate([{"input_ids": ids[:3], "labels": labels[:3]}], pad_id=0)     # naive cut: prompt only
    logits = torch.randn(1, 3, 8)
    assert torch.isnan(F.cross_entropy(logits[0, :-1], b.labels[0, 1:], ignore_index=IGNORE))
    with pytest.raises(ContractError, match="no supervised target"):
        causal_lm_loss(logits, b.labels)


def test_max_len_must_be_a_count():
    with pytest.raises(ContractError, match="max_len"):
        completion_example([1], [2], max_len="8")
