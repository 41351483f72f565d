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
# # 12 · Mixtures and curriculum: the sampling weights are part of the objective
#
# **What you will see.** A model trained on several sources optimises
# $\sum_k \alpha_k\,\mathbb E_{x\sim p_k}[\ell_\theta(x)]$: changing the sampling weights
# $\alpha_k$ changes the objective, not just "the data loader". And training in stages changes the
# objective over time. We measure:
#
# 1. temperature weights $\alpha_k = n_k^\gamma / \sum_j n_j^\gamma$, the epochs each source gets
#    and how often the smallest one repeats (a panel with a γ slider);
# 2. a sampler whose drawn proportions match its configured weights (chi-square test), with the
#    weights recorded as versioned configuration;
# 3. a low-resource domain: held-out loss on a small domain as γ varies: too little of it
#    (γ = 1) and it is not learned, too much (γ → 0) and it is memorised (compared over seeds);
# 4. stages: pretraining, then SFT, then continued pretraining on a new domain breaks the SFT
#    format; SFT again repairs it, and mixing the new domain into the repair keeps both;
# 5. an SFT learning rate large enough to damage the base model, measured as forgetting.
#
# Identities are `CHECK` lines; measured effects are `CLAIM` or `COMPARE` lines (`labkit.claims`).
#
# **Runtime:** about 45 s on a laptop CPU (2 cores).

# %%
import copy
import json

import matplotlib.pyplot as plt
import torch

import labkit
from labkit.batch import collate
from labkit.checks import ContractError
from labkit.claims import check, claim, compare, summary
from labkit.data import MarkovWorld
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss, generate
from labkit.paradigms.mixture import (MixtureConfig, MixtureSampler, assert_mixture_proportions,
                                      chi_square_critical, chi_square_test, expected_epochs, mixture_weights)
from labkit.exercises.mixture import check_expected_epochs, check_mixture_weights
from labkit.paradigms.preference import AnswerWorld
from labkit.predict import ask, reveal
from labkit.train import fit
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. Temperature weights
#
# With sources of sizes $n_k$, sampling each example uniformly from the union gives source $k$
# the weight $n_k/\sum_j n_j$: the large source dominates. Temperature sampling flattens it:
#
# $$\alpha_k = \frac{n_k^\gamma}{\sum_j n_j^\gamma},\qquad \gamma=1:\ \text{by size},\quad
# \gamma=0:\ \text{uniform over sources}.$$
#
# Up-sampling a small source means *repeating* it: with a budget of $S$ sampled examples, source
# $k$ is seen $e_k = \alpha_k S / n_k$ times.

# %%
SOURCES = {"web": 2_000_000, "code": 400_000, "papers": 100_000, "low-resource language": 10_000}
BUDGET = 1_000_000
sizes = list(SOURCES.values())
print(f"{'gamma':>6} | " + " | ".join(f"{name:>21}" for name in SOURCES) + " | epochs of the smallest")
table = {}
for gamma in [1.0, 0.7, 0.5, 0.3, 0.0]:
    w = mixture_weights(sizes, gamma)
    e = expected_epochs(sizes, w, BUDGET)
    table[gamma] = (w, e)
    print(f"{gamma:>6.1f} | " + " | ".join(f"{float(x):>21.3f}" for x in w) + f" | {float(e[-1]):>8.1f}")
n = torch.tensor(sizes, dtype=torch.float64)
check("12.weights_sum_to_one", max(abs(float(w.sum()) - 1) for w, _ in table.values()), 0.0, 1e-12,
      text="max |sum of the weights - 1| over gamma")
check("12.gamma1_by_size", float((table[1.0][0] - n / n.sum()).abs().max()), 0.0, 1e-12, text="max |alpha(gamma=1) - n_k / sum n|")
check("12.gamma0_uniform", float((table[0.0][0] - 1 / len(n)).abs().max()), 0.0, 1e-12, text="max |alpha(gamma=0) - 1/K|")
check("12.epochs_formula", max(float((e - w * BUDGET / n).abs().max()) for w, e in table.values()), 0.0, 1e-9,
      text="max |epochs - alpha_k S / n_k|")
