"""Notebook 13 (labkit.bughunt): the smoke-test table and the behavioural bug-hunt graders."""
import pytest
import torch

from labkit import IGNORE
from labkit.batch import pad
from labkit.bughunt import (assert_distillation_contract, assert_gathered_diagonal, check_lm_batch,
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
