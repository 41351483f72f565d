"""Shift conventions, the golden 5-token check, completion masks, decoding."""
import pytest
import torch

from labkit import IGNORE
from labkit.checks import ContractError, assert_golden_shift, golden_shift_table, trained_targets
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import ar_example, causal_lm_loss, completion_example, generate

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
