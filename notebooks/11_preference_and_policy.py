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
# 5. summed vs length-normalised log-probs: the same data, a different objective, different lengths;
# 6. offline DPO on a fixed set vs an on-policy loop on the policy's own samples;
# 7. a flawed evaluator: the proxy reward climbs while the true reward falls, and a KL penalty holds it back.
#
# **Runtime:** about 30 s on a laptop CPU (2 cores).

# %%
import copy
import dataclasses
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import labkit
from labkit import IGNORE
from labkit.batch import collate
from labkit.checks import ContractError, trained_targets
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.paradigms.preference import (AnswerWorld, RewardModel, assert_same_prompt, batch_logprob,
                                         bradley_terry_loss, build_pair, chat_example, check_dpo_loss,
                                         check_sequence_logprob, collate_pairs, dpo_loss, implicit_rewards,
                                         load_preferences, pair_accuracy, policy_gradient_fit, rollout,
                                         sequence_logprob)
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
assert longer > shorter + 0.1, "in this set the preferred answer is usually the longer one"

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
print("claim holds: each broken file is refused with its line number and field")

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
print("claim holds: only the response tokens are scored, each by the logit just before it")

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
# exactly one right answer and the ceiling is $\sigma(2) = 0.88$.

# %%
pairs = [build_pair(r, tok) for r in records]
N_TRAIN = 600
train_idx, held_idx = list(range(N_TRAIN)), list(range(N_TRAIN, len(records)))
held = collate_pairs([pairs[i] for i in held_idx], tok.pad_id)
held = {k: v.to(DEVICE) for k, v in held.items()}


def pair_batches(indices, batch_size, offset=0):
    """step -> a batch of batch_size random pairs from `indices` (chosen rows first, then rejected)."""
    def get(step):
        g = torch.Generator().manual_seed(SEED * 100_000 + offset + step)
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
rm_hist = fit(reward_model, pair_batches(train_idx, 64), bt_loss, steps=100, lr=3e-3, desc="reward model")
with torch.no_grad():
    r_c, r_r = reward_model(held["input_ids"], held["attention_mask"]).cpu().chunk(2)
p_judge = [world.preference_probability(records[i].prompt, records[i].chosen, records[i].rejected) for i in held_idx]
ceiling = sum(max(p, 1 - p) for p in p_judge) / len(p_judge)
rm_acc = pair_accuracy(r_c, r_r)
print(f"reward model: loss {rm_hist.first_last(10)[0]:.2f} -> {rm_hist.first_last(10)[1]:.2f}")
print(f"held-out accuracy {rm_acc:.2f} (best possible {ceiling:.2f}, the SFT policy's own preference: "
      f"{pair_accuracy(*batch_logprob(reference, held).cpu().chunk(2)):.2f})")
assert rm_acc > ceiling - 0.08, "the reward model should come near the known ceiling"
print("claim holds: the reward model reaches the judge's known ceiling on held-out pairs")

# %% [markdown]
# **The margin option.** `bradley_terry_loss(..., margin=m)` subtracts *m* inside the sigmoid
# (trl's RewardTrainer does the same with a per-pair margin, e.g. from how strongly raters agreed):
# a pair that is ranked right by less than *m* still has a loss, and a gradient, that pushes the
# gap wider. The loss and its gradient for a few reward gaps:

# %%
print(f"{'gap r+ - r-':>12}{'loss m=0':>10}{'loss m=1':>10}{'grad m=0':>10}{'grad m=1':>10}")
for gap in [-2.0, 0.0, 0.5, 1.0, 3.0]:
    row = []
    for m in (0.0, 1.0):
        g = torch.tensor([gap], requires_grad=True)
        loss = bradley_terry_loss(g, torch.zeros(1), margin=m)
        loss.backward()
        row += [float(loss.detach()), float(g.grad)]
    print(f"{gap:>12.1f}{row[0]:>10.3f}{row[2]:>10.3f}{row[1]:>10.3f}{row[3]:>10.3f}")
    assert abs(row[2] - F.softplus(torch.tensor(1.0 - gap))) < 1e-6   # -log sigma(gap - m) = softplus(m - gap)

