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
# # 01b · Continuous vs discrete targets, and decoding
#
# **What you will see.** A token id is a category, not a number: it cannot be moved a little. So a
# model of discrete data outputs a *distribution*, is trained by likelihood on the whole
# distribution, and a separate procedure (a **decoder**) turns that distribution into tokens. Each
# part below is measured on a world whose answer is known exactly:
#
# 1. the same tiny network trained to **regress** the token id with MSE vs to **classify** it with
#    cross-entropy, on a known bimodal next-token distribution: what each one learns;
# 2. **decoding** a known Markov chain whose sequence probabilities are exact: greedy, temperature,
#    top-k, top-p, beam search and constrained decoding, scored on the true sequence log-likelihood,
#    diversity and a format that must hold;
# 3. **sampling is not differentiable**: the gradient through an argmax or a sampled index, and the
#    estimators used instead (score function / REINFORCE, Gumbel-softmax, straight-through), with
#    their bias and variance measured against the exact gradient;
# 4. a truncation panel and two exercises.
#
# **Runtime:** under half a minute on a laptop CPU (2 cores).

# %%
import math

import matplotlib.pyplot as plt
import torch

import labkit
from labkit.claims import check, claim, compare, summary
from labkit.exercises.decoding import check_score_function, check_top_p
from labkit.paradigms.decoding import (ConditionalTokens, IdPredictor, KnownChain, beam_search, best_gaussian_over_ids,
                                       count_outside_top_p, decode, distinct, ends_with_eos, estimator_stats,
                                       exact_gradient, length_distribution, mode_shortfall, must_end_by,
                                       plugin_entropy, random_chain, relaxed_grads, render_truncation,
                                       score_function_grads, score_id_heads, top_p_filter)
from labkit.predict import ask, reveal
from labkit.train import fit

SEED, DEVICE = labkit.setup_notebook()
SEEDS = [10 * SEED + k for k in range(5)]      # five runs per comparison; each takes well under a second

# %% [markdown]
# ## 1. Regress the id, or classify it?
#
# Six contexts, ten token ids, and a known $p(\text{token} \mid \text{context})$. Most contexts are
# **bimodal**: context 0 emits token 1 or token 8, half the time each. The mean id of such a context
# is a number between the two modes, and the nearest id to it is a token that context never emits.

# %%
TABLE = [{1: .5, 8: .5}, {0: .6, 9: .4}, {2: .5, 7: .3, 8: .2}, {3: .7, 4: .3}, {5: .8, 6: .2}, {0: .5, 4: .5}]
world = ConditionalTokens(TABLE, n_tokens=10)
for c, row in enumerate(TABLE):
    print(f"context {c}: p = {row}   E[id] = {world.mean_id[c]:.2f}")

# %% [markdown]
# Two models that differ in **one** thing, the head and its loss. Same trunk (an embedding of the
# context and one hidden layer of 32, built from the same seed, so the trunk starts identical), the
# same 1000 (context, token) pairs, the same 150 full-batch AdamW steps at the same learning rate,
# the same gradient clipping and no weight decay (labkit's `fit` defaults).
# The regression head outputs one number and is trained with MSE on the id; the categorical head
# outputs 10 logits and is trained with cross-entropy.

# %%
# NBVAL_IGNORE_OUTPUT
q_mse = ask("01b.mse_output", "Context 0 emits token 1 or token 8, half the time each. What does the MSE-trained "
            "regression head output for it?", choices=["1 or 8 (one of the modes)", "about 4.5 (the mean id)",
                                                       "a distribution over the ids"])

# %%
N_DATA, STEPS, LR = 1000, 150, 1e-2


def train(head, seed):
    data = world.sample(N_DATA, torch.Generator().manual_seed(1000 + seed))     # same data for both heads
    torch.manual_seed(seed)                                                      # same trunk init for both heads
    model = IdPredictor(world.n_contexts, world.n_tokens, head, hidden=32)
    fit(model, [data], lambda m, batch: m.loss(*batch), steps=STEPS, lr=LR, device=DEVICE, progress=False)
    return model.cpu(), data

# %% [markdown]
# What each head can say about a context. The regression head gives one number; read as a token,
# it is that number rounded. Read as a distribution, MSE is the negative log-likelihood of a Gaussian
# with a fixed width, so the regression model implies $\mathcal N(\hat y, \sigma^2)$ discretised onto
# the ids, with $\sigma$ its root-mean-squared training residual. The categorical head gives the
# softmax. Both distributions are scored by $\mathrm{KL}(p_\text{true} \,\|\, q)$, averaged over contexts.

# %%
runs = {}
for s in SEEDS:
    (reg, data), (cat, _) = train("regression", s), train("categorical", s)
    runs[s] = score_id_heads(world, reg, cat, data)       # y_hat, q_cat, KLs, shares of impossible tokens
first = runs[SEEDS[0]]
print(f"seed {SEEDS[0]}:  context | E[id] | regression output | categorical: top tokens")
for c in range(world.n_contexts):
    top = first["q_cat"][c].topk(2)
    print(f"{c:>16} | {world.mean_id[c]:5.2f} | {first['y_hat'][c]:17.2f} | "
          + ", ".join(f"{int(i)}: {v:.2f}" for v, i in zip(top.values, top.indices)))

