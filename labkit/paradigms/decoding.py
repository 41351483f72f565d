"""Continuous vs discrete targets, decoding, and gradients through discrete choices.

Three pieces, each on a world whose answer is known exactly:

* regression vs classification of token ids: `IdPredictor` (one trunk, a scalar head for MSE on the
  id or a V-way head for cross-entropy), `ConditionalTokens` (a known p(token | context)), and
  `gaussian_over_ids` (the distribution an MSE model implies: a Gaussian around its prediction,
  discretised onto the ids), so both heads are scored by KL(p_true || q);
* decoding: `KnownChain`, a first-order Markov chain with <bos>/<eos> and a length cap whose
  sequence distribution is exact (mode, entropy, length law, the conditional given "ends with <eos>
  by max_len"); decoders that take any `step(prefix [B,t]) -> logits [B,V]` (the chain itself or a
  trained model): `decode` (greedy, temperature, top-k, top-p, an `allowed` mask), `beam_search`,
  the filters `top_k_filter` / `top_p_filter`, and sequence metrics;
* estimators of d/dθ E_{x~softmax(θ)}[f(x)]: `exact_gradient`, `score_function_grads`
  (REINFORCE, optional baseline), `relaxed_grads` (Gumbel-softmax, straight-through Gumbel,
  straight-through softmax) and `estimator_stats` (bias and variance against the exact gradient).

Temperature 0 means greedy (argmax), as in labkit.paradigms.autoregressive.generate.
"""
from __future__ import annotations

import html as _html
import math
from collections import Counter
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from labkit.contracts import ContractError, count, finite, positive, probabilities, tensor, token_ids

__all__ = ["ConditionalTokens", "IdPredictor", "gaussian_over_ids", "best_gaussian_over_ids", "kl_rows",
           "score_id_heads", "KnownChain", "top_k_filter", "top_p_filter", "must_end_by", "decode", "beam_search",
           "mode_shortfall", "count_outside_top_p", "distinct", "plugin_entropy", "ends_with_eos",
           "length_distribution", "random_chain", "render_truncation", "truncated_distribution",
           "exact_gradient", "score_function_grads", "relaxed_grads", "estimator_stats"]

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- 1. MSE on ids vs CE

