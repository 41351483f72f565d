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
# # 08 · Masked, span and diffusion denoising
#
# **What you will see.** A denoising objective corrupts a clean sequence and trains a model to
# restore what was hidden. The corruption process *is* the task: which tokens are hidden, what
# replaces them, and how the loss weighs them. We build and measure:
#
# 1. BERT's corruption (choose 15%; of those 80% `<mask>`, 10% random, 10% unchanged) over 100k
#    tokens, next to transformers' own `DataCollatorForLanguageModeling`;
# 2. T5's span corruption with sentinels, and its inverse;
# 3. a panel: mask ratio × corruption type (token / span / BERT / deletion);
# 4. a tiny masked-diffusion LM (a mask ratio *t* per row), trained with two weightings of the noise
#    levels, and the weight each gives to each level;
# 5. the optimal denoiser: the model's predictions vs the **exact** conditional of the source;
# 6. generation by iterative, confidence-ordered unmasking, scored for grammatical validity.
#
# **Runtime:** about 30 s on a laptop CPU (2 cores); a few seconds on a GPU.

# %%
import matplotlib.pyplot as plt
import torch
from transformers import DataCollatorForLanguageModeling

import labkit
from labkit import IGNORE
from labkit.data import MarkovWorld
from labkit.models import TinyTransformer
from labkit.paradigms.masked import (bert_mask, check_bert_mask, check_diffusion_loss, corruption_stats,
                                     diffusion_corrupt, diffusion_loss, diffusion_weights, sentinel_tokenizer,
                                     span_corrupt, span_noise_mask, span_reconstruct, unmask_sample)
from labkit.train import fit
from labkit.viz import contract_text
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()
world = MarkovWorld(tokenizer=tok)      # a Markov "grammar" over the chapter's words, with a known transition matrix
L = 16                                  # tokens per row
stream = world.sample_windows(6400, L, torch.Generator().manual_seed(SEED))    # 102,400 tokens
print(tok.decode(stream[0]))

# %% [markdown]
# ## 1. BERT's corruption is more than `<mask>`
#
# `bert_mask` chooses each non-special token with probability 0.15. Every chosen token becomes a
# target (its label is the clean id), but only 80% of them are shown as `<mask>`; 10% are replaced
# by a random token and 10% are left as they are. Unchosen tokens have label −100. Specials
# (`<bos>`, `<eos>`, ...) are never chosen. Most of the 512 ids of the lab's vocabulary are unused
# placeholders (like BERT's `[unusedN]`), so a random replacement usually lands on one of them.

# %%
gen = torch.Generator().manual_seed(SEED)
row = stream[:1, :12]
x_show, y_show = bert_mask(row, tok.mask_id, len(tok), p=0.3, special_ids=tok.special_ids, generator=gen)
print("one row, with p raised to 0.3 so a short example shows a few targets:")
print(contract_text({"input_ids": x_show, "labels": y_show}, tokenizer=tok, loss_shifts=False))

# %% [markdown]
# Over all 102,400 tokens, the shares measured from the tensors (`corruption_stats`): chosen among
# non-special tokens; among the chosen, masked / random (neither `<mask>` nor the clean id) /
# unchanged. The same ids go through transformers' collator, configured with labkit's tokenizer
# bridged by `seed_vocab().to_hf()` (nothing downloaded).

# %%
ours_x, ours_y = bert_mask(stream, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=gen)
ours = corruption_stats(stream, ours_x, ours_y, tok.mask_id, tok.special_ids)
collator = DataCollatorForLanguageModeling(tokenizer=tok.to_hf(), mlm_probability=0.15, seed=SEED)
hf_batch = collator([{"input_ids": r} for r in stream.tolist()])
theirs = corruption_stats(stream, hf_batch["input_ids"], hf_batch["labels"], tok.mask_id, tok.special_ids)
targets = {"chosen": 0.15, "masked": 0.80, "random": 0.10, "unchanged": 0.10}
print(f"{ours['n_tokens']} tokens, {int((~torch.isin(stream, torch.tensor(tok.special_ids))).sum())} of them not special")
print(f"{'share':<12}{'target':>8}{'labkit':>9}{'transformers':>14}")
for k, want in targets.items():
    print(f"{k:<12}{want:>8.2f}{ours[k]:>9.3f}{theirs[k]:>14.3f}")