# %% [markdown]
# **Claims.** The regression head learns the conditional **mean** of the id (within 0.1 of the
# mean of its training data in every context, on every seed). The table was built so that, in 4 of
# its 6 contexts, the exact mean rounds to a token that context never emits; the second claim is that
# the trained head lands there too, on every seed (control: the categorical head's most probable
# token). The categorical head puts almost no probability on the tokens that never occur.
# **Comparison.** KL from the truth, categorical vs regression head, over five seeds.

# %%
mean_gap = max(r["mean_gap"] for r in runs.values())
rec_mean = claim("01b.mse_learns_mean", mean_gap, below=0.1, fmt=".3f",
                 text="regression head: max over contexts and seeds of |output - mean id of its training data|")
y0 = first["y_hat"][0].item()                                                   # context 0, first seed
reveal(q_mse, "about 4.5 (the mean id)" if abs(y0 - world.mean_id[0]) < min(abs(y0 - 1), abs(y0 - 8))
       else "1 or 8 (one of the modes)")
claim("01b.mse_impossible_tokens", min(r["reg_impossible"] for r in runs.values()), above=0.5,
      control="categorical head's argmax (max over seeds)", control_value=max(r["cat_impossible"] for r in runs.values()),
      text="regression head, rounded: share of contexts whose output token is never emitted there (min over seeds)")
claim("01b.ce_mass_on_impossible", max(r["cat_mass_never"] for r in runs.values()), below=0.01, fmt=".4f",
      text="categorical head: probability on tokens the context never emits (max over seeds)")
_ = compare("01b.ce_vs_mse_kl", [runs[s]["kl_cat"] for s in SEEDS], [runs[s]["kl_reg"] for s in SEEDS], seeds=SEEDS,
            arms=("cross-entropy head", "MSE head (as a Gaussian)"), metric="KL(p_true || q), mean over contexts",
            higher_is_better=False, expect="A better",
            matched_on=["trunk (width 32, same init)", f"the same {N_DATA} training pairs", f"{STEPS} full-batch steps",
                        f"AdamW lr {LR}, grad clip 1, no weight decay", "KL scored on the same true table"])

# %% [markdown]
# Is the MSE model just undertrained, or held back by its single width? No: the problem is the
# family. Fit, for every context separately, the discretised Gaussian (its own mean and width) that
# is **closest** to the true distribution, directly on the true table, no data and no network: the
# best any Gaussian on the ids can do. It fits the two contexts whose tokens are neighbouring ids
# (3 and 4) almost exactly and fails on the others; on average its KL stays far above the trained
# categorical head's.

# %%
oracle = best_gaussian_over_ids(world.probs)          # per context: argmin over (mean, sigma) of KL(p_true || q)
oracle_kl = oracle["kl"].mean().item()
print("best Gaussian's KL per context: " + "  ".join(f"{v:.3f}" for v in oracle["kl"].tolist()))
_ = claim("01b.ce_beats_oracle_gaussian", max(r["kl_cat"] for r in runs.values()), below=oracle_kl / 10, fmt=".3f",
          control="best Gaussian on the ids, fitted per context to the true table", control_value=oracle_kl,
          text="categorical head's KL (max over seeds), vs a tenth of the best Gaussian's")

# %% [markdown]
# The id numbering is arbitrary: relabel the tokens and the regression problem changes (new means,
# new neighbours), while the categorical one is the same problem with its outputs renamed.
# Cross-entropy treats ids as names; MSE treats them as positions on a line.
#
# ## 2. Decoding a world whose distribution is known
#
# From here on the "model" is the world itself: a first-order Markov chain over five words, started
# at `<bos>`, stopped at `<eos>` or after `MAX_LEN` tokens. Every sequence probability is a product
# of table entries, so its most probable sequence, its entropy and its length distribution are
# computed exactly. Using the true distribution as the model isolates what the **decoder** does.
#
# The chain is built with a trap: `a` is the most likely first word, but after `a` every word is
# about equally likely, so nothing after `a` is probable. `b` is less likely first, but it is
# followed by `d` and `<eos>` with high probability.

# %%
MAX_LEN = 6
ROWS = {"<bos>": {"a": .45, "b": .35, "c": .20},
        "a": {"a": .20, "e": .18, "c": .17, "b": .16, "d": .15, "<eos>": .14},
        "b": {"d": .85, "a": .05, "<eos>": .10},
        "c": {"e": .5, "c": .3, "<eos>": .2},
        "d": {"<eos>": .7, "b": .2, "e": .1},
        "e": {"a": .4, "e": .4, "<eos>": .2}}
chain = KnownChain(["<bos>", "<eos>", "a", "b", "c", "d", "e"], ROWS, max_len=MAX_LEN)
BOS, EOS = chain.bos_id, chain.eos_id
law = chain.length_law()
mode_seq, mode_lp = chain.mode()
print(f"entropy of the sequence distribution: {chain.entropy():.3f} nats")
print(f"most probable sequence: {chain.decode_names(mode_seq)}  (log p = {mode_lp:.3f})")
print("P(length = t): " + " ".join(f"{p:.3f}" for p in law["ends_at"].tolist()) + f";  no <eos> by {MAX_LEN}: {law['truncated']:.3f}")
_ = check("01b.length_law_sums_to_one", law["ends_at"].sum().item() + law["truncated"], 1.0, 1e-12, fmt=".6f",
          text="P(ends at t) summed over t, plus P(no <eos> by max_len)")

