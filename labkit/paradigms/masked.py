"""Masked and denoising objectives: corrupt x into x~, train p(x_hidden | x~).

Only the corrupted positions are targets (labels IGNORE elsewhere); unmasked tokens teach nothing.
"""
from __future__ import annotations

from typing import Sequence

import torch

from labkit.contracts import IGNORE, ContractError, finite, token_ids
from labkit.reduce import token_cross_entropy
from labkit.vocab import WordTokenizer, seed_vocab


def mask_positions(ids: Sequence[int], positions: Sequence[int], mask_id: int) -> dict:
    """Replace the tokens at `positions` by mask_id; they become the only targets.

    [1, 42, 95, 317] with positions [2] -> input_ids [1, 42, MASK, 317], labels [-100, -100, 95, -100].
    """
    ids = [int(i) for i in ids]
    if mask_id is None:
        raise ContractError("mask id missing; fix: pass tokenizer.mask_id")
    chosen = sorted(set(int(p) for p in positions))
    if not chosen:
        raise ContractError("no position to mask: the example would have no target")
    bad = [p for p in chosen if not 0 <= p < len(ids)]
    if bad:
        raise ContractError(f"mask positions {bad} are outside the sequence of length {len(ids)}")
    inputs, labels = list(ids), [IGNORE] * len(ids)
    for p in chosen:
        labels[p] = ids[p]
        inputs[p] = mask_id
    return {"input_ids": inputs, "labels": labels}