# %% [markdown]
# ## 4. DPO against a frozen reference
#
# DPO skips the reward model: with $\Delta = [\log\pi(y^+) - \log\pi_\text{ref}(y^+)] - [\log\pi(y^-) - \log\pi_\text{ref}(y^-)]$,
#
# $$\mathcal L_\text{DPO} = -\log\sigma(\beta\,\Delta),$$
#
# and $\beta[\log\pi(y) - \log\pi_\text{ref}(y)]$ is the *implicit reward* of an answer. The
# reference log-probs are computed once, without gradient.

# %%
everything = {k: v.to(DEVICE) for k, v in collate_pairs(pairs, tok.pad_id).items()}   # all chosen rows, then all rejected
with torch.no_grad():
    ref_logps = {"sum": batch_logprob(reference, everything), "mean": batch_logprob(reference, everything, average=True)}
N = len(pairs)
correct_of = lambda r, side: world.parse(r.prompt, getattr(r, side))[0]  # noqa: E731
BETA, DPO_STEPS = 0.3, 120
pair_correct = torch.tensor([[correct_of(r, "chosen"), correct_of(r, "rejected")] for r in records], dtype=torch.float)
pair_fillers = torch.tensor([[n_words(r.chosen) - 1, n_words(r.rejected) - 1] for r in records], dtype=torch.float)


def train_dpo(kind, states=None):
    """DPO from the reference; kind 'sum' (log pi(y|x)) or 'mean' (per-token average). Records, per step,
    the responses it trains on (correct share, filler words, log pi per token under the current policy)."""
    policy = copy.deepcopy(reference).requires_grad_(True)
    ref_c, ref_r = ref_logps[kind][:N], ref_logps[kind][N:]

    def loss_fn(model, batch):
        logps = batch_logprob(model, batch, average=(kind == "mean"))
        pi_c, pi_r = logps.chunk(2)
        idx = batch["index"]
        if states is not None:
            total = batch_logprob(model, batch) if kind == "mean" else logps
            states.append({"correct": float(pair_correct[idx.cpu()].mean()), "fillers": float(pair_fillers[idx.cpu()].mean()),
                           "logp_per_token": float(total.detach().sum() / batch["response_mask"].sum())})
        return dpo_loss(pi_c, pi_r, ref_c[idx], ref_r[idx], beta=BETA)

    hist = fit(policy, pair_batches(train_idx, 32, offset=50_000), loss_fn, steps=DPO_STEPS, lr=3e-4, desc=f"DPO {kind}")
    return policy, hist


def held_margins(policy, kind):
    with torch.no_grad():
        logps = batch_logprob(policy, everything, average=(kind == "mean"))
    rewards = implicit_rewards(logps, ref_logps[kind], BETA).cpu()
    chosen_r, rejected_r = rewards[:N][held_idx], rewards[N:][held_idx]
    return float((chosen_r - rejected_r).mean()), pair_accuracy(chosen_r, rejected_r)


dpo_states = []
policies = {"sum": train_dpo("sum", dpo_states)[0]}
margin_before = held_margins(reference, "sum")
margin_after = held_margins(policies["sum"], "sum")
print(f"held-out implicit reward margin: {margin_before[0]:.2f} before (policy = reference) -> {margin_after[0]:.2f} after; "
      f"pairs ranked right {margin_after[1]:.2f}")

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
print(f"dpo_loss {float(library):.6f} | by hand {float(by_hand):.6f} | maxdiff {abs(float(library - by_hand)):.1e}")
print(f"loss at the start {float(at_start):.4f} = log 2 = {torch.log(torch.tensor(2.0)):.4f}")
assert abs(float(library - by_hand)) < 1e-5 and abs(float(at_start) - 0.693147) < 1e-5
assert margin_after[0] > margin_before[0] + 0.5 and margin_after[1] > 0.6
print("claim holds: DPO widens the held-out implicit reward margin, and its loss is -log sigma(beta * delta)")

