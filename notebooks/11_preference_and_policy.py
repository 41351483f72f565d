# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Preferences and policies: the target is a whole answer
#
# **What you will see.** After supervised fine-tuning, the training signal stops being "the next
# token is *x*" and becomes "this answer beats that one" or "this answer earned reward *r*". The
# model class does not change; the records, the masks and the objective do. In a tiny world whose
# correct answers and judges are known exactly we measure:
#
# 1. preference records that carry their provenance, and a loader that refuses a broken file;
# 2. sequence log-probabilities over response tokens only, with the causal shift, and a pair check
#    that refuses chosen/rejected answers rendered from different prompts;
# 3. a Bradley-Terry reward model and its held-out accuracy against the best possible accuracy;
# 4. DPO against a frozen reference: the implicit reward margins rise, and the loss is exactly
#    $-\log\sigma(\beta\Delta)$;
# 5. summed vs length-normalised log-probs: at the same β they are not equally strong, so we
#    compare them at the same distance from the reference;
# 6. offline vs on-policy: the same update and the same judge, on an old generator's answers or on
#    the policy's own;
# 7. a flawed evaluator: the proxy reward climbs while the true reward falls, and a KL penalty holds it back.
#
# Every number that supports a statement is printed by a `CLAIM`, `CHECK` or `COMPARE` line
# (`labkit.claims`); comparisons run over several seeds with a two-sided verdict.
#
# **Runtime:** about 40 s on a laptop CPU (2 cores).

# %%
import copy
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import labkit
from labkit import IGNORE
from labkit.batch import collate
from labkit.checks import ContractError, trained_targets
from labkit.claims import check, claim, compare, summary
from labkit.predict import ask, reveal, verdict_choices, verdict_of
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.paradigms.preference import (AnswerWorld, RewardModel, assert_same_prompt, batch_logprob,
                                         bradley_terry_loss, build_pair, chat_example, collate_pairs, dpo_loss,
                                         expected_pair_accuracy, implicit_rewards, load_preferences, pair_accuracy,
                                         policy_gradient_fit, rollout, sample_log_ratios, sequence_logprob)
from labkit.exercises.preference import check_dpo_loss, check_sequence_logprob
from labkit.train import fit
from labkit.viz import contract_text
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()
world = AnswerWorld(tokenizer=tok)

# %% [markdown]
# ## 1. Preference records carry their provenance
#
# A preference pair $(x, y^+, y^-)$ says that for prompt $x$ the answer $y^+$ was preferred to
# $y^-$. Which pairs exist depends on *how the candidates were sampled* and *who judged them*, so
# a record that keeps only the three texts cannot tell a later reader whether DPO corrects the
# model or fits an old generator's habits. Ours also store the generator policy, its sampling
# temperature and top-p, the judge, and the chat-template and tokenizer versions the ids are meant for.
#
# The world: a prompt asks for the digit that belongs to a key ("C ?"; the answer is known). The
# candidate generator, an imperfect SFT model, is right half of the time and, when right, tends to
# add filler words ("3 good and the"). The judge only checks correctness. `data/preferences.jsonl`
# was written by `labkit.paradigms.preference.write_preferences()` (seed 0).

# %%
records = load_preferences()
print(f"{len(records)} records; one of them:")
print(json.dumps(records[1].to_dict(), indent=1))
n_words = lambda text: len(text.split())  # noqa: E731
longer = sum(n_words(r.chosen) > n_words(r.rejected) for r in records) / len(records)
shorter = sum(n_words(r.chosen) < n_words(r.rejected) for r in records) / len(records)
mean_len = {side: sum(n_words(getattr(r, side)) for r in records) / len(records) for side in ("chosen", "rejected")}
print(f"chosen longer than rejected in {longer:.2f} of pairs, shorter in {shorter:.2f}; mean words: "
      f"chosen {mean_len['chosen']:.2f}, rejected {mean_len['rejected']:.2f}")
claim("11.chosen_longer", longer, above=shorter, text="share of pairs whose chosen answer is the longer one",
      control="share whose chosen answer is the shorter one", control_value=shorter)

# %% [markdown]
# `load_preferences` validates **every** line before it returns anything, so a half-valid file
# is never half-used. Three broken files: a missing field, an ill-typed field, a malformed line.

# %%
good = [json.dumps(r.to_dict()) for r in records[:4]]
missing = json.loads(good[2]); missing.pop("judge_source")
typed = json.loads(good[1]); typed["sampling_temperature"] = "hot"
broken = {"missing field": good[:2] + [json.dumps(missing)] + good[3:],
          "ill-typed field": [good[0], json.dumps(typed)] + good[2:],
          "malformed JSON": good[:3] + [good[3][:-5]]}
messages = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, lines in broken.items():
        path = Path(tmp) / "prefs.jsonl"
        path.write_text("\n".join(lines) + "\n")
        try:
            load_preferences(path)
        except ContractError as err:
            messages[name] = str(err)
            print(f"{name:>16}: {err}")
assert "line 3" in messages["missing field"] and "'judge_source'" in messages["missing field"]
assert "line 2" in messages["ill-typed field"] and "'sampling_temperature'" in messages["ill-typed field"]
assert "line 4" in messages["malformed JSON"]
print("each broken file is refused with its line number and field")