smallest = [float(table[g][1][-1]) for g in [1.0, 0.7, 0.5, 0.3, 0.0]]
check("12.smallest_repeats_more", sum(a >= b for a, b in zip(smallest, smallest[1:])), 0, 0,
      text="steps of falling gamma at which the smallest source's epochs do not rise")
print(f"from gamma 1 to 0 the smallest source goes from {smallest[0]:.1f} to {smallest[-1]:.1f} epochs")

# %% [markdown]
# **The panel.** Move γ and watch the weights, the expected epochs per source (red above 4
# epochs) and the repetition of the smallest source.

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import MixturePanel, render_mixture  # noqa: E402

MixturePanel(sizes=sizes, names=list(SOURCES), total_samples=BUDGET).ui()

# %% [markdown]
# Without a widget front end, the panel's states as text:

# %%
for gamma in [1.0, 0.5, 0.0]:
    print(render_mixture(gamma, sizes=sizes, names=list(SOURCES), total_samples=BUDGET)["text"])

# %% [markdown]
# ## 2. A sampler that draws what its configuration says
#
# The weights are configuration, like a learning rate: `MixtureConfig` holds the sources, their
# sizes, γ, the budget and the seed, derives the weights and a fingerprint, and is stored with the
# run. `MixtureSampler` draws a source with the configured weights, then the next example of a
# shuffled pass over that source (a new shuffle each epoch). The smoke test: the drawn
# proportions must pass a chi-square goodness-of-fit test against the configured weights,
# $X^2 = \sum_k (O_k - E_k)^2/E_k$ on $K-1$ degrees of freedom.

# %%
config = MixtureConfig(sources=tuple(SOURCES), sizes=tuple(sizes), gamma=0.5, total_samples=BUDGET, seed=SEED)
sampler = MixtureSampler.from_config(config)
sources, indices = sampler.sample(20_000)
counts = torch.bincount(sources, minlength=len(sizes))
stat, dof, p = chi_square_test(counts, config.weights)
for name, c, w in zip(SOURCES, counts.tolist(), config.weights):
    print(f"{name:>21}: drawn {c / 20_000:.3f}, configured {w:.3f}")
print(f"chi-square {stat:.2f} on {dof} dof, p = {p:.2f}")
assert_mixture_proportions(counts, config.weights)       # raises a ContractError when the test rejects at 1e-3
w = torch.tensor(config.weights, dtype=torch.float64)
se = (w * (1 - w) / 20_000).sqrt()
check("12.sampler_proportions", float(((counts / 20_000 - w).abs() / se).max()), 0.0, 5.0,
      text="largest |drawn - configured| share, in standard errors (equal by construction up to sampling noise)")

# %% [markdown]
# A loader that draws examples uniformly from the concatenated sources silently trains with γ = 1;
# the same check refuses it:

# %%
g = torch.Generator().manual_seed(SEED)
uniform_over_examples = torch.multinomial(torch.tensor(sizes, dtype=torch.float), 20_000, replacement=True, generator=g)
uniform_counts = torch.bincount(uniform_over_examples, minlength=len(sizes))
try:
    assert_mixture_proportions(uniform_counts, config.weights)
except ContractError as err:
    print("ContractError:", err)
claim("12.size_loader_caught", chi_square_test(uniform_counts, config.weights)[0], above=chi_square_critical(dof, 1e-3),
      text="chi-square of the size-proportional loader (threshold: rejection at 1e-3)", fmt=".1f",
      control="the configured sampler", control_value=stat)

# %% [markdown]
# The record a run keeps, and what happens when somebody edits the weights by hand:

# %%
record = config.to_dict()
print(json.dumps(record))
assert MixtureConfig.from_dict(record) == config
edited = dict(record, weights=[0.4, 0.3, 0.2, 0.1])
try:
    MixtureConfig.from_dict(edited)
except ContractError as err:
    print("ContractError:", err)

