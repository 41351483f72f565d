"""Preference learning and policy optimisation: the target is "this whole answer beats that one".

Pipeline: preference record (prompt, chosen, rejected + provenance) -> two chat sequences with the
same prompt and a response mask -> sequence log-probs over response tokens only -> a pairwise loss:

    Bradley-Terry reward model   L = -log sigma(r(x, y+) - r(x, y-) - margin)
    DPO                          L = -log sigma(beta * [(log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))])
    policy gradient (on-policy)  L = -mean_i A_i log pi(y_i | x),  A = group-normalised rewards

`AnswerWorld` is a tiny question-answering world with a KNOWN correct answer, a candidate generator
(which pads answers with filler words) and a known judge, so every effect can be scored against
the truth.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit.batch import pad, position_ids_from_mask
from labkit.contracts import IGNORE, ContractError, finite, log_probs, tensor
from labkit.datafiles import DATA_DIR, jsonl_records
from labkit.models import TinyTransformer
from labkit.paradigms.autoregressive import causal_lm_token_losses, generate
from labkit.train import fit
from labkit.vocab import CHAT_TEMPLATE, WordTokenizer, seed_vocab

# ----------------------------------------------------------------------------- records

# field -> (accepted python types, what the message calls them)
RECORD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": ((str,), "a string"),
    "chosen": ((str,), "a string"),
    "rejected": ((str,), "a string"),
    "generator_policy": ((str,), "a string"),
    "sampling_temperature": ((int, float), "a number"),
    "sampling_top_p": ((int, float), "a number"),
    "judge_source": ((str,), "a string"),
    "template_version": ((str,), "a string"),
    "tokenizer_version": ((str,), "a string"),
}


@dataclass(frozen=True)
class PreferenceRecord:
    """One comparison: for `prompt`, `chosen` was preferred to `rejected`, plus where both came from
    (which policy sampled them, at which temperature/top-p), who judged, and which chat template and
    tokenizer they are meant for. Without the provenance, a DPO run cannot tell whether it corrects
    the model or fits an old generator's sampling habits."""

    prompt: str
    chosen: str
    rejected: str
    generator_policy: str
    sampling_temperature: float
    sampling_top_p: float
    judge_source: str
    template_version: str
    tokenizer_version: str

    def to_dict(self) -> dict:
        return asdict(self)


def validate_record(obj, line: int | None = None) -> PreferenceRecord:
    """One parsed JSON object -> PreferenceRecord, or a ContractError naming the field (and line).

    Every field of RECORD_FIELDS must be present with its type; temperature >= 0, 0 < top_p <= 1;
    prompt, chosen and rejected non-empty; chosen != rejected (an identical pair carries no
    preference); unknown fields are refused (a typo such as 'choosen' would hide a missing one).
    """
    where = f"line {line}: " if line is not None else ""
    if not isinstance(obj, dict):
        raise ContractError(f"{where}a preference record must be a JSON object, got {type(obj).__name__}")
    for name, (types, what) in RECORD_FIELDS.items():
        if name not in obj:
            raise ContractError(f"{where}field '{name}' is missing; fix: every record needs {list(RECORD_FIELDS)}")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ContractError(f"{where}field '{name}' must be {what}, got {type(value).__name__} {value!r}")
    unknown = sorted(set(obj) - set(RECORD_FIELDS))
    if unknown:
        raise ContractError(f"{where}unknown field(s) {unknown}; fix: the record fields are {list(RECORD_FIELDS)} (a typo?)")
    for name in ("prompt", "chosen", "rejected"):
        if not obj[name].strip():
            raise ContractError(f"{where}field '{name}' is empty")
    if obj["chosen"] == obj["rejected"]:
        raise ContractError(f"{where}field 'rejected' equals 'chosen': the pair carries no preference; fix: drop it")
    if not obj["sampling_temperature"] >= 0:
        raise ContractError(f"{where}field 'sampling_temperature' must be >= 0, got {obj['sampling_temperature']}")
    if not 0 < obj["sampling_top_p"] <= 1:
        raise ContractError(f"{where}field 'sampling_top_p' must lie in (0, 1], got {obj['sampling_top_p']}")
    return PreferenceRecord(**{f.name: obj[f.name] for f in fields(PreferenceRecord)})