# %% [markdown]
# ## 2. From a record to tensors: response tokens only
#
# Each answer is rendered in the lab's chat format, "<user> C ? <assistant> 3 good <eos>". The
# response mask marks the answer and its <eos>. The policy's score of an answer is
#
# $$\log\pi(y\mid x) = \sum_{t\in\mathcal R(y)} \log\pi(y_t\mid x, y_{<t}),$$
#
# with $\mathcal R(y)$ the response positions only. `sequence_logprob` uses the alignment of
# `causal_lm_loss(shift=True)`: the logit at position *t* scores token *t+1*.

# %%
pair = build_pair(records[1], tok)
chosen = {"input_ids": torch.tensor([pair["chosen_ids"]]),
          "labels": torch.tensor([[i if m else IGNORE for i, m in zip(pair["chosen_ids"], pair["chosen_mask"])]])}
print(contract_text(chosen, tokenizer=tok))
print("response_mask:", pair["chosen_mask"], "| prompt length", pair["prompt_len"])

# %% [markdown]
# Which logits does the sequence log-prob depend on? As in notebook 03, feed all-zero logits and
# read the gradient: the logits before the last prompt position get none, and logit *t* is pulled
# towards token *t+1*.

# %%
ids = torch.tensor([pair["chosen_ids"]])
mask = torch.tensor([pair["chosen_mask"]])
targets = trained_targets(lambda z, y: -sequence_logprob(z, y, mask).sum(), ids, len(tok))
for t, target in enumerate(targets):
    print(f"  logit {t} (has read {tok.token(ids[0, t]):>11}) -> {'-' if target is None else tok.token(target)}")
start = pair["prompt_len"]
assert all(target is None for target in targets[:start - 1]), "no prompt token is scored"
assert targets[start - 1:-1] == ids[0, start:].tolist(), "logit t scores token t+1 over the whole response"
print("only the response tokens are scored, each by the logit just before it")

# %% [markdown]
# Chosen and rejected must share the identical prompt (same template, same tokens), or the loss
# compares two questions instead of two answers. The check refuses a pair whose rejected answer was
# rendered with another template (here: without the `<assistant>` marker), and a record made for
# another tokenizer.

# %%
c_ids, c_mask = chat_example(tok, "C ?", "3 good")
other_ids = [tok.user_id] + tok.encode("C ?") + tok.encode("5") + [tok.eos_id]   # no <assistant> marker
other_mask = [0, 0, 0, 1, 1]
try:
    assert_same_prompt(c_ids, c_mask, other_ids, other_mask)
except ContractError as err:
    print("ContractError:", err)
try:
    build_pair(dataclasses.replace(records[0], tokenizer_version="gpt2-50257"), tok)
except ContractError as err:
    print("ContractError:", err)

# %% [markdown]
# ## 3. A reference policy and a Bradley-Terry reward model
#
# First the reference policy that every later section starts from: SFT of a TinyCausalLM on
# answers sampled from the generator that produced the candidates (the records'
# `generator_policy`), prompt tokens masked. It is right about half of the time, like its data.

# %%
def lm_loss(model, batch):
    logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return causal_lm_loss(logits, batch.labels)


sft_data = world.sft_examples(2000, seed=SEED)
torch.manual_seed(SEED)
reference = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=16)
sft_hist = fit(reference, lambda s: collate(sft_data[(s * 64) % 2000:][:64], tok.pad_id), lm_loss, steps=150,
               lr=3e-3, desc="SFT reference")
reference.requires_grad_(False)
print(f"SFT reference: loss {sft_hist.first_last(10)[0]:.2f} -> {sft_hist.first_last(10)[1]:.2f}")

# %% [markdown]
# Bradley-Terry models the judge as $P(y^+ \succ y^-\mid x) = \sigma(r(x,y^+) - r(x,y^-))$; a reward
# model $r_\phi$ is trained with $-\log\sigma(r_\phi(x,y^+) - r_\phi(x,y^-) - m)$. Ours is a tiny
# causal transformer with a linear head on the last token, started from the SFT reference (as
# InstructGPT's reward models were): it begins with what the policy knows about the task.
# Because the judge is known ($P = \sigma(2\cdot[\text{correct}^+ - \text{correct}^-])$), so is the best possible held-out
# accuracy: $\mathbb E[\max(P, 1-P)]$. Pairs where both answers are right (or both wrong) are coin
# flips for the judge; this set dropped them (the judge saw no difference), so every pair has
# exactly one right answer and the ceiling is $\sigma(2)$ (the `CHECK` below). Knowing the judge
# also lets us score the reward model against the judge's probabilities instead of its sampled labels
# (ranking $y^+$ first earns $P$, ranking $y^-$ first earns $1-P$): its *expected* accuracy, free of
# the label noise of a few hundred held-out pairs. We report how much of the way from chance (0.5) to
# the ceiling it gets.

# %%
pairs = [build_pair(r, tok) for r in records]
N_TRAIN = 600
train_idx, held_idx = list(range(N_TRAIN)), list(range(N_TRAIN, len(records)))
held = collate_pairs([pairs[i] for i in held_idx], tok.pad_id)
held = {k: v.to(DEVICE) for k, v in held.items()}