# %% [markdown]
# ### Greedy vs beam search vs the exact mode
#
# Greedy takes the most probable token at each step. Beam search keeps the `B` best partial
# sequences (summed log-probability) at each step.

# %%
# NBVAL_IGNORE_OUTPUT
q_beam = ask("01b.beam_vs_greedy", "In this chain, which finds the more probable sequence: greedy or beam search "
             "with 2 beams?", choices=["greedy", "beam (2)", "the same sequence"])

# %%
greedy = decode(chain.step, 1, MAX_LEN, BOS, EOS, temperature=0)[0]
beams = {B: beam_search(chain.step, B, MAX_LEN, BOS, EOS)[0] for B in (2, 4)}
greedy_lp = chain.logprob([greedy]).item()
print(f"greedy : {chain.decode_names(greedy):<22} log p = {greedy_lp:.3f}")
for B, (seq, lp) in beams.items():
    print(f"beam {B} : {chain.decode_names(seq):<22} log p = {lp:.3f}")
ancestral = {s: decode(chain.step, 2000, MAX_LEN, BOS, EOS, generator=torch.Generator().manual_seed(s)) for s in SEEDS}
typical = sum(chain.logprob(ancestral[s]).mean().item() for s in SEEDS) / len(SEEDS)
print(f"mean log p of a sequence sampled from the chain (2000 x {len(SEEDS)} samples): {typical:.3f}")

# %% [markdown]
# **Checks** (this world was built by hand for it, so the outcome is fixed by construction and
# computable on paper): greedy takes `a`, then `a` again five times (the top of the flat row) and is
# cut at `MAX_LEN`, so its log-probability
# is $\log 0.45 + 5 \log 0.2$; beam search with 2 beams keeps `b` alive and returns `b d <eos>`, of
# log-probability $\log(0.35 \cdot 0.85 \cdot 0.7)$, which is also the exact mode.
# **Claim** (sampled): greedy's sequence is less probable than most samples of the chain, i.e. than
# the median sample: committing to the locally best token led to an unlikely sequence.

# %%
by_hand = math.log(0.35 * 0.85 * 0.7) - (math.log(0.45) + 5 * math.log(0.2))
rec_beam = check("01b.beam_beats_greedy", beams[2][1] - greedy_lp, by_hand, 1e-9, fmt=".3f",
                 text="log p(beam-2 sequence) - log p(greedy sequence), nats, vs the hand computation")
reveal(q_beam, "beam (2)" if rec_beam["value"] > 0 else ("greedy" if rec_beam["value"] < 0 else "the same sequence"))
check("01b.beam_finds_mode", mode_lp - beams[2][1], 0.0, 1e-9, fmt=".1e", text="exact mode log p - beam-2 log p (nats)")
lp_samples = torch.cat([chain.logprob(ancestral[s]) for s in SEEDS])
_ = claim("01b.greedy_below_typical", (lp_samples > greedy_lp).double().mean().item(), above=0.5, fmt=".3f",
          control="mean log p of a sample", control_value=typical,
          text=f"share of {lp_samples.numel()} samples more probable than greedy's sequence (0.5: the median sample)")

# %% [markdown]
# A trap built by hand proves that it can happen. How often does it happen? Draw random chains
# (six words, up to 8 tokens, random peaked rows), run greedy and beam search with 4 beams, and
# measure how far each falls short of the exact mode. Five batches of 40 random worlds, one batch
# per seed.

# %%
shortfall = {s: mode_shortfall([random_chain(1000 * s + j) for j in range(40)], beam_size=4) for s in SEEDS}
for s, r in shortfall.items():
    print(f"seed {s}: shortfall from the mode, greedy {r['greedy']:.3f}, beam-4 {r['beam']:.3f} nats; "
          f"beam-4 below greedy in {r['beam_below_greedy']:.0%} of worlds")
_ = compare("01b.beam_vs_greedy_random", [shortfall[s]["beam"] for s in SEEDS], [shortfall[s]["greedy"] for s in SEEDS],
            seeds=SEEDS, arms=("beam search (4)", "greedy"), metric="shortfall from the exact mode's log p (nats)",
            higher_is_better=False, expect="A better",
            matched_on=["the same 40 random chains per seed", "max_len 8", "the true chain as the model"])

# %% [markdown]
# Beam search is not guaranteed to do at least as well as greedy: a beam can discard the prefix greedy
# follows, and a small chain where beam search with 2 beams returns a less probable sequence than
# greedy is a unit test of `labkit.paradigms.decoding`. In these random worlds the printed share
# counts how often that happened. On average beam search falls much less short of the mode; neither
# is guaranteed to find it.
#
# ### Sampling: temperature, top-k, top-p
#
# Each sampler draws 2000 sequences per seed from the chain. For each: the mean **true**
# log-probability of its sequences, the number of **distinct** sequences and their plug-in
# **entropy** (diversity), the share that hit `MAX_LEN` without `<eos>`, and the share that start
# with `a`, the trap's first word. Greedy and beam search are deterministic: one sequence, however
# many times you run them. The top-p values sit away from every cumulative probability of the chain's
# rows, so which tokens a nucleus keeps never hangs on a tie at the boundary.

# %%
SAMPLERS = {"ancestral (T=1)": dict(temperature=1.0), "T=0.5": dict(temperature=0.5), "T=0.1": dict(temperature=0.1),
            "T=1.5": dict(temperature=1.5), "top-k=2": dict(top_k=2), "top-p=0.75": dict(top_p=0.75),
            "top-p=0.6": dict(top_p=0.6)}
