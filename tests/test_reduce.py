"""Per-token CE and every reduction, with its denominator."""
import pytest
import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.reduce import reduce, token_cross_entropy


def losses_and_mask():
    l = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    return l, m


def test_token_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.randint(7, (2, 5), generator=g)
    labels[0, 1] = IGNORE
    per = token_cross_entropy(logits, labels)
    assert per[0, 1] == 0
    ref = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(per.sum() / labels.ne(IGNORE).sum(), ref, atol=1e-6)


def test_reductions_and_denominators():
    l, m = losses_and_mask()
    r = reduce(l, m, "token_mean")
    assert r.value.item() == pytest.approx(10 / 4) and r.denominator.item() == 4
    r = reduce(l, m, "sequence_mean")
    assert r.value.item() == pytest.approx((2.0 + 4.0) / 2) and r.denominator.item() == 2
    r = reduce(l, m, "sum")
    assert r.value.item() == 10 and r.denominator.item() == 1
    r = reduce(l, m, "batch_mean")
    assert r.value.item() == 5 and r.denominator.item() == 2
    r = reduce(l, m, "token_mean", denominator=8)
    assert r.value.item() == pytest.approx(10 / 8) and r.denominator.item() == 8


def test_weights_per_sequence_and_per_token():
    l, m = losses_and_mask()
    r = reduce(l, m, "token_mean", weights=torch.tensor([1.0, 3.0]))
    assert r.value.item() == pytest.approx((6 + 12) / (3 + 3))
    r = reduce(l, m, "sequence_mean", weights=torch.tensor([1.0, 3.0]))
    assert r.value.item() == pytest.approx((1 * 2 + 3 * 4) / 4)
    w = torch.ones(2, 4)
    w[0, 2] = 0
    assert reduce(l, m, "token_mean", weights=w).value.item() == pytest.approx(7 / 3)


def test_gradient_accumulation_global_denominator():
    """Summing micro-batch losses divided by the global count == the token mean of the union."""
    l, m = losses_and_mask()
    full = reduce(l, m, "token_mean").value
    n = m.sum()
    parts = reduce(l[:1], m[:1], "sum", denominator=n).value + reduce(l[1:], m[1:], "sum", denominator=n).value
    mean_of_means = (reduce(l[:1], m[:1]).value + reduce(l[1:], m[1:]).value) / 2
    assert torch.allclose(parts, full) and not torch.allclose(mean_of_means, full)


@pytest.mark.parametrize("kwargs,match", [
    (dict(reduction="median"), "unknown reduction"),
    (dict(mask=torch.zeros(2, 4)), "no supervised target tokens"),
    (dict(reduction="sequence_mean", mask=torch.zeros(2, 4)), "no supervised target tokens"),
    (dict(weights=torch.ones(3)), "weights must be"),
    (dict(weights=-torch.ones(2)), "non-negative"),
    (dict(denominator=0), "positive"),
    (dict(reduction="sequence_mean", denominator=3), "does not combine"),
    (dict(mask=torch.ones(2, 3)), r"\[B,T\]"),
])
def test_reduce_refuses_bad_input(kwargs, match):
    l, m = losses_and_mask()
    args = dict(token_losses=l, mask=m)
    args.update(kwargs)
    with pytest.raises(ContractError, match=match):
        reduce(**args)


def test_token_cross_entropy_refuses_bad_input():
    with pytest.raises(ContractError, match="do not align"):
        token_cross_entropy(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ContractError, match="outside"):
        token_cross_entropy(torch.zeros(1, 2, 7), torch.tensor([[3, 9]]))
    with pytest.raises(ContractError, match="int64"):
        token_cross_entropy(torch.zeros(1, 2, 7), torch.tensor([[3.0, 1.0]]))