def pair_batches(indices, batch_size, offset=0, seed=SEED):
    """step -> a batch of batch_size random pairs from `indices` (chosen rows first, then rejected)."""
    def get(step):
        g = torch.Generator().manual_seed(seed * 100_000 + offset + step)
        pick = [indices[i] for i in torch.randint(len(indices), (batch_size,), generator=g).tolist()]
        batch = collate_pairs([pairs[i] for i in pick], tok.pad_id)
        batch["index"] = torch.tensor(pick)
        return batch
    return get


def bt_loss(model, batch, margin=0.0):
    r_chosen, r_rejected = model(batch["input_ids"], batch["attention_mask"]).chunk(2)
    return bradley_terry_loss(r_chosen, r_rejected, margin)


torch.manual_seed(SEED)
reward_model = RewardModel.from_policy(reference)
rm_hist = fit(reward_model, pair_batches(train_idx, 64), bt_loss, steps=200, lr=1.5e-3, desc="reward model")
with torch.no_grad():
    r_c, r_r = reward_model(held["input_ids"], held["attention_mask"]).cpu().chunk(2)
    ref_held = batch_logprob(reference, held).cpu()
p_judge = [world.preference_probability(records[i].prompt, records[i].chosen, records[i].rejected) for i in held_idx]
ceiling = sum(max(p, 1 - p) for p in p_judge) / len(p_judge)
rm_expected = expected_pair_accuracy(r_c, r_r, p_judge)
print(f"reward model: loss {rm_hist.first_last(10)[0]:.2f} -> {rm_hist.first_last(10)[1]:.2f}; held-out accuracy "
      f"{pair_accuracy(r_c, r_r):.2f} on the sampled labels, {rm_expected:.3f} expected")
check("11.bt_ceiling", ceiling, 1 / (1 + math.exp(-2)), 1e-9, text="best possible held-out accuracy (every pair: one right answer)")
claim("11.rm_accuracy", (rm_expected - 0.5) / (ceiling - 0.5), above=0.6,
      text="reward model: share of the way from chance to the ceiling (expected held-out accuracy)",
      control="the SFT policy's own preference (summed log pi)",
      control_value=(expected_pair_accuracy(*ref_held.chunk(2), p_judge) - 0.5) / (ceiling - 0.5))

# %% [markdown]
# The SFT policy's own score, $\log\pi(y\mid x)$, ranks the held-out pairs about as well as a coin,
# but not because it ignores the answers: every extra token costs log-probability, so a summed score
# leans towards short answers. Among held-out pairs whose answers differ in length, we count how often
# it prefers the **shorter** one: more often than a coin would, and far more often than the
# length-blind judge does (its chosen answer is the shorter one). The per-token mean is printed for
# comparison.

# %%
n_held = len(held_idx)
lengths = held["response_mask"].sum(-1).cpu()
with torch.no_grad():
    ref_held_mean = batch_logprob(reference, held, reduction="token_mean").cpu()
differ = lengths[:n_held] != lengths[n_held:]
chosen_shorter = (lengths[:n_held] < lengths[n_held:])[differ]


def prefers_shorter(scores):
    """Share of different-length pairs in which `scores` ([2N], chosen rows first) rank the shorter answer higher."""
    prefers_chosen = (scores[:n_held] > scores[n_held:])[differ]
    return float(prefers_chosen.eq(chosen_shorter).float().mean())


judge_shorter = float(chosen_shorter.float().mean())
print(f"{int(differ.sum())} held-out pairs differ in length")
claim("11.sum_favours_short", prefers_shorter(ref_held), above=0.5,
      text="summed log pi of the SFT policy: share of pairs where it prefers the shorter answer (threshold: a coin)",
      control="the judge (correctness only)", control_value=judge_shorter)
print(f"the per-token mean log pi prefers the shorter answer in {prefers_shorter(ref_held_mean):.2f} of them")

# %% [markdown]
# **The margin option.** `bradley_terry_loss(..., margin=m)` subtracts *m* inside the sigmoid
# (trl's RewardTrainer does the same with a per-pair margin, e.g. from how strongly raters agreed):
# a pair that is ranked right by less than *m* still has a loss, and a gradient, that pushes the
# gap wider. The loss and its gradient for a few reward gaps:

# %%
print(f"{'gap r+ - r-':>12}{'loss m=0':>10}{'loss m=1':>10}{'grad m=0':>10}{'grad m=1':>10}")
worst = 0.0
for gap in [-2.0, 0.0, 0.5, 1.0, 3.0]:
    row = []
    for m in (0.0, 1.0):
        g = torch.tensor([gap], requires_grad=True)
        loss = bradley_terry_loss(g, torch.zeros(1), margin=m)
        loss.backward()
        row += [float(loss.detach()), float(g.grad)]
        worst = max(worst, abs(row[-2] - float(F.softplus(torch.tensor(m - gap)))))   # -log sigma(gap - m) = softplus(m - gap)
    print(f"{gap:>12.1f}{row[0]:>10.3f}{row[2]:>10.3f}{row[1]:>10.3f}{row[3]:>10.3f}")
check("11.bt_margin_formula", worst, 0.0, 1e-6, text="max |bradley_terry_loss - softplus(m - gap)| over the table")

