"""audit(): every finding code fires on its bug and stays silent on a correct batch."""
import pytest
import torch

from labkit import IGNORE
from labkit.batch import collate, pack
from labkit.checks import ContractError, assert_has_targets, assert_prompt_masked, audit
from labkit.paradigms.autoregressive import ar_example, completion_example


def codes(findings):
    return sorted(f.code for f in findings)


@pytest.fixture
def records(tok):
    return [tok.encode(s, add_bos=True, add_eos=True) for s in ["the cat sat on the mat", "the dog ran", "the cat sat"]]


def test_correct_batches_have_no_findings(tok, records):
    assert audit(collate([ar_example(r) for r in records], tok.pad_id), pad_id=tok.pad_id, eos_id=tok.eos_id) == []
    ext = collate([ar_example(r, "external") for r in records], tok.pad_id)
    assert audit(ext, loss_shifts=False) == []
    assert audit(pack([{"input_ids": r} for r in records], max_len=16)) == []
    sft = [completion_example(tok.encode("<user> copy A B <assistant>"), tok.encode("A B <eos>"))]
    assert audit(collate(sft, tok.pad_id), prompt_lengths=[5], eos_id=tok.eos_id) == []


def test_no_targets(tok, records):
    b = collate([{"input_ids": r, "labels": [IGNORE] * len(r)} for r in records], tok.pad_id)
    assert "no_targets" in codes(audit(b))
    with pytest.raises(ContractError, match="all labels are -100"):
        assert_has_targets(b)
    assert assert_has_targets(collate([ar_example(records[0])], tok.pad_id)) == 8


def test_double_shift_and_no_shift(tok, records):
    ext = collate([ar_example(r, "external") for r in records], tok.pad_id)
    f = audit(ext, loss_shifts=True)
    assert codes(f) == ["double_shift"] and "t+2" in f[0].message
    internal = collate([ar_example(r) for r in records], tok.pad_id)
    assert codes(audit(internal, loss_shifts=False)) == ["no_shift"]


def test_left_padding_with_arange_positions(tok, records):
    gen = [{"input_ids": r, "labels": [IGNORE] * len(r)} for r in records]
    bad = collate(gen, tok.pad_id, side="left", positions="arange")
    good = collate(gen, tok.pad_id, side="left", positions="mask")
    assert "arange_positions_with_left_padding" in codes(audit(bad))
    assert "arange_positions_with_left_padding" not in codes(audit(good))


def test_supervised_padding(tok, records):
    b = collate([ar_example(r) for r in records], tok.pad_id)
    b.labels[b.attention_mask == 0] = tok.pad_id          # the classic: labels = input_ids.clone() incl. pads
    assert "supervised_padding" in codes(audit(b))
    left = collate([ar_example(r) for r in records], tok.pad_id, side="left")   # pad logit predicts 1st token
    f = [x for x in audit(left) if x.code == "supervised_padding"]
    assert f and "left" in f[0].message


def test_unmasked_prompt(tok):
    prompt, answer = tok.encode("<user> copy A B <assistant>"), tok.encode("A B <eos>")
    b = collate([completion_example(prompt, answer, train_on_prompt=True)], tok.pad_id)
    assert "unmasked_prompt" in codes(audit(b, prompt_lengths=[len(prompt)]))
    with pytest.raises(ContractError, match="imitate the user"):
        assert_prompt_masked(b.labels[0], len(prompt))
    with pytest.raises(ContractError, match=r"\[T\]"):
        assert_prompt_masked(b.labels, len(prompt))
    with pytest.raises(ContractError, match="entries"):
        audit(b, prompt_lengths=[1, 2])


def test_cross_document_attention(records):
    docs = [{"input_ids": r} for r in records]
    assert "cross_document_attention" in codes(audit(pack(docs, max_len=16, block_diagonal=False)))
    assert "cross_document_attention" not in codes(audit(pack(docs, max_len=16, block_diagonal=True)))


def test_eos_label_masked_when_pad_is_eos(tok, records):
    """transformers' CLM collator with pad == eos: labels[labels == pad] = -100 also hides the real EOS."""
    b = collate([ar_example(r) for r in records], pad_id=tok.eos_id)
    b.labels[b.input_ids == tok.eos_id] = IGNORE
    f = audit(b, pad_id=tok.eos_id, eos_id=tok.eos_id)
    assert "eos_label_masked" in codes(f) and "pad_id == eos_id" in [x for x in f if x.code == "eos_label_masked"][0].message


def test_audit_refuses_bad_input():
    with pytest.raises(ContractError, match="same"):
        audit({"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.zeros(2, 4, dtype=torch.long)})
    with pytest.raises(ContractError, match="needs input_ids"):
        audit({"input_ids": torch.zeros(2, 3, dtype=torch.long)})
