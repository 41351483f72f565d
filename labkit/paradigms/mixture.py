"""Data mixtures and curriculum stages: the sampling weights are part of the objective.

With K sources of sizes n_k and sampling weights alpha_k, training optimises

    L(theta) = sum_k alpha_k E_{x ~ p_k} [ l_theta(x) ],     alpha_k = n_k^gamma / sum_j n_j^gamma

(temperature sampling: gamma = 1 samples by size, gamma = 0 uniformly over sources, in between
up-samples the small ones). Up-sampling a small source means repeating it: expected epochs
e_k = alpha_k * S / n_k for S sampled examples. Weights are configuration: `MixtureConfig`
records them with a version and a fingerprint, and `assert_mixture_proportions` checks that a
sampler really draws them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from labkit.contracts import ContractError, finite


def _sizes(sizes) -> torch.Tensor:
    n = torch.as_tensor(sizes, dtype=torch.float64)
    if n.dim() != 1 or n.numel() == 0:
        raise ContractError(f"sizes must be a non-empty 1-D list of source sizes, got shape {tuple(n.shape)}")
    if not torch.isfinite(n).all() or (n <= 0).any():
        raise ContractError(f"every source size must be a positive number of examples (or tokens), got {n.tolist()}")
    return n


def mixture_weights(sizes, gamma: float) -> torch.Tensor:
    """Temperature-sampling weights alpha_k = n_k^gamma / sum_j n_j^gamma, [K] float64 summing to 1.

    gamma = 1: proportional to size; gamma = 0: uniform over sources; 0 < gamma < 1 up-samples the
    small sources. (Some papers write the exponent as 1/T; here it is gamma.)
    """
    n = _sizes(sizes)
    gamma = finite(gamma, "gamma")
    if not gamma >= 0:
        raise ContractError(f"gamma must be >= 0 (1 = by size, 0 = uniform over sources), got {gamma}")
    logw = gamma * n.log()
    return torch.softmax(logw, 0)   # = n^gamma / sum n^gamma, computed without overflow


def expected_epochs(sizes, weights, total_samples: int) -> torch.Tensor:
    """How many times each source is seen in expectation: e_k = alpha_k * S / n_k, [K] float64."""
    n = _sizes(sizes)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != n.shape:
        raise ContractError(f"{w.numel()} weights for {n.numel()} sources")
    if (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise ContractError(f"weights must be >= 0 and sum to 1, got sum {float(w.sum()):.6f}; fix: normalise them")
    if total_samples < 0:
        raise ContractError(f"total_samples must be >= 0, got {total_samples}")
    return w * float(total_samples) / n


# ----------------------------------------------------------------------------- versioned configuration

@dataclass(frozen=True)
class MixtureConfig:
    """A mixture as versioned configuration: source names and sizes, gamma, the sampling budget and
    seed; `weights` are derived (never typed in by hand) and `fingerprint()` identifies the whole
    configuration, so a run's record says exactly which objective it optimised."""

    sources: tuple
    sizes: tuple
    gamma: float
    total_samples: int
    seed: int = 0
    version: str = "mixture-v1"

    def __post_init__(self):
        if len(self.sources) != len(self.sizes):
            raise ContractError(f"{len(self.sources)} source names for {len(self.sizes)} sizes")
        if len(set(self.sources)) != len(self.sources):
            raise ContractError(f"source names must be unique, got {list(self.sources)}")
        mixture_weights(self.sizes, self.gamma)   # validates sizes and gamma

    @property
    def weights(self) -> list[float]:
        return [float(w) for w in mixture_weights(self.sizes, self.gamma)]

    def epochs(self) -> list[float]:
        return [float(e) for e in expected_epochs(self.sizes, self.weights, self.total_samples)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"], d["sizes"] = list(self.sources), list(self.sizes)
        d["weights"] = [round(w, 6) for w in self.weights]
        d["fingerprint"] = self.fingerprint()
        return d

    def fingerprint(self) -> str:
        """sha256[:12] of the canonical JSON of the defining fields (weights included)."""
        d = asdict(self)
        d["sources"], d["sizes"] = list(self.sources), list(self.sizes)
        d["weights"] = [round(w, 6) for w in self.weights]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> "MixtureConfig":
        """Rebuild a recorded configuration; refuses one whose stored weights or fingerprint do not
        match what its sizes and gamma give (weights edited by hand, or another version)."""
        known = {"sources", "sizes", "gamma", "total_samples", "seed", "version"}
        missing = sorted(known - {"seed", "version"} - set(d))
        if missing:
            raise ContractError(f"mixture record lacks {missing}")
        cfg = cls(tuple(d["sources"]), tuple(d["sizes"]), float(d["gamma"]), int(d["total_samples"]),
                  int(d.get("seed", 0)), d.get("version", "mixture-v1"))
        if "weights" in d and any(abs(a - b) > 1e-6 for a, b in zip(d["weights"], cfg.weights)):
            raise ContractError(f"recorded weights {d['weights']} are not n^gamma/sum n^gamma = "
                                f"{[round(w, 6) for w in cfg.weights]}; the weights were edited by hand. Fix: change gamma "
                                "or the sizes, and record a new version")
        if "fingerprint" in d and d["fingerprint"] != cfg.fingerprint():
            raise ContractError(f"fingerprint {d['fingerprint']} does not match the configuration ({cfg.fingerprint()})")
        return cfg


# ----------------------------------------------------------------------------- sampler

class MixtureSampler:
    """Draws training examples as (source, index) pairs: source ~ Categorical(weights); inside a
    source, indices come from a shuffled permutation, reshuffled when exhausted (so a source
    seen for more than one epoch repeats its examples). Deterministic for a given seed.
    """

    def __init__(self, sizes: Sequence[int], weights, seed: int = 0):
        self.sizes = [int(n) for n in _sizes(sizes).tolist()]
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (len(self.sizes),) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
            raise ContractError(f"weights must be {len(self.sizes)} non-negative numbers summing to 1, got {w.tolist()}")
        self.weights = w
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = [torch.randperm(n, generator=self.generator) for n in self.sizes]
        self._pos = [0] * len(self.sizes)
        self.drawn = torch.zeros(len(self.sizes), dtype=torch.long)

    @classmethod
    def from_config(cls, config: MixtureConfig) -> "MixtureSampler":
        return cls(config.sizes, config.weights, config.seed)

    def _next_index(self, k: int) -> int:
        if self._pos[k] == self.sizes[k]:
            self._perm[k] = torch.randperm(self.sizes[k], generator=self.generator)
            self._pos[k] = 0
        i = int(self._perm[k][self._pos[k]])
        self._pos[k] += 1
        return i

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws -> (sources [n], indices [n]), long tensors."""
        if n < 1:
            raise ContractError(f"n must be >= 1, got {n}")
        src = torch.multinomial(self.weights.float(), n, replacement=True, generator=self.generator)
        idx = torch.tensor([self._next_index(int(k)) for k in src], dtype=torch.long)
        self.drawn += torch.bincount(src, minlength=len(self.sizes))
        return src, idx

    def epochs_seen(self) -> list[float]:
        """Examples drawn from each source so far, divided by its size."""
        return [int(d) / n for d, n in zip(self.drawn.tolist(), self.sizes)]


def chi_square_test(counts, weights) -> tuple[float, int, float]:
    """Pearson's goodness of fit of observed counts [K] to configured weights [K]:
    X^2 = sum (O - E)^2 / E with E = weights * sum(counts); returns (X^2, dof = K - 1, p-value),
    p = P(chi2_{K-1} >= X^2) = Q((K-1)/2, X^2/2) (regularised upper incomplete gamma)."""
    O = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if O.shape != w.shape or O.dim() != 1 or O.numel() < 2:
        raise ContractError(f"need counts and weights of one shape [K >= 2], got {tuple(O.shape)} and {tuple(w.shape)}")
    if (O < 0).any() or float(O.sum()) == 0:
        raise ContractError("counts must be non-negative and not all zero")
    E = w / w.sum() * O.sum()
    if (E == 0).any():
        if (O[E == 0] > 0).any():
            return float("inf"), O.numel() - 1, 0.0
        O, E = O[E > 0], E[E > 0]
    stat = float(((O - E) ** 2 / E).sum())
    dof = O.numel() - 1
    p = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, dof, p


def chi_square_critical(dof: int, alpha: float = 1e-3) -> float:
    """The chi-square statistic on `dof` degrees of freedom whose p-value is `alpha` (bisection on
    chi_square_test's p = Q(dof/2, x/2)): a statistic above it is rejected at level alpha."""
    if dof < 1 or not 0 < alpha < 1:
        raise ContractError(f"need dof >= 1 and 0 < alpha < 1, got {dof} and {alpha}")
    k = torch.tensor(dof / 2, dtype=torch.float64)
    lo, hi = 0.0, 1.0
    while float(torch.special.gammaincc(k, torch.tensor(hi / 2, dtype=torch.float64))) > alpha:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(torch.special.gammaincc(k, torch.tensor(mid / 2, dtype=torch.float64))) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def assert_mixture_proportions(counts, weights, alpha: float = 1e-3) -> float:
    """The curriculum smoke test: sampled counts per source match the configured weights.

    Raises a ContractError when the chi-square test rejects at level alpha; returns the p-value.
    """
    stat, dof, p = chi_square_test(counts, weights)
    if p < alpha:
        O = torch.as_tensor(counts, dtype=torch.float64)
        got = [round(float(x), 4) for x in O / O.sum()]
        want = [round(float(x), 4) for x in torch.as_tensor(weights, dtype=torch.float64)]
        raise ContractError(f"sampled proportions {got} do not match the configured weights {want} (chi-square "
                            f"{stat:.1f} on {dof} dof, p = {p:.2g}): the run optimises another mixture than its config "
                            "says. Fix: sample sources with the configured weights (e.g. MixtureSampler.from_config)")
    return p