# %% [markdown]
# ## 3. A low-resource domain
#
# Two synthetic domains with known distributions: a large one (4096 windows of the cat world of
# notebook 03) and a small one, only 24 blocks of a "letters" language (letter *k* is followed by
# letters 3k+1, 3k+4 or 3k+7 mod 10 with probabilities 0.5, 0.3, 0.2, so its entropy rate is
# known). One TinyCausalLM per γ, same steps, batch size and learning rate, batches drawn by the
# mixture sampler. We measure the loss on the small domain's training blocks and on fresh held-out
# blocks: a sweep over γ for the first seed, and γ ∈ {0, 0.5, 1} for four more seeds (each seed
# changes the model's initialisation and the sampler's draws; the data stay). Five seeds, because
# a domain seen about once (γ = 1) gives a noisy held-out loss.

# %%
LETTERS = [chr(ord("A") + k) for k in range(10)]
letters_table = {"<bos>": {x: 0.1 for x in LETTERS}}
for k, x in enumerate(LETTERS):
    letters_table[x] = {LETTERS[(3 * k + 1) % 10]: 0.5, LETTERS[(3 * k + 4) % 10]: 0.3, LETTERS[(3 * k + 7) % 10]: 0.2}
big_world, small_world = MarkovWorld(tokenizer=tok), MarkovWorld(letters_table, tok)
T, BS, STEPS = 20, 32, 150
big_train = big_world.sample_windows(4096, T, torch.Generator().manual_seed(SEED))
small_train = small_world.sample_stream(24 * T, torch.Generator().manual_seed(SEED + 1), start="A").view(24, T)
small_val = small_world.sample_windows(256, T, torch.Generator().manual_seed(SEED + 2)).to(DEVICE)
big_val = big_world.sample_windows(256, T, torch.Generator().manual_seed(SEED + 3)).to(DEVICE)
H_small = small_world.entropy_rate()
print(f"letters domain: {len(small_train)} training blocks, entropy rate {H_small:.2f} nats (the best held-out loss)")


def lm_loss(model, x):
    return causal_lm_loss(model(x), x)


def eval_loss(model, x):
    with torch.no_grad():
        return float(causal_lm_loss(model(x.to(DEVICE)), x.to(DEVICE)))


def train_mixture(gamma, seed):
    """One TinyCausalLM trained on the gamma-mixture of the two domains; its losses and the epochs of the small one."""
    cfg = MixtureConfig(("cat world", "letters"), (len(big_train), len(small_train)), gamma, STEPS * BS, seed=seed)
    sampler = MixtureSampler.from_config(cfg)
    sources_of = (big_train, small_train)

    def batch(step):
        src, idx = sampler.sample(BS)
        return torch.stack([sources_of[s][i] for s, i in zip(src.tolist(), idx.tolist())])

    torch.manual_seed(seed)
    model = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=T)
    fit(model, batch, lm_loss, steps=STEPS, lr=3e-3, desc=f"gamma {gamma}")
    return {"config": cfg.to_dict(), "epochs_small": sampler.epochs_seen()[1], "small_train": eval_loss(model, small_train),
            "small_val": eval_loss(model, small_val), "big_val": eval_loss(model, big_val)}