class ConditionalTokens:
    """A known conditional distribution p(token | context) over `n_tokens` ids.

    table: one dict {token_id: probability} per context (each summing to 1). `probs` is [C, V];
    `sample(n, generator)` returns (contexts [n], tokens [n]); `mean_id` is E[id | c], [C].
    """

    def __init__(self, table: Sequence[dict], n_tokens: int):
        V = count(n_tokens, "n_tokens", minimum=2)
        if not table:
            raise ContractError("table needs at least one context (a dict {token_id: probability})")
        self.probs = torch.zeros(len(table), V, dtype=torch.float64)
        for c, row in enumerate(table):
            for tok, p in row.items():
                if not (isinstance(tok, int) and 0 <= tok < V):
                    raise ContractError(f"context {c}: token {tok!r} is not an id in [0, {V})")
                self.probs[c, tok] = finite(p, f"table[{c}][{tok}]", low=0.0)
        probabilities(self.probs, "table")
        self.n_contexts, self.n_tokens = len(table), V

    @property
    def mean_id(self) -> torch.Tensor:
        """E[id | context], [C]: what a squared error on the id is minimised by."""
        return self.probs @ torch.arange(self.n_tokens, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n uniform contexts and one token each from p(. | context): ([n], [n]) int64."""
        n = count(n, "n")
        ctx = torch.randint(self.n_contexts, (n,), generator=generator)
        tok = torch.multinomial(self.probs[ctx].float(), 1, generator=generator).flatten()
        return ctx, tok


class IdPredictor(torch.nn.Module):
    """Context id -> embedding -> MLP trunk -> head. head="regression": one number (the id, trained
    with MSE); head="categorical": V logits (trained with cross-entropy). The trunk is identical."""

    def __init__(self, n_contexts: int, n_tokens: int, head: str, hidden: int = 32):
        super().__init__()
        if head not in ("regression", "categorical"):
            raise ContractError(f"head must be 'regression' or 'categorical', got {head!r}")
        n_contexts, n_tokens, hidden = count(n_contexts, "n_contexts"), count(n_tokens, "n_tokens"), count(hidden, "hidden")
        self.head_kind = head
        self.trunk = torch.nn.Sequential(torch.nn.Embedding(n_contexts, hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.head = torch.nn.Linear(hidden, 1 if head == "regression" else n_tokens)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """[N] context ids -> [N] predicted ids (regression) or [N, V] logits (categorical)."""
        out = self.head(self.trunk(ctx))
        return out.squeeze(-1) if self.head_kind == "regression" else out

    def loss(self, ctx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """MSE between the predicted and the true id, or cross-entropy of the true id; mean over N."""
        out = self(ctx)
        if self.head_kind == "regression":
            return F.mse_loss(out, tokens.float())
        return F.cross_entropy(out, tokens)


def gaussian_over_ids(mean: torch.Tensor, sigma, n_tokens: int) -> torch.Tensor:
    """The distribution an MSE model implies over ids: N(mean, sigma^2) evaluated at 0..V-1 and
    renormalised. mean [C], sigma a number or [C] -> [C, V]. (MSE is the Gaussian negative
    log-likelihood with a fixed sigma.)"""
    mean = tensor(mean, "mean")
    if mean.dim() != 1:
        raise ContractError(f"mean must be [C] (one predicted id per context), got {tuple(mean.shape)}")
    if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
        if sigma.shape != mean.shape or not bool((sigma > 0).all()):
            raise ContractError(f"sigma must be a number or [C] positive values like mean {tuple(mean.shape)}")
        s = sigma.double()[:, None]
    else:
        s = positive(sigma, "sigma")
    ids = torch.arange(count(n_tokens, "n_tokens"), dtype=torch.float64)
    logits = -0.5 * ((ids[None, :] - mean.double()[:, None]) / s) ** 2
    return torch.softmax(logits, -1)


def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p_c || q_c) per row, [C, V] x [C, V] -> [C] (nats; terms with p = 0 contribute 0)."""
    p, q = probabilities(p, "p"), probabilities(q, "q")
    if p.shape != q.shape:
        raise ContractError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must have the same shape")
    p64, q64 = p.double(), q.double()
    terms = torch.where(p64 > 0, p64 * (p64.clamp_min(1e-300).log() - q64.clamp_min(1e-300).log()), torch.zeros_like(p64))
    return terms.sum(-1)


def best_gaussian_over_ids(probs: torch.Tensor, steps: int = 100) -> dict:
    """The discretised Gaussian closest to each row of p: argmin over (mean, sigma) of KL(p_c || q_c),
    q_c = gaussian_over_ids(mean_c, sigma_c). probs [C, V] -> {"mean" [C], "sigma" [C], "q" [C, V],
    "kl" [C]}. Started at the row's moments, fitted by L-BFGS in float64 (deterministic)."""
    probs = probabilities(probs, "probs").double()
    if probs.dim() != 2:
        raise ContractError(f"probs must be [C, V] (one distribution per row), got {tuple(probs.shape)}")
    steps = count(steps, "steps")
    ids = torch.arange(probs.shape[1], dtype=torch.float64)
    m0 = probs @ ids
    s0 = (probs * (ids - m0[:, None]) ** 2).sum(-1).sqrt().clamp_min(0.3)
    params = torch.stack([m0, s0.log()], 1).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def log_q():                                   # as gaussian_over_ids, with sigma per row, differentiable
        return torch.log_softmax(-0.5 * ((ids[None, :] - params[:, :1]) / params[:, 1:].exp()) ** 2, -1)

    def objective():
        opt.zero_grad()
        loss = -(probs * log_q()).sum()            # KL(p || q) up to the entropy of p, a constant
        loss.backward()
        return loss
    opt.step(objective)
    with torch.no_grad():
        q = log_q().exp()
        return {"mean": params[:, 0].clone(), "sigma": params[:, 1].exp(), "q": q, "kl": kl_rows(probs, q)}


def score_id_heads(world: "ConditionalTokens", reg: IdPredictor, cat: IdPredictor, data) -> dict:
    """What a regression head and a categorical head say about every context of `world`.

    reg/cat: trained IdPredictor ("regression" / "categorical"); data: (contexts [N], tokens [N]), the
    regression head's training set (its RMS residual is the sigma of the Gaussian it implies).
    Returns y_hat [C] and q_cat [C, V]; mean_gap = max_c |y_hat_c - mean id of c in data|;
    reg_impossible / cat_impossible = share of contexts whose rounded output / argmax is a token the
    context never emits; cat_mass_never = mean probability the categorical head puts on such tokens;
    kl_reg / kl_cat = mean over contexts of KL(p_true || q) (q_reg = N(y_hat, sigma^2) on the ids).
    """
    if reg.head_kind != "regression" or cat.head_kind != "categorical":
        raise ContractError("score_id_heads(world, reg, cat, data): reg must be a 'regression' IdPredictor and cat a "
                            "'categorical' one")
    ctx_data, tok_data = data
    ctx_all = torch.arange(world.n_contexts)
    with torch.no_grad():
        y_hat, q_cat = reg(ctx_all).double(), torch.softmax(cat(ctx_all).double(), -1)
        sigma = (reg(ctx_data).double() - tok_data.double()).pow(2).mean().sqrt()
    q_reg = gaussian_over_ids(y_hat, sigma, world.n_tokens)
    data_mean = torch.stack([tok_data[ctx_data == c].double().mean() for c in ctx_all])
    never = world.probs == 0                                                     # [C, V]
    rounded = y_hat.round().long().clamp(0, world.n_tokens - 1)
    return {"y_hat": y_hat, "q_cat": q_cat, "mean_gap": (y_hat - data_mean).abs().max().item(),
            "reg_impossible": never[ctx_all, rounded].double().mean().item(),
            "cat_impossible": never[ctx_all, q_cat.argmax(-1)].double().mean().item(),
            "cat_mass_never": (q_cat * never).sum(-1).mean().item(),
            "kl_reg": kl_rows(world.probs, q_reg).mean().item(), "kl_cat": kl_rows(world.probs, q_cat).mean().item()}


# ----------------------------------------------------------------------------- 2. a known sequence world

class KnownChain:
    """A first-order Markov chain over named tokens, started at <bos>, stopped at <eos> or after
    `max_len` tokens: an exact distribution over sequences (the tokens after <bos>).

    names: token names, including "<bos>" and "<eos>"; rows: {name: {next_name: probability}} for
    <bos> and every other non-<eos> token. A sequence is a list of ids ending with <eos>, or a list of
    exactly max_len ids without <eos> (truncated: it does not satisfy "ends with <eos> by max_len").
    """

    def __init__(self, names: Sequence[str], rows: dict, max_len: int, bos: str = "<bos>", eos: str = "<eos>"):
        self.names = list(names)
        if len(set(self.names)) != len(self.names) or bos not in self.names or eos not in self.names:
            raise ContractError(f"names must be distinct and include {bos!r} and {eos!r}, got {self.names}")
        self.max_len = count(max_len, "max_len")
        self.V, self.bos_id, self.eos_id = len(self.names), self.names.index(bos), self.names.index(eos)
        idx = {n: i for i, n in enumerate(self.names)}
        T = torch.zeros(self.V, self.V, dtype=torch.float64)
        for a, succ in rows.items():
            if a not in idx or a == eos:
                raise ContractError(f"row {a!r}: rows are for <bos> and the ordinary tokens, by name")
            for b, p in succ.items():
                if b not in idx or b == bos:
                    raise ContractError(f"row {a!r}: successor {b!r} must be a token name other than {bos!r}")
                T[idx[a], idx[b]] = finite(p, f"rows[{a!r}][{b!r}]", low=0.0)
        need = [n for n in self.names if n != eos]
        missing = [n for n in need if n not in rows]
        if missing:
            raise ContractError(f"tokens {missing} have no row of successor probabilities; fix: give each one")
        probabilities(T[[idx[n] for n in need]], "successor probabilities")
        T[self.eos_id, self.eos_id] = 1.0          # absorbing, never used for a probability
        self.T = T
        self.logT = T.log()

    # -- the "model": next-token logits of a prefix
    def step(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix [B, t] (starting with <bos>) -> [B, V] float64 log-probabilities of the next token (−inf = impossible)."""
        prefix = token_ids(prefix, "prefix", self.V)
        return self.logT[prefix[:, -1]]

    def decode_names(self, seq: Sequence[int]) -> str:
        return " ".join(self.names[i] for i in seq)

    def _validate(self, seq) -> list:
        seq = [int(x) for x in seq]
        ok = (0 < len(seq) <= self.max_len and self.bos_id not in seq and self.eos_id not in seq[:-1]
              and (seq[-1] == self.eos_id or len(seq) == self.max_len))
        if not ok:
            raise ContractError(f"{self.decode_names(seq) if all(0 <= x < self.V for x in seq) else seq} is not a sequence "
                                f"of this world: tokens after <bos>, ending with <eos> or exactly max_len={self.max_len} long")
        return seq

    def logprob(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Exact log-probability of each sequence, [n] float64 (a truncated one: its prefix probability)."""
        out = []
        for s in seqs:
            s = self._validate(s)
            prev = [self.bos_id] + s[:-1]
            out.append(float(self.logT[prev, s].sum()))
        return torch.tensor(out, dtype=torch.float64)

    def alive(self) -> torch.Tensor:
        """a[t, s] = P(the first t tokens contain no <eos> and the last one is s), [max_len + 1, V]."""
        a = torch.zeros(self.max_len + 1, self.V, dtype=torch.float64)
        a[0, self.bos_id] = 1.0
        cont = self.T.clone()
        cont[:, self.eos_id] = 0.0
        for t in range(1, self.max_len + 1):
            a[t] = a[t - 1] @ cont
        return a

    def length_law(self) -> dict:
        """{"ends_at": [max_len] P(<eos> is token t = 1..max_len), "truncated": P(no <eos> by max_len)}."""
        a = self.alive()
        ends = a[:-1] @ self.T[:, self.eos_id]
        return {"ends_at": ends, "truncated": float(a[-1].sum())}

    def entropy(self) -> float:
        """Exact entropy (nats) of the sequence distribution: expected sum of per-step entropies."""
        row_h = -(self.T * self.logT.nan_to_num(neginf=0.0)).sum(-1)
        return float((self.alive()[:-1] * row_h).sum())

    def mode(self) -> tuple[list, float]:
        """The most probable sequence and its log-probability (exact dynamic programming)."""
        L, V, e = self.max_len, self.V, self.eos_id
        best = torch.full((L + 1, V), NEG_INF, dtype=torch.float64)
        back = torch.zeros(L + 1, V, dtype=torch.long)
        best[0, self.bos_id] = 0.0
        cont = self.logT.clone()
        cont[:, e] = NEG_INF
        for t in range(1, L + 1):
            scores = best[t - 1][:, None] + cont             # [prev, next]
            best[t], back[t] = scores.max(0)
        ends = best[:-1] + self.logT[:, e][None, :]            # [t-1 tokens alive, last s] then <eos>
        cands = [(float(ends[t].max()), t, int(ends[t].argmax()), True) for t in range(L)]
        cands.append((float(best[L].max()), L, int(best[L].argmax()), False))
        score, t, s, eos = max(cands, key=lambda c: c[0])
        seq = [e] if eos else []
        for k in range(t, 0, -1):
            seq.insert(0, s)
            s = int(back[k, s])
        return seq, score

    def ok_within(self) -> torch.Tensor:
        """g[r, s] = P(<eos> comes within the next r tokens | last token s), [max_len + 1, V]."""
        g = torch.zeros(self.max_len + 1, self.V, dtype=torch.float64)
        cont = self.T.clone()
        cont[:, self.eos_id] = 0.0
        for r in range(1, self.max_len + 1):
            g[r] = self.T[:, self.eos_id] + cont @ g[r - 1]
        g[:, self.eos_id] = 1.0
        return g

    def conditioned_step(self) -> Callable:
        """A step function for the exact conditional given "ends with <eos> by max_len":
        p(x | prefix, C) ∝ p(x | prefix) · P(C | prefix + x) (a look-ahead over the remaining budget)."""
        g = self.ok_within()

        def step(prefix: torch.Tensor) -> torch.Tensor:
            left = self.max_len - prefix.shape[1]              # tokens still allowed after the next one
            if left < 0:
                raise ContractError(f"prefix of {prefix.shape[1] - 1} tokens is past max_len={self.max_len}")
            return torch.log_softmax(self.step(prefix) + g[left].log()[None, :], -1)
        return step

    def conditional_length_law(self) -> torch.Tensor:
        """P(length = t | ends with <eos> by max_len), t = 1..max_len, [max_len]."""
        law = self.length_law()
        return law["ends_at"] / (1 - law["truncated"])


def random_chain(seed: int, n_tokens: int = 6, max_len: int = 8, peak: float = 2.0) -> KnownChain:
    """A random KnownChain: tokens "a", "b", ... plus <bos>/<eos>; each row ∝ E_i ** peak with
    E_i ~ Exp(1) (peak = 1: uniform on the simplex; larger: peakier rows); <bos> never emits <eos>."""
    g = torch.Generator().manual_seed(int(seed))
    n_tokens, max_len, peak = count(n_tokens, "n_tokens", 2), count(max_len, "max_len"), positive(peak, "peak")
    words = [chr(97 + i) for i in range(n_tokens)]
    succ = ["<eos>"] + words
    rows = {}
    for a in ["<bos>"] + words:
        x = torch.empty(len(succ), dtype=torch.float64).exponential_(generator=g) ** peak
        if a == "<bos>":
            x[0] = 0.0
        x = x / x.sum()
        rows[a] = dict(zip(succ, x.tolist()))
    return KnownChain(["<bos>", "<eos>"] + words, rows, max_len)


# ----------------------------------------------------------------------------- decoders

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to −inf. [..., V] -> [..., V]."""
    logits = tensor(logits, "logits")
    k = count(k, "k")
    if k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, -1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens whose probability sums to >= p,
    set the rest to −inf. [..., V] -> [..., V]. A token is kept if the mass strictly before it
    (in descending order) is < p, so the token that crosses p is kept and p = 1 keeps every token."""
    logits = tensor(logits, "logits")
    p = finite(p, "p", low=0.0, low_open=True, high=1.0)
    probs = torch.softmax(logits.double(), -1)
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < p - 1e-12
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def must_end_by(eos_id: int, max_len: int) -> Callable:
    """An `allowed(prefix, t)` mask for decode/beam_search: token t (1-based) = max_len must be <eos>."""
    eos_id, max_len = count(eos_id, "eos_id", minimum=0), count(max_len, "max_len")

    def allowed(prefix: torch.Tensor, t: int, V: int) -> torch.Tensor:
        mask = torch.ones(prefix.shape[0], V, dtype=torch.bool)
        if t >= max_len:
            mask[:] = False
            mask[:, eos_id] = True
        return mask
    return allowed


def _prepare(logits, prefix, t, temperature, top_k, top_p, allowed):
    """Mask (allowed), temperature, top-k, top-p, in that order: [B, V] logits -> [B, V]."""
    if not logits.is_floating_point():
        raise ContractError(f"step must return float logits [B, V], got {logits.dtype}")
    if allowed is not None:
        logits = logits.masked_fill(~allowed(prefix, t, logits.shape[-1]), NEG_INF)
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


@torch.no_grad()
def decode(step: Callable, n: int, max_len: int, bos_id: int, eos_id: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, allowed: Callable | None = None,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """n sequences from step(prefix [B, t]) -> logits [B, V], token by token, up to max_len tokens.

    temperature 0 = greedy (argmax); > 0 samples from softmax(z / T) after the optional filters
    (top_k, then top_p) and the `allowed(prefix, t, V)` mask (t = 1-based index of the next token).
    Returns the tokens after <bos>, each ending at its first <eos> (or max_len long).
    """
    n, max_len = count(n, "n"), count(max_len, "max_len")
    T = finite(temperature, "temperature", low=0.0)
    prefix = torch.full((n, 1), count(bos_id, "bos_id", minimum=0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(1, max_len + 1):
        logits = _prepare(step(prefix), prefix, t, T, top_k, top_p, allowed)
        if T == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=generator).flatten()
        nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
        prefix = torch.cat([prefix, nxt[:, None]], 1)
        done |= nxt.eq(eos_id)
        if bool(done.all()):
            break
    out = []
    for row in prefix[:, 1:].tolist():
        out.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return out


@torch.no_grad()
def beam_search(step: Callable, beam_size: int, max_len: int, bos_id: int, eos_id: int,
                allowed: Callable | None = None) -> list[tuple[list[int], float]]:
    """Beam search on summed log-probabilities (no length normalisation).

    Each step extends every live hypothesis by every token, keeps the `beam_size` best extensions that
    do not end with <eos> alive and moves those ending with <eos> (among the best beam_size) to the
    finished list; hypotheses reaching max_len finish as they are. Stops when no live hypothesis
    can beat the best finished one (scores only fall). Returns finished (tokens, log-prob), best first.
    """
    beam_size, max_len = count(beam_size, "beam_size"), count(max_len, "max_len")
    live = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for t in range(1, max_len + 1):
        prefix = torch.tensor([[bos_id] + s for s, _ in live], dtype=torch.long)
        logp = step(prefix).double().log_softmax(-1)
        if allowed is not None:
            logp = logp.masked_fill(~allowed(prefix, t, logp.shape[-1]), NEG_INF)
        scores = torch.tensor([sc for _, sc in live], dtype=torch.float64)[:, None] + logp
        flat = scores.flatten()
        order = flat.argsort(descending=True)
        V = logp.shape[-1]
        new_live = []
        for rank, j in enumerate(order.tolist()):
            sc = float(flat[j])
            if sc == NEG_INF or len(new_live) >= beam_size:
                break
            b, tok = divmod(j, V)
            seq = live[b][0] + [tok]
            if tok == eos_id:
                if rank < beam_size:
                    finished.append((seq, sc))
            else:
                new_live.append((seq, sc))
        live = new_live
        if t == max_len:
            finished += live
            live = []
        best_done = max((sc for _, sc in finished), default=NEG_INF)
        if not live or max(sc for _, sc in live) <= best_done:
            break
    return sorted(finished, key=lambda x: -x[1])


def mode_shortfall(worlds: Sequence["KnownChain"], beam_size: int = 4) -> dict:
    """How far greedy and beam search fall short of the exact mode, over a list of known worlds.

    Returns {"greedy": mean over worlds of (mode log p - greedy log p), "beam": the same for beam search
    with `beam_size` beams, "beam_below_greedy": share of worlds where beam's sequence is less probable
    than greedy's} (nats; exact log-probabilities in float64)."""
    beam_size = count(beam_size, "beam_size")
    if not worlds:
        raise ContractError("mode_shortfall needs at least one KnownChain")
    g, b, worse = [], [], 0
    for w in worlds:
        best = w.mode()[1]
        gl = float(w.logprob(decode(w.step, 1, w.max_len, w.bos_id, w.eos_id, temperature=0))[0])
        bl = float(w.logprob([beam_search(w.step, beam_size, w.max_len, w.bos_id, w.eos_id)[0][0]])[0])
        g.append(best - gl)
        b.append(best - bl)
        worse += bl < gl - 1e-9
    return {"greedy": sum(g) / len(g), "beam": sum(b) / len(b), "beam_below_greedy": worse / len(worlds)}


def count_outside_top_p(step: Callable, seqs: Sequence[Sequence[int]], bos_id: int, p: float) -> int:
    """Number of sampled tokens that top_p_filter(step(prefix), p) removes at their own step, over every
    step of every sequence (0 for a correct top-p sampler at temperature 1)."""
    bos_id = count(bos_id, "bos_id", minimum=0)
    bad = 0
    for seq in seqs:
        full = [bos_id] + [int(x) for x in seq]
        for t in range(1, len(full)):
            kept = top_p_filter(step(torch.tensor([full[:t]])), p)[0]
            bad += int(kept[full[t]] == NEG_INF)
    return bad


# ----------------------------------------------------------------------------- sequence metrics

def distinct(seqs: Sequence[Sequence[int]]) -> int:
    """Number of distinct sequences."""
    return len({tuple(s) for s in seqs})


def plugin_entropy(seqs: Sequence[Sequence[int]]) -> float:
    """Entropy (nats) of the empirical distribution of the sequences (biased low for few samples)."""
    if not seqs:
        raise ContractError("plugin_entropy needs at least one sequence")
    counts = torch.tensor(list(Counter(tuple(s) for s in seqs).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def length_distribution(seqs: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Empirical P(length = t), t = 1..max_len, [max_len] float64."""
    if not seqs:
        raise ContractError("length_distribution needs at least one sequence")
    L = count(max_len, "max_len")
    lens = torch.tensor([len(s) for s in seqs])
    if int(lens.min()) < 1 or int(lens.max()) > L:
        raise ContractError(f"sequence lengths must be in [1, {L}], got {int(lens.min())}..{int(lens.max())}")
    return torch.bincount(lens - 1, minlength=L).double() / len(seqs)


def ends_with_eos(seqs: Sequence[Sequence[int]], eos_id: int) -> torch.Tensor:
    """[n] bool: the sequence ends with <eos> (the format "ends with <eos> by max_len" holds)."""
    return torch.tensor([len(s) > 0 and s[-1] == eos_id for s in seqs])


# ----------------------------------------------------------------------------- 3. gradients through a sample

def _logits_1d(theta) -> torch.Tensor:
    theta = tensor(theta, "theta")
    if theta.dim() != 1 or not theta.is_floating_point() or theta.numel() < 2:
        raise ContractError(f"theta must be a float vector of K >= 2 logits, got {tuple(theta.shape)} {theta.dtype}")
    return theta


def exact_gradient(theta: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """d/dθ E_{x~softmax(θ)}[f(x)] = p ⊙ (f − E_p[f]), [K] (f: the value of each outcome, [K])."""
    theta = _logits_1d(theta)
    f = tensor(f, "f")
    if f.shape != theta.shape:
        raise ContractError(f"f must give one value per outcome, shape {tuple(theta.shape)}, got {tuple(f.shape)}")
    p = torch.softmax(theta.double(), -1)
    return p * (f.double() - (p * f.double()).sum())


def score_function_grads(theta: torch.Tensor, x: torch.Tensor, fx: torch.Tensor, baseline=0.0) -> torch.Tensor:
    """REINFORCE: one gradient estimate per sample, (f(x_i) − b) ∇θ log p_θ(x_i) = (f(x_i) − b)(e_{x_i} − p).

    theta [K], x [N] sampled outcomes, fx [N] their values, baseline a number or [N] (it must not
    depend on x_i itself, else the estimate is biased). Returns [N, K] float64.
    """
    theta = _logits_1d(theta)
    x = token_ids(x, "x", theta.numel())
    fx = tensor(fx, "fx")
    if fx.shape != x.shape:
        raise ContractError(f"fx must hold f(x_i) for each sample, shape {tuple(x.shape)}, got {tuple(fx.shape)}")
    b = baseline if isinstance(baseline, torch.Tensor) else finite(baseline, "baseline")
    p = torch.softmax(theta.double(), -1)
    return (fx.double() - b)[:, None] * (F.one_hot(x, theta.numel()).double() - p)


RELAXATIONS = ("gumbel_softmax", "straight_through_gumbel", "straight_through_softmax")


def relaxed_grads(theta: torch.Tensor, f_soft: Callable, n: int, kind: str, tau: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample pathwise gradient estimates of d/dθ E[f], [n, K] float64, by autograd through a relaxation.

    f_soft maps points of the simplex [n, K] to values [n] (on a one-hot e_k it must give f(k)).
    kind: "gumbel_softmax": y = softmax((θ + g)/τ), g ~ Gumbel (soft forward and backward);
    "straight_through_gumbel": forward the one-hot argmax(θ + g), backward through the soft y;
    "straight_through_softmax": forward a one-hot sample x ~ p, backward as if it were p = softmax(θ).
    """
    theta = _logits_1d(theta)
    n = count(n, "n")
    if kind not in RELAXATIONS:
        raise ContractError(f"kind must be one of {RELAXATIONS}, got {kind!r}")
    tau = positive(tau, "tau")
    K = theta.numel()
    th = theta.detach().double().expand(n, K).clone().requires_grad_(True)
    u = torch.rand(n, K, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    g = -(-u.log()).log()
    if kind == "straight_through_softmax":
        p = torch.softmax(th, -1)
        x = torch.multinomial(p.detach(), 1, generator=generator).flatten()
        y = F.one_hot(x, K).double() + p - p.detach()
    else:
        soft = torch.softmax((th + g) / tau, -1)
        if kind == "gumbel_softmax":
            y = soft
        else:
            y = F.one_hot(soft.argmax(-1), K).double() + soft - soft.detach()
    f_soft(y).sum().backward()
    return th.grad.detach()


def estimator_stats(grads: torch.Tensor, exact: torch.Tensor) -> dict:
    """Bias and variance of per-sample gradient estimates [N, K] against the exact gradient [K].

    bias = |mean − exact| (Euclidean norm); variance = trace of the covariance (sum of per-coordinate
    variances of ONE estimate); noise = sqrt(variance / N), the size |mean − exact| would have from
    sampling alone (RMS), so bias / noise >> 1 means a bias that more samples do not remove.
    """
    grads, exact = tensor(grads, "grads"), tensor(exact, "exact")
    if grads.dim() != 2 or grads.shape[1:] != exact.shape or grads.shape[0] < 2:
        raise ContractError(f"grads must be [N >= 2, K] with exact [K], got {tuple(grads.shape)} and {tuple(exact.shape)}")
    g = grads.double()
    var = float(g.var(0).sum())
    bias = float((g.mean(0) - exact.double()).norm())
    noise = math.sqrt(var / g.shape[0])
    return {"bias": bias, "variance": var, "noise": noise, "bias_over_noise": bias / noise if noise > 0 else math.inf}


# ----------------------------------------------------------------------------- the truncation view (panel body)

def truncated_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                           top_p: float | None = None) -> torch.Tensor:
    """The distribution a sampler draws from: softmax of the temperature-scaled, filtered logits, [..., V]."""
    logits = tensor(logits, "logits")
    T = positive(temperature, "temperature")
    return torch.softmax(_prepare(logits, None, 0, T, top_k, top_p, None).double(), -1)


def render_truncation(logits: torch.Tensor, names: Sequence[str], temperature: float = 1.0,
                      top_p: float = 1.0) -> dict:
    """One next-token distribution [V] before and after temperature + top-p, as {"html", "text", "kept"}:
    a bar per token (grey: the model's p, blue: what is sampled), and the mass the filter cut."""
    logits = tensor(logits, "logits")
    if logits.dim() != 1 or len(names) != logits.numel():
        raise ContractError(f"logits must be one row [V] with a name per token, got {tuple(logits.shape)} and {len(names)} names")
    p = torch.softmax(logits.double(), -1)
    scaled = truncated_distribution(logits, temperature)
    q = truncated_distribution(logits, temperature, top_p=top_p)
    kept = q > 0
    cut = float(scaled[~kept].sum())
    order = p.argsort(descending=True).tolist()
    lines, rows = [], []
    for i in order:
        if p[i] == 0:
            continue
        lines.append(f"{names[i]:>6}  p {p[i]:.3f}  sampled {q[i]:.3f}  {'#' * round(40 * float(q[i]))}")
        rows.append(f"<tr><td>{_html.escape(names[i])}</td><td>{p[i]:.3f}</td><td><div style='background:#bbb;height:8px;"
                    f"width:{200 * float(p[i]):.0f}px'></div><div style='background:#4c8bf5;height:8px;"
                    f"width:{200 * float(q[i]):.0f}px'></div></td><td>{q[i]:.3f}</td></tr>")
    head = (f"T = {temperature:g}, top-p = {top_p:g}: keeps {int(kept.sum())} of {int((p > 0).sum())} tokens; the "
            f"filter cut {cut:.3f} of the tempered mass")
    html = (f"<p>{_html.escape(head)}</p><table><tr><th>token</th><th>p</th><th>grey: p, blue: sampled</th>"
            f"<th>sampled</th></tr>{''.join(rows)}</table>")
    return {"html": html, "text": head + "\n" + "\n".join(lines), "kept": int(kept.sum()), "cut": cut}
