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
# # 06 · Reductions and denominators: who gets how much of the gradient
#
# **What you will see.** A loss over a batch is a weighted sum of per-token losses divided by
# *something*. That something decides how much each token, each sequence, each micro-batch and
# each GPU counts, so it is part of the objective:
#
# $$L = \frac{\sum_{b,t} m_{bt}\, w_{bt}\, \ell_{bt}}{D}.$$
#
# 1. the reduction panel: token mean, sequence mean, sum and batch mean drawn as each token's
#    effective weight in the gradient;
# 2. gradient accumulation with micro-batches of unequal size: the mean of micro-batch means is
#    another objective (shown on a deliberately lopsided split, then measured on random batches);
#    summing over the global target count reproduces the full batch exactly;
# 3. data-parallel ranks on **real** `torch.distributed` (2 gloo processes on this machine): each
#    rank's loss its own token mean vs all-reducing sums and counts, checked against labkit's
#    single-process simulation;
# 4. sample weights through the reduction, and a preview of masked diffusion's $1/|M_t|$ weights;
# 5. two exercises.
#
# **Runtime:** about 15 s on a laptop CPU (2 cores), of which ~4 s start the two ranks.

# %%
import copy

import matplotlib.pyplot as plt
import torch

import labkit
from labkit.batch import collate
from labkit.data import MarkovWorld
from labkit.dist import run_ranks
from labkit.models import TinyCausalLM
from labkit.predict import ask, reveal
from labkit.paradigms.autoregressive import (causal_lm_loss, causal_lm_token_losses, data_parallel_step,
                                             next_token_targets)
from labkit.claims import check, claim, summary
from labkit.reduce import REDUCTIONS, effective_weights, micro_batch_mean_gaps, reduce, simulate_ranks
from labkit.exercises.reductions import check_ddp_rank_loss, check_micro_batch_loss
from labkit.train import fit
from labkit.viz import token_weights_figure
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. Four reductions, drawn as token weights
#
# Every reduction is linear in the per-token losses, so $\partial L / \partial \ell_{bt}$ is a fixed
# weight per token, and it is exactly that token's share of the gradient
# (`labkit.reduce.effective_weights` reads it off autograd). Three rows with 2, 4 and 10 targets:
#
# | reduction | denominator | weight of one token in row *b* |
# |---|---|---|
# | `token_mean` | all targets *N* | $1/N$ |
# | `sequence_mean` | $B$ rows, each averaged over its $n_b$ | $1/(B\,n_b)$ |
# | `sum` | 1 | 1 |
# | `batch_mean` | $B$ | $1/B$ |
#
# The panel: choose a reduction, the weights re-render.
#
# Under the contract view, **what the model learns** in that state: a tiny model trained with it
# (a TinyCausalLM on MarkovWorld sentences, loss reduced that way; the stored run comes from `make panel-data`), its loss curve against the known floor,
# the held-out loss per token on all, short and long sentences, and a few samples. The button "train this state now" retrains the selected state live
# (a few seconds on a CPU) and shows it beside the stored run.

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import ReductionPanel, render_learned, render_reduction  # noqa: E402

ReductionPanel().ui()

# %% [markdown]
# Every state of the panel, as text (for a saved notebook without a widget front end):

# %%
states = {how: render_reduction(how) for how in REDUCTIONS}
for how, st in states.items():
    print(st["text"])
    print("  learned:", render_learned("reduction", how)["text"])

# %% [markdown]
# **Checks (true by construction, read off autograd).** Under `token_mean` every token weighs the
# same, 1/16; under `sequence_mean` a token of the 2-token row weighs 5× a token of the 10-token
# row while every row weighs 1/3; `sum` and `batch_mean` differ from `token_mean` by a constant
# factor (16 and 16/3 here: the learning rate absorbs it, but it changes with the batch's token count).

# %%
tm, sm = states["token_mean"], states["sequence_mean"]
n_tok = int((tm["weights"] > 0).sum())
check("06.token_mean_weight", (tm["weights"][tm["weights"] > 0] - 1 / n_tok).abs().max(), 0, 1e-12,
      text="token_mean: max |token weight - 1/N|")
