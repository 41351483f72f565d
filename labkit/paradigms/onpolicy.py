"""Teacher signals: on-policy distillation, sampled vs greedy sequence-level data, a teacher's copied error.

On-policy distillation: the STUDENT writes the continuation (its own states), the teacher scores
every written position, and the student matches the teacher's next-token distribution there:

    L = mean_{b, t in generated} D(p_T(. | x_<t), p_S(. | x_<t)),   x ~ student  (on-policy)
                                                                      x ~ teacher  (off-policy)

D is the per-token KL, forward KL(p_T || p_S) = sum_v p_T (log p_T - log p_S) (mass covering, the
kd_loss of notebook 10 at T = 1) or reverse KL(p_S || p_T) = sum_v p_S (log p_S - log p_T) (mode
seeking, the usual choice for on-policy distillation). The rollout is sampled without gradients;
the gradient flows only through the student's logits on the written tokens.

Sequence-level distillation writes the teacher's continuations out (greedy or sampled) and
fine-tunes the student on them as SFT data: sampling keeps the teacher's alternatives in the data,
greedy decoding keeps only its mode.

A teacher with a systematic error (PlantedErrorTeacher) is the same teacher with its next-token
distribution replaced, in one known context, by a point mass on a wrong token: everything a
student learns from it (its outputs or its distributions) carries the error.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labkit.contracts import ContractError, binary_mask, count, finite, same_shape, tensor, token_ids
from labkit.paradigms.autoregressive import completion_example

DIRECTIONS = ("forward", "reverse")
POLICIES = ("on", "off")
KL_REDUCTIONS = ("token_mean", "sum")

__all__ = ["DIRECTIONS", "POLICIES", "token_kl", "sample_rollouts", "generated_mask", "distillation_loss",
           "PlantedErrorTeacher", "CountingOracle", "counting_context", "sequence_data", "overconfidence", "distinct_pairs"]


def _temperature(t) -> float:
    v = finite(t, "temperature")
    if v < 0:
        raise ContractError(f"temperature must be >= 0 (0 = greedy), got {v}; fix: 1.0 samples from the model itself")
    return v


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, direction: str = "reverse",
             reduction: str = "token_mean") -> torch.Tensor:
    """Per-token KL between teacher and student next-token distributions, over the positions in mask.

    logits [B,T,V] (same shape), mask [B,T] 0/1 (1 = a position whose next token the student wrote or
    is graded on). forward: KL(p_T || p_S) = sum_v p_T (log p_T - log p_S); reverse: KL(p_S || p_T) =
    sum_v p_S (log p_S - log p_T). The teacher is a constant (detached).
    reduction "token_mean": sum_{b,t} m kl / sum m; "sum": sum_{b,t} m kl.
    """
    if direction not in DIRECTIONS:
        raise ContractError(f"unknown direction {direction!r}; fix: 'forward' (KL(teacher || student), mass covering) or "
                            "'reverse' (KL(student || teacher), mode seeking)")
    if reduction not in KL_REDUCTIONS:
        raise ContractError(f"unknown reduction {reduction!r}; fix: one of {KL_REDUCTIONS}")
    s, t = tensor(student_logits, "student_logits"), tensor(teacher_logits, "teacher_logits")
    if s.dim() != 3:
        raise ContractError(f"student_logits must be [B,T,V], got {tuple(s.shape)}")
    same_shape(s, t, ("student_logits", "teacher_logits"))
    m = binary_mask(tensor(mask, "mask"), "mask")
    if tuple(m.shape) != tuple(s.shape[:2]):
        raise ContractError(f"mask must be [B,T] = {tuple(s.shape[:2])} (one flag per position), got {tuple(m.shape)}")
    m = m.to(s.device).float()
    if float(m.sum()) == 0:
        raise ContractError("token_kl: the mask selects no position; the token mean would be 0/0. Fix: mark the "
                            "positions whose next token was generated (generated_mask)")
    log_s = F.log_softmax(s.float(), -1)
    log_t = F.log_softmax(t.detach().float(), -1)
    if direction == "forward":
        p = log_t.exp()
        kl = torch.where(p > 0, p * (log_t - log_s), torch.zeros_like(p)).sum(-1)
    else:
        p = log_s.exp()
        kl = torch.where(p > 0, p * (log_s - log_t), torch.zeros_like(p)).sum(-1)
    total = (m * kl).sum()
    return total / m.sum() if reduction == "token_mean" else total


def _can_cache(model) -> bool:
    """A causal model with a key/value cache and no sliding window (a PlantedErrorTeacher: its teacher's)."""
    inner = model.teacher if isinstance(model, PlantedErrorTeacher) else model
    return hasattr(inner, "forward_cached") and getattr(inner, "window", None) is None and getattr(inner, "causal", True)


@torch.no_grad()
def sample_rollouts(model, prompts: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue equal-length prompts [B,P] by `max_new_tokens` tokens: [B, P + max_new_tokens].

    Token t+1 ~ softmax(z_t / temperature) (temperature 0 = argmax), drawn on the CPU with
    `generator`. Uses the model's key/value cache when it has one (forward_cached), else re-reads
    the prefix every step.
    """
    prompts = token_ids(prompts, "prompts")
    if prompts.dim() != 2 or prompts.shape[1] < 1:
        raise ContractError(f"prompts must be [B,P] with P >= 1 (equal lengths, no padding), got {tuple(prompts.shape)}")
    n = count(max_new_tokens, "max_new_tokens")
    temp = _temperature(temperature)
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    dev = params[0].device if params else prompts.device
    x = prompts.to(dev)
    B, P = x.shape

    def choose(z):
        z = z.float()
        if temp == 0:
            return z.argmax(-1)
        return torch.multinomial(torch.softmax(z / temp, -1).cpu(), 1, generator=generator)[:, 0].to(dev)

    if _can_cache(model):
        mask = torch.ones(B, P, dtype=torch.long, device=dev)
        logits, past = model.forward_cached(x, mask, torch.arange(P, device=dev).expand(B, P))
        out = [x]
        for k in range(n):
            nxt = choose(logits[:, -1])
            out.append(nxt[:, None])
            if k + 1 < n:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                logits, past = model.forward_cached(nxt[:, None], mask, torch.full((B, 1), P + k, device=dev), past)
        return torch.cat(out, 1)
    for _ in range(n):
        x = torch.cat([x, choose(model(x)[:, -1])[:, None]], 1)
    return x


def generated_mask(rollouts: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Bool [B,T]: the logit positions that predict a generated token, t = prompt_len-1 .. T-2."""
    r = tensor(rollouts, "rollouts")
    if r.dim() != 2:
        raise ContractError(f"rollouts must be [B,T], got {tuple(r.shape)}")
    P = count(prompt_len, "prompt_len")
    if P >= r.shape[1]:
        raise ContractError(f"prompt_len={P} leaves no generated token in rollouts of length {r.shape[1]}")
    m = torch.zeros(r.shape, dtype=torch.bool, device=r.device)
    m[:, P - 1:-1] = True
    return m


def distillation_loss(student, teacher, prompts: torch.Tensor, max_new_tokens: int, policy: str = "on",
                      direction: str = "reverse", temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One distillation step's loss: who writes the continuation is the one thing `policy` changes.

    policy "on": the student samples the continuation of each prompt (its own states); "off": the
    teacher does (teacher forcing on teacher samples). Either way the teacher scores every position
    of the rollout and the loss is token_kl(student, teacher, generated positions, direction).
    Returns (loss, rollouts [B, P + max_new_tokens]).
    """
    if policy not in POLICIES:
        raise ContractError(f"unknown policy {policy!r}; fix: 'on' (the student writes the states) or 'off' (the teacher does)")
    writer = student if policy == "on" else teacher
    was_training = getattr(student, "training", False)
    if isinstance(student, nn.Module):
        student.eval()
    rollouts = sample_rollouts(writer, prompts, max_new_tokens, temperature, generator)
    if isinstance(student, nn.Module) and was_training:
        student.train()
    with torch.no_grad():
        t_logits = teacher(rollouts)
    mask = generated_mask(rollouts, prompts.shape[1])
    return token_kl(student(rollouts), t_logits, mask, direction), rollouts


class PlantedErrorTeacher(nn.Module):
    """A teacher with a systematic error: wherever `context(ids)` is True, its next-token
    distribution becomes a point mass (logit gap `strength`) on `wrong_id`; elsewhere it is `teacher`.

    context: ids [B,T] -> bool [B,T] (True at the logit positions that fire). The wrapped teacher's
    own weights are untouched, so any student of this teacher sees the error exactly there.
    """

    def __init__(self, teacher: nn.Module, context: Callable[[torch.Tensor], torch.Tensor], wrong_id: int,
                 strength: float = 20.0):
        super().__init__()
        if not callable(context):
            raise ContractError("context must be a function ids [B,T] -> bool [B,T]; fix: e.g. "
                                "lambda ids: counting_context(task, ids, prev=4, increment=3)")
        self.teacher, self.context = teacher, context
        self.wrong_id = count(wrong_id, "wrong_id", minimum=0)
        self.strength = finite(strength, "strength", low=0.0, low_open=True)

    def _plant(self, logits: torch.Tensor, fire: torch.Tensor) -> torch.Tensor:
        if self.wrong_id >= logits.shape[-1]:
            raise ContractError(f"wrong_id={self.wrong_id} is outside the vocabulary of {logits.shape[-1]} tokens")
        fire = torch.as_tensor(fire, dtype=torch.bool).to(logits.device)
        if fire.shape != logits.shape[:2]:
            raise ContractError(f"context returned {tuple(fire.shape)}, expected [B,T] = {tuple(logits.shape[:2])}")
        planted = torch.full_like(logits, -self.strength)
        planted[..., self.wrong_id] = 0.0
        return torch.where(fire[..., None], planted, logits)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        return self._plant(self.teacher(input_ids, attention_mask, position_ids), self.context(input_ids))

    def forward_cached(self, input_ids, attention_mask, position_ids, past=None):
        """The wrapped teacher's cached step; past = (the teacher's cache, the ids read so far), so the
        context is evaluated on the whole unpadded prefix (as sample_rollouts feeds it)."""
        inner, seen = (None, None) if past is None else past
        seen = input_ids if seen is None else torch.cat([seen, input_ids], 1)
        logits, inner = self.teacher.forward_cached(input_ids, attention_mask, position_ids, inner)
        return self._plant(logits, self.context(seen)[:, -input_ids.shape[1]:]), (inner, seen)


class CountingOracle(nn.Module):
    """The counting task's own answer as a teacher (a RunningSumTask): at every logit position that
    predicts answer token k, a point mass (logit gap `strength`) on the TRUE count s_k computed from
    the prompt, whatever the prefix says; uniform elsewhere. Unlike a teacher-forced model, it
    recovers: after a wrong count its target is still the true count."""

    def __init__(self, task, vocab_size: int, strength: float = 8.0):
        super().__init__()
        self.task, self.vocab_size = task, count(vocab_size, "vocab_size", minimum=2)
        self.strength = finite(strength, "strength", low=0.0, low_open=True)

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        ids = token_ids(input_ids, "input_ids", self.vocab_size)
        if ids.dim() != 2 or ids.shape[1] < self.task.prompt_len:
            raise ContractError(f"CountingOracle reads whole prompts: ids [B, >= {self.task.prompt_len}], got {tuple(ids.shape)}")
        B, T = ids.shape
        P, n = self.task.prompt_len, min(self.task.n, ids.shape[1] - self.task.prompt_len + 1)
        logits = torch.zeros(B, T, self.vocab_size, device=ids.device)
        gold = self.task.gold(ids[:, :P].cpu())[:, :n].to(ids.device)            # true counts s_1..s_n
        rows = torch.arange(B, device=ids.device)[:, None]
        cols = torch.arange(P - 1, P - 1 + n, device=ids.device)[None, :]
        logits[rows, cols, gold] = self.strength
        return logits


def counting_context(task, ids: torch.Tensor, prev: int, increment: int) -> torch.Tensor:
    """Bool [B,T] for a RunningSumTask row (or a prefix of one): True at logit position t in the
    answer (t = P-1 .. P+n-2, predicting count k = t-P+2) when the count READ at t (0 at <sep>) is
    `prev` and the increment a_k is `increment`: the places where the correct next count is
    (prev + increment) mod modulus."""
    ids = token_ids(ids, "ids")
    if ids.dim() != 2:
        raise ContractError(f"ids must be [B,T], got {tuple(ids.shape)}")
    prev, inc = count(prev, "prev", minimum=0), count(increment, "increment", minimum=0)
    if prev >= task.modulus or inc >= task.max_step:
        raise ContractError(f"need prev < {task.modulus} and increment < {task.max_step}, got {prev}, {inc}")
    B, T = ids.shape
    P, n = task.prompt_len, task.n
    out = torch.zeros(B, T, dtype=torch.bool, device=ids.device)
    if T < P:
        return out
    a = task.values(ids[:, 1:n + 1]).to(ids.device)                       # increments a_1..a_n
    read = torch.zeros(B, 1, dtype=torch.long, device=ids.device)        # count read at t = P-1 (<sep>): 0
    if T > P:
        read = torch.cat([read, task.values(ids[:, P:]).to(ids.device)], 1)   # then the counts written so far
    last = min(T, P - 1 + n)                                              # logit positions that predict a count
    k = torch.arange(P - 1, last, device=ids.device) - (P - 1)           # 0-based index of the predicted count
    out[:, P - 1:last] = read[:, :last - P + 1].eq(prev) & a[:, k].eq(inc)
    return out


@torch.no_grad()
def sequence_data(teacher, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                  generator: torch.Generator | None = None) -> list[dict]:
    """Sequence-level distillation data: the teacher continues each prompt (temperature 0 = greedy,
    1 = a sample from its own distribution); each output becomes an SFT example whose prompt tokens
    are context (labels -100). Prompts are grouped by length, so no padding enters the teacher."""
    temp = _temperature(temperature)
    n = count(max_new_tokens, "max_new_tokens")
    if not prompts:
        raise ContractError("prompts is empty; fix: pass at least one prompt (a list of token ids)")
    out: list[dict | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) < 1:
            raise ContractError(f"prompt {i} is empty; fix: start every prompt with <bos>")
        by_len.setdefault(len(p), []).append(i)
    for L, idx in sorted(by_len.items()):
        rows = sample_rollouts(teacher, torch.tensor([list(prompts[i]) for i in idx]), n, temp, generator).cpu()
        for i, r in zip(idx, rows.tolist()):
            out[i] = completion_example(r[:L], r[L:])
    return out  # type: ignore[return-value]


@torch.no_grad()
def overconfidence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean over positions of max_v p_S(v) - p_T(argmax_v p_S): how much more the student trusts its
    top token than the teacher's true distribution does (0 = calibrated against the teacher)."""
    s, t = tensor(student_logits, "student_logits"), tensor(teacher_logits, "teacher_logits")
    same_shape(s, t, ("student_logits", "teacher_logits"))
    ps, pt = s.float().softmax(-1), t.float().softmax(-1)
    conf, top = ps.max(-1)
    gap = conf - pt.gather(-1, top[..., None])[..., 0]
    if mask is None:
        return float(gap.mean())
    m = binary_mask(tensor(mask, "mask"), "mask").bool().to(gap.device)
    if m.shape != gap.shape or not bool(m.any()):
        raise ContractError(f"mask must be {tuple(gap.shape)} with at least one True, got {tuple(m.shape)}")
    return float(gap[m].mean())


def distinct_pairs(examples: Sequence[dict]) -> int:
    """Number of distinct (token, next token) pairs among the supervised targets of SFT examples."""
    pairs = set()
    for ex in examples:
        ids, labels = ex["input_ids"], ex["labels"]
        for t in range(1, len(ids)):
            if labels[t] != -100:
                pairs.add((ids[t - 1], ids[t]))
    return len(pairs)