print(f"{'specials chosen':<20}{ours['special_chosen']:>9}{theirs['special_chosen']:>14}")

# %% [markdown]
# **Claim.** Both implementations hit 15 / 80 / 10 / 10 within one percentage point, never choose a
# special token, label every chosen position with its clean id and leave every unchosen token
# untouched. (One difference: transformers draws the random token from the whole vocabulary,
# specials included; labkit draws from the non-special ids.)

# %%
for stats in (ours, theirs):
    assert all(abs(stats[k] - want) < 0.01 for k, want in targets.items()), stats
    assert stats["special_chosen"] == 0 and stats["labels_clean"] and stats["unchosen_changed"] == 0
print("claim holds: " + ", ".join(f"{k} {ours[k]:.3f} / {theirs[k]:.3f}" for k in targets) + " (labkit / transformers)")

# %% [markdown]
# ## 2. Span corruption (T5)
#
# Span corruption hides *runs* of tokens. With noise density *d* and mean span length μ, a row of
# *n* tokens gets round(*n·d*) noise tokens in round(noise/μ) spans (span lengths are a random
# composition). Each span becomes **one sentinel** in the input; the target is a sequence: each
# sentinel followed by the span it stands for. The lab's sentinels are ids renamed
# `<extra_id_k>` (`sentinel_tokenizer`).

# %%
stok, sentinels = sentinel_tokenizer(16)
clean = torch.tensor(stok.encode("the cat sat on the mat and the dog ran to the rug"))
inputs, span_targets = span_corrupt(clean, sentinels, density=0.3, mean_span=2.0, generator=gen)
print("clean   :", stok.decode(clean))
print("inputs  :", stok.decode(inputs))
print("targets :", stok.decode(span_targets))
print("inputs + targets -> clean:", stok.decode(span_reconstruct(inputs, span_targets, sentinels)))

# %% [markdown]
# Measured on 2,000 rows of 100 tokens with the T5 defaults (d = 0.15, μ = 3), from the masks and
# the corrupted pairs themselves:

# %%
rows = world.sample_windows(2000, 100, torch.Generator().manual_seed(SEED + 5))
span_in, span_out = span_corrupt(rows, sentinels, density=0.15, mean_span=3.0, generator=gen)
is_sentinel_in = torch.isin(span_in, torch.tensor(sentinels))
is_sentinel_out = torch.isin(span_out, torch.tensor(sentinels))
noise_tokens = (~is_sentinel_out).sum(1).float()
n_spans = is_sentinel_in.sum(1).float()
masks = torch.stack([span_noise_mask(100, 0.15, 3.0, gen) for _ in range(2000)])
run_starts = masks & ~torch.cat([torch.zeros(2000, 1, dtype=torch.bool), masks[:, :-1]], 1)
restored = span_reconstruct(span_in, span_out, sentinels)
span_stats = {"noise fraction": (noise_tokens / 100).mean().item(), "spans per row": n_spans.mean().item(),
              "mean span length": (noise_tokens.sum() / n_spans.sum()).item(),
              "sentinels per span": (is_sentinel_out.sum() / n_spans.sum()).item(),
              "runs in the noise mask": run_starts.sum(1).float().mean().item(),
              "rows restored exactly": restored.eq(rows).all(1).float().mean().item()}
for k, v in span_stats.items():
    print(f"{k:<24}{v:7.3f}")
print(f"input length {span_in.shape[1]} = 100 - noise + spans; target length {span_out.shape[1]} = noise + spans")

