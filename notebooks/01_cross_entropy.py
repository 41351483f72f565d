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
# # 01 · Cross-entropy: one target token moves every logit
#
# **What you will see.** Cross-entropy is the line every paradigm in this lab ends with, so we take
# it apart before building tasks on top of it:
#
# 1. its gradient with respect to the logits is $p - \text{onehot}(y)$: read off one example, then
#    checked against autograd on random batches;
# 2. temperature: every logit receives a push at any $T$; what $T$ changes is *how the push is
#    shared*, which we measure as the share held by the $k$ strongest competitors, for six candidate
#    words and for a 2048-token vocabulary (with a slider);
# 3. large vocabularies: `labkit.reduce.chunked_cross_entropy` gives the same loss and the same
#    gradients as the full-logits path without ever holding the $[N, V]$ logits; we measure the peak
#    memory of one training step of both for $V \in \{8\text{k}, 16\text{k}, 32\text{k}\}$ and how it
#    scales with $V$;
# 4. `ignore_index`: the mean is over supervised tokens, and the count is part of the answer;
# 5. two exercises.
#
# Every number the notebook asserts goes through `labkit.claims`: `check` for identities,
# `claim` for measured effects with a visible threshold; the ledger is printed at the end.
#
# **Runtime:** about 20 s on a laptop CPU (2 cores), half of it the memory measurement.

# %%
import tracemalloc

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import labkit
from labkit import IGNORE
from labkit.claims import check, claim, ledger, summary
from labkit.paradigms.distillation import log_log_slope   # least-squares slope of log y on log x
from labkit.predict import ask, reveal
from labkit.paradigms.supervised import ce_logit_grad, competitors_holding, temperature_push
from labkit.exercises.supervised import check_ce_grad, check_chunked_logsumexp
from labkit.reduce import (CHUNK_ELEMENTS, chunked_cross_entropy, full_logits_cross_entropy, reduce,
                           token_cross_entropy)
from labkit.memory import ce_memory_benchmark, measure_peak_memory
from labkit.widgets import DEMO_CLASS_LOGITS, DEMO_CLASS_NAMES, DEMO_CLASS_TARGET, demo_vocab_logits

SEED, DEVICE = labkit.setup_notebook()


def below(x, bounds=(1e-12, 1e-9, 1e-6, 1e-5, 1e-4)):
    """A difference as a stable bucket ("< 1e-06"): its last digits depend on the CPU's vector unit."""
    return next((f"< {b:.0e}" for b in bounds if x < b), f"{x:.1e}")

# %% [markdown]
# ## 1. The gradient of cross-entropy is p − onehot
#
# For one position with logits $z \in \mathbb{R}^K$ and target $y$, the loss is
# $\ell = -\log \operatorname{softmax}(z)_y = -z_y + \log \sum_j e^{z_j}$. Differentiate each term:
# the first contributes $-1$ at $k = y$ only, the second contributes $e^{z_k} / \sum_j e^{z_j} = p_k$
# at **every** $k$. So
#
# $$\frac{\partial \ell}{\partial z_k} = p_k - \mathbb{1}[k = y].$$
#
# Gradient descent moves $z$ against it: the target logit goes up by $1 - p_y$ (times the step), and
# every other logit goes down in proportion to the probability the model gave it. The candidate words
# after "the cat sat on the", with target *mat*:

# %%
z = torch.tensor(DEMO_CLASS_LOGITS, requires_grad=True)
y = torch.tensor(DEMO_CLASS_TARGET)
loss = F.cross_entropy(z[None], y[None])
loss.backward()
p = z.detach().softmax(-1)
onehot = F.one_hot(y, len(z)).float()
print(f"loss = -log p(mat) = {loss.item():.3f}\n")
print(f"{'word':>5} {'logit':>6} {'p':>6} {'onehot':>7} {'p - onehot':>11} {'autograd':>9}")
for k, word in enumerate(DEMO_CLASS_NAMES):
    print(f"{word:>5} {z[k].item():>6.2f} {p[k].item():>6.3f} {onehot[k].item():>7.0f} {(p - onehot)[k].item():>+11.3f} "
          f"{z.grad[k].item():>+9.3f}")