def default_preferences_path() -> Path:
    """data/preferences.jsonl of the checkout, or the copy shipped with an installed labkit."""

    return DATA_DIR / "preferences.jsonl"


def load_preferences(path=None) -> list[PreferenceRecord]:
    """Read a JSONL file of preference records, validating EVERY line before returning anything.

    Blank lines are skipped. Malformed JSON, a missing or ill-typed field raise a ContractError
    naming the field and the line number (1-based), so a half-valid file is never half-used.
    """

    path = Path(path) if path is not None else default_preferences_path()
    records = []
    for lineno, obj in jsonl_records(path, "regenerate it with labkit.paradigms.preference.write_preferences(path)"):
        try:
            records.append(validate_record(obj, lineno))
        except ContractError as err:
            raise ContractError(f"{path.name} {err}") from None
    if not records:
        raise ContractError(f"{path.name} holds no preference records")
    return records


def preferences_jsonl(records: Sequence[PreferenceRecord]) -> str:
    """Records as JSON lines (sorted keys, one record a line)."""
    return "".join(json.dumps(r.to_dict(), sort_keys=True, separators=(",", ":")) + "\n" for r in records)


def write_preferences(path=None, n: int = 800, seed: int = 0) -> str:
    """Write AnswerWorld().make_records(n, seed) to `path` (default data/preferences.jsonl); return its sha256."""
    text = preferences_jsonl(AnswerWorld().make_records(n, seed))
    path = Path(path) if path is not None else default_preferences_path()
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- versions and pairs

def tokenizer_version(tokenizer: WordTokenizer) -> str:
    """A fingerprint of the vocabulary: 'labkit-word-<size>-<sha256[:8] of the tokens>'."""
    digest = hashlib.sha256("\n".join(tokenizer.itos).encode()).hexdigest()[:8]
    return f"labkit-word-{len(tokenizer)}-{digest}"


TEMPLATE_VERSION = "labkit-chat-" + hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest()[:8]