# %% [markdown]
# ## 4. DPO against a frozen reference
#
# DPO skips the reward model: with $\Delta = [\log\pi(y^+) - \log\pi_\text{ref}(y^+)] - [\log\pi(y^-) - \log\pi_\text{ref}(y^-)]$,
#
# $$\mathcal L_\text{DPO} = -\log\sigma(\beta\,\Delta),$$
#
# and $\beta[\log\pi(y) - \log\pi_\text{ref}(y)]$ is the *implicit reward* of an answer. The
# reference log-probs are computed once, without gradient. Every DPO run below starts from the
# same reference and sees the same batches for a given seed; the later sections repeat it over
# `SEEDS` (the batch order and the sampling change, the data and the reference do not).

# %%
everything = {k: v.to(DEVICE) for k, v in collate_pairs(pairs, tok.pad_id).items()}   # all chosen rows, then all rejected
with torch.no_grad():
    ref_logps = {"sum": batch_logprob(reference, everything), "mean": batch_logprob(reference, everything, reduction="token_mean")}
N = len(pairs)
correct_of = lambda r, side: world.parse(r.prompt, getattr(r, side))[0]  # noqa: E731
BETA, DPO_STEPS, DPO_LR = 0.3, 80, 4.5e-4
SEEDS = [SEED + i for i in range(4)]
pair_correct = torch.tensor([[correct_of(r, "chosen"), correct_of(r, "rejected")] for r in records], dtype=torch.float)
pair_fillers = torch.tensor([[n_words(r.chosen) - 1, n_words(r.rejected) - 1] for r in records], dtype=torch.float)


def train_dpo(kind, beta=BETA, seed=SEED, states=None):
    """DPO from the reference; kind 'sum' (log pi(y|x)) or 'mean' (per-token average). `states` collects, per
    step, the answers it trains on (correct share, filler words, log pi per token under the current policy)."""
    policy = copy.deepcopy(reference).requires_grad_(True)
    ref_c, ref_r = ref_logps[kind][:N], ref_logps[kind][N:]

    def loss_fn(model, batch):
        logps = batch_logprob(model, batch, reduction="token_mean" if kind == "mean" else "sum")
        pi_c, pi_r = logps.chunk(2)
        idx = batch["index"]
        if states is not None:
            total = batch_logprob(model, batch) if kind == "mean" else logps
            states.append({"correct": float(pair_correct[idx.cpu()].mean()), "fillers": float(pair_fillers[idx.cpu()].mean()),
                           "logp_per_token": float(total.detach().sum() / batch["response_mask"].sum())})
        return dpo_loss(pi_c, pi_r, ref_c[idx], ref_r[idx], beta=beta)

    fit(policy, pair_batches(train_idx, 32, offset=50_000, seed=seed), loss_fn, steps=DPO_STEPS, lr=DPO_LR,
        desc=f"DPO {kind} beta {beta:.2f}")
    return policy


def held_margins(policy, kind):
    with torch.no_grad():
        logps = batch_logprob(policy, everything, reduction="token_mean" if kind == "mean" else "sum")
    rewards = implicit_rewards(logps, ref_logps[kind], BETA).cpu()
    chosen_r, rejected_r = rewards[:N][held_idx], rewards[N:][held_idx]
    return float((chosen_r - rejected_r).mean()), pair_accuracy(chosen_r, rejected_r)


dpo_states = []
policies = {"sum": train_dpo("sum", states=dpo_states)}
margin_before = held_margins(reference, "sum")
margin_after = held_margins(policies["sum"], "sum")
print(f"held-out implicit reward margin: {margin_before[0]:.2f} before (policy = reference) -> {margin_after[0]:.2f} after")

# %% [markdown]
# **Check the loss against the formula.** Recompute $-\log\sigma(\beta\Delta)$ by hand from the
# four log-probs of a held-out batch (and, at the start, the loss is $\log 2$ because $\Delta = 0$).

# %%
with torch.no_grad():
    pi = batch_logprob(policies["sum"], held)
    pi_c, pi_r = pi.chunk(2)
    ref_c, ref_r = ref_logps["sum"][:N][held_idx], ref_logps["sum"][N:][held_idx]
    by_hand = -torch.log(torch.sigmoid(BETA * ((pi_c - ref_c) - (pi_r - ref_r)))).mean()
    library = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=BETA)
    at_start = dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=BETA)
check("11.dpo_loss_formula", float(library - by_hand), 0.0, 1e-5, text="dpo_loss - (-log sigma(beta * delta)) by hand")
check("11.dpo_loss_at_start", float(at_start), math.log(2), 1e-5, text="DPO loss at pi = ref", fmt=".6f")
claim("11.dpo_margin", margin_after[0], above=margin_before[0] + 0.5, text="held-out implicit reward margin after DPO",
      control="before DPO (policy = reference)", control_value=margin_before[0])
claim("11.dpo_ranks_pairs", margin_after[1], above=0.6, text="share of held-out pairs the implicit reward ranks right")