A = chain.names.index("a")


def metrics(seqs):
    lp = chain.logprob(seqs)
    return {"loglik": lp.mean().item(), "distinct": distinct(seqs), "entropy": plugin_entropy(seqs),
            "no_eos": 1 - ends_with_eos(seqs, EOS).double().mean().item(),
            "starts_a": sum(seq[0] == A for seq in seqs) / len(seqs)}


samples = {"ancestral (T=1)": ancestral}
samples.update({name: {s: decode(chain.step, 2000, MAX_LEN, BOS, EOS, generator=torch.Generator().manual_seed(s), **kw)
                       for s in SEEDS} for name, kw in SAMPLERS.items() if name != "ancestral (T=1)"})
table = {name: {s: metrics(seqs) for s, seqs in per_seed.items()} for name, per_seed in samples.items()}
mean_of = lambda name, key: sum(table[name][s][key] for s in SEEDS) / len(SEEDS)   # noqa: E731
print(f"{'decoder':<16}{'mean log p':>11}{'distinct':>10}{'entropy':>9}{'no <eos>':>10}{'starts a':>10}"
      f"   (mean over {len(SEEDS)} seeds)")
for name in table:
    print(f"{name:<16}{mean_of(name, 'loglik'):>11.3f}{mean_of(name, 'distinct'):>10.1f}{mean_of(name, 'entropy'):>9.3f}"
          f"{mean_of(name, 'no_eos'):>10.3f}{mean_of(name, 'starts_a'):>10.3f}")
for name, seq in [("greedy", greedy), ("beam (2)", beams[2][0])]:
    print(f"{name:<16}{chain.logprob([seq]).item():>11.3f}{1:>10}{0:>9.3f}{float(seq[-1] != EOS):>10.3f}"
          f"{float(seq[0] == A):>10.3f}")

# %% [markdown]
# **Check** (by construction, up to sampling noise): ancestral sampling (T = 1) draws from the chain
# itself, so the mean log-probability of its samples estimates minus the exact entropy, within four
# standard errors.
#
# **Comparisons** (same chain, same number of samples, five seeds):
# * Cooling to T = 0.5 raises the mean log-probability and lowers the number of distinct sequences.
# * Cooling further is not better here: the mean log-probability at T = 0.1 is below that at T = 0.5.
#   The mechanism, measured: sampling converges to greedy as T → 0, and at T = 0.1 far more samples
#   start with `a`, the trap's first word, after which every continuation is improbable (by the
#   chain's design: the row of `a` is flat).
# * Top-p = 0.75 cuts the tail: lower entropy and higher mean log-probability (and, in the table,
#   fewer distinct sequences).
# * A per-token filter also changes the *length*: top-p = 0.6 leaves more samples without `<eos>` by
#   `MAX_LEN`. The mechanism, counted below: `<eos>` is outside the 0.6-nucleus of every row except
#   the row of `d`.

# %%
se = (lp_samples.var() / lp_samples.numel()).sqrt().item()                # lp_samples: the ancestral samples
check("01b.ancestral_matches_entropy", lp_samples.mean().item(), -chain.entropy(), 4 * se, fmt=".3f",
      text=f"mean log p of {lp_samples.numel()} ancestral samples, vs -H (tolerance: 4 standard errors)")
per_seed = lambda name, key: [table[name][s][key] for s in SEEDS]   # noqa: E731
sampling_matched = ["the true chain as the model", "2000 samples per seed", f"max_len {MAX_LEN}", "same generator seed"]
compare("01b.cool_loglik", per_seed("T=0.5", "loglik"), per_seed("ancestral (T=1)", "loglik"), seeds=SEEDS,
        arms=("T=0.5", "T=1"), metric="mean true log p of a sample", expect="A better", matched_on=sampling_matched)
compare("01b.cool_diversity", per_seed("T=0.5", "distinct"), per_seed("ancestral (T=1)", "distinct"), seeds=SEEDS,
        arms=("T=0.5", "T=1"), metric="distinct sequences in 2000", expect="A worse", matched_on=sampling_matched, fmt=".1f")
compare("01b.too_cold", per_seed("T=0.1", "loglik"), per_seed("T=0.5", "loglik"), seeds=SEEDS,
        arms=("T=0.1", "T=0.5"), metric="mean true log p of a sample", expect="A worse", matched_on=sampling_matched)
compare("01b.cold_enters_trap", per_seed("T=0.1", "starts_a"), per_seed("T=0.5", "starts_a"), seeds=SEEDS,
        arms=("T=0.1", "T=0.5"), metric="share of samples that start with a (the trap)", higher_is_better=False,
        expect="A worse", matched_on=sampling_matched)
compare("01b.top_p_entropy", per_seed("top-p=0.75", "entropy"), per_seed("ancestral (T=1)", "entropy"), seeds=SEEDS,
        arms=("top-p=0.75", "T=1"), metric="plug-in entropy of the samples (nats)", expect="A worse",
        matched_on=sampling_matched)
compare("01b.top_p_loglik", per_seed("top-p=0.75", "loglik"), per_seed("ancestral (T=1)", "loglik"), seeds=SEEDS,
        arms=("top-p=0.75", "T=1"), metric="mean true log p of a sample", expect="A better", matched_on=sampling_matched)