def chat_example(tokenizer: WordTokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt, response) in the lab's chat format -> (ids, response_mask).

    "<user> prompt <assistant> response <eos>": response_mask is 1 on the response words and its
    <eos>, 0 on the prompt and the role markers (WordTokenizer.encode_chat).
    """
    return tokenizer.encode_chat([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


def _response_start(mask: Sequence[int], what: str) -> int:
    mask = [int(m) for m in mask]
    if 1 not in mask:
        raise ContractError(f"{what} has no response token (response_mask is all 0); fix: check truncation")
    start = mask.index(1)
    if start == 0:
        raise ContractError(f"{what}: the response starts at token 0, so there is no prompt and no logit predicts its "
                            "first token; fix: the prompt (and the <assistant> marker) comes first")
    if 0 in mask[start:]:
        raise ContractError(f"{what}: the response mask is not one block at the end (0 after a 1 at position "
                            f"{start + mask[start:].index(0)}); fix: mark only the assistant's answer")
    return start


def assert_same_prompt(chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> int:
    """The preference smoke test: chosen and rejected share the identical prompt (same template,
    same tokens) and each response mask is one block after it. Returns the prompt length.

    A pair whose prompts differ compares two questions, not two answers: the loss would reward
    whatever distinguishes the prompts.
    """
    a = _response_start(chosen_mask, "chosen")
    b = _response_start(rejected_mask, "rejected")
    pa, pb = [int(i) for i in chosen_ids[:a]], [int(i) for i in rejected_ids[:b]]
    if pa != pb:
        diff = next((t for t in range(min(len(pa), len(pb))) if pa[t] != pb[t]), min(len(pa), len(pb)))
        raise ContractError(f"chosen and rejected have different prompts (first difference at token {diff}; prompt "
                            f"lengths {len(pa)} and {len(pb)}): were they rendered with different chat templates or "
                            "tokenizers? Fix: render both from the same prompt with the same template")
    return a


def build_pair(record: PreferenceRecord, tokenizer: WordTokenizer) -> dict:
    """A record -> dict(chosen_ids, chosen_mask, rejected_ids, rejected_mask, prompt_len).

    Refuses records made for another chat template or tokenizer (their token ids would mean
    something else), and pairs whose prompts differ (assert_same_prompt).
    """
    if record.template_version != TEMPLATE_VERSION:
        raise ContractError(f"record was made for chat template {record.template_version!r}, this is {TEMPLATE_VERSION!r}; "
                            "fix: regenerate the pairs with the current template")
    if record.tokenizer_version != tokenizer_version(tokenizer):
        raise ContractError(f"record was made for tokenizer {record.tokenizer_version!r}, this is "
                            f"{tokenizer_version(tokenizer)!r}; fix: re-tokenize with the tokenizer the policy uses")
    c_ids, c_mask = chat_example(tokenizer, record.prompt, record.chosen)
    r_ids, r_mask = chat_example(tokenizer, record.prompt, record.rejected)
    n = assert_same_prompt(c_ids, c_mask, r_ids, r_mask)
    return {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask, "prompt_len": n}


def collate_sequences(ids: Sequence[Sequence[int]], response_masks: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Right-pad sequences -> dict(input_ids, attention_mask, response_mask), each [B,T] long."""

    input_ids, attention_mask = pad(ids, pad_id, "right")
    response_mask, _ = pad(response_masks, 0, "right")
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def collate_pairs(pairs: Sequence[dict], pad_id: int) -> dict:
    """Pairs (build_pair) -> one padded batch of 2B rows, chosen first: rows [0,B) chosen, [B,2B) rejected
    (one forward for both halves, as trl does)."""
    if not pairs:
        raise ContractError("collate_pairs() got no pairs")
    ids = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
    masks = [p["chosen_mask"] for p in pairs] + [p["rejected_mask"] for p in pairs]
    return collate_sequences(ids, masks, pad_id)


# ----------------------------------------------------------------------------- objectives