check("06.sequence_mean_ratio", sm["per_token"][0] / sm["per_token"][2], 5, 1e-9,
      text="sequence_mean: weight of a 2-token-row token / a 10-token-row token")
check("06.sequence_mean_rows", (sm["row_totals"] - 1 / 3).abs().max(), 0, 1e-12, text="sequence_mean: max |row total - 1/3|")
check("06.sum_factor", (states["sum"]["weights"] - tm["weights"] * n_tok).abs().max(), 0, 1e-12,
      text="sum: max |weight - N x token_mean weight|")
_ = check("06.batch_mean_factor", (states["batch_mean"]["weights"] - tm["weights"] * n_tok / 3).abs().max(), 0, 1e-12,
          text="batch_mean: max |weight - (N/B) x token_mean weight|")

# %%
# NBVAL_IGNORE_OUTPUT
fig = token_weights_figure({how: st["weights"] for how, st in states.items()})
plt.show()

# %% [markdown]
# ## 2. Gradient accumulation: mean of means vs the global count
#
# A model trained briefly on `MarkovWorld` sentences gives per-token losses that differ from
# sentence to sentence. First a deliberately **lopsided** batch, to make the effect visible: 11
# sentences split into two micro-batches of very different sizes, the chapter's "<bos> the cat sat
# on the mat <eos>" alone (7 targets, a common and easy sentence) and ten long held-out sentences
# (at least 13 targets each; the counts are printed). Random batches come after.

# %%
world = MarkovWorld(tokenizer=tok)
sentences = world.sample_sentences(3000, torch.Generator().manual_seed(SEED), max_len=24)
torch.manual_seed(SEED)
model = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=24)
fit(model, lambda s: collate([{"input_ids": x} for x in sentences[(s * 16) % 2800:][:16]], tok.pad_id),
    lambda m, b: causal_lm_loss(m(**b.model_inputs()), b.labels), steps=300, lr=3e-3, desc="world")
model = model.cpu().eval()      # exact gradient comparisons below run on the CPU

short = [tok.encode("<bos> the cat sat on the mat <eos>")]
long_ = [s for s in sentences[2800:] if len(s) >= 14][:10]
micro = [collate([{"input_ids": s} for s in part], tok.pad_id) for part in (short, long_)]
full = collate([{"input_ids": s} for s in short + long_], tok.pad_id)
counts = [int(next_token_targets(b.labels).ne(-100).sum()) for b in micro]       # targets after the loss's shift
N = sum(counts)
print(f"targets per micro-batch: {counts} (global N = {N})")