# %% [markdown]
# **Claim.** Noise fraction = d = 0.15, 5 spans per row of mean length μ = 3, one sentinel per span in
# the input (and the same one in the targets), and input + targets reconstruct every clean row.

# %%
assert abs(span_stats["noise fraction"] - 0.15) < 0.01 and abs(span_stats["mean span length"] - 3.0) < 0.1
assert span_stats["sentinels per span"] == 1.0 and span_stats["runs in the noise mask"] == span_stats["spans per row"] == 5
assert span_stats["rows restored exactly"] == 1.0
assert span_in.shape[1] == 100 - 15 + 5 and span_out.shape[1] == 15 + 5
print("claim holds: span corruption is consistent with d and mu, and invertible")

# %% [markdown]
# ## 3. The mask-ratio panel
#
# Choose the corruption and its ratio: the panel shows the corrupted input, its labels and the
# number of targets. Token masking grades only the hidden positions; BERT also grades chosen
# tokens that look normal; span corruption turns runs into sentinels and moves the targets into a
# separate sequence; deletion leaves no trace of *where* text was removed and grades the whole
# clean sequence.

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import CORRUPTIONS, MaskRatioPanel, render_corruption  # noqa: E402

MaskRatioPanel(ratio=0.3).ui()

# %% [markdown]
# Every corruption type at ratio 0.3 (seed 0), as text:

# %%
for kind in CORRUPTIONS:
    print(render_corruption(0.3, kind)["text"], end="\n\n")

# %% [markdown]
# ## 4. A masked-diffusion LM: one noise level per row
#
# A masked-diffusion LM uses the absorbing-mask corruption at **every** noise level: row *b* draws
# $t_b \sim U(0, 1)$ and each of its tokens is masked with probability $t_b$. The model (a
# bidirectional TinyTransformer, no causal mask) predicts the clean token at every masked
# position. How the per-token losses are summed decides how much each noise level counts:
#
# | weighting | weight of a masked token in row *b* | a row's total weight |
# |---|---|---|
# | `token_mean` (BERT's usual mean) | $1/\sum_b \lvert M_b\rvert$ | ∝ its number of masks ∝ $t_b$ |
# | `per_sequence` (normalise by $\lvert M_t\rvert$) | $1/(B\,\lvert M_b\rvert)$ | $1/B$, whatever $t_b$ |
# | `elbo` ($1/t$, divided by all tokens) | $1/(t_b\,B\,T)$ | $\lvert M_b\rvert/(t_b B T)$: $1/B$ on average |
#
# The ELBO weighting makes the loss an upper bound on the negative log-likelihood per token. We
# measure each row's total weight on a batch of 4,096 rows.

# %%
probe_rows = stream[:4096]
_, probe_labels, probe_t = diffusion_corrupt(probe_rows, tok.mask_id, generator=gen)
probe_masked = probe_labels.ne(IGNORE)
row_weight = {w: diffusion_weights(probe_masked, probe_t, w).sum(1) * len(probe_rows)
              for w in ["token_mean", "per_sequence", "elbo"]}        # x B, so 1 = an average row
bins = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
in_bin = [(probe_t >= lo) & (probe_t < hi) for lo, hi in bins]
print(f"{'row weight x B':<16}" + "".join(f"  t in [{lo:.2f},{hi:.2f})" for lo, hi in bins))
weight_table = {}
for w, values in row_weight.items():
    weight_table[w] = [(values[m].mean().item(), values[m].std().item()) for m in in_bin]
    print(f"{w + ' mean':<16}" + "".join(f"{mu:>18.2f}" for mu, _ in weight_table[w]))
    print(f"{w + ' std':<16}" + "".join(f"{sd:>18.2f}" for _, sd in weight_table[w]))

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(9, 2.8), sharey=True)
for ax, (w, values) in zip(axes, row_weight.items()):
    ax.scatter(probe_t, values, s=3, alpha=0.3)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
    ax.set_title(w, fontsize=9)
    ax.set_xlabel("noise level t of the row")