# %% [markdown]
# ## 5. Length bias: summed or length-normalised log-probs
#
# In this set the preferred answer is usually the longer one, but only because the generator pads
# the answers it gets right: the judge never looked at length. DPO's derivation scores the event
# "the policy writes exactly this answer", $\log\pi(y\mid x)$, a **sum** over tokens. A common
# alternative divides by the number of response tokens (`average=True`; trl's `sigmoid_norm` and the
# length-normalised DPO of Tulu 3; SimPO uses the same average without a reference). What the
# choice changes in the objective:
#
# | | implicit reward | weight of each response token in the gradient | what the optimum satisfies |
# |---|---|---|---|
# | sum | $\beta\log\frac{\pi}{\pi_\text{ref}}(y)$ | 1 | $\beta\log\frac{\pi}{\pi_\text{ref}}(y) = r(y) + c$ |
# | mean | $\frac{\beta}{\lvert y\rvert}\log\frac{\pi}{\pi_\text{ref}}(y)$ | $1/\lvert y\rvert$ | $\log\frac{\pi}{\pi_\text{ref}}(y) = \lvert y\rvert\,\frac{r(y)+c}{\beta}$ |
#
# At the optimum of the summed objective, answers the judge rates equally get the same log-ratio
# whatever their length. The normalised objective's optimum makes the log-ratio grow with
# $\lvert y\rvert$, so long answers the judge likes are boosted more than short ones; and along the
# way each token of a short answer weighs more than a token of a long one. Here the rejected answers
# are the short ones, so the normalised gradient presses hardest on their few tokens, including an
# `<eos>` right after the digit. Same data, same $\beta$, same steps: we sample answers from each
# policy and count filler words.

# %% [markdown]
# **The panel.** One pair, a long chosen answer and a short rejected one, with small per-token
# log-ratios. Toggle sum/mean and move β: the bars are each token's push (the gradient of the loss
# with respect to that token's log-prob).

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import DPOWeightsPanel, render_dpo_weights  # noqa: E402

DPOWeightsPanel().ui()

# %% [markdown]
# The panel's two states as text (β = 0.3):

# %%
for average in (False, True):
    print(render_dpo_weights(BETA, average)["text"])

# %%
policies["mean"] = train_dpo("mean")[0]
eval_prompts = [world.prompt(k) for k in world.KEYS] * 40


def answer_stats(policy, seed=SEED + 5):
    """Sample one answer per eval prompt (temperature 1): correct share, mean filler words, the fillers
    of the right answers, true reward."""
    out = rollout(policy, tok, eval_prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(seed))
    parsed = [world.parse(p, r) for p, r in zip(eval_prompts, out["responses"])]
    right = [n for c, n in parsed if c]
    return {"correct": sum(c for c, _ in parsed) / len(parsed), "fillers": sum(n for _, n in parsed) / len(parsed),
            "fillers_if_right": sum(right) / max(len(right), 1), "stop_at_once": sum(n == 0 for _, n in parsed) / len(parsed),
            "true_reward": sum(world.true_reward(p, r) for p, r in zip(eval_prompts, out["responses"])) / len(parsed)}


length_rows = {"reference": answer_stats(reference), "DPO, summed": answer_stats(policies["sum"]),
               "DPO, mean": answer_stats(policies["mean"])}
print(f"{'':<13}{'correct':>9}{'filler words':>14}{'fillers if right':>18}{'no filler':>11}")
for name, s in length_rows.items():
    print(f"{name:<13}{s['correct']:>9.2f}{s['fillers']:>14.2f}{s['fillers_if_right']:>18.2f}{s['stop_at_once']:>11.2f}")