def grads_of(loss_fn):
    """Flat gradient of the model's parameters for one objective (summed over micro-batches)."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def lm(b, **kw):
    return causal_lm_loss(model(**b.model_inputs()), b.labels, **kw)


results = {
    "full batch, token mean": grads_of(lambda: lm(full)),
    "mean of micro-batch means": grads_of(lambda: sum(lm(b) for b in micro) / len(micro)),
    "sum / global count": grads_of(lambda: sum(lm(b, reduction="sum", denominator=N) for b in micro)),
}
ref_loss, ref_grad = results["full batch, token mean"]
for name, (loss, grad) in results.items():
    print(f"{name:>26}: loss {loss.item():.4f} | gradient differs from the full batch by "
          f"{float((grad - ref_grad).norm() / ref_grad.norm()):.1%}")

# %% [markdown]
# **Predict first** (commit in a running notebook; the claims below reveal it).

# %%
# NBVAL_IGNORE_OUTPUT
q_grad = ask("06.lopsided_grad_gap", "With the mean of the two micro-batch means, how far is the gradient from the "
             "full batch's (|g - g_full| / |g_full|)?", number=(0.0, 2.0, 0.1))

# %% [markdown]
# **Claims, on this lopsided split.** The mean of micro-batch means is more than 3% away from the
# full-batch token mean (the 7 targets of the short sentence get half the weight), and its gradient
# is far from the full-batch gradient. **Check.** Dividing each micro-batch's sum by the global
# count reproduces the full-batch loss and gradients (to 1e-6, float32 rounding). This was
# transformers' gradient accumulation bug of October 2024 (PRs #34191, #34198: `num_items_in_batch`).

# %%
mom_loss, mom_grad = results["mean of micro-batch means"]
gc_loss, gc_grad = results["sum / global count"]
rel_gap = abs(mom_loss - ref_loss).item() / ref_loss.item()
claim("06.lopsided_loss_gap", rel_gap, above=0.03, fmt=".3f",
      text=f"split {counts[0]} vs {counts[1]} targets: |mean of means - token mean| / token mean")
claim("06.lopsided_grad_gap", float((mom_grad - ref_grad).norm() / ref_grad.norm()), above=0.05,
      text="its gradient: |g_mean_of_means - g_full| / |g_full|")
check("06.global_count_grad", (gc_grad - ref_grad).abs().max(), 0, 1e-6, text="sum / global count: max |gradient difference|")
_ = check("06.global_count_loss", gc_loss, ref_loss, 1e-6, text="sum / global count: loss", fmt=".4f")
_ = reveal(q_grad, float((mom_grad - ref_grad).norm() / ref_grad.norm()))

# %% [markdown]
# ### How large is the gap on ordinary batches?
#
# The split above is an extreme case, built to make the effect large. On random batches the
# micro-batches have similar token counts and the gap is much smaller, but it is not zero, and its
# gradient still weighs tokens by their micro-batch's size. Take 200 held-out sentences (their
# lengths follow `MarkovWorld`: a few to about twenty targets each, summary printed), score each
# once, and draw 2000 random batches of 16 sentences split into 4 micro-batches of 4 (an
# accumulation of 4 steps). Per batch: (mean of micro-batch means − token mean) / token mean.

# %%
pool = collate([{"input_ids": s} for s in sentences[2800:]], tok.pad_id)
with torch.no_grad():
    pool_losses, pool_mask = causal_lm_token_losses(model(**pool.model_inputs()), pool.labels)
pool_counts = pool_mask.sum(1)
print(f"{len(pool_counts)} sentences, targets per sentence: min {int(pool_counts.min())}, median "
      f"{int(pool_counts.median())}, max {int(pool_counts.max())}")
gaps = micro_batch_mean_gaps((pool_losses * pool_mask).sum(1), pool_counts, n_micro=4, micro_size=4, n_batches=2000,
                             generator=torch.Generator().manual_seed(SEED))
abs_gaps = gaps.abs()
print(f"|relative gap| over 2000 random batches: median {abs_gaps.median():.4f}, 95th percentile "
      f"{abs_gaps.quantile(0.95):.4f}, max {abs_gaps.max():.4f}; signed mean {gaps.mean():+.4f}")

# %%
# NBVAL_IGNORE_OUTPUT
GAP_CHOICES = ["under 2%", "2% to 10%", "over 10%"]
q_random = ask("06.random_gap_median", "On random batches (4 micro-batches of 4 sentences), what is the median "
               "|relative loss gap| of the mean of micro-batch means?", choices=GAP_CHOICES)

# %% [markdown]
# **Claims.** On random batches of this data the loss gap is typically small (median under 2%),
# and the lopsided split above lies beyond the 95th percentile of random batches: it shows the
# mechanism, not a typical size. Whatever the size, the fix (sum / global count) is exact.

# %%
claim("06.random_gap_median", abs_gaps.median(), below=0.02, fmt=".4f",
      text="random 4 x 4 batches: median |relative gap|")
_ = claim("06.lopsided_beyond_random", rel_gap, above=abs_gaps.quantile(0.95), fmt=".4f",
          text="lopsided split's gap vs the random batches' 95th percentile")
med = float(abs_gaps.median())
_ = reveal(q_random, GAP_CHOICES[0] if med < 0.02 else GAP_CHOICES[1] if med < 0.10 else GAP_CHOICES[2])

# %% [markdown]
# ## 3. Data-parallel ranks, for real
#
# Data parallelism gives each rank its own shard; DDP then **averages** the gradients over ranks
# (that part is DDP's). The loss each rank backpropagates is the user's choice: calling the usual
# token-mean loss on each shard makes it the rank's own token mean, and the objective becomes the
# mean of rank means, the same mistake as above one level up. The fix: all-reduce the target count first and let each rank
# backpropagate $R\,S_r / N$ (`labkit.reduce.rank_loss(reduction="global_count")`); after averaging,
# the gradient is that of $\sum_r S_r / N$.
#
# `labkit.dist.run_ranks` starts 2 processes with `torch.distributed` (gloo backend, 127.0.0.1,
# a free port) and runs `labkit.dist.data_parallel_step` in each: rank 0 gets the short sentence,
# rank 1 the ten long ones (the lopsided split of section 2). Each rank computes both modes,
# all-reduces its gradients and divides by the world size, as DDP does. A rank that fails or hangs terminates all of them
# (the tests check it).

# %%
shards = [{f: getattr(b, f) for f in ("input_ids", "attention_mask", "position_ids", "labels")} for b in micro]
real = run_ranks(data_parallel_step, world_size=2, args=(copy.deepcopy(model), shards))
for r in real:
    print(f"rank {r['rank']}: {r['local_count']:>3} targets, local token mean {r['local_sum'] / r['local_count']:.4f} | "
          f"loss backpropagated: local_mean {r['reductions']['local_mean']['loss']:.4f}, global_count {r['reductions']['global_count']['loss']:.4f}")
print(f"all-reduced: {real[0]['global_count']} targets, global token mean {real[0]['global_sum'] / real[0]['global_count']:.4f}")

# %% [markdown]
# The same step simulated in one process (`labkit.reduce.simulate_ranks`): per-rank losses from
# each shard, and the gradient of their mean, which is what averaged gradients descend.

# %%
simulated = {}
for mode in ["local_mean", "global_count"]:
    def objective(mode=mode):
        per_rank = [causal_lm_token_losses(model(**b.model_inputs()), b.labels) for b in micro]
        sim = simulate_ranks([l for l, _ in per_rank], [m for _, m in per_rank], reduction=mode)
        simulated[mode] = sim
        return sim["objective"]
    simulated[mode + " grad"] = grads_of(objective)
    real_avg = sum(r["reductions"][mode]["loss"] for r in real) / len(real)
    print(f"{mode:>12}: objective {simulated[mode]['objective'].item():.4f} simulated, {real_avg:.4f} on real ranks")

# %% [markdown]
# **Checks.** With each rank's own token mean as its loss, the averaged objective is exactly the
# mean of micro-batch means of section 2 (same split, so the same gap) and so is its gradient;
# with all-reduced sums and counts the real ranks' gradient equals the full-batch gradient (1e-6);
# every rank ends with the same averaged gradient; and the single-process simulation gives the same
# losses and gradients as the real run, in both modes (float32 rounding: 1e-5 on losses, 1e-6 on
# gradients).

# %%
sim_vs_real_loss = max(abs(r["reductions"][m]["loss"] - simulated[m]["losses"][r["rank"]].item())
                       for m in ["local_mean", "global_count"] for r in real)
sim_vs_real_grad = max(float((r["reductions"][m]["grad"] - simulated[m + " grad"][1]).abs().max())
                       for m in ["local_mean", "global_count"] for r in real)
rank_vs_rank = max(float((real[0]["reductions"][m]["grad"] - real[1]["reductions"][m]["grad"]).abs().max())
                   for m in ["local_mean", "global_count"])
check("06.sim_equals_real_loss", sim_vs_real_loss, 0, 1e-5, text="max |real - simulated| rank loss")
check("06.sim_equals_real_grad", sim_vs_real_grad, 0, 1e-6, text="max |real - simulated| averaged gradient")
check("06.ranks_agree", rank_vs_rank, 0, 0, text="max |rank 0 - rank 1| averaged gradient")
check("06.rank_means_are_micro_means", simulated["local_mean"]["objective"].item(), mom_loss, 1e-6, fmt=".4f",
      text="mean of rank means (objective)")
check("06.rank_means_grad", (real[0]["reductions"]["local_mean"]["grad"] - mom_grad).abs().max(), 0, 1e-6,
      text="local_mean ranks vs mean of micro-batch means: max |gradient difference|")
_ = check("06.all_reduced_grad", (real[0]["reductions"]["global_count"]["grad"] - ref_grad).abs().max(), 0, 1e-6,
          text="global_count ranks vs full batch: max |gradient difference|")

# %% [markdown]
# ## 4. Sample weights keep their meaning
#
# A per-sequence weight $w_b$ should mean "this sequence counts $w_b$ times". With the weighted
# token mean $\sum w m \ell / \sum w m$ that is literally true: weight 2 equals putting the
# sequence in the batch twice. Across micro-batches it stays true only if the denominator is the
# global weighted count $\sum w m$, not each micro-batch's own.

# %%
with torch.no_grad():
    losses, mask = causal_lm_token_losses(model(**full.model_inputs()), full.labels)
w = torch.ones(len(short) + len(long_))
w[0] = 2.0                                                       # the chapter's sentence counts twice
weighted = reduce(losses, mask, "token_mean", weights=w).value
dup_ids = [short[0]] + short + long_
dup = collate([{"input_ids": s} for s in dup_ids], tok.pad_id)
with torch.no_grad():
    duplicated = causal_lm_loss(model(**dup.model_inputs()), dup.labels)
W = (w[:, None] * mask).sum()                                    # global weighted count
split = [slice(0, len(short)), slice(len(short), None)]
accumulated = sum(reduce(losses[s], mask[s], "sum", weights=w[s]).value / W for s in split)
per_micro = sum(reduce(losses[s], mask[s], "token_mean", weights=w[s]).value for s in split) / 2
print(f"weight 2                          : {weighted.item():.4f}")
print(f"the sequence duplicated           : {duplicated.item():.4f}")
print(f"weighted, accumulated, global W   : {accumulated.item():.4f}")
print(f"weighted, per-micro-batch means   : {per_micro.item():.4f}")
seq_w = reduce(losses, mask, "sequence_mean", weights=w).value
with torch.no_grad():
    l2, m2 = causal_lm_token_losses(model(**dup.model_inputs()), dup.labels)
seq_dup = reduce(l2, m2, "sequence_mean").value
print(f"sequence_mean: weight 2 {seq_w.item():.4f} vs duplicated {seq_dup.item():.4f}")

# %% [markdown]
# **Checks.** Weight 2 equals duplication under both `token_mean` and `sequence_mean` (up to
# float32 rounding of two different batches' forwards); accumulated with the global weighted count
# it equals the full batch. **Claim, on the lopsided split.** Per-micro-batch weighted means do not:
# they are more than 3% off.

# %%
check("06.weight2_is_duplication", weighted, duplicated, 1e-5, fmt=".4f", text="token_mean: weight 2 vs duplicated")
check("06.weight2_sequence_mean", seq_w, seq_dup, 1e-5, fmt=".4f", text="sequence_mean: weight 2 vs duplicated")
check("06.weighted_accumulation", accumulated, weighted, 1e-6, fmt=".4f", text="accumulated with global W vs full batch")
_ = claim("06.weighted_per_micro_gap", abs(per_micro - weighted) / weighted, above=0.03, fmt=".3f",
          text="per-micro-batch weighted means: |relative gap| to the full batch")

# %% [markdown]
# ### Preview: the masked-diffusion weight $1/|M_t|$
#
# Notebook 08 trains a masked diffusion model. Each sequence draws a mask ratio $t$ and hides
# each token with probability $t$; the loss averages CE over the hidden set $M_t$. Two weightings
# appear in practice: divide by the number hidden, $1/|M_t|$ (every sequence counts 1), or the
# ELBO weight $1/(t L)$ (a sequence with more hidden tokens than expected counts more). Their
# expectations agree, because $\mathbb{E}|M_t| = tL$, but per sequence they do not.

# %%
L, n_seq = 20, 4000
g = torch.Generator().manual_seed(SEED)
t = 0.05 + 0.95 * torch.rand(n_seq, generator=g)
hidden = torch.rand(n_seq, L, generator=g) < t[:, None]          # each token hidden with probability t
elbo_all = hidden.sum(-1) / (t * L)                              # every draw, an empty one counting 0
keep = hidden.any(-1)                                             # a draw with nothing hidden has no target
hidden, t = hidden[keep], t[keep]
per_mask = effective_weights(hidden, "sequence_mean") * hidden.shape[0]      # 1/|M_t| per hidden token
elbo_w = (1.0 / (t * L))[:, None].expand_as(hidden).double()
per_elbo = effective_weights(hidden, "sum", weights=elbo_w)                   # 1/(t L) per hidden token
tot_mask, tot_elbo = per_mask.sum(-1), per_elbo.sum(-1)
for i in range(3):
    print(f"t = {t[i]:.2f}, |M_t| = {int(hidden[i].sum()):>2}: weight per hidden token 1/|M_t| = {per_mask[i][hidden[i]][0]:.3f}, "
          f"1/(tL) = {per_elbo[i][hidden[i]][0]:.3f}; sequence total {tot_mask[i]:.2f} vs {tot_elbo[i]:.2f}")
print(f"over {hidden.shape[0]} sequences: 1/|M_t| totals mean {tot_mask.mean():.3f} (std {tot_mask.std():.3f}); "
      f"1/(tL) totals mean {tot_elbo.mean():.3f} (std {tot_elbo.std():.3f})")

# %% [markdown]
# **Check.** With $1/|M_t|$ every sequence's weights sum to exactly 1. With $1/(tL)$ they average
# to 1 over all draws (an identity in expectation; 0.02 is about four Monte-Carlo standard errors;
# the kept draws alone average slightly more, since the dropped empty ones count 0).
# **Claim.** Per sequence the $1/(tL)$ totals vary: standard deviation above 0.1.

# %%
check("06.inverse_count_totals", (tot_mask - 1).abs().max(), 0, 1e-12, text="1/|M_t|: max |sequence total - 1|")
check("06.elbo_mean", elbo_all.mean(), 1, 0.02, fmt=".3f", text=f"1/(tL): mean sequence total over all {n_seq} draws")
_ = claim("06.elbo_spread", tot_elbo.std(), above=0.1, text="1/(tL): std of the sequence totals")

# %% [markdown]
# ## 5. Try it
#
# **Exercise 1.** Gradient accumulation: write `my_micro_batch_loss(token_losses, mask,
# global_count)`, the loss of one micro-batch, so that the losses of all micro-batches of a step
# add up to the token mean of the whole batch.

# %%
def my_micro_batch_loss(token_losses, mask, global_count):
    ### BEGIN SOLUTION
    return (token_losses * mask).sum() / global_count
    ### END SOLUTION


# %%
# CHECK: 06-micro-batch-loss
check_micro_batch_loss(my_micro_batch_loss)
### BEGIN HIDDEN TESTS
parts = [causal_lm_token_losses(model(**b.model_inputs()), b.labels) for b in micro]
mine = sum(my_micro_batch_loss(l, m, N) for l, m in parts)
assert torch.allclose(mine, ref_loss, atol=1e-6), "on the notebook's micro-batches the sum must equal the full-batch loss"
### END HIDDEN TESTS
print("exercise 1: micro-batch losses add up to the full-batch token mean")

# %% [markdown]
# **Exercise 2.** Data parallelism: DDP averages gradients over `world_size` ranks. Write
# `my_rank_loss(local_sum, local_count, global_count, world_size)`, the loss one rank
# backpropagates so that the averaged gradient is that of the global token mean.

# %%
def my_rank_loss(local_sum, local_count, global_count, world_size):
    ### BEGIN SOLUTION
    return local_sum * world_size / global_count
    ### END SOLUTION


# %%
# CHECK: 06-ddp-rank-loss
check_ddp_rank_loss(my_rank_loss)
### BEGIN HIDDEN TESTS
mine = [my_rank_loss(torch.tensor(r["local_sum"]), r["local_count"], r["global_count"], 2) for r in real]
assert abs(sum(float(x) for x in mine) / 2 - real[0]["global_sum"] / real[0]["global_count"]) < 1e-6
### END HIDDEN TESTS
print("exercise 2: averaged over ranks, the loss is the global token mean")

# %% [markdown]
# ## Summary
#
# | where the denominator lives | wrong | right |
# |---|---|---|
# | one batch | sequence mean when you meant tokens (or the reverse) | say which: `reduce(reduction=...)` returns it |
# | gradient accumulation | mean of micro-batch means | micro-batch sums / global count |
# | data-parallel ranks | average of rank means | all-reduce sums and counts; loss_r = R·S_r/N |
# | sample weights | per-micro-batch weighted means | global weighted count |
#
# The size of the mean-of-means gap depends on how unequal the micro-batches are: large on the
# lopsided split, small on random batches of this data; the global-count fix is exact in both.
# This run's ledger (checks are identities, claims are measured effects with their thresholds):

# %%
_ = summary()