# %% [markdown]
# ## 5. Summed or length-normalised log-probs: compare at the same distance
#
# DPO's derivation scores the event "the policy writes exactly this answer", $\log\pi(y\mid x)$, a
# **sum** over tokens. A common alternative divides by the number of response tokens
# (`reduction="token_mean"`; trl's `sigmoid_norm` and the length-normalised DPO of Tulu 3; SimPO uses the same
# average without a reference). What the choice changes in the objective:
#
# | | implicit reward | weight of each response token in the gradient | what the optimum satisfies |
# |---|---|---|---|
# | sum | $\beta\log\frac{\pi}{\pi_\text{ref}}(y)$ | 1 | $\beta\log\frac{\pi}{\pi_\text{ref}}(y) = r(y) + c$ |
# | mean | $\frac{\beta}{\lvert y\rvert}\log\frac{\pi}{\pi_\text{ref}}(y)$ | $1/\lvert y\rvert$ | $\log\frac{\pi}{\pi_\text{ref}}(y) = \lvert y\rvert\,\frac{r(y)+c}{\beta}$ |
#
# The table shows the catch: dividing by $\lvert y\rvert$ also divides the implicit reward, so at the
# **same** β the mean objective is pulled towards the reference several times more weakly (β acts
# like $\beta/\lvert y\rvert$). Comparing the two at one β compares two regularisation strengths, not
# two length treatments (eric-mitchell/direct-preference-optimization#48: with the average, β must
# grow with the length). So we measure the distance to the reference directly: the KL estimate
# $\mathbb E_{y\sim\pi}[\log\pi(y) - \log\pi_\text{ref}(y)]$ on sampled answers, in nats.
#
# Three arms, each over `SEEDS` with the same data, batches, steps and learning rate: the sum at
# β = 0.3, the mean at the same β, and the mean at β × the mean response length in tokens (the
# rule of thumb from that thread).

# %% [markdown]
# **The panel.** One pair, a long chosen answer and a short rejected one, with small per-token
# log-ratios. Toggle sum/mean and move β: the bars are each token's push (the gradient of the loss
# with respect to that token's log-prob).
#
# Under it, **what the model learns** in that state: the reference above trained with DPO at that β
# and reduction, with this section's recipe (the same 600 training pairs and batch order, 80 steps,
# the same learning rate), measured like the arms below on 400 sampled answers: KL to the reference,
# filler words and tokens per answer, the right-answer rate, and the share of answers by number of
# filler words next to the reference's. The slider stops at the β values that have a stored run
# (`make panel-data`, first seed); the two runs at β = 0.3 are the first-seed sum and mean runs of
# this section. The button "train this state now" retrains the selected state live.

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import DPO_BETAS, DPOWeightsPanel, render_dpo_weights, stored_runs  # noqa: E402

DPOWeightsPanel().ui()

# %% [markdown]
# The panel's two states as text (β = 0.3), then what its stored runs measured for every state:

# %%
for reduction in ("sum", "token_mean"):
    print(render_dpo_weights(BETA, reduction)["text"])
panel_runs = stored_runs("dpo")["runs"]
print(f"\nstored panel runs (seed {panel_runs['0.3/sum']['seed']}), 400 sampled answers each")
print(f"{'beta':>5} {'reduction':<11}{'KL (nats)':>10}{'filler words':>14}{'right':>7}")
for beta in DPO_BETAS:
    for reduction in ("sum", "token_mean"):
        m = panel_runs[f"{beta:g}/{reduction}"]["metrics"]
        print(f"{beta:>5g} {reduction:<11}{m['KL to the reference on sampled answers (nats)']:>10.2f}"
              f"{m['filler words per answer']:>14.2f}{m['right-answer rate']:>7.2f}")

# %%
eval_prompts = [world.prompt(k) for k in world.KEYS] * 40


def answer_stats(policy, seed=SEED):
    """400 sampled answers (temperature 1): correct share, filler words, true reward, and the KL estimate
    mean(log pi - log ref) in nats."""
    out = rollout(policy, tok, eval_prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(1000 + seed))
    parsed = [world.parse(p, r) for p, r in zip(eval_prompts, out["responses"])]
    return {"correct": sum(c for c, _ in parsed) / len(parsed), "fillers": sum(n for _, n in parsed) / len(parsed),
            "true_reward": sum(world.true_reward(p, r) for p, r in zip(eval_prompts, out["responses"])) / len(parsed),
            "kl": float(sample_log_ratios(policy, reference, out).mean())}


mean_len = float(everything["response_mask"].sum() / len(everything["response_mask"]))   # tokens per answer
ARMS = {"sum": ("sum", BETA), "mean": ("mean", BETA), "mean, rule": ("mean", BETA * mean_len)}
runs = {name: [] for name in ARMS}
for seed in SEEDS:
    for name, (kind, beta) in ARMS.items():
        policy = policies["sum"] if (name == "sum" and seed == SEED) else train_dpo(kind, beta, seed)
        runs[name].append(answer_stats(policy, seed))
reference_stats = answer_stats(reference)
avg = lambda name, key: sum(r[key] for r in runs[name]) / len(runs[name])  # noqa: E731
print(f"mean response length {mean_len:.2f} tokens")
print(f"{'arm':<12}{'beta':>6}{'KL (nats)':>11}{'filler words':>14}{'correct':>9}   (means over seeds {SEEDS})")
print(f"{'reference':<12}{'':>6}{0.0:>11.2f}{reference_stats['fillers']:>14.2f}{reference_stats['correct']:>9.2f}")
for name, (kind, beta) in ARMS.items():
    print(f"{name:<12}{beta:>6.2f}{avg(name, 'kl'):>11.2f}{avg(name, 'fillers'):>14.2f}{avg(name, 'correct'):>9.2f}")

