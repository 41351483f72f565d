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
#    another objective; summing over the global target count reproduces the full batch exactly;
# 3. data-parallel ranks on **real** `torch.distributed` (2 gloo processes on this machine): the
#    default "average the rank means" vs all-reducing sums and counts, checked against labkit's
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
from labkit.dist import data_parallel_step, run_ranks
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss, causal_lm_token_losses, next_token_targets
from labkit.reduce import (REDUCTIONS, check_ddp_rank_loss, check_micro_batch_loss, effective_weights, reduce,
                           simulate_ranks)
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

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import ReductionPanel, render_reduction  # noqa: E402

ReductionPanel().ui()

# %% [markdown]
# Every state of the panel, as text (for a saved notebook without a widget front end):

# %%
states = {how: render_reduction(how) for how in REDUCTIONS}
for how, st in states.items():
    print(st["text"])

# %% [markdown]
# **Claim.** Under `token_mean` every token weighs the same; under `sequence_mean` a token of the
# 2-token row weighs 5× a token of the 10-token row while every row weighs 1/3; `sum` and
# `batch_mean` differ from `token_mean` by a constant factor (the learning rate absorbs it, but it
# changes with the batch's token count).

# %%
tm, sm = states["token_mean"], states["sequence_mean"]
assert len({round(v, 12) for v in tm["per_token"]}) == 1 and abs(tm["per_token"][0] - 1 / 16) < 1e-12
assert abs(sm["per_token"][0] / sm["per_token"][2] - 5) < 1e-9 and torch.allclose(sm["row_totals"], torch.full((3,), 1 / 3, dtype=torch.float64))
assert torch.allclose(states["sum"]["weights"], tm["weights"] * 16) and torch.allclose(states["batch_mean"]["weights"], tm["weights"] * 16 / 3)
print(f"claim holds: token_mean {tm['per_token'][0]:.4f} per token; sequence_mean {sm['per_token'][0]:.3f} vs "
      f"{sm['per_token'][2]:.3f} per token (x{sm['per_token'][0] / sm['per_token'][2]:.0f})")

# %%
# NBVAL_IGNORE_OUTPUT
fig = token_weights_figure({how: st["weights"] for how, st in states.items()})
plt.show()

# %% [markdown]
# ## 2. Gradient accumulation: mean of means vs the global count
#
# A model trained briefly on `MarkovWorld` sentences gives per-token losses that differ from
# sentence to sentence. The prepared batch has 11 sentences split into two micro-batches of very
# different sizes: the chapter's "<bos> the cat sat on the mat <eos>" (7 targets, a common and
# easy sentence) and ten long held-out sentences.

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
# **Claim.** The mean of micro-batch means is more than 5% away from the full-batch token mean
# (the 7 targets of the short sentence get half the weight); dividing each micro-batch's sum by the
# global count reproduces the full-batch gradients to 1e-6. This was transformers' gradient
# accumulation bug of October 2024 (PRs #34191, #34198: `num_items_in_batch`).

# %%
mom_loss, mom_grad = results["mean of micro-batch means"]
gc_loss, gc_grad = results["sum / global count"]
rel_gap = abs(mom_loss - ref_loss).item() / ref_loss.item()
assert rel_gap > 0.05
assert torch.allclose(gc_grad, ref_grad, atol=1e-6) and torch.allclose(gc_loss, ref_loss, atol=1e-6)
assert not torch.allclose(mom_grad, ref_grad, atol=1e-4)
print(f"claim holds: mean of means off by {rel_gap:.1%}; global count matches (max gradient difference "
      f"{'< 1e-6' if float((gc_grad - ref_grad).abs().max()) < 1e-6 else 'large'})")

# %% [markdown]
# ## 3. Data-parallel ranks, for real
#
# Data parallelism gives each rank its own shard; DDP then **averages** the gradients over ranks.
# If each rank's loss is its own token mean, the objective is the mean of rank means, the same
# mistake as above one level up. The fix: all-reduce the target count first and let each rank
# backpropagate $R\,S_r / N$ (`labkit.reduce.rank_loss(mode="global_count")`); after averaging,
# the gradient is that of $\sum_r S_r / N$.
#
# `labkit.dist.run_ranks` starts 2 processes with `torch.distributed` (gloo backend, 127.0.0.1,
# a free port) and runs `labkit.dist.data_parallel_step` in each: rank 0 gets the short sentence,
# rank 1 the ten long ones. Each rank computes both modes, all-reduces its gradients
# and divides by the world size, as DDP does. A rank that fails or hangs terminates all of them
# (the tests check it).

# %%
shards = [{f: getattr(b, f) for f in ("input_ids", "attention_mask", "position_ids", "labels")} for b in micro]
real = run_ranks(data_parallel_step, world_size=2, args=(copy.deepcopy(model), shards))
for r in real:
    print(f"rank {r['rank']}: {r['local_count']:>3} targets, local token mean {r['local_sum'] / r['local_count']:.4f} | "
          f"loss backpropagated: local_mean {r['modes']['local_mean']['loss']:.4f}, global_count {r['modes']['global_count']['loss']:.4f}")