check("01.grad_one_example", (z.grad - (p - onehot)).abs().max().item(), 0, 1e-7, fmt=".0f",
      text="max |autograd - (p - onehot)| over the 6 words")
_ = check("01.grad_sums_to_zero", abs(z.grad.sum().item()), 0, 1e-6, fmt=".0f",
          text="|sum of the gradient| (what the target gains, the others lose)")

# %% [markdown]
# The largest push down is on *cat*, the word the model preferred: the gradient corrects the most
# probable competitor most. Now the identity on random batches, with the mean reduction (each row's
# gradient is divided by the number of supervised rows $n$) and some rows ignored (`-100`):
# `ce_logit_grad` is the formula written out, autograd is torch's own backward. (The differences are
# float64 rounding; their last digits depend on the CPU, so the check prints them at the precision
# of its tolerance.)

# %%
gen = torch.Generator().manual_seed(SEED)
worst_grad = 0.0
for trial in range(50):
    N, K = int(torch.randint(1, 64, (1,), generator=gen)), int(torch.randint(2, 500, (1,), generator=gen))
    logits = 4 * torch.randn(N, K, generator=gen, dtype=torch.float64)
    labels = torch.randint(K, (N,), generator=gen)
    labels[torch.rand(N, generator=gen) < 0.2] = IGNORE
    labels[0] = 0                                      # at least one supervised row
    zz = logits.clone().requires_grad_()
    F.cross_entropy(zz, labels, ignore_index=IGNORE).backward()
    worst_grad = max(worst_grad, (zz.grad - ce_logit_grad(logits, labels)).abs().max().item())
print(f"50 random batches (N up to 63, K up to 499, 20% of rows ignored): max |autograd - (p - onehot)/n| {below(worst_grad)}")
_ = check("01.grad_vs_autograd", worst_grad, 0, 1e-12, fmt=".0f",
          text="max |autograd - (p - onehot)/n| over 50 float64 batches, ignored rows included")

# %% [markdown]
# ## 2. Temperature: every logit is pushed, T decides how the push is shared
#
# Dividing the logits by a temperature, $p = \operatorname{softmax}(z / T)$, changes the gradient to
# $(p - \text{onehot}) / T$. The target's logit is pulled up by $(1 - p_y)/T$, and **every** other logit
# $k$ is pushed down by $p_k / T$, which is positive at any $T$: no logit is ever left out. What $T$
# changes is how that push is shared among the competitors. We measure it on one position over a
# 2048-token vocabulary (logits decaying like a Zipf law, target = the 21st most likely token) as
# the **share of the total push held by the $k$ strongest competitors**, with $k$ = `TOP` below, and as
# the number of competitors needed to hold half of it.

# %%
TOP, HALF = 10, 0.5                                   # the k of "top-k share", and the share for "competitors holding half"
z_vocab = demo_vocab_logits(2048, seed=SEED)
VOCAB_TARGET = 20
pushes = {T: temperature_push(z_vocab, VOCAB_TARGET, T, top=TOP) for T in (0.3, 1.0, 3.0)}
print(f"{'T':>4} | {'p(target)':>9} | {'smallest push p_k/T':>19} | {f'share of the top {TOP}':>16} | "
      f"{'competitors holding ' + format(HALF, '.0%'):>24}")
for T, s in pushes.items():
    print(f"{T:>4} | {s['p'][VOCAB_TARGET].item():>9.4f} | {s['push'].min().item():>19.1e} | {s['top_share']:>16.3f} | "
          f"{competitors_holding(s['cum_share'], HALF):>24}")
for T, s in pushes.items():
    check(f"01.every_logit_pushed_T{T:g}", int((s["push"] > 0).sum()), len(z_vocab) - 1, 0, fmt=".0f",
          text=f"other logits with a nonzero push at T={T:g}")
_ = check("01.push_balances_pull", max(abs(s["grad_sum"]) for s in pushes.values()), 0, 1e-12, fmt=".0f",
          text="max |sum of the gradient| over the three T")

