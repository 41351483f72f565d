"""The SFT builder's truncation guard (completion_example(max_len=...), notebook 05 section 4).
Candidate for merging into tests/test_autoregressive.py."""
import pytest
import torch
import torch.nn.functional as F

from labkit.batch import collate
from labkit.contracts import IGNORE, ContractError
from labkit.paradigms.autoregressive import causal_lm_loss, completion_example


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