axes[0].set_ylabel("row weight x B")
axes[0].set_ylim(0, 4)
fig.suptitle("How much each noise level counts in the loss", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Claim.** The batch token mean gives the noisiest rows (t ≥ 0.75) more than 3 times the weight of
# the cleanest (t < 0.25). Normalising by $\lvert M_t\rvert$ gives every row that has a mask exactly
# the same weight (its low-*t* bin mean is below 1 only because some clean rows draw no mask at all
# and weigh 0). The ELBO weighting is flat *on average* (each bin's mean within 0.15 of 1, empty
# rows included: $\mathbb{E}\lvert M_b\rvert = t_b T$) but scattered: at low *t* one masked token
# carries the whole $1/t$, so the spread in the lowest bin is more than twice that of the highest.

# %%
tm, ps, el = weight_table["token_mean"], weight_table["per_sequence"], weight_table["elbo"]
assert tm[-1][0] > 3 * tm[0][0]
has_mask = probe_masked.any(1)
assert torch.allclose(row_weight["per_sequence"][has_mask], torch.ones(int(has_mask.sum())))
assert abs(ps[-1][0] - 1) < 1e-3 and ps[0][0] < 1
assert all(abs(mu - 1) < 0.15 for mu, _ in el) and el[0][1] > 2 * el[-1][1]
print(f"claim holds: token mean {tm[0][0]:.2f} -> {tm[-1][0]:.2f}; per sequence 1.00 for every row with a mask; "
      f"ELBO means {', '.join(f'{mu:.2f}' for mu, _ in el)}, spread {el[0][1]:.2f} (low t) vs {el[-1][1]:.2f} (high t)")

# %% [markdown]
# ### Train both weightings
#
# Two identical bidirectional TinyTransformers (d=48, 2 layers), the same rows and the same
# corruption draws, 600 steps of 32 rows; one minimises the $\lvert M_t\rvert$-normalised loss, the
# other the ELBO-weighted one. Every 100 steps a probe measures how far the predictions are from
# the exact answer (next section).

# %%
val = world.sample_windows(512, L, torch.Generator().manual_seed(SEED + 1))
val_t = (torch.arange(512) + 0.5) / 512                      # every noise level, evenly
val_x, val_y, _ = diffusion_corrupt(val, tok.mask_id, t=val_t, generator=torch.Generator().manual_seed(SEED + 2))
hidden = val_y.ne(IGNORE)
truth = world.posterior(val, ~hidden)[hidden]                # exact p(x_i | every visible token), [n_masked, V]
row_t = val_t[:, None].expand_as(hidden)[hidden]


def kl_to_truth(model):
    """KL(truth || model) in nats at each masked validation position."""
    with torch.no_grad():
        log_q = model(val_x.to(DEVICE)).float().log_softmax(-1).double().cpu()[hidden]
    log_p = truth.clamp_min(1e-300).log()
    return torch.where(truth > 0, truth * (log_p - log_q), torch.zeros_like(truth)).sum(-1)


STEPS, BATCH = 600, 32
models, histories, kl_curves = {}, {}, {}
for weighting in ["per_sequence", "elbo"]:
    torch.manual_seed(SEED)
    model = TinyTransformer(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=L, causal=False)
    corrupt_gen = torch.Generator().manual_seed(SEED + 3)
    curve = []

    def batches(step, model=model, curve=curve, corrupt_gen=corrupt_gen):
        if step % 100 == 0:
            curve.append((step, kl_to_truth(model).mean().item()))
        return diffusion_corrupt(stream[(step * BATCH) % len(stream):][:BATCH], tok.mask_id, generator=corrupt_gen)

    def loss_fn(m, batch, weighting=weighting):
        noisy, labels, t = batch
        return diffusion_loss(m(noisy), labels, t, weighting)

    histories[weighting] = fit(model, batches, loss_fn, steps=STEPS, lr=3e-3, desc=weighting)
    curve.append((STEPS, kl_to_truth(model).mean().item()))
    models[weighting], kl_curves[weighting] = model, curve
    print(f"{weighting:<13} KL to the exact conditional by step: "
          + "  ".join(f"{s}: {v:.2f}" for s, v in curve))

# %% [markdown]
# ## 5. The optimal denoiser recovers the true conditional
#
# For a fixed visible context *c*, the expected denoising cross-entropy splits as
#
# $$\mathbb{E}_{y \sim p(\cdot\mid c)}[-\log q(y \mid c)] = H\big(p(\cdot\mid c)\big) + \mathrm{KL}\big(p(\cdot\mid c)\,\Vert\, q(\cdot\mid c)\big),$$
#
# so the best possible model predicts exactly $p(x_i \mid$ visible$)$, whichever weighting (the
# weights only say which contexts matter more). Our source is a Markov chain, so that conditional
# is computable for *any* pattern of masks: `MarkovWorld.posterior` runs forward-backward over the
# chain, combining every visible token on both sides. The table compares the trained models with
# it, by noise level, next to the best context-free guess (the stationary distribution of tokens).

# %%
stationary = world.stationary()
log_pi = stationary.clamp_min(1e-300).log()
kl_unigram = torch.where(truth > 0, truth * (truth.clamp_min(1e-300).log() - log_pi), torch.zeros_like(truth)).sum(-1)
entropy = -torch.where(truth > 0, truth * truth.clamp_min(1e-300).log(), torch.zeros_like(truth)).sum(-1)
kl_final = {w: kl_to_truth(m) for w, m in models.items()}
levels = [(0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0)]
print(f"{'KL (nats)':<26}" + "".join(f"  t in [{lo:.2f},{hi:.2f})" for lo, hi in levels) + f"{'all':>8}")
for name, values in [("per_sequence model", kl_final["per_sequence"]), ("elbo model", kl_final["elbo"]),
                     ("stationary guess", kl_unigram), ("entropy of the truth", entropy)]:
    cells = "".join(f"{values[(row_t >= lo) & (row_t < hi)].mean().item():>18.3f}" for lo, hi in levels)
    print(f"{name:<26}{cells}{values.mean().item():>8.3f}")

# %% [markdown]
# **Claim.** Each trained model ends within 0.3 nats of the exact conditional (mean KL over every
# masked validation token). Why 0.3: the context-free guess is about 1.4 nats away, and the truth
# itself has about 0.9 nats of entropy, so 0.3 nats means the model has recovered most of what
# the visible context says: its loss is the unavoidable entropy plus a remainder under a
# third of it. The KL also shrinks as training proceeds (step 100 vs the end: more than halved).

# %%
for w, curve in kl_curves.items():
    final = kl_final[w].mean().item()
    assert final < 0.3 and final < 0.25 * kl_unigram.mean().item(), f"{w}: KL {final:.3f}"
    assert curve[1][1] > 2 * final, "the KL should shrink with training"
print(f"claim holds: KL to the exact conditional {kl_final['per_sequence'].mean().item():.2f} (|M_t|-normalised), "
      f"{kl_final['elbo'].mean().item():.2f} (ELBO) vs {kl_unigram.mean().item():.2f} for the context-free guess")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(5, 3))
