"""Mixture weights, expected epochs, versioned configuration, the sampler, the chi-square check, the panel."""
import time

import pytest
import torch

from labkit.checks import ContractError
from labkit.paradigms.mixture import (MixtureConfig, MixtureSampler, assert_mixture_proportions,
                                      chi_square_critical, chi_square_test, expected_epochs, mixture_weights)
from labkit.widgets import MixturePanel, render_mixture

SIZES = [2_000_000, 400_000, 100_000, 10_000]


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 0.7, 1.0, 1.5])
def test_mixture_weights_formula(gamma):
    n = torch.tensor(SIZES, dtype=torch.float64)
    w = mixture_weights(SIZES, gamma)
    assert torch.allclose(w, n ** gamma / (n ** gamma).sum())
    assert abs(float(w.sum()) - 1) < 1e-12 and w.dtype == torch.float64


def test_mixture_weights_limits_and_order():
    assert torch.allclose(mixture_weights(SIZES, 1.0), torch.tensor(SIZES, dtype=torch.float64) / sum(SIZES))
    assert torch.allclose(mixture_weights(SIZES, 0.0), torch.full((4,), 0.25, dtype=torch.float64))
    small = [float(mixture_weights(SIZES, g)[-1]) for g in (1.0, 0.7, 0.3, 0.0)]
    assert small == sorted(small), "lower gamma up-samples the smallest source"
    huge = mixture_weights([1e300, 1e299], 2.0)             # n^gamma would overflow
    assert torch.isfinite(huge).all() and abs(float(huge.sum()) - 1) < 1e-12


@pytest.mark.parametrize("sizes,gamma,match", [([], 0.5, "non-empty"), ([10, 0], 0.5, "positive"), ([10, -3], 0.5, "positive"),
                                               ([[1, 2]], 0.5, "1-D"), ([10, 20], -0.5, "gamma"),
                                               ([10, 20], float("nan"), "gamma")])
def test_mixture_weights_refuses_bad_input(sizes, gamma, match):
    with pytest.raises(ContractError, match=match):
        mixture_weights(sizes, gamma)


def test_expected_epochs():
    w = mixture_weights([1000, 10], 0.0)
    assert torch.allclose(expected_epochs([1000, 10], w, 2000), torch.tensor([1.0, 100.0], dtype=torch.float64))
    with pytest.raises(ContractError, match="sum to 1"):
        expected_epochs([1000, 10], [0.5, 0.6], 10)
    with pytest.raises(ContractError, match="weights for"):
        expected_epochs([1000, 10], [1.0], 10)


def test_config_round_trip_fingerprint_and_refusals():
    cfg = MixtureConfig(("web", "code", "papers", "rare"), tuple(SIZES), 0.5, 1_000_000, seed=3)
    d = cfg.to_dict()
    assert d["weights"] == [round(w, 6) for w in mixture_weights(SIZES, 0.5).tolist()]
    assert MixtureConfig.from_dict(d) == cfg and len(d["fingerprint"]) == 12
    assert cfg.fingerprint() == MixtureConfig(("web", "code", "papers", "rare"), tuple(SIZES), 0.5, 1_000_000, 3).fingerprint()
    assert cfg.fingerprint() != MixtureConfig(("web", "code", "papers", "rare"), tuple(SIZES), 0.6, 1_000_000, 3).fingerprint()
    assert cfg.epochs()[-1] == pytest.approx(cfg.weights[-1] * 1_000_000 / 10_000)
    with pytest.raises(ContractError, match="edited by hand"):
        MixtureConfig.from_dict(dict(d, weights=[0.4, 0.3, 0.2, 0.1]))
    with pytest.raises(ContractError, match="fingerprint"):
        MixtureConfig.from_dict(dict(d, fingerprint="000000000000"))
    with pytest.raises(ContractError, match="lacks"):
        MixtureConfig.from_dict({"sources": ["a"]})
    with pytest.raises(ContractError, match="names for"):
        MixtureConfig(("a",), (1, 2), 0.5, 10)
    with pytest.raises(ContractError, match="unique"):
        MixtureConfig(("a", "a"), (1, 2), 0.5, 10)