# %% [markdown]
# **At the same β.** Both objectives make answers longer than the reference's: right answers are
# the longer ones in this data (`11.chosen_longer`), so pushing up the chosen side lengthens. The
# mean objective ends **farther** from the reference and lengthens more: the weaker pull, measured.

# %%
claim("11.dpo_lengthens", avg("sum", "fillers"), above=reference_stats["fillers"],
      text="filler words per answer after DPO (sum, mean over seeds)", control="the reference", control_value=reference_stats["fillers"])
same_beta = ["data: the same 600 pairs and batch order per seed", f"steps {DPO_STEPS}, lr {DPO_LR}, 32 pairs a batch",
             "start: the same SFT reference", "beta 0.3 (the same value; the effective pull differs)"]
compare("11.same_beta_kl", [r["kl"] for r in runs["mean"]], [r["kl"] for r in runs["sum"]], seeds=SEEDS,
        arms=("mean", "sum"), metric="KL to the reference on sampled answers, nats", higher_is_better=False,
        expect="A worse", matched_on=same_beta)
compare("11.same_beta_fillers", [r["fillers"] for r in runs["mean"]], [r["fillers"] for r in runs["sum"]], seeds=SEEDS,
        arms=("mean", "sum"), metric="filler words per sampled answer", higher_is_better=False,
        expect="A worse", matched_on=same_beta)

# %% [markdown]
# **At the same distance.** Is the extra length a property of the normalisation, or just of having
# moved farther? The rule of thumb β × mean length only approximates the distance (compare its KL
# with the sum's in the table), so we do not rely on it: the two mean runs of each seed (β = 0.3 and
# the rule) serve as two points, and we read the mean objective's filler count **at the sum run's
# KL** by interpolating between them (linear in log KL). Differences below a quarter of a filler word
# per answer count as none (`min_effect`).

# %%
def at_kl(kl, a, b, key="fillers"):
    """`key` of an objective at distance `kl`, interpolated linearly in log KL between its runs a and b."""
    w = (math.log(kl) - math.log(a["kl"])) / (math.log(b["kl"]) - math.log(a["kl"]))
    return a[key] + w * (b[key] - a[key])


mean_at_sum_kl = [at_kl(s["kl"], a, b) for s, a, b in zip(runs["sum"], runs["mean"], runs["mean, rule"])]
compare("11.matched_kl_fillers", mean_at_sum_kl, [r["fillers"] for r in runs["sum"]], seeds=SEEDS,
        arms=("mean at the sum's KL", "sum"), metric="filler words per sampled answer", higher_is_better=False,
        expect="no detectable difference", min_effect=0.25,
        matched_on=["KL to the reference (the mean objective read at the sum run's KL, per seed)",
                    "data and batch order per seed", f"steps {DPO_STEPS}, lr {DPO_LR}", "start: the same SFT reference"])

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for name, marker in [("sum", "o"), ("mean", "s"), ("mean, rule", "^")]:
    ax.scatter([r["kl"] for r in runs[name]], [r["fillers"] for r in runs[name]], marker=marker, label=f"{name}, beta {ARMS[name][1]:.2f}")
