"""Supervised objectives (labkit.paradigms.supervised), their refusals, the exercise checks, and the
synthetic supervised worlds of labkit.data."""
import pytest
import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.data import AnnotatorWorld, FindingsWorld, imbalanced_blobs, thin_classes
from labkit.paradigms.supervised import (ce_decomposition, ce_logit_grad, class_balanced_weights,
                                         class_mass_at_prior, competitors_holding, expected_calibration_error,
                                         f1_per_label, majority_law, majority_vote, multilabel_bce,
                                         temperature_push, normalise_multi_hot, reliability, risk_shares,
                                         single_label_ce, smoothed_targets, soft_target_ce, vote_distribution,
                                         weighted_ce)


def logits_labels(N=6, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, K, generator=g), torch.randint(K, (N,), generator=g)


# ----------------------------------------------------------------------------- objectives

def test_single_label_ce_matches_torch_and_ignores():
    z, y = logits_labels()
    y[2] = IGNORE
    assert torch.allclose(single_label_ce(z, y), F.cross_entropy(z, y, ignore_index=IGNORE))
    per = single_label_ce(z, y, reduction="none")
    assert per[2] == 0 and torch.allclose(per.sum() / 5, single_label_ce(z, y))


def test_single_label_ce_refuses_multi_hot_and_soft_targets():
    z = torch.zeros(2, 5)
    with pytest.raises(ContractError, match="multi-hot.*simplex.*multilabel_bce"):
        single_label_ce(z, torch.tensor([[1.0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]))
    with pytest.raises(ContractError, match="soft_target_ce"):
        single_label_ce(z, torch.full((2, 5), 0.2))
    with pytest.raises(ContractError, match="outside"):
        single_label_ce(z, torch.tensor([0, 5]))
    with pytest.raises(ContractError, match="0/0"):
        single_label_ce(z, torch.tensor([IGNORE, IGNORE]))
    with pytest.raises(ContractError, match=r"\[N\]"):
        single_label_ce(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ContractError, match="reduction"):
        single_label_ce(z, torch.tensor([0, 1]), reduction="token_mean")


def test_soft_target_ce():
    z, y = logits_labels()
    assert torch.allclose(soft_target_ce(z, F.one_hot(y, 4).float()), single_label_ce(z, y))
    q = torch.rand(6, 4).softmax(-1)
    assert torch.allclose(soft_target_ce(z, q), F.cross_entropy(z, q))
    with pytest.raises(ContractError, match="multi-hot.*multilabel_bce"):
        soft_target_ce(z, torch.tensor([[1.0, 1, 0, 0]] * 6))
    with pytest.raises(ContractError, match="sum to 1"):
        soft_target_ce(z, torch.full((6, 4), 0.3))
    with pytest.raises(ContractError, match="single_label_ce"):
        soft_target_ce(z, y)


def test_multilabel_bce_sums_labels_and_refuses_class_ids():
    z, _ = logits_labels()
    t = (torch.rand(6, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    per = multilabel_bce(z, t, reduction="none")
    assert torch.allclose(per, F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(-1))
    assert torch.allclose(multilabel_bce(z, t), per.mean()) and torch.allclose(multilabel_bce(z, t, "sum"), per.sum())
    with pytest.raises(ContractError, match="class ids.*single_label_ce"):
        multilabel_bce(z, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ContractError, match=r"\[0, 1\]"):
        multilabel_bce(z, 2 * t)
    with pytest.raises(ContractError, match="must match"):
        multilabel_bce(z, t[:, :3])


def test_normalise_and_smooth():
    y = torch.tensor([[1.0, 1, 0], [0, 0, 1]])
    assert torch.equal(normalise_multi_hot(y), torch.tensor([[0.5, 0.5, 0], [0, 0, 1]]))
    with pytest.raises(ContractError, match="no label"):
        normalise_multi_hot(torch.zeros(1, 3))
    z, labels = logits_labels()
    q = smoothed_targets(labels, 4, 0.1)
    assert torch.allclose(q.sum(-1), torch.ones(6))
    assert torch.allclose(soft_target_ce(z, q), F.cross_entropy(z, labels, label_smoothing=0.1), atol=1e-6)
    with pytest.raises(ContractError, match="eps"):
        smoothed_targets(labels, 4, 1.0)


def test_ce_decomposition():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(50, 6, generator=g, dtype=torch.float64)
    q[q < 0.3] = 0
    q[:, 0] += 0.1
    q = q / q.sum(-1, keepdim=True)
    p = torch.randn(50, 6, generator=g, dtype=torch.float64).softmax(-1)
    d = ce_decomposition(q, p)
    assert torch.allclose(d["ce"], d["entropy"] + d["kl"]) and (d["kl"] >= 0).all()
    assert ce_decomposition(q, q)["kl"].abs().max() < 1e-12
    with pytest.raises(ContractError, match="infinite"):
        ce_decomposition(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ContractError, match="distributions"):
        ce_decomposition(torch.tensor([[0.5, 0.6]]), torch.tensor([[0.5, 0.5]]))


def test_ce_logit_grad_is_autograds():
    z, y = logits_labels(8, 5)
    y[[1, 4]] = IGNORE
    zz = z.clone().requires_grad_()
    F.cross_entropy(zz, y, ignore_index=IGNORE).backward()
    assert torch.allclose(ce_logit_grad(z, y), zz.grad, atol=1e-7)
    with pytest.raises(ContractError):
        ce_logit_grad(z, torch.full((8,), IGNORE))


def test_weights_keep_their_meaning():
    z, y = logits_labels(40, 3, seed=2)
    y[:3] = torch.tensor([0, 1, 2])
    cw = class_balanced_weights(y, 3)
    totals = torch.zeros(3).index_add_(0, y, cw[y])
    assert torch.allclose(totals, torch.full((3,), 40 / 3))
    r = weighted_ce(z, y, cw)
    assert torch.allclose(r.value, F.cross_entropy(z, y, weight=cw)) and r.denominator.item() == pytest.approx(40)
    sw = torch.ones(40)
    sw[5] = 2
    doubled = weighted_ce(z, y, sample_weights=sw).value
    dup = weighted_ce(torch.cat([z, z[5:6]]), torch.cat([y, y[5:6]])).value
    assert torch.allclose(doubled, dup)
    one_class = torch.full((5,), 2)
    assert torch.allclose(weighted_ce(z[:5], one_class, cw).value, single_label_ce(z[:5], one_class))
    with pytest.raises(ContractError, match="no example"):
        class_balanced_weights(torch.tensor([0, 0, 1]), 3)
    with pytest.raises(ContractError, match=r"\[K\]"):
        weighted_ce(z, y, torch.ones(4))


def test_risk_shares():
    losses = torch.ones(10)
    labels = torch.tensor([0] * 9 + [1])
    assert torch.allclose(risk_shares(losses, labels, 2), torch.tensor([0.9, 0.1]))
    w = class_balanced_weights(labels, 2)[labels]
    assert torch.allclose(risk_shares(losses, labels, 2, w), torch.tensor([0.5, 0.5]))
    with pytest.raises(ContractError):
        risk_shares(torch.zeros(10), labels, 2)


# ----------------------------------------------------------------------------- annotators and calibration

def test_votes_and_majority():
    votes = torch.tensor([[0, 0, 1], [2, 1, 2], [0, 1, 2]])
    assert torch.allclose(vote_distribution(votes, 3)[0], torch.tensor([2 / 3, 1 / 3, 0]))
    maj = majority_vote(votes, 3, torch.Generator().manual_seed(0))
    assert maj[:2].tolist() == [0, 2]
    ties = {int(majority_vote(votes[2:], 3, torch.Generator().manual_seed(s))) for s in range(30)}
    assert ties == {0, 1, 2}
    with pytest.raises(ContractError, match="int64"):
        vote_distribution(votes.float(), 3)
    with pytest.raises(ContractError, match="lie in"):
        vote_distribution(votes, 2)


def test_majority_law_is_exact():
    q = torch.tensor([[0.7, 0.3, 0, 0], [0.25, 0.25, 0.25, 0.25], [1.0, 0, 0, 0], [0.5, 0.2, 0.2, 0.1]])
    law = majority_law(q, 5)
    assert torch.allclose(law.sum(-1), torch.ones(4)) and torch.allclose(law[1], torch.full((4,), 0.25))
    binom = sum(torch.distributions.Binomial(5, torch.tensor(0.7)).log_prob(torch.tensor(float(k))).exp() for k in (3, 4, 5))
    assert law[0, 0] == pytest.approx(float(binom), abs=1e-6) and law[0, 2:].eq(0).all() and law[2, 0] == 1
    # A = 4: a 2-2 tie is split evenly, as majority_vote breaks it uniformly at random
    assert majority_law(q[:1], 4)[0, 0] == pytest.approx(0.7**4 + 4 * 0.7**3 * 0.3 + 0.5 * 6 * 0.7**2 * 0.3**2, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    votes = torch.multinomial(q[3:].repeat(20000, 1), 5, replacement=True, generator=g)
    freq = torch.bincount(majority_vote(votes, 4, g), minlength=4).float() / 20000
    assert torch.allclose(freq, law[3], atol=0.015)
    with pytest.raises(ContractError, match="probability rows"):
        majority_law(torch.tensor([[0.5, 0.6]]), 3)


def test_temperature_push_every_logit_moves_and_shares():
    z = torch.tensor([3.0, 2.2, 1.5, 1.0, 0.0, -1.0], dtype=torch.float64)
    for T in (0.1, 1.0, 5.0):
        s = temperature_push(z, 1, T, top=2)
        zz = z.clone().requires_grad_()
        F.cross_entropy((zz / T)[None], torch.tensor([1])).backward()
        assert torch.allclose(s["grad"], zz.grad, atol=1e-12) and abs(s["grad_sum"]) < 1e-12
        assert (s["push"] > 0).all() and len(s["push"]) == 5 and s["cum_share"][-1] == pytest.approx(1.0)
        assert s["top_share"] == pytest.approx(float(s["push"][:2].sum() / s["push"].sum()))
    low, high = (temperature_push(z, 1, T, top=1) for T in (0.2, 5.0))
    assert low["top_share"] > 0.9 > 0.3 > high["top_share"]
    assert competitors_holding(low["cum_share"], 0.5) == 1 and competitors_holding(high["cum_share"], 0.9) >= 4
    assert competitors_holding(torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64), 0.5) == 2
    with pytest.raises(ContractError, match="T must be > 0"):
        temperature_push(z, 1, 0.0)
    with pytest.raises(ContractError, match="share"):
        competitors_holding(low["cum_share"], 0.0)


def test_class_mass_at_prior():
    labels = torch.tensor([0, 0, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])
    same = class_mass_at_prior(probs, labels, torch.tensor([0.5, 0.5]))
    assert torch.allclose(same["count_ratio"], torch.tensor([1.1, 0.9], dtype=torch.float64))
    assert same["leak_share"][0] == pytest.approx(0.2 / 1.1)
    # a population where class 0 is rare (1 in 10): its 0.2 leak on the many class-1 items now dominates
    rare = class_mass_at_prior(probs, labels, torch.tensor([0.1, 0.9]))
    assert rare["count_ratio"][0] == pytest.approx((0.1 * 0.9 + 0.9 * 0.2) / 0.1)
    assert rare["leak_share"][0] == pytest.approx(0.18 / 0.27)
    with pytest.raises(ContractError, match="every class"):
        class_mass_at_prior(probs[:2], labels[:2], torch.tensor([0.5, 0.5]))


def test_reliability_and_ece():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(20000, 3, generator=g).softmax(-1) ** 2
    q = q / q.sum(-1, keepdim=True)
    assert expected_calibration_error(q, q) < 1e-6            # predicting the true law is calibrated
    sharp = (5 * q.log()).softmax(-1)
    assert expected_calibration_error(sharp, q) > 0.05         # overconfident
    labels = torch.multinomial(q, 1, generator=g).squeeze(1)
    t = reliability(q, labels, 10)
    assert t["ece"] < 0.03 and int(t["count"].sum()) == 20000
    with pytest.raises(ContractError, match="sigmoid"):
        reliability(torch.full((3, 2), 0.9), torch.tensor([0, 1, 0]))
    with pytest.raises(ContractError, match="truth"):
        reliability(q[:3], torch.zeros(3, 2))


def test_f1_per_label():
    p = torch.tensor([[0.9, 0.4], [0.6, 0.6], [0.1, 0.7]])
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    f1 = f1_per_label(p, t)
    assert f1[0].item() == pytest.approx(2 / 3) and f1[1].item() == pytest.approx(0.8)
    with pytest.raises(ContractError):
        f1_per_label(p, t[:, :1])


# ----------------------------------------------------------------------------- worlds

def test_findings_world_known_law():
    w = FindingsWorld()
    assert abs(float(w.probs.sum()) - 1) < 1e-12 and torch.allclose(w.cooccurrence().diagonal(), w.marginals())
    x, y = w.sample(40000, torch.Generator().manual_seed(0))
    assert x.shape == (40000, 16) and (y.sum(-1) >= 1).all()
    assert torch.allclose(y.mean(0).double(), w.marginals(), atol=0.01)
    emp = (y.T @ y / len(y)).double()
    assert torch.allclose(emp, w.cooccurrence(), atol=0.01)
    assert w.cooccurrence()[0, 1] > 0.4 > w.cooccurrence()[2, 3]       # the pair that co-occurs
    with pytest.raises(ContractError, match="pair_probs"):
        FindingsWorld(pair_probs=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ContractError, match="rates"):
        FindingsWorld(rates=(0.0, 0.2, 0.2))


def test_annotator_world_votes_follow_q():
    a = AnnotatorWorld(n_annotators=200)
    s = a.sample(300, torch.Generator().manual_seed(0))
    assert torch.allclose(s["q"].sum(-1), torch.ones(300))
    assert (s["q"].max(-1).values >= 0.5 - 1e-6).all() and (s["q"].gt(0).sum(-1) <= 2).all()
    share = vote_distribution(s["votes"], 4)
    assert (share - s["q"]).abs().mean() < 0.03
    assert torch.allclose(s["ambiguity"], -(s["q"] * s["q"].clamp_min(1e-12).log()).sum(-1))
    with pytest.raises(ContractError, match="max_mix"):
        AnnotatorWorld(max_mix=0.7)


def test_thin_classes_and_blobs():
    x = torch.arange(20).float()[:, None]
    y = torch.tensor([0] * 10 + [1] * 10)
    xs, ys = thin_classes(x, y, {1: 3}, seed=0)
    assert torch.bincount(ys).tolist() == [10, 3] and torch.equal(thin_classes(x, y, {1: 3}, seed=0)[0], xs)
    with pytest.raises(ContractError, match="cannot keep"):
        thin_classes(x, y, {1: 11})
    xb, yb = imbalanced_blobs(20000, 0.1, 3.0, generator=torch.Generator().manual_seed(0))
    assert abs(yb.float().mean().item() - 0.1) < 0.01
    assert xb[yb == 1, 0].mean() - xb[yb == 0, 0].mean() == pytest.approx(3.0, abs=0.1)
    with pytest.raises(ContractError):
        imbalanced_blobs(10, 1.5)


# ----------------------------------------------------------------------------- exercise checks: the right answer passes,
# a typical wrong one gets the message that names its misconception