# %% [markdown]
# **Claim.** Both raise the share of right answers and both lengthen (right answers are the longer
# ones in this data); the length-normalised run writes clearly longer answers than the summed run,
# on the same data. The sum is not length-neutral either: summed log-probs without a reference are
# strongly biased to *short* answers (the SFT policy's own preference above ranked only about half
# of the held-out pairs right). Normalising is a change of objective, not a neutral fix: record
# which one a run used, next to the data's length statistics (eric-mitchell/direct-preference-optimization#40,
# princeton-nlp/SimPO#20 and allenai/open-instruct#483 discuss the choice).

# %%
s_sum, s_mean = length_rows["DPO, summed"], length_rows["DPO, mean"]
assert s_sum["correct"] > length_rows["reference"]["correct"] + 0.1 and s_mean["correct"] > length_rows["reference"]["correct"]
assert s_mean["fillers"] > s_sum["fillers"] + 0.3, "the two objectives should give different lengths"
print(f"claim holds: mean filler words {s_sum['fillers']:.2f} (summed) vs {s_mean['fillers']:.2f} (length-normalised)")

# %% [markdown]
# ## 6. Offline vs on-policy
#
# DPO trained on a fixed set of pairs that an *old* policy sampled: as the policy moves, those
# answers become answers it would no longer write (stale states). An on-policy loop samples from
# the **current** policy, scores its answers with a verifiable reward (here the true reward: right
# and concise, $\text{correct} - 0.25\cdot\text{fillers}$), and takes a policy-gradient step with
# group-normalised advantages, $A_i = (r_i - \bar r_\text{group}) / \text{std}_\text{group}$: 8
# answers per prompt, the other answers to the same prompt are the baseline. We record, at every
# step, what each method trains on.

# %%
def parse_stat(i):
    return lambda prompt, response: float(world.parse(prompt, response)[i])


def sample_keys(g, n=8):
    return [world.prompt(world.KEYS[i]) for i in torch.randint(len(world.KEYS), (n,), generator=g).tolist()]


policies["on-policy"] = copy.deepcopy(reference).requires_grad_(True).to(DEVICE)
on_states = policy_gradient_fit(policies["on-policy"], tok, sample_keys, world.true_reward, iters=40, lr=1e-3,
                                seed=SEED, track={"correct": parse_stat(0), "fillers": parse_stat(1)})
on_stats = answer_stats(policies["on-policy"])

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, key, title in zip(axes, ["correct", "fillers", "logp_per_token"],
                          ["share of trained answers that are right", "filler words in trained answers",
                           "log pi per token of trained answers"]):
    ax.plot([s[key] for s in dpo_states], label="DPO (fixed pairs)")
    ax.plot([s[key] for s in on_states], label="on-policy (own samples)")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Claim.** DPO's training states never change (the same old answers: half right, padded) and
# the policy's log-probability of them drops as it moves away; the on-policy loop trains on what
# the policy currently writes, which becomes right and concise, and ends with a higher true reward.

# %%
first, last = lambda h, k: sum(s[k] for s in h[:5]) / 5, lambda h, k: sum(s[k] for s in h[-5:]) / 5  # noqa: E731
print(f"{'trained answers':<22}{'DPO first':>10}{'DPO last':>10}{'on-pol first':>14}{'on-pol last':>13}")
for key in ["correct", "fillers", "logp_per_token"]:
    print(f"{key:<22}{first(dpo_states, key):>10.2f}{last(dpo_states, key):>10.2f}"
          f"{first(on_states, key):>14.2f}{last(on_states, key):>13.2f}")
print(f"true reward of sampled answers: reference {length_rows['reference']['true_reward']:.2f}, "
      f"DPO {s_sum['true_reward']:.2f}, on-policy {on_stats['true_reward']:.2f}")
