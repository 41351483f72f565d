"""labkit.paradigms.adversarial and its grader (notebook 10c)."""
import math

import pytest
import torch
import torch.nn.functional as F

from labkit.contracts import ContractError
from labkit.exercises.adversarial import check_generator_loss
from labkit.paradigms.adversarial import (discriminator_loss, gan_fit, generator_loss, judge_score, make_discriminator,
                                          make_generator, mmd_rbf, mode_coverage, ring_centers, ring_of_gaussians,
                                          score_generator)


def test_ring_centers_lie_on_the_circle():
    c = ring_centers(8, radius=2.0)
    assert c.shape == (8, 2) and torch.allclose(c.norm(dim=-1), torch.full((8,), 2.0))


def test_generator_losses_and_gradients():
    l = torch.tensor([-5.0, 0.0, 3.0], requires_grad=True)
    (g_ns,) = torch.autograd.grad(generator_loss(l, "non_saturating"), l)
    (g_s,) = torch.autograd.grad(generator_loss(l, "saturating"), l)
    assert torch.allclose(g_ns, -(1 - torch.sigmoid(l.detach())) / 3, atol=1e-6)
    assert torch.allclose(g_s, -torch.sigmoid(l.detach()) / 3, atol=1e-6)
    assert math.isfinite(float(generator_loss(torch.tensor([-500.0]))))


def test_discriminator_loss_is_bce():
    r, f = torch.randn(6), torch.randn(6)
    want = F.binary_cross_entropy_with_logits(r, torch.ones(6)) + F.binary_cross_entropy_with_logits(f, torch.zeros(6))
    assert torch.allclose(discriminator_loss(r, f), want, atol=1e-6)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_another():
    g = torch.Generator().manual_seed(0)
    a, b = ring_of_gaussians(800, generator=g), ring_of_gaussians(800, generator=g)
    assert abs(mmd_rbf(a, b)) < 0.01
    assert mmd_rbf(a, b + 3.0) > 0.5


def test_mode_coverage_counts_modes():
    c = ring_centers()
    truth = mode_coverage(ring_of_gaussians(2000, std=0.05, generator=torch.Generator().manual_seed(1)), c, 0.05)
    assert truth["modes_hit"] == 8 and truth["quality"] > 0.97 and truth["mode_kl"] < 0.02
    one_mode = mode_coverage(c[:1].repeat(100, 1), c, 0.05)
    assert one_mode["modes_hit"] == 1 and one_mode["quality"] == 1.0 and one_mode["mode_kl"] > 1.0


def test_frozen_judge_stays_frozen_and_generator_moves():
    torch.manual_seed(0)
    G, D = make_generator(hidden=16), make_discriminator(hidden=16)
    d_before = [p.clone() for p in D.parameters()]
    g_before = [p.clone() for p in G.parameters()]
    real = lambda n, g: ring_of_gaussians(n, generator=g)  # noqa: E731
    gan_fit(G, D, real, 5, batch_size=32, train_discriminator=False)
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert all(p.requires_grad for p in D.parameters())
    g_now = [p.clone() for p in G.parameters()]
    recs = gan_fit(G, D, real, 4, batch_size=32, train_generator=False, track=lambda s, g, d: {"x": 1.0}, track_every=2)
    assert all(torch.equal(a, b) for a, b in zip(g_now, G.parameters()))
    assert [r["step"] for r in recs] == [0, 2, 4]


def test_score_generator_keys():
    torch.manual_seed(0)
    G, D = make_generator(hidden=8), make_discriminator(hidden=8)
    z = torch.randn(50, 2)
    s = score_generator(G, D, z, ring_of_gaussians(50), ring_centers(), 0.05)
    assert set(s) == {"judge", "mmd", "quality", "modes_hit", "mode_kl"} and 0 <= s["judge"] <= 1
    assert s["judge"] == pytest.approx(judge_score(D, G(z).detach()))


def test_grader_accepts_every_correct_form():
    check_generator_loss(lambda l: F.softplus(-l).mean())
    check_generator_loss(lambda l: -F.logsigmoid(l).mean())
    check_generator_loss(lambda l: F.binary_cross_entropy_with_logits(l, torch.ones_like(l)))


@pytest.mark.parametrize("wrong,hint", [
    (lambda l: -F.softplus(l).mean(), "saturating"),
    (lambda l: F.softplus(-l).sum(), "summed"),
    (lambda l: F.logsigmoid(l).mean(), "MINIMISE"),
    (lambda l: -torch.log(torch.sigmoid(l)).mean(), "not finite"),
    (lambda l: F.softplus(-l.detach()).mean(), "no gradient"),
])
def test_grader_names_the_misconception(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_generator_loss(wrong)


def test_contracts():
    with pytest.raises(ContractError):
        generator_loss(torch.tensor([float("nan")]))
    with pytest.raises(ContractError):
        mmd_rbf(torch.zeros(1, 2), torch.zeros(4, 2))