SEQUENCE_REDUCTIONS = ("sum", "token_mean")   # over one response's tokens: log pi(y|x), or its per-token mean


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, response_mask: torch.Tensor,
                     reduction: str = "sum") -> torch.Tensor:
    """log pi(y | x) of each row's response, [B].

    logits [B,T,V], labels [B,T] (unshifted token ids, i.e. input_ids), response_mask [B,T] (1 on
    response tokens). Same alignment as causal_lm_loss(shift=True): logit t scores labels[t+1], so
        log pi(y|x) = sum_{t : m[t+1] = 1} log softmax(z_t)[labels[t+1]]
    Prompt tokens never count. reduction="sum" (default) is log pi(y|x); "token_mean" divides by the
    number of response tokens |y| (length-normalised, a different objective than the answer's probability).
    """
    if reduction not in SEQUENCE_REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r} for a sequence log-prob; fix: one of {SEQUENCE_REDUCTIONS}")
    if logits.dim() != 3 or labels.shape != logits.shape[:2] or response_mask.shape != labels.shape:
        raise ContractError(f"sequence_logprob needs logits [B,T,V], labels [B,T] and response_mask [B,T]; got "
                            f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(response_mask.shape)}")
    mask = response_mask.bool()
    if mask[:, 0].any():
        raise ContractError("response_mask covers token 0, which no logit predicts (logit t scores token t+1); "
                            "fix: the prompt comes first and the mask marks only the response")
    n = mask.sum(-1)
    if (n == 0).any():
        rows = (n == 0).nonzero().flatten().tolist()
        raise ContractError(f"rows {rows[:5]} have no response token: log pi(y|x) would be an empty sum; fix: check "
                            "truncation and the response mask")
    if labels[mask].lt(0).any():
        raise ContractError("a response position has label -100; fix: pass the token ids (input_ids) as labels and "
                            "mark the response with response_mask")
    targets = labels.masked_fill(~mask, IGNORE)
    losses, supervised = causal_lm_token_losses(logits, targets, shift=True)
    logp = -(losses * supervised).sum(-1)
    return logp / n.to(logp.dtype) if reduction == "token_mean" else logp


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin=0.0) -> torch.Tensor:
    """Reward-model loss, mean over pairs: -log sigma(r(x,y+) - r(x,y-) - margin).

    Bradley-Terry: P(y+ beats y-) = sigma(r+ - r-). A margin (scalar or [B], e.g. from how strongly
    raters preferred y+) asks for a reward gap of at least `margin` before the loss relaxes (trl's
    RewardTrainer subtracts it the same way).
    """
    r_chosen, r_rejected = torch.as_tensor(r_chosen), torch.as_tensor(r_rejected)
    if r_chosen.shape != r_rejected.shape or r_chosen.dim() != 1:
        raise ContractError(f"rewards must be two [B] tensors of one shape, got {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}")
    margin = torch.as_tensor(margin, dtype=r_chosen.dtype, device=r_chosen.device)
    if not bool(torch.isfinite(margin).all()):
        raise ContractError("margin holds NaN or inf; fix: a finite reward gap (0 for the plain Bradley-Terry loss)")
    if margin.dim() > 1 or (margin.dim() == 1 and margin.shape != r_chosen.shape):
        raise ContractError(f"margin must be a scalar or [B]={tuple(r_chosen.shape)}, got {tuple(margin.shape)}")
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def implicit_rewards(pi_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO's implicit reward of a response: beta * (log pi(y|x) - log ref(y|x)), [B]."""
    return beta * (pi_logps - ref_logps)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """DPO loss, mean over pairs (each input [B] sequence log-probs):

        delta = (log pi(y+) - log ref(y+)) - (log pi(y-) - log ref(y-))
        L     = -log sigma(beta * delta)

    The reference log-probs are constants (computed without gradient, once). At pi = ref, L = log 2.
    """
    names = ("pi_chosen", "pi_rejected", "ref_chosen", "ref_rejected")
    xs = [log_probs(tensor(v, n), n) for v, n in zip((pi_chosen, pi_rejected, ref_chosen, ref_rejected), names)]
    if len({tuple(x.shape) for x in xs}) != 1 or xs[0].dim() != 1:
        raise ContractError(f"dpo_loss needs four [B] log-prob tensors of one shape, got {[tuple(x.shape) for x in xs]}")
    if finite(beta, "beta") <= 0:
        raise ContractError(f"beta must be > 0 (the strength of the pull towards the reference), got {beta}")
    if xs[2].requires_grad or xs[3].requires_grad:
        raise ContractError("the reference log-probs require grad: the reference must be frozen; fix: compute them "
                            "under torch.no_grad() (or .detach())")
    delta = (xs[0] - xs[2]) - (xs[1] - xs[3])
    return -F.logsigmoid(beta * delta).mean()


# ----------------------------------------------------------------------------- reward model

class RewardModel(nn.Module):
    """r(x, y): a causal TinyTransformer reads "<user> x <assistant> y <eos>" and a linear head maps the
    hidden state of the last real token to one number. forward(input_ids [B,T], attention_mask [B,T])
    -> rewards [B]. `backbone` (a TinyTransformer) replaces the freshly initialised one."""

    def __init__(self, vocab_size: int, d_model: int = 32, n_layers: int = 1, n_heads: int = 4, max_len: int = 32,
                 backbone=None):
        super().__init__()

        if backbone is not None and not isinstance(backbone, TinyTransformer):
            raise ContractError(f"the backbone must be a labkit TinyTransformer/TinyCausalLM, got {type(backbone).__name__}")
        self.backbone = backbone if backbone is not None else TinyTransformer(vocab_size, d_model, n_layers, n_heads,
                                                                               max_len, causal=True)
        self.head = nn.Linear(self.backbone.d_model, 1)

    @classmethod
    def from_policy(cls, policy) -> "RewardModel":
        """A reward model whose backbone starts as a copy of a (SFT) causal LM, with a zero head (all
        rewards 0 at the start): it begins from what the policy knows about the task, as InstructGPT's
        reward models did."""

        if not isinstance(policy, TinyTransformer):
            raise ContractError(f"from_policy needs a labkit TinyTransformer/TinyCausalLM, got {type(policy).__name__}")
        model = cls(policy.vocab_size, backbone=copy.deepcopy(policy).requires_grad_(True))
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        return model.to(next(policy.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:

        h = self.backbone.hidden_states(input_ids, attention_mask, position_ids_from_mask(attention_mask))
        last = attention_mask.long().sum(-1) - 1
        if (last < 0).any():
            raise ContractError("a row of the reward batch is all padding")
        return self.head(h[torch.arange(len(last), device=h.device), last]).squeeze(-1)


def pair_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Share of pairs where the chosen response gets the higher score (ties count half)."""
    d = torch.as_tensor(r_chosen) - torch.as_tensor(r_rejected)
    return float((d.gt(0).float() + 0.5 * d.eq(0).float()).mean())


def expected_pair_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p_chosen) -> float:
    """Expected accuracy of a scorer against a KNOWN judge, free of the noise of the sampled labels.

    p_chosen [B]: the judge's probability of preferring the chosen answer (each label was a draw from
    it). Ranking the chosen answer higher earns p, the rejected one 1 - p, a tie 1/2; the mean over
    pairs. Its ceiling is mean(max(p, 1 - p)), reached by ranking as the judge's scores do.
    """
    d = torch.as_tensor(r_chosen, dtype=torch.float64) - torch.as_tensor(r_rejected, dtype=torch.float64)
    p = torch.as_tensor(p_chosen, dtype=torch.float64)
    if p.shape != d.shape:
        raise ContractError(f"p_chosen {tuple(p.shape)} must have one probability per pair {tuple(d.shape)}")
    return float(torch.where(d > 0, p, torch.where(d < 0, 1 - p, torch.full_like(p, 0.5))).mean())


# ----------------------------------------------------------------------------- on-policy

def group_advantages(rewards: torch.Tensor, group_size: int, normalize: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages, [N] -> [N], for N = n_prompts * group_size samples ordered prompt by prompt.

    A_i = r_i - mean(group of i), divided by std(group) + eps when normalize (GRPO); the baseline is
    the other answers to the same prompt, so no value network is needed. A group whose answers all
    score the same gets advantage 0: it teaches nothing.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() != 1 or group_size < 2 or rewards.numel() % group_size:
        raise ContractError(f"need [N] rewards with N a multiple of group_size >= 2, got {tuple(rewards.shape)} and {group_size}")
    g = rewards.view(-1, group_size)
    adv = g - g.mean(-1, keepdim=True)
    if normalize:
        adv = adv / (g.std(-1, keepdim=True) + eps)
    return adv.flatten()


def policy_gradient_loss(seq_logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: -mean_i A_i log pi(y_i|x_i); its gradient is E[A grad log pi]. Advantages are constants."""
    if seq_logps.shape != advantages.shape:
        raise ContractError(f"log-probs {tuple(seq_logps.shape)} and advantages {tuple(advantages.shape)} must match")
    return -(advantages.detach() * seq_logps).mean()


def kl_shaped_rewards(rewards: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r - kl_coef * (log pi(y|x) - log ref(y|x)) on the policy's own samples (constants): the sampled
    estimate of the penalty kl_coef * KL(pi || ref) that keeps the policy near the reference."""
    return torch.as_tensor(rewards, dtype=torch.float32) - kl_coef * (logps.detach() - ref_logps.detach()).float()


@torch.no_grad()
def rollout(model, tokenizer: WordTokenizer, prompts: Sequence[str], max_new_tokens: int = 8, temperature: float = 1.0,
            generator: torch.Generator | None = None) -> dict:
    """Sample one response per prompt from `model` (the policy, on its device).

    Returns dict(input_ids, attention_mask, response_mask) [B,T] (prompt + sampled response, right
    padded, on the model's device) and `responses`, the sampled ids (ending with <eos> when the
    policy stopped within max_new_tokens).
    """

    prompt_ids = [tokenizer.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True)[0] for p in prompts]
    was_training = model.training
    model.eval()
    new = generate(model, prompt_ids, max_new_tokens, tokenizer.pad_id, temperature=temperature,
                   eos_id=tokenizer.eos_id, generator=generator)
    model.train(was_training)
    ids = [p + r for p, r in zip(prompt_ids, new)]
    masks = [[0] * len(p) + [1] * len(r) for p, r in zip(prompt_ids, new)]
    batch = collate_sequences(ids, masks, tokenizer.pad_id)
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) for k, v in batch.items()}
    batch["responses"] = new
    return batch


def batch_logprob(model, batch: dict, reduction: str = "sum") -> torch.Tensor:
    """sequence_logprob of a collated batch (input_ids, attention_mask, response_mask) under `model`, [B]."""

    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=position_ids_from_mask(batch["attention_mask"]))
    return sequence_logprob(logits, batch["input_ids"], batch["response_mask"], reduction=reduction)


def sample_log_ratios(policy, reference, batch: dict) -> torch.Tensor:
    """log pi(y|x) - log ref(y|x) of each row of a collated batch, [B] (no gradient).

    On answers sampled from the policy itself (rollout), the mean is the Monte Carlo estimate of
    KL(pi || ref) per answer, in nats: how far the policy has moved from the reference.
    """
    with torch.no_grad():
        return batch_logprob(policy, batch) - batch_logprob(reference, batch)


def policy_gradient_fit(policy, tokenizer: WordTokenizer, prompt_sampler: Callable[[torch.Generator], list[str]],
                        reward_fn: Callable[[str, list[int]], float], iters: int, group_size: int = 8, lr: float = 3e-4,
                        kl_coef: float = 0.0, reference=None, max_new_tokens: int = 10, seed: int = 0,
                        track: dict[str, Callable[[str, list[int]], float]] | None = None,
                        sampler: Callable[[list[str], torch.Generator], dict] | None = None) -> list[dict]:
    """On-policy training: each iteration samples group_size answers per prompt from the CURRENT
    policy, scores them with reward_fn(prompt, response_ids), and takes one step on
    policy_gradient_loss with group-normalised advantages (optionally KL-shaped towards `reference`).

    prompt_sampler(generator) -> a list of prompts (each repeated group_size times here). Returns one
    dict per iteration: reward (mean of reward_fn), logp_per_token (mean log pi per response token of
    the trained samples), `kl` when a reference is given (mean log pi - log ref of the trained samples:
    the KL estimate when they are the policy's own), and the mean of every function in `track` over
    the samples. The policy stays on its device; AdamW, gradient clipping at 1.

    sampler(prompts, generator) -> a batch like rollout()'s replaces the policy's own samples (e.g.
    AnswerWorld.generator_batch: the OFFLINE answers of an old generator); everything else is unchanged,
    so on-policy and offline training differ only in where the answers come from.
    """
    if iters < 1:
        raise ContractError(f"iters must be >= 1, got {iters}")
    if kl_coef > 0 and reference is None:
        raise ContractError("kl_coef > 0 needs the frozen reference policy; fix: pass reference=")
    g = torch.Generator().manual_seed(seed)
    dev = next(policy.parameters()).device
    history: list[dict] = []

    def sample(_step: int) -> dict:
        prompts = [p for p in prompt_sampler(g) for _ in range(group_size)]
        batch = rollout(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, generator=g) if sampler is None \
            else sampler(prompts, g)
        return {**batch, "prompts": prompts}

    def loss_fn(model, batch: dict) -> torch.Tensor:
        prompts, responses = batch["prompts"], batch["responses"]
        rewards = torch.tensor([reward_fn(p, r) for p, r in zip(prompts, responses)], dtype=torch.float32)
        model.train()
        logps = batch_logprob(model, batch)
        shaped = rewards.to(logps.device)
        if reference is not None:
            with torch.no_grad():
                ref_logps = batch_logprob(reference, batch)
        if kl_coef > 0:
            shaped = kl_shaped_rewards(shaped, logps, ref_logps, kl_coef)
        row = {"reward": float(rewards.mean()), "logp_per_token": float(logps.detach().sum() / batch["response_mask"].sum())}
        if reference is not None:
            row["kl"] = float((logps.detach() - ref_logps).mean())
        for name, fn in (track or {}).items():
            row[name] = sum(fn(p, r) for p, r in zip(prompts, responses)) / len(prompts)
        history.append(row)
        return policy_gradient_loss(logps, group_advantages(shaped, group_size).to(logps.device))

    # AdamW's default weight decay (0.01) and clipping at 1, as this loop always had
    fit(policy, sample, loss_fn, steps=iters, lr=lr, weight_decay=0.01, device=dev, clip=1.0, progress=False)
    return history


# ----------------------------------------------------------------------------- a world with known answers

class AnswerWorld:
    """Questions with a KNOWN answer, a candidate generator that pads, and judges with known scores.

    A prompt is a key, "C ?"; its correct answer is one digit, answer(C) = (3k + 7) mod 10 for the
    k-th key. The generator policy (an imperfect SFT model) answers correctly with p_correct, else a
    wrong digit, then adds L filler words ("7 good and the"): L ~ length_probs_correct after a right
    digit (it elaborates when it knows) and L ~ length_probs_wrong after a wrong one. So among
    candidates, longer answers are more often right, without length being a virtue. Scores:
        judge_score  = judge_correct * correct + judge_length * L   (the labeller of the preferences)
        proxy_reward = correct + proxy_length * L                   (a cheap judge that likes "thorough")
        true_reward  = correct - length_penalty * L                 (what we want: right and concise)
    A response that never emits <eos> counts as incorrect.
    """

    KEYS = tuple(chr(ord("A") + k) for k in range(10))
    FILLERS = ("good", "and", "the", "a")

    def __init__(self, p_correct: float = 0.5, length_probs_correct: Sequence[float] = (0.1, 0.15, 0.25, 0.25, 0.25),
                 length_probs_wrong: Sequence[float] = (0.5, 0.25, 0.15, 0.1, 0.0), judge_correct: float = 2.0,
                 judge_length: float = 0.0, proxy_length: float = 0.5, length_penalty: float = 0.25,
                 generator_name: str = "answerworld-sft-v0", tokenizer: WordTokenizer | None = None):

        for probs in (length_probs_correct, length_probs_wrong):
            if abs(sum(probs) - 1) > 1e-9 or min(probs) < 0:
                raise ContractError(f"length probabilities must be >= 0 and sum to 1, got {tuple(probs)}")
        if not 0 <= p_correct <= 1:
            raise ContractError(f"p_correct must be a probability, got {p_correct}")
        self.p_correct = p_correct
        self.length_probs_correct, self.length_probs_wrong = tuple(length_probs_correct), tuple(length_probs_wrong)
        self.judge_correct, self.judge_length = judge_correct, judge_length
        self.proxy_length, self.length_penalty = proxy_length, length_penalty
        self.generator_name = generator_name
        self.tokenizer = tokenizer or seed_vocab()

    def answer(self, key: str) -> str:
        return str((3 * self.KEYS.index(key) + 7) % 10)

    def prompt(self, key: str) -> str:
        return f"{key} ?"

    def key_of(self, prompt: str) -> str:
        key = prompt.split()[0] if prompt.split() else ""
        if key not in self.KEYS:
            raise ContractError(f"prompt {prompt!r} does not ask about a key of this world {self.KEYS}")
        return key

    def sample_response(self, key: str, generator: torch.Generator) -> str:
        """One candidate from the generator policy (as text, without <eos>)."""
        right = self.answer(key)
        correct = float(torch.rand((), generator=generator)) < self.p_correct
        if correct:
            digit = right
        else:
            wrong = [str(d) for d in range(10) if str(d) != right]
            digit = wrong[int(torch.randint(9, (), generator=generator))]
        probs = self.length_probs_correct if correct else self.length_probs_wrong
        L = int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=generator))
        fill = [self.FILLERS[int(i)] for i in torch.randint(len(self.FILLERS), (L,), generator=generator)]
        return " ".join([digit] + fill)

    def parse(self, prompt: str, response) -> tuple[bool, int]:
        """(correct, n_fillers) of a response given as text, a word list or token ids ending in <eos>."""
        words = response.split() if isinstance(response, str) else list(response)
        finished = True
        if words and not isinstance(words[0], str):   # token ids from a rollout
            finished = int(words[-1]) == self.tokenizer.eos_id
            words = [self.tokenizer.token(i) for i in (words[:-1] if finished else words)]
        correct = finished and bool(words) and words[0] == self.answer(self.key_of(prompt))
        return correct, max(len(words) - 1, 0)

    def judge_score(self, prompt: str, response) -> float:
        correct, L = self.parse(prompt, response)
        return self.judge_correct * correct + self.judge_length * L

    def proxy_reward(self, prompt: str, response) -> float:
        correct, L = self.parse(prompt, response)
        return float(correct) + self.proxy_length * L

    def true_reward(self, prompt: str, response) -> float:
        correct, L = self.parse(prompt, response)
        return float(correct) - self.length_penalty * L

    def preference_probability(self, prompt: str, a, b) -> float:
        """P(judge prefers a over b) = sigma(score(a) - score(b)) (Bradley-Terry with known scores)."""
        return 1.0 / (1.0 + math.exp(-(self.judge_score(prompt, a) - self.judge_score(prompt, b))))

    def make_records(self, n: int = 800, seed: int = 0, drop_ties: bool = True) -> list[PreferenceRecord]:
        """n preference records: two different candidates per random key, labelled by the judge with a
        Bradley-Terry draw. drop_ties: skip pairs the judge scores equally (a coin flip carries no
        preference; many real sets drop ties too)."""
        if n < 1:
            raise ContractError(f"n must be >= 1, got {n}")
        tok = self.tokenizer
        g = torch.Generator().manual_seed(seed)
        judge = f"answerworld-bt-judge: score = {self.judge_correct}*correct + {self.judge_length}*fillers"
        out = []
        while len(out) < n:
            key = self.KEYS[int(torch.randint(len(self.KEYS), (), generator=g))]
            a, b = self.sample_response(key, g), self.sample_response(key, g)
            if a == b or (drop_ties and self.judge_score(self.prompt(key), a) == self.judge_score(self.prompt(key), b)):
                continue
            p = self.preference_probability(self.prompt(key), a, b)
            chosen, rejected = (a, b) if float(torch.rand((), generator=g)) < p else (b, a)
            out.append(PreferenceRecord(prompt=self.prompt(key), chosen=chosen, rejected=rejected,
                                        generator_policy=self.generator_name, sampling_temperature=1.0,
                                        sampling_top_p=1.0, judge_source=judge, template_version=TEMPLATE_VERSION,
                                        tokenizer_version=tokenizer_version(tok)))
        return out

    def generator_batch(self, prompts: Sequence[str], generator: torch.Generator) -> dict:
        """One answer per prompt from the candidate generator (the old policy that wrote the preference
        pairs), collated like rollout(): input_ids, attention_mask, response_mask [B,T] and `responses`
        (the answer ids, each ending with <eos>). These are OFFLINE samples: they never follow the
        policy being trained."""
        tok = self.tokenizer
        prompt_ids = [tok.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True)[0] for p in prompts]
        new = [tok.encode(self.sample_response(self.key_of(p), generator)) + [tok.eos_id] for p in prompts]
        batch = collate_sequences([p + r for p, r in zip(prompt_ids, new)],
                                  [[0] * len(p) + [1] * len(r) for p, r in zip(prompt_ids, new)], tok.pad_id)
        batch["responses"] = new
        return batch

    def sft_examples(self, n: int, seed: int) -> list[dict]:
        """n SFT examples sampled from the generator policy: dict(input_ids, labels) with the prompt masked."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            key = self.KEYS[int(torch.randint(len(self.KEYS), (), generator=g))]
            ids, mask = chat_example(self.tokenizer, self.prompt(key), self.sample_response(key, g))
            out.append({"input_ids": ids, "labels": [i if m else IGNORE for i, m in zip(ids, mask)]})
        return out
