"""labkit.contracts: the one validation vocabulary, and the bad-input classes honoured rather than refused."""
import numpy as np
import pytest
import torch

from labkit.batch import collate, pack
from labkit.contracts import (IGNORE, ContractError, binary_mask, count, finite, label_ids, log_probs, positive,
                              probabilities, tensor, text_file, token_ids, weight_tensor)
from labkit.reduce import reduce


def test_one_definition_of_ignore_and_the_error():
    import labkit
    import labkit.checks

    assert labkit.IGNORE is IGNORE == -100 and labkit.checks.ContractError is ContractError
    assert issubclass(ContractError, ValueError)


@pytest.mark.parametrize("bad", [[1, 2], np.array([1, 2]), "the cat", 3])
def test_tensor_refuses_what_is_not_a_tensor(bad):
    with pytest.raises(ContractError, match="torch|text"):
        tensor(bad, "input_ids")


def test_ids_and_labels():
    assert token_ids(torch.tensor([0, 5]), vocab_size=6).tolist() == [0, 5]
    for bad, match in [(torch.tensor([1.7]), "truncated"), (torch.tensor([-100]), "labels"), (torch.tensor([6]), "vocab_size")]:
        with pytest.raises(ContractError, match=match):
            token_ids(bad, vocab_size=6)
    assert label_ids(torch.tensor([IGNORE, 3]), vocab_size=4).tolist() == [IGNORE, 3]
    with pytest.raises(ContractError, match="not -100"):
        label_ids(torch.tensor([-1, 3]), vocab_size=4)


@pytest.mark.parametrize("bad,match", [(torch.tensor([1, -100]), "labels"), (torch.tensor([0.5, 1.0]), "0/1"),
                                       (torch.tensor([2, 1]), "0/1"), (torch.tensor([float("nan")]), "NaN")])
def test_binary_mask(bad, match):
    with pytest.raises(ContractError, match=match):
        binary_mask(bad)
    assert binary_mask(torch.tensor([True, False])).dtype == torch.bool
    assert binary_mask(torch.tensor([1.0, 0.0])).tolist() == [1.0, 0.0]


def test_log_probs_and_probabilities():
    log_probs(torch.tensor([-1.0, float("-inf")]))
    with pytest.raises(ContractError, match="positive"):
        log_probs(torch.tensor([-1.0, 2.0]))
    probabilities(torch.tensor([[0.25, 0.75]]))
    with pytest.raises(ContractError, match="softmax"):
        probabilities(torch.tensor([[2.0, -1.0]]))
    with pytest.raises(ContractError, match="sum to 1"):
        probabilities(torch.tensor([[0.2, 0.2]]))


@pytest.mark.parametrize("bad", ["0.5", float("nan"), float("inf"), True, None, torch.ones(2)])
def test_finite_scalars(bad):
    with pytest.raises(ContractError):
        finite(bad, "beta")
    assert finite(torch.tensor(0.5), "beta") == 0.5


def test_positive_count_weights():
    with pytest.raises(ContractError, match="> 0"):
        positive(0.0, "temperature")
    with pytest.raises(ContractError, match="text"):
        count("8", "max_len")
    with pytest.raises(ContractError, match="integer"):
        count(8.0, "max_len")
    with pytest.raises(ContractError, match="all zero"):
        weight_tensor(torch.zeros(3))
    with pytest.raises(ContractError, match="non-negative"):
        weight_tensor(torch.tensor([1.0, -1.0]))


def test_text_file(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text("{}\n")
    assert text_file(good) == good
    (tmp_path / "e.jsonl").write_text("  \n")
    for path, match in [(tmp_path / "missing", "not found"), (tmp_path, "folder"), (tmp_path / "e.jsonl", "empty")]:
        with pytest.raises(ContractError, match=match):
            text_file(path)
    (tmp_path / "l.jsonl").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(ContractError, match="UTF-8"):
        text_file(tmp_path / "l.jsonl")


# ---- classes that are honoured, not refused -------------------------------------------------------

def test_an_infinite_loss_at_a_masked_position_is_not_part_of_the_objective():
    losses = torch.tensor([[1.0, float("inf"), 3.0]], requires_grad=True)
    mask = torch.tensor([[1, 0, 1]])
    out = reduce(losses, mask)
    assert out.value.item() == pytest.approx(2.0)
    out.value.backward()
    assert torch.isfinite(losses.grad).all() and losses.grad[0, 1] == 0


def test_pack_keeps_per_example_weights_per_token():
    b = pack([{"input_ids": [1, 2, 3], "weight": 2.0}, {"input_ids": [4, 5]}, {"input_ids": [6]}], max_len=4)
    assert b.weights.shape == b.input_ids.shape
    for row in range(b.input_ids.shape[0]):
        for t in range(b.input_ids.shape[1]):
            d = int(b.document_ids[row, t])
            assert b.weights[row, t] == (0.0 if d < 0 else (2.0 if d == 0 else 1.0))
    assert pack([{"input_ids": [1, 2]}], max_len=4).weights is None


def test_collate_accepts_metadata_and_an_all_ones_mask():
    b = collate([{"input_ids": [5, 7], "attention_mask": [1, 1], "prompt_len": 1, "task": "copy"}], pad_id=0)
    assert b.input_ids.tolist() == [[5, 7]]