compare("01b.top_p_cuts_eos", per_seed("top-p=0.6", "no_eos"), per_seed("ancestral (T=1)", "no_eos"), seeds=SEEDS,
        arms=("top-p=0.6", "T=1"), metric="share of samples without <eos> by max_len", higher_is_better=False,
        expect="A worse", matched_on=sampling_matched)
rows_after = [n for n in chain.names if n != "<eos>"]
keeps_eos = [n for n in rows_after if torch.isfinite(top_p_filter(chain.step(torch.tensor([[chain.names.index(n)]])),
                                                                  0.6)[0, EOS])]
_ = check("01b.top_p_eos_rows", len(keeps_eos), 1, 0, fmt=".0f",
          text=f"rows whose 0.6-nucleus keeps <eos> ({', '.join(keeps_eos)}), of {len(rows_after)}")

# %% [markdown]
# Top-p never samples outside the nucleus (by construction: the filter sets those logits to −inf).
# Re-score every step of the top-p = 0.75 samples of the first seed through the filter: the count of
# sampled tokens the filter had removed is zero.

# %%
_ = check("01b.top_p_stays_in_nucleus", count_outside_top_p(chain.step, samples["top-p=0.75"][SEEDS[0]], BOS, 0.75), 0, 0,
          fmt=".0f", text="sampled tokens outside the 0.75-nucleus (top-p=0.75 samples, first seed)")

# %% [markdown]
# ### Constrained decoding: a format that must hold
#
# The format: **every output ends with `<eos>` within `MAX_LEN` tokens.** Free sampling violates it
# whenever the chain runs long; the exact rate is the chain's P(no `<eos>` by `MAX_LEN`).
#
# The simplest constrained decoder **masks** the logits: at the last allowed step only `<eos>` may be
# chosen. It satisfies the format by construction. But does it sample the chain's distribution *given
# the format*, $p(y \mid \text{format holds})$? A second decoder does: it multiplies each next-token
# probability by the exact probability that the format can still be met after that token (a
# look-ahead computed from the known chain), which is Bayes' rule applied token by token.

# %%
# NBVAL_IGNORE_OUTPUT
q_mask = ask("01b.masked_constraint", "Masking every token but <eos> at the last step makes every output end with "
             "<eos>. Do its outputs follow the chain's distribution given that format?",
             choices=["yes", "no: too many long sequences", "no: too many short sequences"])

# %%
masked = {s: decode(chain.step, 2000, MAX_LEN, BOS, EOS, allowed=must_end_by(EOS, MAX_LEN),
                    generator=torch.Generator().manual_seed(s)) for s in SEEDS}
lookahead = {s: decode(chain.conditioned_step(), 2000, MAX_LEN, BOS, EOS, generator=torch.Generator().manual_seed(s))
             for s in SEEDS}
target = chain.conditional_length_law()                      # exact P(length = t | format holds)
tv = lambda seqs: 0.5 * (length_distribution(seqs, MAX_LEN) - target).abs().sum().item()   # noqa: E731
print("P(length = t | format holds), exact   : " + " ".join(f"{p:.3f}" for p in target.tolist()))
for name, runs_ in [("masked", masked), ("look-ahead", lookahead)]:
    emp = length_distribution(runs_[SEEDS[0]], MAX_LEN)
    print(f"{name:<11} decoder, first seed     : " + " ".join(f"{p:.3f}" for p in emp.tolist()))

# %% [markdown]
# **Checks** (by construction): both constrained decoders satisfy the format on every sample; free
# sampling violates it at the rate the chain predicts; and the masked decoder gives length `MAX_LEN`
# exactly the probability of "ends at `MAX_LEN`" *plus* that of "would have run on" (the last two,
# within four standard errors), far above the exact conditional P(length = `MAX_LEN` | format) printed
# above.
# **Comparison**: so the masked decoder's length distribution is far from the exact conditional and
# the look-ahead decoder's is close (total variation distance, five seeds).

# %%
binom_se = lambda q, n: (q * (1 - q) / n) ** 0.5            # standard error of a sampled share  # noqa: E731
n_all = 2000 * len(SEEDS)
check("01b.masked_satisfies", sum(int((~ends_with_eos(masked[s], EOS)).sum()) for s in SEEDS), 0, 0, fmt=".0f",
      text="masked decoder: outputs without <eos> (all seeds)")
check("01b.lookahead_satisfies", sum(int((~ends_with_eos(lookahead[s], EOS)).sum()) for s in SEEDS), 0, 0, fmt=".0f",
      text="look-ahead decoder: outputs without <eos> (all seeds)")
free_rate = sum(1 - ends_with_eos(ancestral[s], EOS).double().mean().item() for s in SEEDS) / len(SEEDS)
check("01b.free_violation_rate", free_rate, law["truncated"], 4 * binom_se(law["truncated"], n_all), fmt=".3f",
      text=f"free sampling: share without <eos> by {MAX_LEN} ({n_all} samples), vs the exact P(no <eos>) ± 4 SE")
piled = law["ends_at"][-1].item() + law["truncated"]           # where masking sends the sequences that would run on
masked_last = sum(length_distribution(masked[s], MAX_LEN)[-1].item() for s in SEEDS) / len(SEEDS)
check("01b.masked_piles_at_max_len", masked_last, piled, 4 * binom_se(piled, n_all), fmt=".3f",
      text="masked decoder: P(length = max_len), vs P(ends at max_len) + P(no <eos>) ± 4 SE")