SEEDS = [SEED + i for i in range(5)]
runs = {gamma: train_mixture(gamma, SEED) for gamma in [0.0, 0.25, 0.5, 0.75, 1.0]}
by_seed = {gamma: [runs[gamma]] + [train_mixture(gamma, seed) for seed in SEEDS[1:]] for gamma in [0.0, 0.5, 1.0]}
print(f"{'gamma':>6}{'weight':>8}{'epochs':>8}{'train loss':>12}{'held-out':>10}{'gap':>7}{'large domain':>14}   (seed {SEED})")
for gamma, r in runs.items():
    print(f"{gamma:>6.2f}{r['config']['weights'][1]:>8.3f}{r['epochs_small']:>8.1f}{r['small_train']:>12.2f}"
          f"{r['small_val']:>10.2f}{r['small_val'] - r['small_train']:>7.2f}{r['big_val']:>14.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
gammas = list(runs)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(gammas, [runs[g]["small_val"] for g in gammas], "o-", label="letters, held-out")
ax.plot(gammas, [runs[g]["small_train"] for g in gammas], "o--", label="letters, training blocks")
ax.plot(gammas, [runs[g]["big_val"] for g in gammas], "s-", label="cat world, held-out")
for gamma, rs in by_seed.items():
    ax.scatter([gamma] * (len(rs) - 1), [r["small_val"] for r in rs[1:]], color="tab:blue", marker="x", s=20)
ax.axhline(H_small, color="k", linestyle=":", linewidth=1, label="letters entropy (best possible)")
ax.set_xlabel("gamma (0 = uniform over sources, 1 = by size)")
ax.set_ylabel("loss (nats)")
ax.set_title("Too little of the small domain underfits it; too much memorises it", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Claim.** At γ = 0 the small domain's 24 blocks are repeated about a hundred times (the `epochs`
# column) and memorised: its training loss falls far below the entropy while the held-out loss
# rises far above it (a large gap, larger than at γ = 1 over seeds). At γ = 1 the domain is
# barely seen: a small gap, but a high held-out loss. In between, γ = 0.5 reaches a lower held-out
# loss than either end, over seeds. The large domain hardly notices at this budget (its held-out
# loss varies little across γ).

# %%
gap = lambda r: r["small_val"] - r["small_train"]  # noqa: E731
claim("12.memorised_at_gamma0", gap(runs[0.0]), above=2.0, text="letters held-out - training loss at gamma 0, nats")
matched = ["steps 150, batch 32, lr 0.003", "data: the same 24 letters blocks and cat-world windows",
           "seeds (initialisation and sampler draws)"]
compare("12.gap_grows_as_gamma_falls", [gap(r) for r in by_seed[0.0]], [gap(r) for r in by_seed[1.0]], seeds=SEEDS,
        arms=("gamma 0", "gamma 1"), metric="letters held-out - training loss (generalisation gap), nats",
        higher_is_better=False, expect="A worse", matched_on=matched)
for other, name in [(0.0, "uniform"), (1.0, "by_size")]:
    compare(f"12.gamma_half_beats_{name}", [r["small_val"] for r in by_seed[0.5]], [r["small_val"] for r in by_seed[other]],
            seeds=SEEDS, arms=("gamma 0.5", f"gamma {other:g}"), metric="letters held-out loss, nats",
            higher_is_better=False, expect="A better", matched_on=matched)
big = [r["big_val"] for r in runs.values()]
claim("12.large_domain_flat", max(big) - min(big), below=0.1, text="range of the cat-world held-out loss over gamma, nats")

# %% [markdown]
# ## 4. Stages: continued pretraining breaks the SFT format, SFT repairs it
#
# A common pipeline is pretraining → SFT → (continued pretraining on a new domain) → ... Each stage
# changes the data distribution and the objective. Here: pretrain on the cat world; SFT on chat
# questions "C ?" whose answer is one digit then `<eos>` (the key→digit task of notebook 11,
# answered correctly); continue pretraining on the letters domain (plenty of it now); then repair.
# We measure the **format** (greedy answer = one digit then `<eos>`), the **accuracy** (the right
# digit) and the loss on the letters domain after every stage. Two repairs from the same
# checkpoint, with the same steps, batch size and learning rate: plain SFT, and SFT mixed 50/50 with
# the letters domain through the same sampler (so it sees about half as many chat examples). Each
# repair runs for three seeds (batch order and mixture draws).

# %%
qa = AnswerWorld(p_correct=1.0, length_probs_correct=(1.0, 0, 0, 0, 0), tokenizer=tok)
sft_data = qa.sft_examples(1000, seed=SEED)
letters_big = small_world.sample_windows(2048, T, torch.Generator().manual_seed(SEED + 4))
chat_prompts = [tok.encode_chat([{"role": "user", "content": qa.prompt(k)}], add_generation_prompt=True)[0] for k in qa.KEYS]
digits = {tok.stoi[str(d)] for d in range(10)}


def sft_loss(model, batch):
    return causal_lm_loss(model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids),
                          batch.labels)


def sft_batch(step):
    return collate(sft_data[(step * BS) % len(sft_data):][:BS], tok.pad_id)


def measure(model):
    out = generate(model, chat_prompts, max_new_tokens=3, pad_id=tok.pad_id, eos_id=tok.eos_id)
    fmt = [len(o) == 2 and o[0] in digits and o[1] == tok.eos_id for o in out]
    acc = [f and tok.token(o[0]) == qa.answer(k) for f, o, k in zip(fmt, out, qa.KEYS)]
    return {"format": sum(fmt) / len(fmt), "accuracy": sum(acc) / len(acc), "letters_loss": eval_loss(model, small_val),
            "sample": tok.decode(out[2])}


torch.manual_seed(SEED)
model = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=T)
stages = {}
fit(model, lambda s: big_train[(s * BS) % 4096:][:BS], lm_loss, steps=100, lr=3e-3, desc="pretrain")
stages["pretrain (cat world)"] = measure(model)
pretrained = copy.deepcopy(model)                 # the base model, reused in section 5
fit(model, sft_batch, sft_loss, steps=80, lr=3e-3, desc="SFT")
stages["SFT (chat answers)"] = measure(model)
fit(model, lambda s: letters_big[(s * BS) % 2048:][:BS], lm_loss, steps=100, lr=3e-3, desc="continued pretraining")
stages["continued pretraining (letters)"] = measure(model)
after_cpt = model