def random_mask(ids: torch.Tensor, p: float, mask_id: int, special_ids: Sequence[int] = (),
                generator: torch.Generator | None = None, vocab_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbing-mask corruption: each non-special token becomes mask_id with probability p.

    ids [B,T] -> (input_ids [B,T], labels [B,T]); labels hold the clean id where masked, IGNORE
    elsewhere. vocab_size (optional) checks that mask_id is a real token of the model's vocabulary.
    (BERT's 80/10/10 variant is bert_mask.)
    """
    p = finite(p, "mask probability p")
    if not 0.0 <= p <= 1.0:
        raise ContractError(f"mask probability must lie in [0, 1], got {p}")
    if mask_id is None:
        raise ContractError("mask id missing; fix: pass tokenizer.mask_id")
    ids = token_ids(ids, "ids")
    if int(mask_id) < 0 or (vocab_size is not None and not int(mask_id) < vocab_size):
        raise ContractError(f"mask_id {mask_id} lies outside the vocabulary [0, {vocab_size}): the model has no embedding "
                            "for it; fix: pass tokenizer.mask_id")
    chosen = torch.rand(ids.shape, generator=generator) < p
    for s in special_ids:
        chosen &= ids.ne(s)
    inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def _special_mask(ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    special = torch.zeros_like(ids, dtype=torch.bool)
    for s in special_ids:
        special |= ids.eq(int(s))
    return special


# ----------------------------------------------------------------------------- BERT 80/10/10 (notebook 08)

def bert_mask(ids: torch.Tensor, mask_id: int, vocab_size: int, p: float = 0.15, mask_frac: float = 0.8,
              random_frac: float = 0.1, special_ids: Sequence[int] = (), generator: torch.Generator | None = None,
              replace_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: choose each non-special token with probability p; of the chosen, mask_frac
    become mask_id, random_frac a random token, the rest stay unchanged. Every chosen token is a target.

    ids [...] (any shape) -> (input_ids, labels), same shape; labels = the clean id where chosen,
    IGNORE elsewhere. Random tokens: by default drawn uniformly from the non-special ids of
    [0, vocab_size) (transformers' collator draws from the whole vocabulary); one may equal the clean
    token, and with a vocabulary full of reserved ids most draws are tokens no text contains.
    replace_ids: draw them from these ids instead (e.g. the tokens that occur in the data), always a
    token OTHER than the clean one (random_other_tokens), so a "random" position is really corrupted.
    The random draws for choice, split and replacement come in that order from `generator`, so two
    calls with equal generators choose the same positions whatever mask_frac / random_frac say.
    """
    if not 0.0 <= p <= 1.0:
        raise ContractError(f"p (the share of tokens chosen as targets) must lie in [0, 1], got {p}")
    if mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1 + 1e-9:
        raise ContractError(f"mask_frac + random_frac must be a split of the chosen tokens (each >= 0, sum <= 1), got "
                            f"{mask_frac} + {random_frac}")
    if mask_id is None:
        raise ContractError("mask id missing; fix: pass tokenizer.mask_id")
    if not 0 <= int(mask_id) < vocab_size:
        raise ContractError(f"mask_id {mask_id} lies outside the vocabulary [0, {vocab_size}): the model has no embedding "
                            "for it; fix: pass tokenizer.mask_id")
    ids = torch.as_tensor(ids)
    if ids.numel() and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
        raise ContractError(f"ids must lie in [0, vocab_size={vocab_size}); fix: pass len(tokenizer) as vocab_size")
    special = _special_mask(ids, special_ids)
    chosen = (torch.rand(ids.shape, generator=generator) < p).to(ids.device) & ~special
    u = torch.rand(ids.shape, generator=generator).to(ids.device)
    to_mask = chosen & (u < mask_frac)
    to_random = chosen & (u >= mask_frac) & (u < mask_frac + random_frac)
    if replace_ids is None:
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[[int(s) for s in special_ids if 0 <= int(s) < vocab_size]] = False
        pool = allowed.nonzero().flatten()
        if not len(pool):
            raise ContractError("every id is special: there is no token to draw a random replacement from")
        random_tokens = pool[torch.randint(len(pool), ids.shape, generator=generator)].to(ids.device)
    else:
        pool = torch.as_tensor(list(replace_ids), dtype=torch.long)
        bad = [int(i) for i in pool.tolist() if not 0 <= int(i) < vocab_size or int(i) in {int(s) for s in special_ids}
               or int(i) == int(mask_id)]
        if bad:
            raise ContractError(f"replace_ids {bad[:5]} are special, the mask id or outside [0, vocab_size={vocab_size}); "
                                "fix: pass ordinary tokens, e.g. the non-special ids that occur in the data")
        random_tokens = random_other_tokens(ids.cpu(), pool, generator).to(ids.device)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_tokens, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def random_other_tokens(ids: torch.Tensor, pool: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """For every position, a token drawn uniformly from `pool` minus the position's own token.

    ids [...] -> [...] ids from pool, never equal to ids where ids is in pool (the pool needs >= 2
    distinct ids); where ids is not in the pool, any pool id (uniform). One uniform draw per position.
    """
    pool_t = torch.as_tensor(list(pool), dtype=torch.long).unique()        # sorted, distinct
    n = len(pool_t)
    if n < 2:
        raise ContractError(f"the replacement pool needs >= 2 distinct tokens to differ from the clean one, got {n}")
    ids = torch.as_tensor(ids)
    where = torch.searchsorted(pool_t, ids.contiguous()).clamp(max=n - 1)
    in_pool = pool_t[where].eq(ids)
    u = torch.rand(ids.shape, generator=generator)
    k = (u * (n - in_pool.long())).long().clamp(max=n - 1)                    # n-1 choices when ids is in the pool
    k = k + (in_pool & (k >= where)).long()                                   # skip the clean token's slot
    return pool_t[k]


def masked_lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the target positions only (labels != IGNORE) of a TinyTransformer with a
    tied output head: hidden states [N, d] at the N targets @ embedding.T -> logits [N, V].

    Equal to the mean of token_cross_entropy(model(inputs), labels) over the targets, without
    computing [B, T, V] logits for the 85% of positions that carry no loss.
    """
    target = labels.ne(IGNORE)
    if not bool(target.any()):
        raise ContractError("no target position in the batch (all labels are -100): nothing to learn")
    hidden = model.hidden_states(inputs)[target]                                # [N, d]
    return torch.nn.functional.cross_entropy(hidden @ model.tok.weight.T, labels[target])


@torch.no_grad()
def token_accuracy(model, inputs: torch.Tensor, clean: torch.Tensor, where: torch.Tensor) -> float:
    """Share of the positions `where` (bool, like inputs [B,T]) at which argmax model(inputs) is the
    clean token."""
    dev = next(model.parameters()).device
    pred = model(inputs.to(dev)).argmax(-1).cpu()
    where = where.cpu().bool()
    if not bool(where.any()):
        raise ContractError("no position selected to score")
    return float(pred[where].eq(clean.cpu()[where]).float().mean())


def corruption_stats(clean: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, mask_id: int,
                     special_ids: Sequence[int] = ()) -> dict:
    """What a BERT-style corruption did, measured from its tensors (all the same shape).

    chosen = labels != IGNORE. Returns shares: "chosen" (of non-special tokens), "masked" /
    "random" / "unchanged" (of the chosen; random = neither mask_id nor the clean token),
    "special_chosen" (count), "labels_clean" (labels equal the clean ids where chosen),
    "unchosen_changed" (count of inputs changed outside the chosen set), "n_tokens".
    """
    clean, inputs, labels = (torch.as_tensor(v).cpu() for v in (clean, inputs, labels))
    if not clean.shape == inputs.shape == labels.shape:
        raise ContractError(f"clean, inputs and labels must share one shape, got {tuple(clean.shape)}, "
                            f"{tuple(inputs.shape)}, {tuple(labels.shape)}")
    special = _special_mask(clean, special_ids)
    chosen = labels.ne(IGNORE)
    n_chosen = max(int(chosen.sum()), 1)
    masked = chosen & inputs.eq(mask_id)
    same = chosen & inputs.eq(clean)
    return {"n_tokens": clean.numel(), "chosen": float(chosen.sum()) / max(int((~special).sum()), 1),
            "masked": float(masked.sum()) / n_chosen, "unchanged": float(same.sum()) / n_chosen,
            "random": float((chosen & ~masked & ~same).sum()) / n_chosen,
            "special_chosen": int((chosen & special).sum()),
            "labels_clean": bool(labels[chosen].eq(clean[chosen]).all()),
            "unchosen_changed": int((~chosen & inputs.ne(clean)).sum())}


# ----------------------------------------------------------------------------- T5 span corruption (notebook 08)

def sentinel_tokenizer(n: int = 16, tokenizer=None):
    """A copy of the tokenizer (default seed_vocab()) whose n highest unused ids are renamed
    <extra_id_0>, <extra_id_1>, ... (T5 numbers its sentinels down from the top of the vocabulary).
    Returns (tokenizer, sentinel_ids); every other id keeps its meaning."""

    base = tokenizer or seed_vocab()
    free = [i for i in range(len(base) - 1, len(base.specials) - 1, -1) if base.itos[i].startswith("<unused_")]
    if len(free) < n:
        raise ContractError(f"the tokenizer has {len(free)} unused ids, {n} sentinels asked")
    names = list(base.itos)
    for k, i in enumerate(free[:n]):
        names[i] = f"<extra_id_{k}>"
    return WordTokenizer(names[len(base.specials):], specials=base.specials), free[:n]


def span_noise_mask(length: int, density: float = 0.15, mean_span: float = 3.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """T5's noise mask, bool [length]: round(length * density) noise tokens (at least 1, at most
    length - 1) in round(min(noise, non-noise) / mean_span) spans (at least 1); span lengths are a
    uniformly random composition; spans alternate non-noise / noise, starting with non-noise."""
    if length < 2:
        raise ContractError(f"span corruption needs at least 2 tokens, got {length}")
    if not 0.0 < density < 1.0 or mean_span < 1.0:
        raise ContractError(f"need 0 < density < 1 and mean_span >= 1, got {density}, {mean_span}")
    n_noise = min(max(int(round(length * density)), 1), length - 1)
    n_keep = length - n_noise
    n_spans = max(int(round(min(n_noise, n_keep) / mean_span)), 1)

    def segments(total: int) -> list[int]:
        cuts = (torch.randperm(total - 1, generator=generator)[: n_spans - 1] + 1).sort().values.tolist()
        edges = [0] + cuts + [total]
        return [b - a for a, b in zip(edges[:-1], edges[1:])]

    noise_lens, keep_lens = segments(n_noise), segments(n_keep)
    mask = []
    for k, n in zip(keep_lens, noise_lens):
        mask += [False] * k + [True] * n
    return torch.tensor(mask)


def span_corrupt(ids: torch.Tensor, sentinel_ids: Sequence[int], density: float = 0.15, mean_span: float = 3.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 span corruption. ids [L] or [B, L] -> (inputs, targets).

    Each noise span (span_noise_mask) becomes ONE sentinel in the input; the targets list, span
    by span, its sentinel then its tokens: clean "the cat sat on the mat" -> inputs "the <X0> on
    the <X1>", targets "<X0> cat sat <X1> mat". Every row of a batch has the same lengths
    (L - noise + spans and noise + spans). span_reconstruct inverts it.
    """
    ids = torch.as_tensor(ids)
    if ids.dim() not in (1, 2):
        raise ContractError(f"span_corrupt takes ids [L] or [B, L], got {tuple(ids.shape)}")
    if ids.dim() == 2:
        pairs = [span_corrupt(row, sentinel_ids, density, mean_span, generator) for row in ids]
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
    sentinels = [int(s) for s in sentinel_ids]
    if len(set(sentinels)) != len(sentinels):
        raise ContractError("sentinel ids must be distinct")
    clash = sorted(set(ids.tolist()) & set(sentinels))
    if clash:
        raise ContractError(f"the text already contains sentinel ids {clash[:5]}: the targets could not be read back. "
                            "Fix: take sentinels from ids no text uses (labkit.paradigms.masked.sentinel_tokenizer)")
    noise = span_noise_mask(len(ids), density, mean_span, generator)
    starts = noise & ~torch.cat([torch.tensor([False]), noise[:-1]])
    n_spans = int(starts.sum())
    if n_spans > len(sentinels):
        raise ContractError(f"{n_spans} noise spans but only {len(sentinels)} sentinel ids; fix: pass more sentinels")
    inputs, targets, span = [], [], -1
    for tok, is_noise, is_start in zip(ids.tolist(), noise.tolist(), starts.tolist()):
        if is_start:
            span += 1
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
        if is_noise:
            targets.append(tok)
        else:
            inputs.append(tok)
    return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def span_reconstruct(inputs, targets, sentinel_ids: Sequence[int]) -> torch.Tensor:
    """Undo span_corrupt: replace each sentinel of the input by the tokens that follow the same
    sentinel in the targets. [L_in], [L_tgt] -> [L] (or batched [B, ...] -> [B, L])."""
    inputs, targets = torch.as_tensor(inputs), torch.as_tensor(targets)
    if inputs.dim() == 2:
        return torch.stack([span_reconstruct(a, b, sentinel_ids) for a, b in zip(inputs, targets)])
    sentinels = {int(s) for s in sentinel_ids}
    spans: dict[int, list[int]] = {}
    current = None
    for tok in targets.tolist():
        if tok in sentinels:
            current = tok
            spans[current] = []
        elif current is None:
            raise ContractError("targets must start with a sentinel (sentinel, its span, next sentinel, ...)")
        else:
            spans[current].append(tok)
    out: list[int] = []
    for tok in inputs.tolist():
        if tok in sentinels:
            if tok not in spans:
                raise ContractError(f"sentinel {tok} appears in the input but not in the targets")
            out += spans[tok]
        else:
            out.append(tok)
    return torch.tensor(out, dtype=torch.long)


def delete_tokens(ids: torch.Tensor, p: float, special_ids: Sequence[int] = (),
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token deletion (BART-style): each non-special token is dropped with probability p; the
    model reads the shorter sequence and must write the whole clean one. ids [L] -> (inputs [L'], targets [L])."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1:
        raise ContractError(f"delete_tokens takes one sequence [L], got {tuple(ids.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ContractError(f"deletion probability must lie in [0, 1], got {p}")
    drop = (torch.rand(ids.shape, generator=generator) < p) & ~_special_mask(ids, special_ids)
    return ids[~drop], ids.clone()


# ----------------------------------------------------------------------------- absorbing-mask diffusion (notebook 08)

DIFFUSION_REDUCTIONS = ("token_mean", "sequence_mean", "elbo")


def diffusion_corrupt(ids: torch.Tensor, mask_id: int, t: torch.Tensor | None = None, special_ids: Sequence[int] = (),
                      generator: torch.Generator | None = None, eps: float = 1e-3
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absorbing-mask forward process: row b draws a noise level t_b ~ U(eps, 1) (unless t is
    given) and each of its non-special tokens becomes mask_id with probability t_b.

    ids [B,T] -> (noisy [B,T], labels [B,T] = clean where masked else IGNORE, t [B]).
    """
    if ids.dim() != 2:
        raise ContractError(f"diffusion_corrupt takes ids [B,T], got {tuple(ids.shape)}")
    if t is None:
        t = eps + (1 - eps) * torch.rand(ids.shape[0], generator=generator)
    t = torch.as_tensor(t, dtype=torch.float32).to(ids.device)
    if t.shape != (ids.shape[0],) or bool((t < 0).any() | (t > 1).any()):
        raise ContractError(f"t must be one noise level in [0, 1] per row, shape ({ids.shape[0]},), got {tuple(t.shape)}")
    masked = (torch.rand(ids.shape, generator=generator).to(ids.device) < t[:, None]) & ~_special_mask(ids, special_ids)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)
    return noisy, torch.where(masked, ids, torch.full_like(ids, IGNORE)), t


def diffusion_weights(masked: torch.Tensor, t: torch.Tensor, reduction: str = "elbo") -> torch.Tensor:
    """The weight each masked token's cross-entropy gets in the loss, [B,T] (0 where not masked);
    the loss is sum(w * ce).

    token_mean: 1 / sum|M| (all masked tokens of the batch count alike, so a row weighs ~ t);
    sequence_mean: 1 / (B |M_b|) (each row weighs 1/B whatever its noise level);
    elbo: 1 / (t_b B T), the continuous-time bound's 1/t, divided by all B*T tokens.
    """
    if reduction not in DIFFUSION_REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r}; fix: one of {DIFFUSION_REDUCTIONS}")
    m = masked.bool().float()
    B, T = m.shape
    t = torch.as_tensor(t, dtype=torch.float32).to(m.device)
    if reduction == "token_mean":
        return m / m.sum().clamp_min(1.0)
    if reduction == "sequence_mean":
        return m / (B * m.sum(-1, keepdim=True).clamp_min(1.0))
    return m / (t[:, None].clamp_min(1e-6) * B * T)


def diffusion_loss(logits: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, reduction: str = "elbo") -> torch.Tensor:
    """Masked-diffusion training loss: sum over masked tokens of w * CE, w from diffusion_weights.
    logits [B,T,V], labels [B,T] (IGNORE where not masked), t [B]."""

    masked = labels.ne(IGNORE)
    if not bool(masked.any()):
        raise ContractError("no masked token in the batch: nothing to learn; fix: larger t or longer rows")
    ce = token_cross_entropy(logits, labels)
    return (diffusion_weights(masked, t, reduction) * ce.float()).sum()


@torch.no_grad()
def unmask_sample(model, n: int, length: int, mask_id: int, steps: int | None = None, temperature: float = 1.0,
                  forbid: Sequence[int] = (), generator: torch.Generator | None = None, device=None,
                  order: str = "confidence") -> torch.Tensor:
    """Iterative unmasking: start from `length` masks; at each of `steps` steps propose a token for
    every masked position (sampled from softmax(z / temperature), never mask_id or a `forbid` id)
    and commit some of them: order "confidence" keeps the proposals the model is most sure of
    (highest probability); order "random" keeps randomly chosen masked positions (with exact
    conditionals and steps = length, that samples the source exactly, in a random order). Each
    step commits about length / steps tokens; committed tokens never change. Returns [n, length] ids.
    """
    steps = steps or length
    if not 1 <= steps <= length:
        raise ContractError(f"steps must lie in [1, length={length}], got {steps}")
    if order not in ("confidence", "random"):
        raise ContractError(f"unknown unmasking order {order!r}; fix: 'confidence' or 'random'")
    device = device or next(model.parameters()).device
    x = torch.full((n, length), mask_id, dtype=torch.long, device=device)
    per_step = [length // steps + (1 if s < length % steps else 0) for s in range(steps)]
    banned = [mask_id] + [int(f) for f in forbid]
    for k in per_step:
        logits = model(x).float()
        logits[..., banned] = float("-inf")
        probs = torch.softmax(logits / max(temperature, 1e-6), -1) if temperature > 0 else None
        if temperature > 0:
            flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
            proposal = flat.view(n, length).to(device)
            conf = probs.gather(-1, proposal[..., None])[..., 0]
        else:
            conf, proposal = torch.softmax(logits, -1).max(-1)
        still = x.eq(mask_id)
        if order == "random":
            conf = torch.rand(conf.shape, generator=generator).to(device)
        conf = torch.where(still, conf, torch.full_like(conf, -1.0))
        pick = conf.topk(k, dim=-1).indices
        x.scatter_(1, pick, proposal.gather(1, pick))
    return x.cpu()