_ = compare("01b.lookahead_vs_masked", [tv(lookahead[s]) for s in SEEDS], [tv(masked[s]) for s in SEEDS],
            seeds=SEEDS, arms=("look-ahead", "masked"), higher_is_better=False, expect="A better",
            metric="total variation from the exact length law given the format",
            matched_on=["the true chain", "2000 samples per seed", "same generator seed", "the same format"])
_ = reveal(q_mask, "no: too many long sequences" if masked_last > target[-1].item() else "no: too many short sequences")

# %% [markdown]
# The look-ahead needs the probability that the format can still be met, which is exact here because
# the world is known. A real model does not give it for free; practical constrained decoders mask
# (grammars, JSON schemas) and accept the distortion, or estimate the look-ahead. Masking guarantees
# the format, not the distribution.
#
# ## 3. Sampling is not differentiable
#
# Take a categorical over five outcomes with logits $\theta$ and a reward for each outcome,
# $f(k) = (k - 2.5)^2$. The objective $J(\theta) = \mathbb E_{x \sim \mathrm{softmax}(\theta)}[f(x)]$
# has an exact gradient, $\nabla_\theta J = p \odot (f - \mathbb E_p f)$. But a *decoded* token
# carries no gradient: the argmax and the sampled index are integers, and with the sampling noise
# held fixed, $f(\text{sample})$ is piecewise constant in $\theta$: its derivative is zero wherever
# it exists, and all of $\nabla_\theta J$ comes from the jumps, which a derivative never sees.

# %%
theta = torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0], dtype=torch.float64)
positions = torch.arange(5, dtype=torch.float64)
f_soft = lambda y: (y @ positions - 2.5) ** 2          # f on the simplex; on a one-hot e_k it is f(k)  # noqa: E731
f = f_soft(torch.eye(5, dtype=torch.float64))
exact = exact_gradient(theta, f)

th = theta.clone().requires_grad_(True)
(torch.softmax(th, -1) @ f).backward()                  # autograd through the expectation
check("01b.exact_gradient_vs_autograd", (th.grad - exact).abs().max().item(), 0, 1e-12, fmt=".0e",
      text="max |p * (f - E f) - autograd of E_p[f]|")
picked = torch.softmax(th, -1).argmax()                  # an integer: no grad_fn, nothing to backpropagate
sampled = torch.multinomial(torch.softmax(th, -1), 1)
check("01b.argmax_has_no_grad", int(picked.requires_grad) + int(sampled.requires_grad), 0, 0, fmt=".0f",
      text="argmax / sampled index that require grad")
gumbel = -(-torch.rand(5, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64).log()).log()
reward_of = lambda t: f[(t + gumbel).argmax()]          # one sample (Gumbel-max with fixed noise)  # noqa: E731
fd = [(reward_of(theta + 1e-4 * torch.eye(5)[k]) - reward_of(theta)).item() / 1e-4 for k in range(5)]
_ = check("01b.sample_derivative_is_zero", max(abs(v) for v in fd), 0, 0, fmt=".0f",
          text=f"finite-difference derivative of f(sample) (|exact gradient| = {exact.norm():.3f})")

# %% [markdown]
# ### The score function (REINFORCE)
#
# Since $\nabla_\theta J = \mathbb E_x[f(x)\,\nabla_\theta \log p_\theta(x)]$, each sample gives an
# unbiased estimate $(f(x) - b)(e_x - p)$; a baseline $b$ that does not depend on $x$ keeps it
# unbiased, because $\mathbb E[\nabla \log p] = 0$, and can shrink its variance. Over the five
# outcomes the expectation is a finite sum, so unbiasedness is checked exactly; the variance is
# measured from 2000 samples per seed, with and without the baseline $b = \mathbb E_p[f]$.

# %%
p = torch.softmax(theta, -1)
baseline = (p @ f).item()
every = torch.arange(5)
for name, b in [("01b.reinforce_unbiased", 0.0), ("01b.reinforce_unbiased_baseline", baseline)]:
    expected = (p[:, None] * score_function_grads(theta, every, f, b)).sum(0)     # sum_x p(x) g(x)
    check(name, (expected - exact).abs().max().item(), 0, 1e-12, fmt=".0e",
          text=f"max |E[estimate] - exact gradient|, baseline {b:.2f}")


def reinforce_stats(seed, b):
    x = torch.multinomial(p, 2000, replacement=True, generator=torch.Generator().manual_seed(seed))
    return estimator_stats(score_function_grads(theta, x, f[x], b), exact)


var_plain = [reinforce_stats(s, 0.0)["variance"] for s in SEEDS]
var_base = [reinforce_stats(s, baseline)["variance"] for s in SEEDS]
_ = compare("01b.baseline_variance", var_base, var_plain, seeds=SEEDS, arms=("with baseline E[f]", "no baseline"),
            metric="variance of one REINFORCE gradient estimate (trace of its covariance)", higher_is_better=False,
            expect="A better", matched_on=["the same 2000 samples per seed", "same theta and f"])