def plain_batches(seed):
    """SFT batches in a seed-shuffled order."""
    order = torch.randperm(len(sft_data), generator=torch.Generator().manual_seed(seed)).tolist()
    return lambda step: collate([sft_data[i] for i in order[(step * BS) % len(order):][:BS]], tok.pad_id)


def mixed_batches(seed):
    """Batches of BS examples, each drawn from the chat set or the letters domain with weights 0.5 / 0.5."""
    repair = MixtureSampler([len(sft_data), len(letters_big)], [0.5, 0.5], seed=seed)

    def get(step):
        src, idx = repair.sample(BS)
        chat = [sft_data[i] for s, i in zip(src.tolist(), idx.tolist()) if s == 0]
        text = [letters_big[i] for s, i in zip(src.tolist(), idx.tolist()) if s == 1]
        return {"chat": collate(chat, tok.pad_id) if chat else None, "text": torch.stack(text) if text else None,
                "n": (len(chat), len(text))}
    return get


def mixed_loss(model, batch):
    """Mean of the two sources' token means, weighted by how many examples each brought."""
    n_chat, n_text = batch["n"]
    total = 0.0
    if n_chat:
        total = total + n_chat * sft_loss(model, batch["chat"])
    if n_text:
        total = total + n_text * lm_loss(model, batch["text"])
    return total / (n_chat + n_text)


REPAIR_SEEDS = SEEDS[:3]
repairs = {"SFT again": [], "SFT mixed with letters": []}
for seed in REPAIR_SEEDS:
    for name, (batches, loss) in {"SFT again": (plain_batches(seed), sft_loss),
                                  "SFT mixed with letters": (mixed_batches(seed), mixed_loss)}.items():
        repaired = copy.deepcopy(after_cpt)
        fit(repaired, batches, loss, steps=30, lr=3e-3, desc=name)
        repairs[name].append(measure(repaired))
for name, rs in repairs.items():
    stages[name] = rs[0]
print(f"{'after stage':<34}{'format':>8}{'accuracy':>10}{'letters loss':>14}   answer to '{qa.prompt(qa.KEYS[2])}'")
for name, s in stages.items():
    print(f"{name:<34}{s['format']:>8.2f}{s['accuracy']:>10.2f}{s['letters_loss']:>14.2f}   {s['sample']}")