for w, curve in kl_curves.items():
    ax.plot([s for s, _ in curve], [v for _, v in curve], "o-", label=f"{w} model")
ax.axhline(kl_unigram.mean().item(), color="grey", linestyle=":", label="context-free guess")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("KL(truth || model), nats")
ax.legend(fontsize=8)
ax.set_title("Approaching the exact conditional", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The ELBO-weighted loss is also a bound we can check against the truth: evaluated with the
# validation rows' evenly spread noise levels, it estimates an upper bound on each model's
# negative log-likelihood per token, which cannot be below the source's own (computable exactly
# for a Markov chain). The two training losses also differ in noise: the ELBO's 1/t makes
# low-noise batches swing.

# %%
true_nll = -(world.sequence_logprob(val).mean().item()) / L
with torch.no_grad():
    elbo = {w: diffusion_loss(m(val_x.to(DEVICE)), val_y.to(DEVICE), val_t.to(DEVICE), "elbo").item() for w, m in models.items()}
for w in models:
    spread = torch.tensor(histories[w].loss[-200:]).std().item()
    print(f"{w:<13} ELBO {elbo[w]:.3f} nats/token (true NLL {true_nll:.3f}) | std of its training loss, last 200 steps {spread:.3f}")
assert all(v > true_nll - 0.05 for v in elbo.values()), "an upper bound cannot be (much) below the truth"

# %% [markdown]
# ## 6. Generating by iterative unmasking
#
# Start from 16 `<mask>` tokens. At each of 16 steps, the model proposes a token for every masked
# position (sampled at temperature 1), and only the proposal it is most confident about is
# committed; committed tokens never change (`unmask_sample`). A sample is **valid** when every one
# of its 15 adjacent word pairs is allowed by the grammar ($P_{ab} > 0$). An untrained network of
# the same shape is the baseline. For contrast, the same model also unmasks in a *random* order
# (any-order sampling: with the exact conditionals it would draw passages exactly as the source
# does), and 512 real passages give the diversity of the source itself.

# %%
def validity(samples):
    return world.P[samples[:, :-1], samples[:, 1:]].gt(0).all(-1).float().mean().item()


torch.manual_seed(SEED)
untrained = TinyTransformer(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=L, causal=False).to(DEVICE)
valid, samples = {}, {}
for name, m in [("per_sequence", models["per_sequence"]), ("elbo", models["elbo"]), ("untrained", untrained)]:
    samples[name] = unmask_sample(m, 512, L, tok.mask_id, steps=L, generator=torch.Generator().manual_seed(SEED))
    valid[name] = validity(samples[name])
    print(f"{name:<13} valid {valid[name]:.2f} | distinct samples {len(set(map(tuple, samples[name].tolist())))} of 512")
    for s in samples[name][:2]:
        print("   ", tok.decode(s))
random_order = unmask_sample(models["per_sequence"], 512, L, tok.mask_id, steps=L, order="random",
                             generator=torch.Generator().manual_seed(SEED))
valid["random order"] = validity(random_order)
print(f"{'random order':<13} valid {valid['random order']:.2f} | distinct samples "
      f"{len(set(map(tuple, random_order.tolist())))} of 512 (per_sequence model, unmasked in a random order)")
print(f"{'the source':<13} valid {validity(val):.2f} | distinct passages {len(set(map(tuple, val.tolist())))} of 512")

# %% [markdown]
# **Claim.** Both trained models write valid 16-token passages at a rate above 0.7 (if each of the
# 15 word pairs were independently legal with probability 0.98, the rate would be 0.74), while
# the untrained network stays below 0.05.
#
# The distinct counts tell the rest of the story: committing the most confident token first favours
# the grammar's likeliest words ("the cat sat on the ..."), so the samples are valid but far less
# varied than the source. Unmasking in a random order keeps the source's variety and pays in
# validity, since every imperfect conditional is now sampled as it is. The sampler's order is part
# of the generative model.

# %%
assert valid["per_sequence"] > 0.7 and valid["elbo"] > 0.7, valid
assert valid["untrained"] < 0.05
print(f"claim holds: validity {valid['per_sequence']:.2f} (|M_t|-normalised) and {valid['elbo']:.2f} (ELBO) "
      f"vs {valid['untrained']:.2f} untrained")

# %% [markdown]
# ## 7. Try it
#
# **Exercise 1.** Write BERT's corruption yourself: `my_bert_mask(ids, mask_id, vocab_size,
# special_ids, generator)` returns `(input_ids, labels)`. Choose each non-special token with
# probability 0.15; a chosen token becomes `mask_id` (80%), a random non-special id (10%) or stays
# (10%); labels are the clean id on chosen tokens and −100 elsewhere.

# %%
def my_bert_mask(ids, mask_id, vocab_size, special_ids, generator):
    ### BEGIN SOLUTION
    special = torch.isin(ids, torch.tensor(list(special_ids)))
    chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & ~special
    u = torch.rand(ids.shape, generator=generator)
    pool = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)])
    random_ids = pool[torch.randint(len(pool), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels
    ### END SOLUTION


# %%
# CHECK: 08-bert-mask
check_bert_mask(my_bert_mask)
### BEGIN HIDDEN TESTS
check_bert_mask(my_bert_mask, vocab_size=len(tok), mask_id=tok.mask_id, special_ids=tuple(tok.special_ids))
mine_x, mine_y = my_bert_mask(stream, tok.mask_id, len(tok), tuple(tok.special_ids), torch.Generator().manual_seed(9))
mine = corruption_stats(stream, mine_x, mine_y, tok.mask_id, tok.special_ids)
assert all(abs(mine[k] - want) < 0.01 for k, want in targets.items()), f"on the notebook's stream: {mine}"
### END HIDDEN TESTS
print("exercise 1: 15 / 80 / 10 / 10, specials untouched, clean labels")

# %% [markdown]
# **Exercise 2.** Write the ELBO-weighted diffusion loss from per-token cross-entropies:
# `elbo_loss(token_losses, masked, t)` with `token_losses` and `masked` of shape [B, T] and `t` of
# shape [B]. Only masked tokens count, each divided by its row's *t*, and the sum is divided by all
# B·T tokens.

# %%
def elbo_loss(token_losses, masked, t):
    ### BEGIN SOLUTION
    B, T = token_losses.shape
    return (token_losses * masked.float() / t[:, None]).sum() / (B * T)
    ### END SOLUTION


# %%
# CHECK: 08-elbo-loss
check_diffusion_loss(elbo_loss)
### BEGIN HIDDEN TESTS
from labkit.reduce import token_cross_entropy  # noqa: E402

with torch.no_grad():
    logits = models["elbo"](val_x.to(DEVICE)).cpu()
ce = token_cross_entropy(logits, val_y)
want = diffusion_loss(logits, val_y, val_t, "elbo").item()
assert abs(float(elbo_loss(ce, hidden, val_t)) - want) < 1e-4, "on the notebook's validation batch your loss differs"
### END HIDDEN TESTS
print("exercise 2: the ELBO weighting matches labkit's diffusion_loss")

# %% [markdown]
# ## Summary

# %%
print(f"{'BERT corruption (share)':<34}{'labkit':>8}{'transformers':>14}")
for k in targets:
    print(f"  {k:<32}{ours[k]:>8.3f}{theirs[k]:>14.3f}")
print(f"span corruption: noise {span_stats['noise fraction']:.3f}, mean span {span_stats['mean span length']:.2f}, "
      f"rows restored {span_stats['rows restored exactly']:.2f}")
print(f"row weight, t < 0.25 vs t >= 0.75: token mean {tm[0][0]:.2f} vs {tm[-1][0]:.2f}; "
      f"per sequence {ps[0][0]:.2f} vs {ps[-1][0]:.2f}; ELBO {el[0][0]:.2f} vs {el[-1][0]:.2f}")
print(f"{'diffusion LM':<16}{'KL to truth':>12}{'ELBO':>8}{'validity':>10}")
for w in models:
    print(f"{w:<16}{kl_final[w].mean().item():>12.3f}{elbo[w]:>8.3f}{valid[w]:>10.2f}")
print(f"{'untrained':<16}{'':>12}{'':>8}{valid['untrained']:>10.2f}")
print(f"{'random order':<16}{'':>12}{'':>8}{valid['random order']:>10.2f}   (per_sequence model)")
print(f"references: context-free KL {kl_unigram.mean().item():.3f}, true NLL {true_nll:.3f} nats/token")
