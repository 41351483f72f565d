"""Shift conventions, the golden 5-token check, completion masks, decoding."""
import pytest
import torch

from labkit import IGNORE
from labkit.checks import ContractError, assert_golden_shift, golden_shift_table, trained_targets
from labkit.models import TinyCausalLM
from labkit.batch import collate, pad, position_ids_from_mask
from labkit.paradigms.autoregressive import (ar_example, causal_lm_loss, completion_example, generate,
                                             record_pairs, trained_pairs)
from labkit.exercises.autoregressive import check_fixed_batch

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