# %% [markdown]
# **Claim.** SFT teaches the format; continued pretraining on the new domain learns that domain
# and wipes the format out; a short SFT restores it (every repair seed). The mixed repair restores
# the format too and keeps the letters loss where continued pretraining left it; the plain repair
# ends with a higher letters loss than the mixed one over the repair seeds: alone, it undoes part of
# the new domain.

# %%
sft_s, cpt_s = stages["SFT (chat answers)"], stages["continued pretraining (letters)"]
claim("12.sft_teaches_format", sft_s["format"], above=0.9, text="format after SFT", control="after pretraining",
      control_value=stages["pretrain (cat world)"]["format"])
claim("12.sft_accuracy", sft_s["accuracy"], above=0.8, text="accuracy after SFT")
claim("12.cpt_breaks_format", cpt_s["format"], below=sft_s["format"] - 0.5, text="format after continued pretraining",
      control="after SFT", control_value=sft_s["format"])
claim("12.cpt_learns_letters", cpt_s["letters_loss"], below=H_small + 0.2,
      text="letters held-out loss after continued pretraining, nats (threshold: entropy + 0.2)", control="after SFT",
      control_value=sft_s["letters_loss"])
for name, short in [("SFT again", "plain"), ("SFT mixed with letters", "mixed")]:
    claim(f"12.{short}_repair_format", min(r["format"] for r in repairs[name]), above=0.9,
          text=f"format after the {short} repair, lowest over repair seeds", control="before the repair",
          control_value=cpt_s["format"])
claim("12.mixed_repair_keeps_domain", max(r["letters_loss"] for r in repairs["SFT mixed with letters"]) - cpt_s["letters_loss"],
      below=0.2, text="letters held-out loss after the mixed repair minus before it, highest over repair seeds, nats")
compare("12.mixed_repair_keeps_letters", [r["letters_loss"] for r in repairs["SFT mixed with letters"]],
        [r["letters_loss"] for r in repairs["SFT again"]], seeds=REPAIR_SEEDS, arms=("mixed repair", "plain repair"),
        metric="letters held-out loss after the repair, nats", higher_is_better=False, expect="A better",
        matched_on=["start: the same continued-pretraining checkpoint", "30 steps, batch 32, lr 0.003",
                    "repair seeds (batch order, mixture draws)"])

# %% [markdown]
# ## 5. An SFT learning rate large enough to damage the base model
#
# The stage table says a too-large SFT learning rate breaks the base model. Measure it: start from
# the pretrained base of section 4 (cat world, before any SFT) and run the **same SFT** (the same
# 1000 chat examples, 80 steps of 32, AdamW, clip 1.0) at a small learning rate, 1e-3, and a large
# one, 3e-2, three seeds each (the seed shuffles the SFT batches; both arms read the same order).
#
# * **forgetting**: the cat-world held-out loss after SFT minus the base model's (nats);
# * **SFT gain**: format and accuracy of the greedy answers, and the SFT loss on 200 fresh chat examples.
#
# A large learning rate also learns the SFT task faster, so "same steps" is not the only fair
# reading: a probe every 5 steps records both losses, and we also compare the two arms at **matched
# SFT loss**: the large-rate arm is read at its last probe whose SFT loss is still *above* the
# small-rate arm's final one. There it has learned the SFT task less than the small-rate arm, so
# any extra forgetting cannot come from having trained the SFT task further.

# %%
sft_probe = collate(qa.sft_examples(200, seed=SEED + 9), tok.pad_id).to(DEVICE)
SFT_STEPS, SFT_LRS = 80, {"small lr": 1e-3, "large lr": 3e-2}
base_cat = eval_loss(pretrained, big_val)


def sft_with_probe(lr, seed):
    """SFT of a copy of the base at `lr`; every 5 steps record (step, SFT probe loss, cat-world loss)."""
    m, trace = copy.deepcopy(pretrained), []

    def probe(step, model, loss):
        if (step + 1) % 5 == 0:
            with torch.no_grad():
                trace.append((step + 1, float(sft_loss(model, sft_probe)), eval_loss(model, big_val)))
    fit(m, plain_batches(seed), sft_loss, steps=SFT_STEPS, lr=lr, desc=f"SFT lr {lr}", callback=probe)
    return {**measure(m), "trace": trace, "forgetting": trace[-1][2] - base_cat, "sft_loss": trace[-1][1]}