# %% [markdown]
# **Predict first.** Before reading the claims: at $T = 3$, what share of the total push do the 10
# strongest of the 2047 competitors receive? Commit a number with the slider (in a running notebook).

# %%
# NBVAL_IGNORE_OUTPUT
q_spread = ask("01.top10_share_T3", f"At T = 3, what share of the push do the {TOP} strongest of the "
               f"{len(z_vocab) - 1} competitors receive?", number=(0.0, 1.0, 0.05))

# %% [markdown]
# **Claim.** At low temperature the push sits on a few competitors: at $T = 0.3$ the 10 strongest
# take nearly all of it. At high temperature it spreads over the vocabulary: at $T = 3$ the same 10
# take a small share, and it takes hundreds of competitors to hold half of it. $T = 1$ lies between.

# %%
claim("01.top10_share_T0.3", pushes[0.3]["top_share"], above=0.9, fmt=".3f",
      text=f"share of the push on the {TOP} strongest competitors at T=0.3")
claim("01.top10_share_T1", pushes[1.0]["top_share"], between=(0.2, 0.6), fmt=".3f",
      text=f"share of the push on the {TOP} strongest competitors at T=1")
claim("01.top10_share_T3", pushes[3.0]["top_share"], below=0.1, fmt=".3f",
      text=f"share of the push on the {TOP} strongest competitors at T=3")
_ = claim("01.half_push_competitors_T3", competitors_holding(pushes[3.0]["cum_share"], HALF), above=100, fmt=".0f",
          text="competitors holding half of the push at T=3", control="the same at T=0.3",
          control_value=competitors_holding(pushes[0.3]["cum_share"], HALF))
_ = reveal(q_spread, pushes[3.0]["top_share"])

# %% [markdown]
# The two views side by side: on the left, the push each of the 2047 other logits receives, by rank
# (log scale: none is zero); on the right, the share of the total push held by the $k$ strongest
# competitors, as a function of $k$.

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for T, s in pushes.items():
    ranks = range(1, len(s["push"]) + 1)
    axes[0].plot(ranks, s["push"].numpy(), label=f"T = {T:g}")
    axes[1].plot(ranks, s["cum_share"].numpy(), label=f"T = {T:g}")
axes[0].set(xscale="log", yscale="log", xlabel="competitor rank k (by push)", ylabel="push p_k / T",
            title="push on each of the 2047 other logits (all > 0)")
axes[1].axvline(TOP, color="k", ls=":", lw=1, label=f"k = {TOP}")
axes[1].set(xscale="log", xlabel="k strongest competitors", ylabel="share of the total push",
            title="share of the push held by the k strongest competitors")
for ax in axes:
    ax.legend(fontsize=8)