# %% [markdown]
# ### Relaxations: Gumbel-softmax and straight-through
#
# Pathwise estimators differentiate through a **relaxed** sample instead. Gumbel-softmax replaces
# the one-hot sample $\arg\max(\theta + g)$ by $y = \mathrm{softmax}((\theta + g)/\tau)$ and
# backpropagates through $f(y)$; its straight-through variant puts the hard one-hot in the forward
# pass and the soft $y$ in the backward; straight-through softmax uses a real sample forward and
# $p = \mathrm{softmax}(\theta)$ backward. A relaxation needs $f$ off the one-hot corners; here
# `f_soft` is $f$ of the mean position, $(y \cdot k - 2.5)^2$, and the bias depends on that choice.
# Bias and variance against the exact gradient, 20000 samples each. The bias is reported in units
# of its sampling noise as well: $|\text{mean} - \text{exact}|$ divided by the RMS error that
# sampling alone would give, so it is about one for an unbiased estimator and grows like
# $\sqrt{N}$ for a biased one: a bias that more samples do not remove.

# %%
# NBVAL_IGNORE_OUTPUT
q_tau = ask("01b.gumbel_tau", "As the Gumbel-softmax temperature tau goes down, its gradient's bias ... and "
            "its variance ...", choices=["both go down", "bias down, variance up", "bias up, variance down", "both go up"])

# %%
gen = torch.Generator().manual_seed(SEED)
TAUS = (0.1, 0.3, 1.0, 3.0)
rows = {("REINFORCE", "-"): reinforce_stats(SEED, 0.0), ("REINFORCE + baseline", "-"): reinforce_stats(SEED, baseline)}
for kind in ("gumbel_softmax", "straight_through_gumbel"):
    for tau in TAUS:
        rows[(kind, tau)] = estimator_stats(relaxed_grads(theta, f_soft, 20000, kind, tau, gen), exact)
rows[("straight_through_softmax", "-")] = estimator_stats(relaxed_grads(theta, f_soft, 20000, "straight_through_softmax",
                                                                        1.0, gen), exact)
print(f"{'estimator':<26}{'tau':>5}{'bias':>9}{'variance':>10}{'bias/noise':>12}")
for (kind, tau), st in rows.items():
    print(f"{kind:<26}{tau!s:>5}{st['bias']:>9.3f}{st['variance']:>10.3f}{st['bias_over_noise']:>12.1f}")

# %% [markdown]
# **Claims.** Gumbel-softmax trades bias for variance through $\tau$: from τ = 1 to τ = 0.1 its bias
# falls by more than 0.5 (most of it) while its variance grows by more than a factor 10.
# **Comparison.** Straight-through softmax against REINFORCE (unbiased, checked exactly above), on
# the bias-in-noise-units yardstick, 2000 samples per seed: REINFORCE stays near one,
# straight-through softmax is many noise units off, a bias no number of samples removes.

# %%
gs = lambda tau: rows[("gumbel_softmax", tau)]           # noqa: E731
rec_bias = claim("01b.gumbel_bias_shrinks", gs(1.0)["bias"] - gs(0.1)["bias"], above=0.5, fmt=".3f",
                 control="bias at tau=0.1", control_value=gs(0.1)["bias"],
                 text="Gumbel-softmax: bias at tau=1 minus bias at tau=0.1")
rec_var = claim("01b.gumbel_variance_grows", gs(0.1)["variance"] / gs(1.0)["variance"], above=10,
                control="variance at tau=1", control_value=gs(1.0)["variance"],
                text="Gumbel-softmax: variance at tau=0.1 / variance at tau=1")
st_z = [estimator_stats(relaxed_grads(theta, f_soft, 2000, "straight_through_softmax", 1.0,
                                     torch.Generator().manual_seed(s)), exact)["bias_over_noise"] for s in SEEDS]
compare("01b.straight_through_biased", st_z, [reinforce_stats(s, 0.0)["bias_over_noise"] for s in SEEDS], seeds=SEEDS,
        arms=("straight-through softmax", "REINFORCE"), metric="|mean estimate - exact| in units of sampling noise",
        higher_is_better=False, expect="A worse", fmt=".1f",
        matched_on=["same theta and f", "2000 samples per seed", "the same yardstick"])
bias_down, var_up = rec_bias["value"] > 0, rec_var["value"] > 1
_ = reveal(q_tau, {(True, False): "both go down", (True, True): "bias down, variance up",
                   (False, False): "bias up, variance down", (False, True): "both go up"}[(bias_down, var_up)])

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for kind, color in [("gumbel_softmax", "#4c8bf5"), ("straight_through_gumbel", "#e57373")]:
    ax.plot([rows[(kind, t)]["variance"] for t in TAUS], [rows[(kind, t)]["bias"] for t in TAUS], "o-", color=color,
            label=kind.replace("_", " "))
    for t in TAUS:
        ax.annotate(f"τ={t:g}", (rows[(kind, t)]["variance"], rows[(kind, t)]["bias"]), fontsize=7)
for name, marker in [("REINFORCE", "s"), ("REINFORCE + baseline", "D"), ("straight_through_softmax", "^")]:
    st = rows[(name, "-")]
    ax.plot(st["variance"], st["bias"], marker, color="k", label=name.replace("_", " "))
