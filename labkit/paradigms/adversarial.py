"""Adversarial learning on a distribution with a known answer (notebook 10c).

A generator G maps noise z to points x = G(z) in 2-D; a discriminator D (the judge) scores points,
logit l = D(x), D's probability that x is real = sigmoid(l). The truth is a ring of Gaussians, so
every generator can be scored against it: which modes it reaches, how many samples land on a
mode, and a kernel distance (MMD) to fresh real samples.

    min_G max_D  E_data[log sigmoid(D(x))] + E_z[log(1 - sigmoid(D(G(z))))]

The judge is also an optimisation target that can be exploited: keep training G against a FROZEN
D (gan_fit(..., train_discriminator=False)) and G chases whatever D happens to score highest.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.contracts import ContractError, count, finite, positive, tensor

__all__ = ["GENERATOR_LOSSES", "ring_centers", "ring_of_gaussians", "make_generator", "make_discriminator",
           "discriminator_loss", "generator_loss", "mmd_rbf", "mode_coverage", "gan_fit", "judge_score", "score_generator"]

GENERATOR_LOSSES = ("non_saturating", "saturating")


def ring_centers(n_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The n_modes centres, evenly spaced on a circle of `radius`: [n_modes, 2]."""
    n_modes, radius = count(n_modes, "n_modes"), positive(radius, "radius")
    angle = torch.arange(n_modes, dtype=torch.float32) * (2 * math.pi / n_modes)
    return radius * torch.stack([angle.cos(), angle.sin()], -1)


def ring_of_gaussians(n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.05,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples of the truth: a mode chosen uniformly, plus N(0, std^2 I) noise. [n, 2]."""
    if isinstance(n, int) and not isinstance(n, bool) and n < 1:
        raise ContractError(f"n (the number of samples to draw) must be >= 1, got {n}; fix: e.g. n=1000")
    n, std = count(n, "n"), positive(std, "std")
    centers = ring_centers(n_modes, radius)
    k = torch.randint(n_modes, (n,), generator=generator)
    return centers[k] + std * torch.randn(n, 2, generator=generator)


def make_generator(z_dim: int = 2, hidden: int = 64) -> nn.Module:
    """G: z [B, z_dim] -> x [B, 2], an MLP with two ReLU hidden layers."""
    z_dim, hidden = count(z_dim, "z_dim"), count(hidden, "hidden")
    return nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def make_discriminator(hidden: int = 64) -> nn.Module:
    """D: x [B, 2] -> logit [B, 1], an MLP with two LeakyReLU hidden layers."""
    hidden = count(hidden, "hidden")
    return nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, 1))


def _logits(x, name: str) -> torch.Tensor:
    x = tensor(x, name)
    if not x.is_floating_point():
        raise ContractError(f"{name} must be float logits D(x), got {x.dtype}")
    if x.numel() == 0:
        raise ContractError(f"{name} is empty: no sample to score")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ContractError(f"{name} holds NaN or inf; fix: lower the learning rate (a diverged judge)")
    return x


def discriminator_loss(real_logits, fake_logits) -> torch.Tensor:
    """The judge's cross-entropy: real labelled 1, generated labelled 0.

    -mean log sigmoid(l_real) - mean log(1 - sigmoid(l_fake)) = mean softplus(-l_real) + mean softplus(l_fake).
    """
    real_logits, fake_logits = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss from the judge's logits on generated samples, [B] or [B,1] -> scalar.

    saturating (the minimax game itself): mean log(1 - sigmoid(l)) = -mean softplus(l); its
        gradient in l is -sigmoid(l), which vanishes where the judge confidently rejects (l << 0);
    non_saturating (the usual fix): -mean log sigmoid(l) = mean softplus(-l); gradient
        -(1 - sigmoid(l)), largest exactly there. Both are minimised by making D call fakes real.
    """
    fake_logits = _logits(fake_logits, "fake_logits")
    if kind not in GENERATOR_LOSSES:
        raise ContractError(f"unknown generator loss {kind!r}; fix: one of {GENERATOR_LOSSES}")
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    return -F.softplus(fake_logits).mean()


def _points(x, name: str) -> torch.Tensor:
    x = tensor(x, name)
    if not x.is_floating_point() or x.dim() != 2 or x.shape[0] < 2:
        raise ContractError(f"{name} must be float points [n >= 2, d], got {x.dtype} {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ContractError(f"{name} holds NaN or inf")
    return x


def mmd_rbf(x, y, bandwidths: Sequence[float] = (0.1, 0.5, 2.0)) -> float:
    """Unbiased MMD^2 between samples x [n, d] and y [m, d] with a sum of RBF kernels
    k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2)). 0 in expectation when both come from one distribution."""
    x, y = _points(x, "x").double(), _points(y, "y").double()
    if x.shape[1] != y.shape[1]:
        raise ContractError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}; fix: compare "
                            "generated points with real points of the same space")
    bws = [positive(b, "bandwidth") for b in bandwidths]
    if not bws:
        raise ContractError("give at least one bandwidth")

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bws)

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())