fig.suptitle(f"one position, V = {len(z_vocab)}, target = rank {VOCAB_TARGET + 1}", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Try it: the temperature panel.** Move $T$ (log scale) and pick the target among six words: the
# bars redraw the softmax and the gradient $(p - \text{onehot})/T$ for the six words and for the
# 2048-word vocabulary, with the share of the push held by the 10 strongest competitors and how
# many competitors hold half of it.
#
# Under the contract view, **what the model learns** in that state: a tiny model trained with it
# (a TinyCausalLM on MarkovWorld blocks trained with the loss at that $T$; the stored run comes from `make panel-data`), its loss curve against the known floor,
# the next-token accuracy, the entropy of its predictions with and without $T$ and a few samples. The button "train this state now" retrains the selected state live
# (a few seconds on a CPU) and shows it beside the stored run.

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import TemperaturePanel, render_learned, render_temperature  # noqa: E402

TemperaturePanel().ui()

# %% [markdown]
# Without a widget front end, the panel as it opens ($T = 1$):

# %%
print(render_temperature(1.0)["text"])
for T in ("0.1", "1", "10"):
    print(f"  learned at T = {T}:", render_learned("temperature", T)["text"])

# %% [markdown]
# ## 3. Large vocabularies: chunked cross-entropy
#
# An LM head turns hidden states $H \in \mathbb{R}^{N \times d}$ into logits $Z = H W^\top \in \mathbb{R}^{N \times V}$.
# With $N = 4096$ tokens and $V = 128\text{k}$, one float32 copy of $Z$ is 2 GiB, and the plain path
# `F.cross_entropy(H @ W.T, y)` keeps more than one: autograd saves the log-probabilities, and the
# backward builds a gradient of the same size.
#
# The loss needs much less. Per row it needs $\operatorname{lse}_i = \log\sum_k e^{z_{ik}}$ and $z_{i,y_i}$, and
# the gradient is $G = (\operatorname{softmax}(Z) - \text{onehot}) / n$, with
# $\partial \ell / \partial H = G W$ and $\partial \ell / \partial W = G^\top H$. `chunked_cross_entropy` is a custom
# `torch.autograd.Function`: its forward walks over blocks of rows, keeps only $\operatorname{lse}$ ($N$ floats),
# and its backward **recomputes** each block's logits, turns them into $G$ in place and accumulates
# both gradients. At most one $[\text{chunk}, V]$ block exists at a time; the price is one extra
# matrix product (the recomputation).
#
# First: same loss, same gradients (for `hidden` and `weight`), with 10% of the labels ignored.

# %%
gen = torch.Generator().manual_seed(SEED)
N, d, V = 2048, 64, 8192
hidden = torch.randn(N, d, generator=gen).requires_grad_()
weight = (torch.randn(V, d, generator=gen) * d ** -0.5).requires_grad_()
labels = torch.randint(V, (N,), generator=gen)
labels[torch.rand(N, generator=gen) < 0.1] = IGNORE

ref = full_logits_cross_entropy(hidden, weight, labels)
ref_gh, ref_gw = torch.autograd.grad(ref, (hidden, weight))
worst_chunk = {}
for chunk in (1, 100, 1000, N):
    loss = chunked_cross_entropy(hidden, weight, labels, chunk)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    worst_chunk[chunk] = max(abs(loss.item() - ref.item()), (gh - ref_gh).abs().max().item(), (gw - ref_gw).abs().max().item())
    print(f"chunk {chunk:>4} rows: loss {loss.item():.4f} (full {ref.item():.4f}) | max |difference| in loss and both "
          f"gradients {below(worst_chunk[chunk])}")
check("01.chunked_equals_full", max(worst_chunk.values()), 0, 1e-5, fmt=".0f",
      text="max |chunked - full| in loss and both gradients, chunk sizes 1, 100, 1000, N (float32)")
# [B, T, d] hidden states and [B, T] labels work too, and reduction="sum" skips the 1/n
loss_bt = chunked_cross_entropy(hidden.view(32, 64, d), weight, labels.view(32, 64), 256)
loss_sum = chunked_cross_entropy(hidden, weight, labels, 256, reduction="sum")
n_sup = int(labels.ne(IGNORE).sum())
check("01.chunked_batched_shapes", abs(loss_bt.item() - ref.item()), 0, 1e-5, fmt=".0f",
      text="|chunked loss on [B, T, d] - full loss|")
_ = check("01.chunked_sum_reduction", abs(loss_sum.item() / n_sup - ref.item()), 0, 1e-5, fmt=".0f",
          text="|chunked sum / n supervised - full mean|")

# %% [markdown]
# ### Measuring memory honestly on a CPU
#
# Python's `tracemalloc` is the usual tool for peak memory, but torch allocates tensor storage in C++,
# outside Python's allocator, so `tracemalloc` does not see tensors at all. `measure_peak_memory` uses
# the torch profiler with `profile_memory=True`, which records every allocation and free of torch's
# CPU allocator (on a GPU it reads `torch.cuda.max_memory_allocated`). A 64 MiB tensor, measured both ways:

# %%
def make_64mib():
    return torch.ones(16 * 2**20).sum()   # 16 Mi float32 = 64 MiB, freed before returning


tracemalloc.start()
make_64mib()
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
measured = measure_peak_memory(make_64mib, "cpu")
print(f"tracemalloc peak: {traced / 2**20:.2f} MiB | {measured.method}: {measured.peak_bytes / 2**20:.2f} MiB")
check("01.profiler_sees_64mib", measured.peak_bytes / 2**20, 64, 1, fmt=".1f", text="profiler peak of a 64 MiB tensor (MiB)")
_ = claim("01.tracemalloc_blind", round(traced / 2**20, 2), below=1,   # Python's own bookkeeping varies by a few KiB
          text="tracemalloc peak of the same (MiB, to 0.01)")

# %% [markdown]
# ### The measurement
#
# One training step (loss + backward) of each path for $V$ = 8192, 16384 and 32768, $N = 2048$,
# $d = 64$, 10% of labels ignored, measured once each on this notebook's device (the memory numbers
# do not vary between runs on a CPU). These sizes keep the notebook's own memory far below 2 GiB;
# the full-size pair ($N = 4096$, $d = 256$, $V$ up to 128k, where the full path needs several GiB)
# is measured by `make bench` (`tools/bench.py`, table in `bench/results.md`).
#
# The chunked path's block is sized by a budget of `CHUNK_ELEMENTS` logits (`chunk_size=None`):
# rows $= \lfloor 2^{24} / V \rfloor$, so the block stays the same size however large $V$ grows. What
# still grows with $V$ is the gradient of `weight`, $[V, d]$, which any path must return.

# %%
VS, N_BENCH, D_BENCH = (8192, 16384, 32768), 2048, 64
bench = ce_memory_benchmark(VS, n_tokens=N_BENCH, d_model=D_BENCH, device=DEVICE, seed=SEED)
by = {(r["V"], r["path"]): r for r in bench}
MiB = 2**20
print(f"memory read with: {bench[0]['method']}; chunk budget {CHUNK_ELEMENTS} logits = {CHUNK_ELEMENTS * 4 / MiB:.0f} MiB")
print(f"{'V':>6} {'[N,V] logits':>13} {'full path peak':>15} {'chunked peak':>13} {'chunked / full':>15}   (MiB)")
for V_ in VS:
    f, c = by[V_, "full"], by[V_, "chunked"]
    print(f"{V_:>6} {f['logits_bytes'] / MiB:>13.0f} {f['peak_bytes'] / MiB:>15.1f} {c['peak_bytes'] / MiB:>13.1f} "
          f"{c['peak_bytes'] / f['peak_bytes']:>15.3f}")
_ = check("01.bench_same_loss", max(abs(by[V_, "full"]["loss"] - by[V_, "chunked"]["loss"]) for V_ in VS), 0, 1e-4, fmt=".0f",
          text="max |full - chunked| loss over the three V")

# %% [markdown]
# **Predict first**, before the claims: how much memory does chunking save at the largest $V$?

# %%
# NBVAL_IGNORE_OUTPUT
CHUNK_CHOICES = ["under a quarter of it", "a quarter to three quarters of it", "about the same or more"]
q_chunked = ask("01.chunked_vs_full_peak", "At the largest V, how large is the chunked path's peak memory, "
                "compared with the full path's?", choices=CHUNK_CHOICES)

# %% [markdown]
# **Claim.** At the largest $V$ the full path holds at least two $[N, V]$ float32 matrices at its
# peak (the measured peak is three: plausibly the logits, the log-probabilities autograd saves and
# their gradient), while the chunked path stays below a quarter of its peak. Over $V$, the full
# path's peak grows in proportion to $V$ (log-log slope near 1), the chunked path's barely grows:
# its block is fixed, and the check below confirms that all of its growth is the $[V, d]$ weight
# gradient.

# %%
big = max(VS)
full_peaks = [by[V_, "full"]["peak_bytes"] for V_ in VS]
chunk_peaks = [by[V_, "chunked"]["peak_bytes"] for V_ in VS]


claim("01.full_holds_logits", by[big, "full"]["peak_bytes"] / by[big, "full"]["logits_bytes"], above=2, fmt=".2f",
      text=f"full path peak / one [N, V] float32 at V={big}")
claim("01.chunked_vs_full_peak", by[big, "chunked"]["peak_bytes"] / by[big, "full"]["peak_bytes"], below=0.25, fmt=".3f",
      text=f"chunked / full peak memory at V={big}", control="full path peak (MiB)",
      control_value=by[big, "full"]["peak_bytes"] / MiB)
claim("01.full_peak_slope", log_log_slope(VS, full_peaks), between=(0.9, 1.1), fmt=".3f",
      text="log-log slope of the full path's peak over V")
claim("01.chunked_peak_slope", log_log_slope(VS, chunk_peaks), below=0.25, fmt=".3f",
      text="log-log slope of the chunked path's peak over V")
ratio = by[big, "chunked"]["peak_bytes"] / by[big, "full"]["peak_bytes"]
reveal(q_chunked, CHUNK_CHOICES[0] if ratio < 0.25 else CHUNK_CHOICES[1] if ratio < 0.75 else CHUNK_CHOICES[2])
_ = check("01.chunked_growth_is_weight_grad", (chunk_peaks[-1] - chunk_peaks[0]) / MiB,
          (VS[-1] - VS[0]) * D_BENCH * 4 / MiB, 0.5, fmt=".1f",
          text=f"chunked peak at V={VS[-1]} minus at V={VS[0]} (MiB; expected: the growth of the [V, d] float32 gradient)")

# %% [markdown]
# The time of each step, on this machine, right now (it varies with the machine and its load; the
# chunked path does one extra matrix product, the full path writes and reads the big matrices):

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{'V':>6} | {'full: time':>10} {'CPU':>6} | {'chunked: time':>13} {'CPU':>6}")
for V_ in VS:
    f, c = by[V_, "full"], by[V_, "chunked"]
    print(f"{V_:>6} | {f['seconds']:>9.2f}s {f['cpu_seconds']:>5.1f}s | {c['seconds']:>12.2f}s {c['cpu_seconds']:>5.1f}s")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for path, color in (("full", "#e57373"), ("chunked", "#5c85d6")):
    axes[0].plot(VS, [by[V_, path]["peak_bytes"] / MiB for V_ in VS], "o-", color=color, label=f"{path} path")
    axes[1].plot(VS, [by[V_, path]["seconds"] for V_ in VS], "o-", color=color, label=f"{path} path")
axes[0].plot(VS, [N_BENCH * V_ * 4 / MiB for V_ in VS], "k:", label="one [N, V] float32")
for ax, title in zip(axes, ["peak memory of one training step (MiB)", "wall time of one training step (s)"]):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("vocabulary size V")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
fig.suptitle(f"loss + backward, N = {N_BENCH}, d = {D_BENCH}, on {DEVICE.type}", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# We make no claim about time here: a single CPU run under shared load is not a timing measurement.
# What the design trades is clear from the code: one extra $[N, d] \times [d, V]$ product against never
# allocating the $[N, V]$ matrices. On a GPU, the memory saved is the headroom that larger batches or
# longer sequences need.
#
# ## 4. `ignore_index`: the mean is over supervised tokens
#
# Labels of `-100` mark positions that are read but not learned (padding, prompts, unmasked tokens).
# `F.cross_entropy(..., ignore_index=-100)` gives those positions a loss of 0 **and** leaves them out
# of the denominator. A hand-written mean over all positions keeps them in the denominator and
# silently shrinks the loss (and the gradient) by the share of ignored positions.

# %%
gen = torch.Generator().manual_seed(SEED)
logits = torch.randn(3, 6, 10, generator=gen)
labels = torch.randint(10, (3, 6), generator=gen)
labels[0, :2] = IGNORE           # a prompt
labels[1, 4:] = IGNORE           # padding
labels[2, :5] = IGNORE           # mostly prompt
per_token = token_cross_entropy(logits, labels)                       # [3, 6], 0 where ignored
mean = reduce(per_token, labels.ne(IGNORE), "token_mean")
torch_mean = F.cross_entropy(logits.view(-1, 10), labels.view(-1), ignore_index=IGNORE)
naive = per_token.mean()
print("supervised positions per row:", labels.ne(IGNORE).sum(-1).tolist())
print(f"token mean over {int(mean.denominator)} supervised tokens: {mean.value.item():.4f}")
print(f"F.cross_entropy(ignore_index=-100):          {torch_mean.item():.4f}")
print(f"naive mean over all {labels.numel()} positions:          {naive.item():.4f}  "
      f"(= token mean x {int(mean.denominator)}/{labels.numel()})")
chunked = chunked_cross_entropy(logits.view(-1, 10), torch.eye(10), labels.view(-1), 4)   # hidden @ I.T = the logits
check("01.token_mean_is_torchs", abs(mean.value.item() - torch_mean.item()), 0, 1e-6, fmt=".0f",
      text="|token mean - F.cross_entropy(ignore_index=-100)|")
check("01.chunked_ignores_too", abs(chunked.item() - torch_mean.item()), 0, 1e-5, fmt=".0f",
      text="|chunked CE - F.cross_entropy(ignore_index=-100)|")
_ = check("01.naive_mean_shrinks", naive.item() / mean.value.item(), int(mean.denominator) / labels.numel(), 1e-6, fmt=".3f",
          text="naive mean / token mean (expected: supervised / all positions)")

# %% [markdown]
# ## 5. Try it
#
# **Exercise 1.** Write the gradient of the mean cross-entropy with respect to the logits, without
# autograd: `logits` is $[N, K]$, `labels` is $[N]$ and may contain `-100` (those rows have no target:
# zero gradient, and they do not count in the mean).

# %%
def ce_grad(logits, labels):
    ### BEGIN SOLUTION
    valid = labels != IGNORE
    g = logits.softmax(-1)
    rows = valid.nonzero().flatten()
    g[rows, labels[rows]] -= 1
    return g * valid[:, None] / valid.sum()
    ### END SOLUTION


# %%
# CHECK: 01-ce-grad
check_ce_grad(ce_grad)
### BEGIN HIDDEN TESTS
check_ce_grad(ce_grad, large=True)
### END HIDDEN TESTS
print("exercise 1: your gradient equals autograd's, ignored rows included")

# %% [markdown]
# **Exercise 2.** The heart of a chunked loss: compute $\operatorname{lse}_i = \log \sum_k \exp (h_i \cdot w_k)$ for
# every row of `hidden` $[N, d]$ over a vocabulary `weight` $[V, d]$, visiting the vocabulary
# `chunk_size` rows of `weight` at a time, so that at most $[N, \text{chunk\_size}]$ logits exist at once.
# It must stay finite for logits near 1000 (where `exp` overflows). The check also measures your
# function's peak memory.

# %%
def chunked_logsumexp(hidden, weight, chunk_size):
    ### BEGIN SOLUTION
    running = None
    for start in range(0, weight.shape[0], chunk_size):
        part = torch.logsumexp(hidden @ weight[start:start + chunk_size].T, dim=-1)
        running = part if running is None else torch.logaddexp(running, part)
    return running
    ### END SOLUTION


# %%
# CHECK: 01-chunked-logsumexp
check_chunked_logsumexp(chunked_logsumexp, memory=False)
### BEGIN HIDDEN TESTS
check_chunked_logsumexp(chunked_logsumexp, memory=True)
### END HIDDEN TESTS
print("exercise 2: your logsumexp matches torch's, stays finite, and never holds the full logits")

# %% [markdown]
# ## Summary
#
# | measurement | result |
# |---|---|
# | CE gradient vs autograd | $(p - \text{onehot})/n$, equal to float64 rounding (a check, not a claim) |
# | temperature | every logit is pushed at any $T$; low $T$ puts the push on a few competitors, high $T$ spreads it over hundreds |
# | chunked CE | same loss and gradients; the full path holds $[N, V]$ matrices (peak ∝ $V$), the chunked path a fixed block |
# | `ignore_index` | the mean divides by the supervised count |
#
# This run's ledger: every claim with its threshold and margin (the checks are identities, each printed
# above with its tolerance):

# %%
claims_only = [r for r in ledger() if r["kind"] != "check"]
_ = summary(claims_only)
print(f"and {len(ledger()) - len(claims_only)} checks, all within tolerance")
