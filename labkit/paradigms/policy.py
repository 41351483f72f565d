"""The post-training chain after SFT: best-of-n (rejection sampling) SFT, a clipped on-policy update
(PPO/GRPO style) with a KL term to a reference, and IPO as a loss variant of DPO.

    best-of-n SFT        sample n answers per prompt, keep argmax_i r(x, y_i), SFT on the kept ones
    clipped surrogate    L = -mean_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i),  rho_i = pi(y_i)/pi_old(y_i)
    KL to the reference  k3 = exp(ref - logp) - (ref - logp) - 1 on the policy's samples (>= 0, mean = KL(pi||ref));
                         used as a loss its expected gradient is that of KL(ref||pi), the other direction
    IPO                  L = mean (Delta - 1/(2 tau))^2,  Delta = DPO's difference of log-ratios

Everything scores whole answers with the sequence log-probs of `labkit.paradigms.preference`
(`batch_logprob`, response tokens only) and runs on its `AnswerWorld`. Training loops go through
`labkit.train.fit`; the on-policy batch function samples from the current policy.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.batch import collate
from labkit.contracts import ContractError, count, finite, log_probs, tensor
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.paradigms.preference import batch_logprob, collate_pairs, group_advantages, rollout
from labkit.train import fit
from labkit.vocab import WordTokenizer

__all__ = ["REDUCTIONS", "KL_ESTIMATORS", "clipped_surrogate_loss", "clip_fraction", "kl_penalty", "ipo_loss",
           "best_of_n_indices", "best_of_n_examples", "sample_pairs", "distinct_per_group", "policy_stats",
           "pair_batches", "grpo_fit", "read_at_kl", "flat_grad", "mean_pairwise_cosine", "sft_fit", "reference_pairs",
           "pair_loss_fn", "pairs_fit", "mean_margin", "every", "rollout_gradients"]

REDUCTIONS = ("mean", "sum", "none")
KL_ESTIMATORS = ("k1", "k3")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


def _clip(clip) -> float:
    eps = finite(clip, "clip")
    if not 0 < eps < 1:
        raise ContractError(f"clip must lie in (0, 1): the ratio is clipped to [1 - clip, 1 + clip]; got {eps} (PPO and "
                            "GRPO use 0.1-0.3)")
    return eps


def _check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ContractError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _seq_vectors(names_values: dict, logp_names: Sequence[str] = ()) -> list[torch.Tensor]:
    """Validate [B] float tensors of one shape; the ones named in logp_names must be log-probs (<= 0)."""
    xs = []
    for name, v in names_values.items():
        x = tensor(v, name)
        if not x.is_floating_point():
            raise ContractError(f"{name} must be a float tensor, got {x.dtype}")
        if name in logp_names:
            log_probs(x, name)
        elif not bool(torch.isfinite(x.detach()).all()):
            raise ContractError(f"{name} holds NaN or inf; fix: every {name} value must be finite")
        xs.append(x)
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1 or xs[0].dim() != 1 or xs[0].numel() == 0:
        raise ContractError(f"{', '.join(names_values)} must be non-empty [B] tensors of one shape, got "
                            f"{[tuple(x.shape) for x in xs]}; fix: one value per sampled answer")
    return xs


# ----------------------------------------------------------------------------- objectives

def clipped_surrogate_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip: float = 0.2,
                           reduction: str = "mean") -> torch.Tensor:
    """PPO's clipped surrogate on sequence log-probs.

    logps [B] (log pi(y|x) under the policy being updated, with gradient), old_logps [B] (under the
    policy that sampled y, constants), advantages [B] (constants). With rho = exp(logps - old_logps):
        L_i = -min(rho_i A_i, clip(rho_i, 1 - clip, 1 + clip) A_i)
    At rho = 1 (the first step on fresh samples) its gradient equals REINFORCE's, -A grad log pi; once
    the ratio leaves [1 - clip, 1 + clip] in the direction A favours, that sample's gradient is 0.
    The ratio here is of whole answers (the lab's answers are a few tokens long); PPO/GRPO for long
    answers use one ratio per token. reduction: "mean" | "sum" | "none" ([B]).
    """
    logps, old_logps, advantages = _seq_vectors({"logps": logps, "old_logps": old_logps, "advantages": advantages},
                                                ("logps", "old_logps"))
    if old_logps.requires_grad or advantages.requires_grad:
        raise ContractError("old_logps and advantages require grad: they are constants of the sampling step; fix: "
                            "compute them under torch.no_grad() (or .detach())")
    eps = _clip(clip)
    ratio = torch.exp(logps - old_logps)
    per = -torch.minimum(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
    return _reduce(per, _check_reduction(reduction))


def clip_fraction(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip: float = 0.2) -> float:
    """Share of samples whose clipped term is active (gradient 0): rho > 1 + clip with A > 0, or rho < 1 - clip
    with A < 0. logps, old_logps, advantages: [B]."""
    logps, old_logps, advantages = _seq_vectors({"logps": logps, "old_logps": old_logps, "advantages": advantages},
                                                ("logps", "old_logps"))
    eps = _clip(clip)
    ratio = torch.exp(logps.detach() - old_logps.detach())
    active = ((ratio > 1 + eps) & (advantages > 0)) | ((ratio < 1 - eps) & (advantages < 0))
    return float(active.float().mean())


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3", reduction: str = "mean") -> torch.Tensor:
    """A per-sample estimate of KL(pi || ref) on answers sampled from pi, [B] -> reduced.

    With d = ref_logps - logps (log ref(y) - log pi(y)):
        k1 = -d                     unbiased, can be negative per sample
        k3 = exp(d) - d - 1         unbiased, >= 0 per sample, lower variance near pi = ref (GRPO's choice)
    Both are unbiased VALUES of KL(pi || ref) on samples from pi. As LOSS terms (the sampling not
    differentiated) their expected gradients differ: E_pi[grad k1] = E_pi[grad log pi] = 0, and
    E_pi[grad k3] = E_pi[(1 - ref/pi) grad log pi] = grad KL(ref || pi), the reverse direction (both KLs
    vanish at pi = ref, so k3 still pulls pi back to the reference).
    logps [B] carry the gradient (used as a loss term); ref_logps [B] are constants (frozen reference).
    """
    if estimator not in KL_ESTIMATORS:
        raise ContractError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    logps, ref_logps = _seq_vectors({"logps": logps, "ref_logps": ref_logps}, ("logps", "ref_logps"))
    if ref_logps.requires_grad:
        raise ContractError("ref_logps require grad: the reference must be frozen; fix: compute them under torch.no_grad()")
    d = ref_logps - logps
    per = -d if estimator == "k1" else torch.exp(d) - d - 1
    return _reduce(per, _check_reduction(reduction))


def ipo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             tau: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """IPO loss (Azar et al. 2023), inputs four [B] sequence log-probs:

        Delta = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))
        L     = (Delta - 1/(2 tau))^2

    A regression of the log-ratio margin onto a FINITE target 1/(2 tau), where DPO's -log sigma(beta Delta)
    keeps pushing Delta up on pairs it already ranks right. tau plays the role of DPO's beta: in Azar et al.'s
    PsiPO objective E[Psi(p(y > y'))] - tau KL(pi || ref), DPO is Psi = logit (tau = beta), IPO is Psi = identity.
    The same coefficient therefore weighs the same KL, but against preference terms of different scale
    (bounded for IPO, unbounded for DPO with deterministic labels): equal tau and beta are not equal pulls.
    At pi = ref, L = 1/(4 tau^2).
    """
    names = {"pi_chosen": pi_chosen, "pi_rejected": pi_rejected, "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}
    pc, pr, rc, rr = _seq_vectors(names, tuple(names))
    if rc.requires_grad or rr.requires_grad:
        raise ContractError("the reference log-probs require grad: the reference must be frozen; fix: compute them "
                            "under torch.no_grad() (or .detach())")
    t = finite(tau, "tau")
    if t <= 0:
        raise ContractError(f"tau must be > 0 (the KL coefficient; the margin target is 1/(2 tau)), got {t}")
    delta = (pc - rc) - (pr - rr)
    return _reduce((delta - 1 / (2 * t)) ** 2, _check_reduction(reduction))


# ----------------------------------------------------------------------------- sampling, selection, pairs

def best_of_n_indices(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Index (into the flat [N] list) of the best answer of each group: [N] -> [N / group_size] long.

    rewards are ordered prompt by prompt, group_size answers each; ties go to the first (the earliest
    sample, i.e. a random one among the tied). group_size 1 keeps every answer (no selection).
    """
    r = tensor(rewards, "rewards")
    n = count(group_size, "group_size")
    if r.dim() != 1 or r.numel() == 0 or r.numel() % n:
        raise ContractError(f"rewards must be [N] with N a multiple of group_size={n}, got {tuple(r.shape)}")
    if not bool(torch.isfinite(r.float()).all()):
        raise ContractError("rewards hold NaN or inf; fix: the reward function must return finite numbers")
    g = r.float().view(-1, n)
    return g.argmax(-1) + torch.arange(g.shape[0]) * n


def _prompt_ids(tokenizer: WordTokenizer, prompts: Sequence[str]) -> list[list[int]]:
    return [tokenizer.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True)[0] for p in prompts]


def best_of_n_examples(policy, tokenizer: WordTokenizer, prompts: Sequence[str], n: int,
                       reward_fn: Callable[[str, list[int]], float], generator: torch.Generator,
                       max_new_tokens: int = 10) -> tuple[list[dict], dict]:
    """Rejection sampling: n answers per prompt from `policy`, keep the best by reward_fn, as SFT examples.

    Returns (examples, stats): examples are dict(input_ids, labels) with the prompt masked (IGNORE), one
    per prompt, in the format of labkit.batch.collate; stats = dict(reward_evals = n * len(prompts),
    mean_reward (all samples), kept_reward (the kept ones)). n = 1 is SFT on the policy's own samples,
    unfiltered: the control that isolates the selection.
    """
    n = count(n, "n")
    if not prompts:
        raise ContractError("best_of_n_examples() got no prompts")
    flat = [p for p in prompts for _ in range(n)]
    batch = rollout(policy, tokenizer, flat, max_new_tokens=max_new_tokens, generator=generator)
    rewards = torch.tensor([float(reward_fn(p, r)) for p, r in zip(flat, batch["responses"])])
    keep = best_of_n_indices(rewards, n).tolist()
    pids = _prompt_ids(tokenizer, prompts)
    examples = []
    for p_ids, i in zip(pids, keep):
        resp = list(batch["responses"][i])
        ids = p_ids + resp
        examples.append({"input_ids": ids, "labels": [IGNORE] * len(p_ids) + resp})
    stats = {"reward_evals": len(flat), "mean_reward": float(rewards.mean()), "kept_reward": float(rewards[keep].mean())}
    return examples, stats


def sample_pairs(policy, tokenizer: WordTokenizer, prompts: Sequence[str], reward_fn: Callable[[str, list[int]], float],
                 generator: torch.Generator, max_new_tokens: int = 10) -> tuple[list[dict], dict]:
    """Offline preference pairs from a policy's samples: two answers per prompt, both scored by reward_fn,
    the higher one chosen; ties (equal rewards) carry no preference and are dropped.

    Returns (pairs, stats): pairs in build_pair's format (chosen_ids, chosen_mask, rejected_ids,
    rejected_mask, prompt_len), ready for preference.collate_pairs; stats = dict(reward_evals =
    2 * len(prompts), kept = number of pairs).
    """
    if not prompts:
        raise ContractError("sample_pairs() got no prompts")
    flat = [p for p in prompts for _ in range(2)]
    batch = rollout(policy, tokenizer, flat, max_new_tokens=max_new_tokens, generator=generator)
    rewards = [float(reward_fn(p, r)) for p, r in zip(flat, batch["responses"])]
    pairs = []
    for k, p_ids in enumerate(_prompt_ids(tokenizer, prompts)):
        (ra, a), (rb, b) = (rewards[2 * k], batch["responses"][2 * k]), (rewards[2 * k + 1], batch["responses"][2 * k + 1])
        if ra == rb:
            continue
        c, r = (a, b) if ra > rb else (b, a)
        pairs.append({"chosen_ids": p_ids + list(c), "chosen_mask": [0] * len(p_ids) + [1] * len(c),
                      "rejected_ids": p_ids + list(r), "rejected_mask": [0] * len(p_ids) + [1] * len(r),
                      "prompt_len": len(p_ids)})
    return pairs, {"reward_evals": len(flat), "kept": len(pairs)}


def pair_batches(pairs: Sequence[dict], batch_size: int, pad_id: int, seed: int = 0) -> Callable[[int], dict]:
    """step -> a batch of batch_size pairs drawn with replacement from `pairs` (collate_pairs: chosen rows
    first, then rejected) plus `index` [batch_size], the drawn pairs' positions (to look up their
    reference log-probs). The draw depends only on (seed, step): every arm sees the same batches."""
    n, size = len(pairs), count(batch_size, "batch_size")
    if n == 0:
        raise ContractError("pair_batches() got no pairs; fix: check that sample_pairs kept some (ties are dropped)")

    def get(step: int) -> dict:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
        idx = torch.randint(n, (size,), generator=g)
        batch = collate_pairs([pairs[i] for i in idx.tolist()], pad_id)
        batch["index"] = idx
        return batch
    return get


def distinct_per_group(responses: Sequence[Sequence[int]], group_size: int) -> float:
    """Mean number of distinct answers among each group of group_size consecutive answers (one prompt's
    samples): group_size when every sample differs, 1 when the policy always writes the same answer."""
    n = count(group_size, "group_size")
    if len(responses) == 0 or len(responses) % n:
        raise ContractError(f"need a multiple of group_size={n} responses, got {len(responses)}")
    groups = [responses[i:i + n] for i in range(0, len(responses), n)]
    return sum(len({tuple(int(t) for t in r) for r in grp}) for grp in groups) / len(groups)


@torch.no_grad()
def policy_stats(policy, tokenizer: WordTokenizer, prompts: Sequence[str], n: int,
                 scores: dict[str, Callable[[str, list[int]], float]], generator: torch.Generator,
                 reference=None, max_new_tokens: int = 10) -> dict:
    """Sample n answers per prompt from `policy` and measure it.

    Returns dict with the mean of every function in `scores`, `distinct` (distinct answers per prompt,
    out of n), `entropy` (-mean log pi(y|x) of the samples: a Monte Carlo estimate of the answer
    distribution's entropy, nats) and, with a reference, `kl` (mean log pi - log ref of the samples:
    the Monte Carlo estimate of KL(pi || ref), nats).
    """
    n = count(n, "n")
    flat = [p for p in prompts for _ in range(n)]
    if not flat:
        raise ContractError("policy_stats() got no prompts")
    batch = rollout(policy, tokenizer, flat, max_new_tokens=max_new_tokens, generator=generator)
    logps = batch_logprob(policy, batch)
    out = {name: sum(float(fn(p, r)) for p, r in zip(flat, batch["responses"])) / len(flat) for name, fn in scores.items()}
    out["distinct"] = distinct_per_group(batch["responses"], n)
    out["entropy"] = float(-logps.mean())
    if reference is not None:
        out["kl"] = float((logps - batch_logprob(reference, batch)).mean())
    return out


# ----------------------------------------------------------------------------- on-policy training

def grpo_fit(policy, reference, tokenizer: WordTokenizer, prompt_sampler: Callable[[torch.Generator], list[str]],
             reward_fn: Callable[[str, list[int]], float], iters: int, group_size: int = 8, epochs: int = 2,
             clip: float = 0.2, kl_coef: float = 0.05, lr: float = 1e-3, max_new_tokens: int = 10, seed: int = 0,
             callback: Callable | None = None) -> list[dict]:
    """GRPO-style on-policy training through labkit.train.fit.

    Each of `iters` iterations samples group_size answers per prompt (prompt_sampler(generator) -> prompts)
    from the CURRENT policy, scores them with reward_fn (one reward evaluation each), and takes `epochs`
    optimizer steps on the same samples with
        L = clipped_surrogate_loss(log pi, log pi_old, A, clip) + kl_coef * kl_penalty(log pi, log ref, "k3"),
    A = group-relative advantages (preference.group_advantages). Steps after the first on a batch are
    off-policy by one update: the ratio and its clip correct for that. Ratios and k3 are per ANSWER here
    (sequence log-probs); GRPO as published uses one per token, averaged over each answer's tokens.

    Returns one dict per iteration: reward (mean over its samples), kl (mean log pi_old - log ref of the
    samples: the policy's distance at sampling time, nats), clip_fraction (last step on the batch) and the
    running counts samples, reward_evals, grad_steps. callback(step, model, loss) is passed to fit.
    """
    iters, group_size, epochs = count(iters, "iters"), count(group_size, "group_size", 2), count(epochs, "epochs")
    finite(kl_coef, "kl_coef", low=0.0)
    if reference is None:
        raise ContractError("grpo_fit needs the frozen reference policy (the KL term and the distance are measured "
                            "against it); fix: pass reference=")
    g = torch.Generator().manual_seed(int(seed))
    history: list[dict] = []
    state: dict = {}

    def batches(step: int) -> dict:
        if step % epochs == 0:
            prompts = [p for p in prompt_sampler(g) for _ in range(group_size)]
            batch = rollout(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, generator=g)
            rewards = torch.tensor([float(reward_fn(p, r)) for p, r in zip(prompts, batch["responses"])])
            with torch.no_grad():
                batch["old_logps"] = batch_logprob(policy, batch)
                batch["ref_logps"] = batch_logprob(reference, batch)
            batch["advantages"] = group_advantages(rewards, group_size).to(batch["old_logps"].device)
            done = history[-1] if history else {"samples": 0, "reward_evals": 0, "grad_steps": 0}
            history.append({"reward": float(rewards.mean()),
                            "kl": float((batch["old_logps"] - batch["ref_logps"]).mean()),
                            "samples": done["samples"] + len(prompts), "reward_evals": done["reward_evals"] + len(prompts),
                            "grad_steps": done["grad_steps"]})
            state["batch"] = batch
        return state["batch"]

    def loss_fn(model, batch):
        logps = batch_logprob(model, batch)
        history[-1]["clip_fraction"] = clip_fraction(logps, batch["old_logps"], batch["advantages"], clip)
        history[-1]["grad_steps"] += 1
        return (clipped_surrogate_loss(logps, batch["old_logps"], batch["advantages"], clip)
                + kl_coef * kl_penalty(logps, batch["ref_logps"], "k3"))

    fit(policy, batches, loss_fn, steps=iters * epochs, lr=lr, progress=False, callback=callback,
        desc="GRPO")
    return history


def read_at_kl(checkpoints: Sequence[dict], kl: float, key: str) -> float:
    """A run's `key` at distance `kl` from the reference: walk its checkpoints in training order (dicts
    with "kl" and `key`, the start at KL 0 first), find the first segment whose KL reaches `kl`, and
    interpolate `key` linearly in KL along it. Reading two runs at one KL compares them at matched
    distance (the weaker pull of one does not count as a win). Refuses a kl the run never reaches."""
    target = finite(kl, "kl")
    if len(checkpoints) < 2:
        raise ContractError("read_at_kl needs >= 2 checkpoints (the start and at least one more)")
    for a, b in zip(checkpoints, checkpoints[1:]):
        if a["kl"] <= target <= b["kl"] or b["kl"] <= target <= a["kl"]:
            w = 0.0 if b["kl"] == a["kl"] else (target - a["kl"]) / (b["kl"] - a["kl"])
            return a[key] + w * (b[key] - a[key])
    reached = max(c["kl"] for c in checkpoints)
    raise ContractError(f"the run never reaches KL {target:.3g} (its checkpoints reach {reached:.3g}); fix: read both "
                        "runs at a KL that both reach (e.g. the smaller of their final KLs)")


# ----------------------------------------------------------------------------- gradient noise

def flat_grad(model, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    """The gradient of a scalar loss with respect to every trainable parameter of model, as one flat
    vector [P] (zeros for parameters the loss does not reach). Leaves .grad untouched; retain_graph=True
    keeps the graph for a second loss built on the same forward pass."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ContractError("the model has no trainable parameters; fix: model.requires_grad_(True)")
    t = tensor(loss, "loss")
    if t.dim() != 0:
        raise ContractError(f"loss must be a scalar (0-d) tensor, got shape {tuple(t.shape)}")
    grads = torch.autograd.grad(t, params, allow_unused=True, retain_graph=retain_graph)
    return torch.cat([(gr if gr is not None else torch.zeros_like(p)).flatten() for gr, p in zip(grads, params)])


def rollout_gradients(policy, tokenizer: WordTokenizer, prompts: Sequence[str], reward_fn: Callable[[str, list[int]], float],
                      advantage_fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], generator: torch.Generator,
                      max_new_tokens: int = 10) -> dict[str, torch.Tensor]:
    """One rollout of `prompts` from `policy`, scored by reward_fn, and for each named advantage function
    (rewards [N] -> advantages [N]) the REINFORCE gradient -mean(A grad log pi) on THAT SAME rollout, as a
    flat vector [P]: arms that differ only in their advantages see identical samples."""
    if not advantage_fns:
        raise ContractError("rollout_gradients() needs at least one advantage function, e.g. {'raw': lambda r: r}")
    batch = rollout(policy, tokenizer, list(prompts), max_new_tokens=max_new_tokens, generator=generator)
    rewards = torch.tensor([float(reward_fn(p, y)) for p, y in zip(prompts, batch["responses"])])
    logps = batch_logprob(policy, batch)
    out = {}
    for name, fn in advantage_fns.items():
        adv = tensor(fn(rewards), f"advantages of {name!r}").to(logps.device, logps.dtype)
        if adv.shape != logps.shape:
            raise ContractError(f"advantage function {name!r} returned shape {tuple(adv.shape)}, need {tuple(logps.shape)}")
        out[name] = flat_grad(policy, -(adv.detach() * logps).mean(), retain_graph=True)
    return out


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of rows of vectors [K, P] (K >= 2 independent gradient
    estimates). For estimates g_k = mu + noise_k with E|noise|^2 = s^2 it is about |mu|^2 / (|mu|^2 + s^2):
    1 for noiseless estimates, near 0 when the noise dominates; scale-free, so losses of different
    scales compare."""
    v = tensor(vectors, "vectors")
    if v.dim() != 2 or v.shape[0] < 2:
        raise ContractError(f"vectors must be [K, P] with K >= 2 estimates, got {tuple(v.shape)}")
    u = F.normalize(v.double(), dim=-1)
    if bool((v.norm(dim=-1) == 0).any()):
        raise ContractError("a gradient estimate is all zeros (no signal in its batch?); its cosine is undefined")
    sims = [float(u[i] @ u[j]) for i, j in itertools.combinations(range(v.shape[0]), 2)]
    return sum(sims) / len(sims)


# ----------------------------------------------------------------------------- training plumbing for notebook 11b

def sft_fit(policy, examples: Sequence[dict], pad_id: int, steps: int, lr: float = 3e-3, batch_size: int = 64,
            callback: Callable | None = None):
    """SFT of `policy` (trained in place, then frozen and returned) on examples dict(input_ids, labels) with
    the prompt masked (IGNORE), batch_size examples a step taken IN ORDER (wrapping around), loss
    causal_lm_loss (token mean over the response tokens). AdamW via labkit.train.fit."""
    n, size, steps = len(examples), count(batch_size, "batch_size"), count(steps, "steps")
    if n == 0:
        raise ContractError("sft_fit() got no examples; fix: pass a non-empty list of dict(input_ids, labels)")
    if not all("labels" in ex for ex in examples):
        raise ContractError("every SFT example needs 'labels' with the prompt masked (IGNORE); fix: build them with "
                            "AnswerWorld.sft_examples or best_of_n_examples")

    def loss_fn(model, batch):
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        return causal_lm_loss(logits, batch.labels)

    policy.requires_grad_(True)
    fit(policy, lambda s: collate([examples[(s * size + i) % n] for i in range(size)], pad_id), loss_fn, steps=steps,
        lr=lr, progress=False, desc="SFT", callback=callback)
    return policy.requires_grad_(False)


def reference_pairs(reference, tokenizer: WordTokenizer, prompts: Sequence[str], reward_fn: Callable[[str, list[int]], float],
                    generator: torch.Generator, max_new_tokens: int = 10) -> dict:
    """sample_pairs from `reference` plus the reference's sequence log-probs of every pair, computed once:
    dict(pairs, ref_chosen [P], ref_rejected [P], reward_evals = 2 * len(prompts), kept = P)."""
    pairs, stats = sample_pairs(reference, tokenizer, prompts, reward_fn, generator, max_new_tokens=max_new_tokens)
    if not pairs:
        raise ContractError("every sampled pair tied (no preference); fix: more prompts, or a reward that separates answers")
    with torch.no_grad():
        ref_c, ref_r = batch_logprob(reference, collate_pairs(pairs, tokenizer.pad_id)).chunk(2)
    return {"pairs": pairs, "ref_chosen": ref_c, "ref_rejected": ref_r, **stats}


def pair_loss_fn(objective: Callable, data: dict, coef: float) -> Callable:
    """A fit() loss on pair_batches batches: objective(pi_c, pi_r, ref_c, ref_r, coef) (dpo_loss or ipo_loss),
    the reference log-probs looked up in data (reference_pairs' output) by the batch's pair `index`."""
    coef = finite(coef, "coef")
    if coef <= 0:
        raise ContractError(f"coef (beta or tau) must be > 0, got {coef}")
    if not {"ref_chosen", "ref_rejected"} <= set(data):
        raise ContractError("data needs ref_chosen and ref_rejected; fix: build it with reference_pairs()")

    def loss_fn(model, batch):
        pi_c, pi_r = batch_logprob(model, batch).chunk(2)
        i = batch["index"]
        return objective(pi_c, pi_r, data["ref_chosen"][i], data["ref_rejected"][i], coef)
    return loss_fn


def pairs_fit(policy, data: dict, objective: Callable, coef: float, steps: int, lr: float, pad_id: int,
              batch_size: int = 32, seed: int = 0, callback: Callable | None = None):
    """Offline preference training (DPO, IPO, ...) of `policy` in place on reference_pairs' data: `steps`
    AdamW steps on batches of batch_size pairs drawn by pair_batches(seed) (the same draws for every
    objective at one seed). Returns the policy, frozen."""
    policy.requires_grad_(True)
    fit(policy, pair_batches(data["pairs"], batch_size, pad_id, seed=seed), pair_loss_fn(objective, data, coef),
        steps=count(steps, "steps"), lr=lr, progress=False, desc="pairs", callback=callback)
    return policy.requires_grad_(False)


@torch.no_grad()
def mean_margin(policy, data: dict, pad_id: int) -> float:
    """Mean over all pairs of Delta = (log pi - log ref)(chosen) - (log pi - log ref)(rejected), the log-ratio
    margin DPO pushes up and IPO regresses onto 1/(2 tau); data from reference_pairs."""
    if not data.get("pairs"):
        raise ContractError("mean_margin() got no pairs; fix: pass reference_pairs()' output")
    c, r = batch_logprob(policy, collate_pairs(data["pairs"], pad_id)).chunk(2)
    return float(((c - data["ref_chosen"]) - (r - data["ref_rejected"])).mean())


def every(k: int, measure: Callable, into: list) -> Callable:
    """A fit() callback: after every k-th optimizer step, append measure(model) to `into`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ContractError(f"every(k, ...) needs a whole number of optimizer steps k >= 1 between measurements, got {k!r}")

    def callback(step, model, loss):
        if (step + 1) % k == 0:
            into.append(measure(model))
    return callback