print(f"all-reduced: {real[0]['global_count']} targets, global token mean {real[0]['global_sum'] / real[0]['global_count']:.4f}")

# %% [markdown]
# The same step simulated in one process (`labkit.reduce.simulate_ranks`): per-rank losses from
# each shard, and the gradient of their mean, which is what averaged gradients descend.

# %%
simulated = {}
for mode in ["local_mean", "global_count"]:
    def objective(mode=mode):
        per_rank = [causal_lm_token_losses(model(**b.model_inputs()), b.labels) for b in micro]
        sim = simulate_ranks([l for l, _ in per_rank], [m for _, m in per_rank], mode=mode)
        simulated[mode] = sim
        return sim["objective"]
    simulated[mode + " grad"] = grads_of(objective)
    real_avg = sum(r["modes"][mode]["loss"] for r in real) / len(real)
    print(f"{mode:>12}: objective {simulated[mode]['objective'].item():.4f} simulated, {real_avg:.4f} on real ranks")

# %% [markdown]
# **Claim.** With per-rank means (DDP's default), the averaged objective misses the global token
# mean by more than 5%; with all-reduced sums and counts the real ranks' gradient equals the
# full-batch gradient (1e-6); and the single-process simulation gives the same numbers as the real
# run, losses and gradients, in both modes.

# %%
for mode in ["local_mean", "global_count"]:
    for r in real:
        assert abs(r["modes"][mode]["loss"] - simulated[mode]["losses"][r["rank"]].item()) < 1e-5
        assert torch.allclose(r["modes"][mode]["grad"], simulated[mode + " grad"][1], atol=1e-6)
    assert torch.equal(real[0]["modes"][mode]["grad"], real[1]["modes"][mode]["grad"]), "every rank holds the same averaged gradient"
dp_gap = abs(simulated["local_mean"]["objective"].item() - ref_loss.item()) / ref_loss.item()
assert dp_gap > 0.05
assert torch.allclose(real[0]["modes"]["global_count"]["grad"], ref_grad, atol=1e-6)
assert not torch.allclose(real[0]["modes"]["local_mean"]["grad"], ref_grad, atol=1e-4)
print(f"claim holds: mean of rank means off by {dp_gap:.1%}; all-reduced count = full batch; simulation = real run")

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
# **Claim.** Weight 2 equals duplication under both `token_mean` and `sequence_mean`; accumulated
# with the global weighted count it equals the full batch, and per-micro-batch means do not.

# %%
assert abs(weighted - duplicated) < 1e-5 and abs(seq_w - seq_dup) < 1e-5 and abs(accumulated - weighted) < 1e-6
assert abs(per_micro - weighted) / weighted > 0.05
print(f"claim holds: weighted {weighted.item():.4f} = duplicated {duplicated.item():.4f}; "
      f"per-micro-batch means {per_micro.item():.4f}")

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
# **Claim.** With $1/|M_t|$ every sequence's weights sum to exactly 1; with $1/(tL)$ they vary
# from sequence to sequence but average to 1.

# %%
assert torch.allclose(tot_mask, torch.ones_like(tot_mask)) and tot_elbo.std() > 0.1
assert abs(tot_elbo.mean() - 1) < 0.05
print(f"claim holds: 1/|M_t| totals all 1; 1/(tL) totals mean {tot_elbo.mean():.2f}, std {tot_elbo.std():.2f}")

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
# | one batch | sequence mean when you meant tokens (or the reverse) | say which: `reduce(how=...)` returns it |
# | gradient accumulation | mean of micro-batch means | micro-batch sums / global count |
# | data-parallel ranks | average of rank means | all-reduce sums and counts; loss_r = R·S_r/N |
# | sample weights | per-micro-batch weighted means | global weighted count |
#
# This run's numbers:

# %%
print(f"{'measurement':<56}{'value':>10}")
print(f"{'sequence_mean: short-row token / long-row token weight':<56}{sm['per_token'][0] / sm['per_token'][2]:>10.1f}")
print(f"{'grad. accumulation: mean of means vs token mean (rel.)':<56}{rel_gap:>10.1%}")
print(f"{'grad. accumulation: global count, max grad difference':<56}{'< 1e-6':>10}")
print(f"{'2 gloo ranks: mean of rank means vs token mean (rel.)':<56}{dp_gap:>10.1%}")
print(f"{'2 gloo ranks: all-reduced count = full batch grad':<56}{'yes':>10}")
print(f"{'weight 2 = duplicated sequence (token mean)':<56}{'yes':>10}")
print(f"{'masked diffusion: std of 1/(tL) sequence totals':<56}{tot_elbo.std().item():>10.2f}")