lr_runs = {name: [sft_with_probe(lr, seed) for seed in REPAIR_SEEDS] for name, lr in SFT_LRS.items()}
for r_small, r_large in zip(lr_runs["small lr"], lr_runs["large lr"]):
    level = r_small["sft_loss"]
    before = [t for t in r_large["trace"] if t[1] > level]          # probes (step, SFT loss, cat loss) not yet there
    assert before and before[-1] != r_large["trace"][-1], "the large-lr arm must cross the small-lr arm's final SFT loss"
    r_large["matched"] = before[-1]
print(f"base model: cat-world loss {base_cat:.2f} nats (true entropy rate {big_world.entropy_rate():.2f})")
print(f"{'seed':>4} {'SFT':<9}{'format':>7}{'accuracy':>9}{'SFT loss':>10}{'forgetting':>11}   at matched SFT loss")
for seed, r_small, r_large in zip(REPAIR_SEEDS, lr_runs["small lr"], lr_runs["large lr"]):
    for name, r in [("small lr", r_small), ("large lr", r_large)]:
        at = (f"step {r['matched'][0]}: SFT loss {r['matched'][1]:.3f}, forgetting {r['matched'][2] - base_cat:.2f}"
              if "matched" in r else "(the reference: its final SFT loss)")
        print(f"{seed:>4} {name:<9}{r['format']:>7.2f}{r['accuracy']:>9.2f}{r['sft_loss']:>10.3f}{r['forgetting']:>11.2f}   {at}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 3.2))
for (name, rs), color in zip(lr_runs.items(), ["tab:blue", "tab:red"]):
    for k, r in enumerate(rs):
        ax.plot([t[1] for t in r["trace"]], [t[2] - base_cat for t in r["trace"]], "o-", color=color, markersize=3,
                alpha=0.7, label=name if k == 0 else None)
ax.set_xscale("log")
ax.set_yscale("symlog", linthresh=0.1)
ax.invert_xaxis()
ax.set_xlabel("SFT probe loss (falls as SFT proceeds →)")
ax.set_ylabel("forgetting: cat-world loss − base (nats)")
ax.set_title("Along the whole run, the large rate pays far more base loss per unit of SFT", fontsize=9)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
q_lr = ask("12.sft_lr_forgetting", "After the same 80 SFT steps, which learning rate leaves the base model's "
           "cat-world loss higher?", choices=["large lr", "no detectable difference", "small lr"])

# %% [markdown]
# **Comparisons.** Large (A) vs small (B) learning rate, paired by seed: forgetting after the same
# steps; forgetting at matched SFT loss; and the SFT gain itself (accuracy of the answers: both arms
# learn the task, a difference under 0.05 counts as none). **Claim:** at the small rate the
# base model keeps its cat-world loss within 0.5 nats of where it was.

# %%
lr_matched = ["base model (pretrained, before SFT)", "SFT data: the same 1000 chat examples",
              "batch order per seed", "AdamW, clip 1.0, batch 32"]


def lr_arm(name, key):
    return [r[key] for r in lr_runs[name]]


forgets = compare("12.large_sft_lr_forgets", lr_arm("large lr", "forgetting"), lr_arm("small lr", "forgetting"),
                  seeds=REPAIR_SEEDS, arms=("lr 3e-2", "lr 1e-3"), metric="forgetting after SFT: cat-world loss - base, nats",
                  higher_is_better=False, expect="A worse", matched_on=lr_matched + [f"{SFT_STEPS} SFT steps"])
compare("12.large_sft_lr_forgets_at_matched_sft_loss", [r["matched"][2] - base_cat for r in lr_runs["large lr"]],
        lr_arm("small lr", "forgetting"), seeds=REPAIR_SEEDS, arms=("lr 3e-2", "lr 1e-3"),
        metric="forgetting at matched SFT loss (large lr at its last probe above small lr's final SFT loss), nats",
        higher_is_better=False, expect="A worse", matched_on=lr_matched + ["SFT probe loss (large lr read just before it "
                                                                           "reaches the small lr's final loss)"])
compare("12.sft_gain_both_lrs", lr_arm("large lr", "accuracy"), lr_arm("small lr", "accuracy"), seeds=REPAIR_SEEDS,
        arms=("lr 3e-2", "lr 1e-3"), metric="SFT gain: accuracy of the greedy answers", expect="no detectable difference",
        min_effect=0.05, matched_on=lr_matched + [f"{SFT_STEPS} SFT steps"])
_ = claim("12.small_sft_lr_keeps_base", max(lr_arm("small lr", "forgetting")), below=0.5, control="lr 3e-2 (smallest)",
          control_value=min(lr_arm("large lr", "forgetting")),
          text="forgetting at lr 1e-3, largest over seeds, nats")

# %%
_ = reveal(q_lr, {"A worse": "large lr", "A better": "small lr"}.get(forgets["verdict"], "no detectable difference"))

# %% [markdown]
# Both rates teach the format and the answers; only the large one wipes out the base model's
# language, and it does so even when read as early as its SFT loss allows (matched SFT loss), so the
# damage is not just "it trained further". The SFT data never shows cat-world text, so nothing in
# the objective holds those weights in place; the step size decides how far the shared weights move.
# That last sentence is a **hypothesis** about the mechanism; the measured part is the forgetting.
# (Section 4's SFT stage ran at 3e-3, between the two.)
#
# ## 6. Try it
#
# **Exercise 1.** Write the temperature weights: given source sizes and γ, return one sampling
# weight per source.

# %%
def my_mixture_weights(sizes, gamma):
    ### BEGIN SOLUTION
    n = torch.tensor(sizes, dtype=torch.float64) ** gamma
    return n / n.sum()
    ### END SOLUTION


# %%
# CHECK: 12-mixture-weights
check_mixture_weights(my_mixture_weights)
### BEGIN HIDDEN TESTS
for gamma in (0.1, 0.9):
    assert torch.allclose(torch.as_tensor(my_mixture_weights(sizes, gamma), dtype=torch.float64), mixture_weights(sizes, gamma))
### END HIDDEN TESTS
print("exercise 1: your weights are n^gamma / sum n^gamma")

# %% [markdown]
# **Exercise 2.** How many times is each source seen? Given the sizes, the weights and the number
# of sampled examples, return the expected epochs per source.

# %%
def my_expected_epochs(sizes, weights, total_samples):
    ### BEGIN SOLUTION
    return torch.as_tensor(weights, dtype=torch.float64) * total_samples / torch.tensor(sizes, dtype=torch.float64)
    ### END SOLUTION


# %%
# CHECK: 12-expected-epochs
check_expected_epochs(my_expected_epochs)
### BEGIN HIDDEN TESTS
mine = torch.as_tensor(my_expected_epochs([len(big_train), len(small_train)], mixture_weights([4096, 24], 0.0), STEPS * BS))
assert abs(float(mine[1]) - 0.5 * STEPS * BS / 24) < 1e-9
### END HIDDEN TESTS
print("exercise 2: your epochs are alpha_k * S / n_k")

# %% [markdown]
# ## Summary
#
# | measurement | what it shows |
# |---|---|
# | weights and epochs vs γ | lower γ up-samples small sources by repeating them |
# | chi-square on 20,000 draws | the sampler draws the configured mixture; a size-proportional loader is caught |
# | held-out loss vs γ | the mixture is a trade-off between not learning and memorising a small domain |
# | format across stages | a later stage can undo an earlier one; repair with a mixture |
# | SFT learning rate | a large rate teaches the same SFT task and destroys the base model's language, also at matched SFT loss |
#
# The ledger of this run (every `CHECK`, `CLAIM` and `COMPARE` above):

# %%
ledger_table = summary()
