"""TinyCausalLM masks and positions, fit(), and the synthetic worlds' known distributions."""
import math

import pytest
import torch

from labkit.batch import pack, position_ids_from_mask
from labkit.checks import ContractError
from labkit.data import CAT_WORLD, KBackSource, MarkovWorld
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.train import KeepFirstReaching, fit


def small(**kw):
    torch.manual_seed(0)
    return TinyCausalLM(30, d_model=16, n_layers=2, n_heads=2, max_len=16, **kw).eval()


def test_causal_model_does_not_read_the_future():
    m = small()
    x = torch.randint(30, (1, 8))
    y = x.clone()
    y[0, 5:] = (y[0, 5:] + 1) % 30
    assert torch.allclose(m(x)[0, :5], m(y)[0, :5], atol=1e-6)
    assert not torch.allclose(m(x)[0, 5:], m(y)[0, 5:])


def test_window_limits_context():
    m = small(window=3)
    x = torch.randint(30, (1, 10))
    y = x.clone()
    y[0, 0] = (y[0, 0] + 1) % 30
    out_x, out_y = m(x), m(y)
    # position t reads t-2..t in each of 2 layers: token 0 can reach positions up to 4, not beyond
    assert not torch.allclose(out_x[0, 4], out_y[0, 4])
    assert torch.allclose(out_x[0, 5:], out_y[0, 5:], atol=1e-6)


def test_left_padding_with_mask_positions_matches_single_sequence():
    m = small()
    seq = torch.tensor([[3, 4, 5, 6]])
    padded = torch.tensor([[0, 0, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    alone = m(seq)[0]
    right_pos = m(padded, attention_mask=mask, position_ids=position_ids_from_mask(mask))[0, 2:]
    wrong_pos = m(padded, attention_mask=mask)[0, 2:]
    assert torch.allclose(alone, right_pos, atol=1e-5)
    assert (alone - wrong_pos).abs().max() > 1e-3


def test_block_diagonal_mask_isolates_documents():
    m = small()
    a = pack([{"input_ids": [3, 4, 5]}, {"input_ids": [7, 8]}], max_len=8)
    b = pack([{"input_ids": [9, 9, 9]}, {"input_ids": [7, 8]}], max_len=8)
    la = m(a.input_ids, a.attention_mask, a.position_ids)[0, 3:]
    lb = m(b.input_ids, b.attention_mask, b.position_ids)[0, 3:]
    assert torch.equal(la, lb)


def test_model_refuses_bad_input():
    m = small()
    with pytest.raises(ContractError, match="max_len"):
        m(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ContractError, match="vocab_size"):
        m(torch.full((1, 3), 30))
    with pytest.raises(ContractError, match="attention_mask"):
        m(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))
    with pytest.raises(ContractError, match="divisible"):
        TinyCausalLM(10, d_model=10, n_heads=3)


def test_fit_lowers_the_loss_and_records_history():
    world = MarkovWorld()
    data = world.sample_blocks(64, 17, torch.Generator().manual_seed(0))
    model = TinyCausalLM(world.vocab_size, d_model=32, n_layers=1, n_heads=2, max_len=16)
    hist = fit(model, lambda s: data[(s % 8) * 8:(s % 8) * 8 + 8, :-1], lambda m, x: causal_lm_loss(m(x), x),
               steps=40, lr=1e-2, device="cpu", seed=0, progress=False)
    first, last = hist.first_last(5)
    assert len(hist.loss) == 40 and last < first - 1.0 and hist.device == "cpu"
    with pytest.raises(ContractError, match="steps"):
        fit(model, [data], lambda m, x: causal_lm_loss(m(x), x), steps=0)


def test_keep_first_reaching_keeps_that_step_and_can_stop():
    """KeepFirstReaching keeps the weights of the first probe at or above target; stop=True ends fit there."""
    model = torch.nn.Linear(2, 1)
    scores = iter([0.1, 0.5, 0.95, 0.2, 0.99])
    seen = []
    keep = KeepFirstReaching(lambda m: next(scores), target=0.9, every=2, then=lambda s, m, l: seen.append(s))
    hist = fit(model, [torch.ones(4, 2)], lambda m, x: m(x).pow(2).mean(), steps=20, lr=0.1, device="cpu",
               progress=False, callback=keep)
    assert keep.reached and keep.step == 6 and len(hist.loss) == 20 and len(seen) == 20
    assert not torch.equal(keep.state["weight"], model.state_dict()["weight"])   # a copy, not the live weights
    stopper = KeepFirstReaching(lambda m: 1.0, target=0.9, every=3, stop=True)
    hist = fit(torch.nn.Linear(2, 1), [torch.ones(4, 2)], lambda m, x: m(x).pow(2).mean(), steps=20, device="cpu",
               progress=False, callback=stopper)
    assert stopper.step == 3 and len(hist.loss) == 3
    never = KeepFirstReaching(lambda m: 0.0, target=0.9)
    fit(torch.nn.Linear(2, 1), [torch.ones(4, 2)], lambda m, x: m(x).sum(), steps=5, device="cpu", progress=False,
        callback=never)
    assert not never.reached and never.state is None
    with pytest.raises(ContractError, match="every"):
        KeepFirstReaching(lambda m: 1.0, target=0.9, every=0)


def test_markov_world_is_what_it_says():
    w = MarkovWorld()
    assert torch.allclose(w.P[w.states].sum(-1), torch.ones(len(w.states), dtype=torch.float64))
    pi = w.stationary()
    assert torch.allclose(pi @ w.P, pi, atol=1e-10)
    stream = w.sample_stream(20000, torch.Generator().manual_seed(0))
    the = w.tokenizer.stoi["the"]
    follow = stream[1:][stream[:-1] == the]
    cat_share = (follow == w.tokenizer.stoi["cat"]).float().mean().item()
    assert abs(cat_share - CAT_WORLD["the"]["cat"]) < 0.03
    assert 0 < w.entropy_rate() < math.log(len(w.states))
    assert w.bayes_accuracy(2) < w.bayes_accuracy(1) <= 1
    with pytest.raises(ContractError, match="sum to"):
        MarkovWorld({"the": {"cat": 0.5}})
    with pytest.raises(ContractError, match="no successors"):
        MarkovWorld({"the": {"cat": 1.0}})


def test_kback_source_dependency_and_entropy():
    src = KBackSource(k=4, eps=0.0)
    x = src.sample(50, 12, torch.Generator().manual_seed(0))
    idx = x - 140
    assert torch.equal(idx[:, 4:], (idx[:, :-4] + 1) % 10)
    assert src.conditional_entropy(3) == pytest.approx(math.log(10))
    assert src.conditional_entropy(4) == pytest.approx(0.0)
    assert KBackSource(k=4, eps=0.1).conditional_entropy(4) == pytest.approx(0.5003, abs=1e-3)
    with pytest.raises(ContractError):
        KBackSource(k=0)