ax.scatter([0], [reference_stats["fillers"]], color="k", marker="x", label="reference")
ax.set_xlabel("KL to the reference on sampled answers (nats)")
ax.set_ylabel("filler words per answer")
ax.set_title("Length follows the distance from the reference", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Claim.** At one β the normalised objective moves farther from the reference and writes longer
# answers; at the same distance from the reference, its answers are as long as the sum's (within the
# interval above). Here the normalisation acts mostly through the strength of the pull; whether it
# also shifts length at a fixed distance on data where chosen answers are much longer (SimPO's
# motivation, princeton-nlp/SimPO#20) is a hypothesis this world does not test. Record which
# objective a run used **and** its β, or better its KL to the reference, next to the data's length
# statistics (eric-mitchell/direct-preference-optimization#40, allenai/open-instruct#483).

# %% [markdown]
# ## 6. Offline vs on-policy
#
# DPO trains on a fixed set of pairs that an *old* policy sampled: as the policy moves, those
# answers become answers it would no longer write (stale states). An on-policy loop samples from
# the **current** policy, scores its answers, and takes a policy-gradient step with group-normalised
# advantages, $A_i = (r_i - \bar r_\text{group}) / \text{std}_\text{group}$: 8 answers per prompt,
# the other answers to the same prompt are the baseline.
#
# To isolate where the answers come from, both arms use the **same update** (that policy gradient),
# the **same judge** (the one that labelled the pairs: right or wrong, length ignored), the same
# start, steps, learning rate and 64 answers a step. The only difference: the offline arm trains on
# answers drawn from the old generator that wrote the pairs (`world.generator_batch`), the
# on-policy arm on its own samples. DPO on the fixed pairs is plotted alongside.

# %%
def parse_stat(i):
    return lambda prompt, response: float(world.parse(prompt, response)[i])


def sample_keys(g, n=8):
    return [world.prompt(world.KEYS[i]) for i in torch.randint(len(world.KEYS), (n,), generator=g).tolist()]


first, last = lambda h, k: sum(s[k] for s in h[:5]) / 5, lambda h, k: sum(s[k] for s in h[-5:]) / 5  # noqa: E731
SOURCES = {"on-policy": None, "offline": world.generator_batch}
pg_runs, pg_states = {name: [] for name in SOURCES}, {}
for seed in SEEDS:
    for name, sampler in SOURCES.items():
        policy = copy.deepcopy(reference).requires_grad_(True).to(DEVICE)
        states = policy_gradient_fit(policy, tok, sample_keys, world.judge_score, iters=40, lr=1e-3, seed=seed,
                                     sampler=sampler, track={"correct": parse_stat(0), "fillers": parse_stat(1)})
        pg_states.setdefault(name, states)      # the first seed's training states, for the plot
        pg_runs[name].append({**answer_stats(policy, seed), "fresh": last(states, "logp_per_token")})

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, key, title in zip(axes, ["correct", "fillers", "logp_per_token"],
                          ["share of trained answers that are right", "filler words in trained answers",
                           "log pi per token of trained answers"]):
    ax.plot([s[key] for s in dpo_states], label="DPO (fixed pairs)")
    ax.plot([s[key] for s in pg_states["offline"]], label="policy gradient, offline answers")
    ax.plot([s[key] for s in pg_states["on-policy"]], label="policy gradient, own samples")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Claim.** The offline answers never change: DPO's batches are half right by construction (each
# pair holds one right and one wrong answer, a `CHECK`, not a finding), and the policy's
# log-probability of them drops as it moves away. The on-policy arm trains on what the policy
# currently writes: its trained answers become right and stay likely. With the same update and the
# same judge, it ends with more right answers than the offline arm.

# %%
print(f"{'trained answers':<22}{'DPO first':>10}{'DPO last':>10}{'offline last':>14}{'on-pol first':>14}{'on-pol last':>13}")
for key in ["correct", "fillers", "logp_per_token"]:
    print(f"{key:<22}{first(dpo_states, key):>10.2f}{last(dpo_states, key):>10.2f}{last(pg_states['offline'], key):>14.2f}"
          f"{first(pg_states['on-policy'], key):>14.2f}{last(pg_states['on-policy'], key):>13.2f}")
check("11.dpo_batches_half_right", sum(s["correct"] for s in dpo_states) / len(dpo_states), 0.5, 1e-9,
      text="share of right answers in DPO's batches (one right answer per pair, by construction)")
claim("11.dpo_pairs_go_stale", last(dpo_states, "logp_per_token") - first(dpo_states, "logp_per_token"), below=-0.3,
      text="change of log pi per token of DPO's trained answers, first -> last 5 steps")
claim("11.onpolicy_states_right", last(pg_states["on-policy"], "correct"), above=0.85,
      text="share of right answers among the on-policy arm's trained answers, last 5 steps",
      control="offline arm", control_value=last(pg_states["offline"], "correct"))
same_but_source = ["update: group-normalised policy gradient", "judge: the pairs' judge (right or wrong, length ignored)",
                   "start: the same SFT reference", "40 steps, lr 0.001, 8 prompts x 8 answers", "seeds (prompt draws)"]
compare("11.onpolicy_fresh", [r["fresh"] for r in pg_runs["on-policy"]], [r["fresh"] for r in pg_runs["offline"]],
        seeds=SEEDS, arms=("on-policy", "offline"), metric="log pi per token of the trained answers, last 5 steps",
        expect="A better", matched_on=same_but_source)
compare("11.onpolicy_correct", [r["correct"] for r in pg_runs["on-policy"]], [r["correct"] for r in pg_runs["offline"]],
        seeds=SEEDS, arms=("on-policy", "offline"), metric="share of right answers (400 samples)",
        expect="A better", matched_on=same_but_source)

# %% [markdown]
# ## 7. A flawed evaluator gets exploited
#
# Replace the judge by a cheap one with a loophole: it checks the answer *and* rewards
# "thoroughness", $0.5$ per extra word. Optimising that proxy hard, the policy learns to pad, and
# past a point to never stop (an answer without `<eos>` is not an answer; the true reward,
# right and concise, counts it wrong and charges every filler word). A KL penalty towards the
# reference, $r - \lambda[\log\pi(y) - \log\pi_\text{ref}(y)]$ on each sample, makes drifting away
# from the reference's habits expensive. Two arms, identical except for λ (0 or 0.3), over three
# seeds.

# %%
# NBVAL_IGNORE_OUTPUT
hack_q = ask("11.true_falls", "Optimising the proxy without a KL penalty: by how much does the TRUE reward change "
             "(last 5 steps minus first 5)?", number=(-4.0, 4.0, 0.25))

# %%
stops = lambda prompt, response: float(int(response[-1]) == tok.eos_id)  # noqa: E731
hack = {0.0: [], 0.3: []}
for kl in hack:
    for seed in SEEDS[:3]:
        policy = copy.deepcopy(reference).requires_grad_(True).to(DEVICE)
        hack[kl].append(policy_gradient_fit(policy, tok, sample_keys, world.proxy_reward, iters=30, lr=6e-4, kl_coef=kl,
                                            reference=reference, seed=seed + 1,
                                            track={"proxy": world.proxy_reward, "true": world.true_reward, "stops": stops}))

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 3.2))
for kl, style in [(0.0, "-"), (0.3, "--")]:
    ax.plot([s["proxy"] for s in hack[kl][0]], style, color="tab:orange", label=f"proxy reward, KL {kl}")
    ax.plot([s["true"] for s in hack[kl][0]], style, color="tab:blue", label=f"true reward, KL {kl}")