def mode_coverage(samples, centers, std: float, k_sigma: float = 3.0, min_share: float = 0.01) -> dict:
    """Score samples [n, 2] against the known modes (centers [K, 2], each N(c, std^2 I)).

    quality: share of samples within k_sigma * std of their nearest centre ("on a mode");
    modes_hit: how many modes hold at least min_share of all samples (on-mode ones only);
    mode_kl: KL(uniform over the K modes || histogram of all samples over their nearest mode), in
        nats, the histogram smoothed by 1/n per mode (0 when the modes are equally filled).
    """
    x, c = _points(samples, "samples").float(), _points(centers, "centers").float()
    if isinstance(std, (int, float)) and not isinstance(std, bool) and std <= 0:
        raise ContractError(f"std (the known spread of each mode) must be > 0, got {std}; fix: pass the truth's std")
    std, k_sigma = positive(std, "std"), positive(k_sigma, "k_sigma")
    min_share = finite(min_share, "min_share", low=0.0, high=1.0)
    d = torch.cdist(x, c)
    dist, nearest = d.min(-1)
    on = dist <= k_sigma * std
    K, n = c.shape[0], x.shape[0]
    share = torch.bincount(nearest[on], minlength=K).double() / n
    near = torch.bincount(nearest, minlength=K).double()
    q = (near + 1.0 / n) / (near.sum() + K / n)
    return {"quality": float(on.float().mean()), "modes_hit": int((share >= min_share).sum()),
            "mode_kl": float((torch.full((K,), 1.0 / K, dtype=torch.float64) * (math.log(1.0 / K) - q.log())).sum()),
            "per_mode": share.tolist()}


@torch.no_grad()
def judge_score(D: nn.Module, x) -> float:
    """The judge's mean P(real) = mean sigmoid(D(x)) on points x [n, 2] (higher = "more real" to this judge)."""
    x = _points(x, "x")
    return float(torch.sigmoid(D(x)).mean())


@torch.no_grad()
def score_generator(G: nn.Module, judge: nn.Module, z, truth, centers, std: float) -> dict:
    """Everything measured about a generator at once, on fixed noise z [n, z_dim]:
    judge (judge_score of G(z) under `judge`), mmd (mmd_rbf to the real sample `truth`), and
    quality / modes_hit / mode_kl (mode_coverage against the known centres)."""
    z = tensor(z, "z")
    x = G(z)
    return {"judge": judge_score(judge, x), "mmd": mmd_rbf(x, truth),
            **{k: v for k, v in mode_coverage(x, centers, std).items() if k != "per_mode"}}


def gan_fit(G: nn.Module, D: nn.Module, real_sampler: Callable[[int, torch.Generator], torch.Tensor], steps: int,
            batch_size: int = 256, lr: float = 1e-3, g_loss: str = "non_saturating", z_dim: int = 2, seed: int = 0,
            train_discriminator: bool = True, train_generator: bool = True,
            track: Callable[[int, nn.Module, nn.Module], dict] | None = None, track_every: int = 50) -> list[dict]:
    """Alternating GAN training: per step one judge update (discriminator_loss on a real and a
    generated batch) then one generator update (generator_loss of kind g_loss), each with Adam
    (betas 0.5, 0.999) and gradient clipping at 1. train_discriminator=False freezes the judge: only
    G moves, against a fixed D (the exploited evaluator); train_generator=False trains only the judge,
    against a fixed G (an evaluator fitted to one generator's samples).

    real_sampler(n, generator) -> [n, 2] real points. Noise and real draws come from one generator
    seeded by `seed`. track(step, G, D) -> dict is recorded every track_every steps and after the
    last one (with "step" added). Returns those records. labkit.train.fit trains one model with one
    optimiser; a GAN alternates two, so it has its own small loop here.
    """
    steps, batch_size, z_dim = count(steps, "steps"), count(batch_size, "batch_size"), count(z_dim, "z_dim")
    lr = positive(lr, "lr")
    if not (train_discriminator or train_generator):
        raise ContractError("gan_fit with train_discriminator=False and train_generator=False trains nothing; fix: "
                            "leave at least one of them True")
    if g_loss not in GENERATOR_LOSSES:
        raise ContractError(f"unknown generator loss {g_loss!r}; fix: one of {GENERATOR_LOSSES}")
    g = torch.Generator().manual_seed(int(seed))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999)) if train_generator else None
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999)) if train_discriminator else None
    D.requires_grad_(train_discriminator)
    records = []
    for step in range(steps):
        if track is not None and step % track_every == 0:
            records.append({"step": step, **track(step, G, D)})
        z = torch.randn(batch_size, z_dim, generator=g)
        if train_discriminator:
            real = real_sampler(batch_size, g)
            d_loss = discriminator_loss(D(real), D(G(z).detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(D.parameters(), 1.0)
            opt_d.step()
        if not train_generator:
            continue
        loss = generator_loss(D(G(z)), g_loss)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
        opt_g.step()
    D.requires_grad_(True)
    if track is not None:
        records.append({"step": steps, **track(steps, G, D)})
    return records