def test_sampler_draws_the_configured_weights_and_epochs():
    cfg = MixtureConfig(("a", "b", "c"), (300, 30, 3), 0.5, 6000, seed=1)
    sampler = MixtureSampler.from_config(cfg)
    src, idx = sampler.sample(6000)
    counts = torch.bincount(src, minlength=3)
    assert assert_mixture_proportions(counts, cfg.weights) > 1e-3
    for k, n in enumerate(cfg.sizes):
        drawn = idx[src == k].tolist()
        assert all(0 <= i < n for i in drawn)
        first = drawn[:n]
        if len(drawn) >= n:
            assert sorted(first) == list(range(n)), "one pass over a source shows each example once"
    assert sampler.epochs_seen() == pytest.approx([c / n for c, n in zip(counts.tolist(), cfg.sizes)])
    again = MixtureSampler.from_config(cfg).sample(6000)
    assert torch.equal(again[0], src) and torch.equal(again[1], idx)


def test_sampler_refuses_bad_weights():
    with pytest.raises(ContractError, match="summing to 1"):
        MixtureSampler([10, 10], [0.5, 0.6])
    with pytest.raises(ContractError, match="n must be"):
        MixtureSampler([10, 10], [0.5, 0.5]).sample(0)


def test_chi_square_matches_scipy_and_catches_a_size_proportional_loader():
    stats = pytest.importorskip("scipy.stats")
    counts, w = torch.tensor([520, 300, 180]), [0.5, 0.3, 0.2]
    stat, dof, p = chi_square_test(counts, w)
    ref = stats.chisquare(counts.numpy(), f_exp=torch.tensor(w).double().numpy() * 1000)
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue) and dof == 2
    g = torch.Generator().manual_seed(0)
    by_size = torch.bincount(torch.multinomial(torch.tensor(SIZES, dtype=torch.float), 20_000, True, generator=g), minlength=4)
    with pytest.raises(ContractError, match="do not match the configured weights"):
        assert_mixture_proportions(by_size, mixture_weights(SIZES, 0.5))
    assert chi_square_test([5, 1], [1.0, 0.0])[2] == 0.0
    with pytest.raises(ContractError, match="shape"):
        chi_square_test([1, 2, 3], [0.5, 0.5])


def test_render_mixture_is_pure_and_fast():
    render_mixture(0.5)
    start = time.perf_counter()
    state = render_mixture(0.3, sizes=SIZES, names=["web", "code", "papers", "rare"], total_samples=1_000_000)
    assert time.perf_counter() - start < 0.1
    assert state["weights"] == pytest.approx(mixture_weights(SIZES, 0.3).tolist())
    assert state["smallest_repetition"] == pytest.approx(state["weights"][-1] * 100)
    assert "rare" in state["text"] and "<table" in state["html"]
    assert render_mixture(1.0)["smallest_repetition"] < render_mixture(0.0)["smallest_repetition"]


def test_mixture_panel_rerenders_on_every_change():
    panel = MixturePanel(sizes=SIZES, total_samples=1000)
    assert panel.renders == 1
    seen = set()
    for gamma in (0.0, 0.5, 1.0):
        panel.control.value = gamma
        seen.add(panel.output.value)
    assert panel.renders == 4 and len(seen) == 3
    assert panel.state["weights"] == pytest.approx(mixture_weights(SIZES, 1.0).tolist())
    assert panel.ui().children[0] is panel.control


@pytest.mark.parametrize("dof,alpha,value", [(1, 0.05, 3.841), (2, 0.05, 5.991), (3, 1e-3, 16.266)])
def test_chi_square_critical_matches_tables(dof, alpha, value):
    x = chi_square_critical(dof, alpha)
    assert x == pytest.approx(value, abs=1e-3)
    assert float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(x / 2, dtype=torch.float64))) == pytest.approx(alpha, rel=1e-6)
    with pytest.raises(ContractError):
        chi_square_critical(0, 0.05)