ax.set_xscale("log")
ax.set_xlabel("variance of one estimate")
ax.set_ylabel("bias |E[estimate] - exact|")
ax.legend(fontsize=7)
ax.set_title("Gradient estimators for E[f(x)], x ~ softmax(θ)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Panel: what temperature and top-p leave to sample
#
# The next-token distribution after `a` (the flat row of the trap) and after `b` (a peaked row).
# Move the temperature and top-p: grey bars are the chain's probabilities, blue bars what the sampler
# actually draws from. Without a running kernel, the static views below show a few settings.

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as W  # noqa: E402

from labkit.widgets.base import Panel  # noqa: E402


class TruncationPanel(Panel):
    def build_controls(self):
        return {"row": W.Dropdown(options=["a", "b", "<bos>"], value="a", description="after"),
                "temperature": W.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.1, description="T"),
                "top_p": W.FloatSlider(value=0.75, min=0.05, max=1.0, step=0.05, description="top-p")}

    def render(self, row, temperature, top_p):
        logits = chain.step(torch.tensor([[chain.names.index(row)]]))[0]
        return render_truncation(logits, chain.names, temperature, top_p)


TruncationPanel().ui()

# %%
for row, T, top in [("a", 1.0, 0.75), ("a", 0.5, 0.75), ("b", 1.0, 0.75)]:
    print(f"after {row}: " + render_truncation(chain.step(torch.tensor([[chain.names.index(row)]]))[0], chain.names, T, top)["text"])
    print()

# %% [markdown]
# After `a`, top-p = 0.75 keeps five words and drops `<eos>`; after `b` it keeps only `d`, dropping
# `<eos>` again (cuts like these, in most rows, are what lengthened the top-p samples of section 2).
# Temperature is applied first: a lower temperature keeps the order of the tokens and moves mass
# towards the top (the top-k mass grows as T falls, for every k), so the nucleus of a given top-p can
# only shrink or stay: after `a` at T = 0.5 the same top-p keeps four words instead of five. At a slider
# value equal to a cumulative probability of a row (after `c`, the sum of its two most probable
# tokens, for instance) the kept set hangs on the tie rule: this filter stops as soon as the kept
# mass reaches p.
#
# ## 5. Try it
#
# **Exercise 1.** Write `my_top_p(logits, p)`: for logits `[..., V]`, keep the smallest set of most
# probable tokens whose probabilities sum to at least `p` (the token that crosses `p` is kept) and set
# every other logit to `-inf`; kept logits are unchanged. Write it from torch operations: labkit's
# `top_p_filter` is the reference the grader compares against.

# %%
def my_top_p(logits, p):
    ### BEGIN SOLUTION
    probs = torch.softmax(logits, -1)
    sorted_p, order = probs.sort(-1, descending=True)
    keep_sorted = (sorted_p.cumsum(-1) - sorted_p) < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))
    ### END SOLUTION


# %%
# CHECK: 01b-top-p
check_top_p(my_top_p)
### BEGIN HIDDEN TESTS
rows_chain = chain.step(torch.tensor([[i] for i in range(chain.V) if i != EOS]))
for p_ in (0.6, 0.75, 0.92):                   # >= 0.02 from every cumulative sum of a row: no tie decides the set
    mine = torch.isfinite(my_top_p(rows_chain.clone(), p_))
    assert torch.equal(mine, torch.isfinite(top_p_filter(rows_chain, p_))), f"on the chain's rows at p={p_} your nucleus differs"
check_top_p(lambda z, q: my_top_p(z.double(), q))
### END HIDDEN TESTS
print("exercise 1: the nucleus is right")

# %% [markdown]
# **Exercise 2.** Write `my_reinforce(theta, x, fx, baseline)`: for logits `theta [K]`, sampled
# outcomes `x [N]` and their rewards `fx [N]`, return the `[N, K]` score-function estimates
# $(f(x_i) - b)\,\nabla_\theta \log \mathrm{softmax}(\theta)_{x_i}$, one row per sample (from torch
# operations, not labkit's `score_function_grads`, which the grader uses as its reference).

# %%
def my_reinforce(theta, x, fx, baseline):
    ### BEGIN SOLUTION
    p = torch.softmax(theta, -1)
    return (fx - baseline)[:, None] * (torch.nn.functional.one_hot(x, theta.numel()).to(p.dtype) - p)
    ### END SOLUTION


# %%
# CHECK: 01b-reinforce
check_score_function(my_reinforce)
### BEGIN HIDDEN TESTS
x_ = torch.multinomial(p, 500, replacement=True, generator=torch.Generator().manual_seed(3))
assert torch.allclose(my_reinforce(theta, x_, f[x_], baseline).double(), score_function_grads(theta, x_, f[x_], baseline),
                      atol=1e-6), "on the notebook's categorical your estimates differ from score_function_grads"
### END HIDDEN TESTS
print("exercise 2: the score-function estimator is right")

# %% [markdown]
# ## Summary
#
# * A token id is a category: MSE on the id learns the conditional mean, often an id that never
#   occurs; cross-entropy learns the distribution.
# * Decoders trade likelihood for diversity: greedy and beam search return one sequence, and beam
#   search can find a far more probable one than greedy; temperature and top-p move along the
#   trade-off; cooling too far walks into greedy's trap; a per-token filter can change the length law.
# * Masking guarantees a format but distorts the distribution; a look-ahead restores it when the
#   probability of meeting the format is known.
# * A sampled token has no gradient; REINFORCE is unbiased with a variance a baseline reduces;
#   relaxations are biased, Gumbel-softmax trading bias for variance through τ.
#
# This run's ledger:

# %%
_ = summary()