ax.set_xlabel("on-policy step")
ax.set_title("The proxy climbs while the true reward falls", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
for kl, hs in hack.items():
    h = hs[0]
    print(f"KL {kl}: proxy {first(h, 'proxy'):.2f} -> {last(h, 'proxy'):.2f} | true {first(h, 'true'):.2f} -> "
          f"{last(h, 'true'):.2f} | answers that stop {first(h, 'stops'):.2f} -> {last(h, 'stops'):.2f}")
free = hack[0.0][0]
claim("11.proxy_climbs", last(free, "proxy") - first(free, "proxy"), above=1.5, text="proxy reward gain without KL, first -> last 5 steps")
true_change = last(free, "true") - first(free, "true")
claim("11.true_falls", true_change, below=-1.0, text="true reward change without KL")
reveal(hack_q, true_change)
claim("11.hacked_never_stops", last(free, "stops"), below=0.5, text="share of answers that end with <eos>, last 5 steps",
      control="first 5 steps", control_value=first(free, "stops"))
only_kl = ["start: the same SFT reference", "proxy reward", "30 steps, lr 0.0006, 8 prompts x 8 answers",
           "seeds (prompt and answer draws)"]
compare("11.kl_keeps_true", [last(h, "true") for h in hack[0.3]], [last(h, "true") for h in hack[0.0]], seeds=SEEDS[:3],
        arms=("KL 0.3", "KL 0"), metric="true reward, last 5 steps", expect="A better", matched_on=only_kl)
compare("11.kl_keeps_close", [last(h, "kl") for h in hack[0.3]], [last(h, "kl") for h in hack[0.0]], seeds=SEEDS[:3],
        arms=("KL 0.3", "KL 0"), metric="KL to the reference of the sampled answers, last 5 steps, nats",
        higher_is_better=False, expect="A better", matched_on=only_kl)

# %% [markdown]
# ## 8. Try it
#
# **Exercise 1.** Write the sequence log-prob: given `logits` [B,T,V], `input_ids` [B,T] and a
# `response_mask` [B,T] (1 on response tokens, which follow the prompt), return $\log\pi(y\mid x)$
# per row, [B]. Remember which logit scores which token.

# %%
def my_sequence_logprob(logits, input_ids, response_mask):
    ### BEGIN SOLUTION
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logp * response_mask[:, 1:]).sum(-1)
    ### END SOLUTION


# %%
# CHECK: 11-sequence-logprob
check_sequence_logprob(my_sequence_logprob)
### BEGIN HIDDEN TESTS
for seed in (1, 2):
    check_sequence_logprob(my_sequence_logprob, seed=seed)
with torch.no_grad():
    mine = my_sequence_logprob(reference(held["input_ids"][:8]), held["input_ids"][:8], held["response_mask"][:8])
assert torch.allclose(mine, batch_logprob(reference, {k: v[:8] for k, v in held.items()}), atol=1e-4)
### END HIDDEN TESTS
print("exercise 1: your sequence log-probs match sequence_logprob")

# %% [markdown]
# **Exercise 2.** Write the DPO loss from the four [B] log-prob tensors and `beta`: the mean over
# pairs of $-\log\sigma(\beta\Delta)$, differentiable in the policy log-probs.

# %%
def my_dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta):
    ### BEGIN SOLUTION
    delta = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    return -F.logsigmoid(beta * delta).mean()
    ### END SOLUTION


# %%
# CHECK: 11-dpo-loss
check_dpo_loss(my_dpo_loss)
### BEGIN HIDDEN TESTS
for seed in (1, 2):
    check_dpo_loss(my_dpo_loss, seed=seed)
assert abs(float(my_dpo_loss(pi_c, pi_r, ref_c, ref_r, BETA)) - float(library)) < 1e-5
### END HIDDEN TESTS
print("exercise 2: your DPO loss matches -log sigma(beta * delta)")

# %% [markdown]
# ## Summary
#
# | measurement | what it shows |
# |---|---|
# | loader on broken files | every line validated; field and line named |
# | reward model vs ceiling | Bradley-Terry recovers a known judge; summed and mean log π each carry a length bias |
# | DPO margin, loss vs formula | implicit rewards separate held-out pairs; loss = $-\log\sigma(\beta\Delta)$ |
# | sum vs mean at one β, and at one KL | one β is not one strength; at the same distance from the reference the lengths agree |
# | offline vs on-policy (same update, same judge) | fixed answers go stale; own samples track the policy and end more often right |
# | proxy vs true reward, KL 0 vs 0.3 | an exploitable evaluator is exploited; the KL penalty keeps the policy near the reference |
#
# The ledger of this run (every `CLAIM`, `CHECK` and `COMPARE` above):

# %%
ledger_table = summary()