assert abs(last(dpo_states, "correct") - first(dpo_states, "correct")) < 0.15, "offline states stay where the data is"
assert last(on_states, "correct") > 0.85 and last(on_states, "fillers") < 0.5, "on-policy states follow the policy"
assert last(dpo_states, "logp_per_token") < first(dpo_states, "logp_per_token") - 0.3, "the fixed answers grow stale"
assert last(on_states, "logp_per_token") > last(dpo_states, "logp_per_token") + 0.5
assert on_stats["true_reward"] > s_sum["true_reward"] + 0.3
print("claim holds: offline states are frozen and stale; on-policy states track the policy")

# %% [markdown]
# ## 7. A flawed evaluator gets exploited
#
# Replace the verifiable reward by a cheap judge with a loophole: it checks the answer *and*
# rewards "thoroughness", $0.5$ per extra word. Optimising that proxy hard, the policy learns to
# pad, and past a point to never stop (an answer without `<eos>` is not an answer). A KL penalty
# towards the reference, $r - \lambda[\log\pi(y) - \log\pi_\text{ref}(y)]$ on each sample, makes
# drifting away from the reference's habits expensive.

# %%
hack = {}
for kl in (0.0, 0.3):
    policy = copy.deepcopy(reference).requires_grad_(True).to(DEVICE)
    hack[kl] = policy_gradient_fit(policy, tok, sample_keys, world.proxy_reward, iters=60, lr=3e-4, kl_coef=kl,
                                   reference=reference, seed=SEED + 1,
                                   track={"proxy": world.proxy_reward, "true": world.true_reward})

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 3.2))
for kl, style in [(0.0, "-"), (0.3, "--")]:
    ax.plot([s["proxy"] for s in hack[kl]], style, color="tab:orange", label=f"proxy reward, KL {kl}")
    ax.plot([s["true"] for s in hack[kl]], style, color="tab:blue", label=f"true reward, KL {kl}")
ax.set_xlabel("on-policy step")
ax.set_title("The proxy climbs while the true reward falls", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
for kl, h in hack.items():
    print(f"KL {kl}: proxy {first(h, 'proxy'):.2f} -> {last(h, 'proxy'):.2f} | true {first(h, 'true'):.2f} -> {last(h, 'true'):.2f}")
free, held_back = hack[0.0], hack[0.3]
assert last(free, "proxy") > first(free, "proxy") + 1.5, "the proxy reward climbs"
assert last(free, "true") < first(free, "true") - 1.0, "while the true reward falls"
assert last(held_back, "true") > last(free, "true") + 1.0 and last(held_back, "proxy") < last(free, "proxy") - 1.0
print("claim holds: the proxy is exploited; the KL penalty slows the drift")

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
# | reward model vs ceiling | Bradley-Terry recovers a known judge |
# | DPO margin, loss vs formula | implicit rewards separate held-out pairs; loss = $-\log\sigma(\beta\Delta)$ |
# | summed vs mean lengths | normalising the log-prob changes the objective and the behaviour |
# | offline vs on-policy states | fixed pairs go stale; own samples track the policy |
# | proxy vs true reward | an exploitable evaluator is exploited; KL slows it |
#
# This run's numbers:

# %%
print(f"{'reward model held-out accuracy':<40}{rm_acc:.2f} (ceiling {ceiling:.2f})")
print(f"{'DPO held-out margin before -> after':<40}{margin_before[0]:.2f} -> {margin_after[0]:.2f}")
print(f"{'filler words: reference / sum / mean':<40}{length_rows['reference']['fillers']:.2f} / {s_sum['fillers']:.2f} / {s_mean['fillers']:.2f}")
print(f"{'true reward: DPO / on-policy':<40}{s_sum['true_reward']:.2f} / {on_stats['true_reward']:.2f}")
print(f"{'proxy, true at the end (KL 0)':<40}{last(free, 'proxy'):.2f}, {last(free, 'true'):.2f}")
print(f"{'proxy, true at the end (KL 0.3)':<40}{last(held_back, 'proxy'):.2f}, {last(held_back, 'true'):.2f}")
