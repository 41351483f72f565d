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
# # 03 · The autoregressive shift: one token of difference, a different task
#
# **What you will see.** A causal LM is trained on "logit at position *t* predicts token *t+1*".
# That sentence is implemented by *one* shift, and it can live in the dataset or in the loss.
# Put it in both places and nothing crashes: the loss falls smoothly, while the model learns to
# predict the token **two** steps ahead. We measure it:
#
# 1. a golden 5-token test that reads, from the loss gradient, which token each logit is trained on;
# 2. two identical models trained on a synthetic world with a known distribution, one with the
#    correct shift and one with a double shift: next-token accuracy vs accuracy at *t+2*;
# 3. the same bug in a transformers GPT-2 that is handed pre-shifted labels;
# 4. the finite-context floor: a model that reads fewer than *k* tokens cannot beat the entropy
#    labkit computes for that context;
# 5. the shift panel, and two exercises.
#
# **Runtime:** about 40 s on a laptop CPU (2 cores); a few seconds on a GPU.

# %%
import matplotlib.pyplot as plt
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import labkit
from labkit import IGNORE
from labkit.checks import ContractError, assert_golden_shift, golden_shift_table
from labkit.data import KBackSource, MarkovWorld
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import (ar_example, causal_lm_loss, causal_lm_token_losses, generate,
                                             offset_accuracy)
from labkit.train import fit
from labkit.viz import contract_text, loss_curves
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. The golden 5-token alignment
#
# Chain rule: $p(x_{1:T}) = \prod_t p(x_t \mid x_{<t})$. With a causal model, the logit at position
# $t$ has read $x_{\le t}$, so it must be scored against $x_{t+1}$. Two conventions do this:
#
# | convention | builder returns | the loss compares |
# |---|---|---|
# | external shift | `input_ids = x[:-1]`, `labels = x[1:]` | logit *t* with label *t* |
# | internal shift (transformers) | `input_ids = labels = x` | logit *t* with label *t+1* |
#
# Instead of trusting either, we *measure* what a pipeline trains: feed all-zero logits to the
# loss and look at the gradient. For cross-entropy $\partial \ell / \partial z_{t,k} = p_k - 1[k=y_t]$,
# so the most negative entry of row *t* is the target of logit *t*.

# %%
record = tok.encode("<bos> the cat sat on")
print("record:", record, "=", tok.decode(record))

pipelines = {
    "internal builder + shifting loss": (lambda r: ar_example(r, "internal"), lambda z, y: causal_lm_loss(z, y, shift=True)),
    "external builder + plain loss": (lambda r: ar_example(r, "external"), lambda z, y: causal_lm_loss(z, y, shift=False)),
    "external builder + shifting loss": (lambda r: ar_example(r, "external"), lambda z, y: causal_lm_loss(z, y, shift=True)),
}
for name, (build, loss) in pipelines.items():
    rows = golden_shift_table(record, build, loss, len(tok))
    print(f"\n{name}")
    for r in rows:
        target = "-" if r["trained_target"] is None else tok.token(r["trained_target"])
        nxt = "-" if r["next_token"] is None else tok.token(r["next_token"])
        print(f"  logit {r['t']} has read {tok.decode(r['reads']):<24} trained on {target:<6} next token {nxt:<6} {'ok' if r['ok'] else 'WRONG'}")

# %% [markdown]
# The check that guards a pipeline raises a `ContractError` naming the bug and the fix:

# %%
build, loss = pipelines["external builder + shifting loss"]
try:
    assert_golden_shift(record, build, loss, len(tok))
except ContractError as err:
    print("ContractError:", err)

# claim: both correct conventions pass, the double shift is caught
for name in ["internal builder + shifting loss", "external builder + plain loss"]:
    assert_golden_shift(record, *pipelines[name], len(tok))
double_rows = golden_shift_table(record, *pipelines["external builder + shifting loss"], len(tok))
assert [r["trained_target"] for r in double_rows[:3]] == record[2:5]   # logit t -> token t+2

# %% [markdown]
# The contract table of the internal-shift example: the last row is what each logit is trained
# on (green = supervised, grey = ignored).

# %%
example = ar_example(tok.encode("<bos> the cat sat on the mat <eos>"), "internal")
print(contract_text({k: torch.tensor([v]) for k, v in example.items()}, tokenizer=tok))

# %% [markdown]
# ## 2. Train it both ways on a world with a known distribution
#
# `MarkovWorld` is a small first-order Markov "grammar" over the chapter's words
# ("the cat sat on the mat <eos> <bos> the dog ran to the rug ..."). Because its transition
# matrix $P$ is known, labkit computes the best any model can do: the entropy rate
# $H = \sum_s \pi_s H(P_s)$ and the Bayes accuracy $\sum_s \pi_s \max_j P_{sj}$, for the next
# token and for the token two steps ahead ($P^2$).
#
# Two identical TinyCausalLMs, same data, same seed, same steps. The only difference: the
# double-shift run gets `labels = x[1:]` (shifted in the dataset) *and* the loss shifts again.

# %%
world = MarkovWorld(tokenizer=tok)
gen = torch.Generator().manual_seed(SEED)
train_blocks = world.sample_blocks(4096, 33, gen)
val_blocks = world.sample_blocks(256, 33, torch.Generator().manual_seed(SEED + 1))
STEPS, BATCH = 200, 32


def ar_batches(kind):
    """step -> batch dict; kind 'correct' = internal labels, 'double' = labels already shifted."""
    def get(step):
        x = train_blocks[(step * BATCH) % len(train_blocks):][:BATCH]
        if kind == "double":
            return {"input_ids": x[:, :-1], "labels": x[:, 1:]}
        return {"input_ids": x[:, :-1], "labels": x[:, :-1]}
    return get


def shifting_loss(model, batch):
    return causal_lm_loss(model(batch["input_ids"]), batch["labels"], shift=True)


models, histories = {}, {}
for kind in ["correct", "double"]:
    torch.manual_seed(SEED)
    models[kind] = TinyCausalLM(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=32)
    histories[kind] = fit(models[kind], ar_batches(kind), shifting_loss, steps=STEPS, lr=3e-3, desc=kind)

# %%
x_val = val_blocks[:, :-1].to(DEVICE)
results = {}
with torch.no_grad():
    for kind, model in models.items():
        logits = model(x_val)
        first, last = histories[kind].first_last(20)
        results[kind] = {"loss_first": first, "loss_last": last,
                         "next_acc": offset_accuracy(logits, x_val, 1), "t2_acc": offset_accuracy(logits, x_val, 2)}
H1, H2 = world.entropy_rate(1), world.entropy_rate(2)
best1, best2 = world.bayes_accuracy(1), world.bayes_accuracy(2)
print(f"known source: next-token entropy {H1:.2f} nats, two-ahead entropy {H2:.2f} nats")
print(f"              best next-token accuracy {best1:.2f}, best two-ahead accuracy {best2:.2f}\n")
for kind, r in results.items():
    print(f"{kind:>7} shift: loss {r['loss_first']:.2f} -> {r['loss_last']:.2f} | "
          f"next-token accuracy {r['next_acc']:.2f} | t+2 accuracy {r['t2_acc']:.2f}")

# %% [markdown]
# **Claim.** Both losses fall by more than 1 nat (mean of the first vs the last 20 steps); the correct model reaches the next-token Bayes
# accuracy; the double-shift model's next-token accuracy collapses while it predicts the token two
# ahead about as well as any model can. Its loss settles at the *two-ahead* entropy: it learned
# a well-defined task, just not ours.

# %%
c, d = results["correct"], results["double"]
assert c["loss_first"] - c["loss_last"] > 1 and d["loss_first"] - d["loss_last"] > 1, "both losses should fall"
assert c["next_acc"] > best1 - 0.05, f"correct shift should reach ~{best1:.2f} next-token accuracy"
assert d["next_acc"] < 0.10, "double shift: next-token accuracy collapses"
assert d["t2_acc"] > best2 - 0.06, f"double shift: t+2 accuracy near its ceiling {best2:.2f}"
assert abs(d["loss_last"] - H2) < 0.25 < abs(d["loss_last"] - H1), "the double-shift loss converges to the t+2 entropy"
print(f"claim holds: next-token accuracy {c['next_acc']:.2f} vs {d['next_acc']:.2f}; "
      f"double-shift t+2 accuracy {d['t2_acc']:.2f} (ceiling {best2:.2f})")

# %%
# NBVAL_IGNORE_OUTPUT
fig = loss_curves({"correct shift": histories["correct"], "double shift": histories["double"]},
                  title="Both losses fall: the loss curve cannot tell you which task you trained",
                  floor=H1, floor_label="next-token entropy (known)")
fig.axes[0].axhline(H2, color="grey", linestyle=":", label="two-ahead entropy (known)")
fig.axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# ### Samples from both models
#
# Sampling at temperature 1 from "<bos> the": a correct model writes sentences of the world; the
# double-shift model emits, at every step, a guess for the token *after* the next one. We score
# each sample by the share of its word pairs that the world allows (known: $P_{ab} > 0$).

# %%
prompts = [tok.encode("<bos> the")] * 16
legal = {}
for kind, model in models.items():
    samples = generate(model, prompts, max_new_tokens=14, pad_id=tok.pad_id, temperature=1.0,
                       generator=torch.Generator().manual_seed(SEED))
    legal[kind] = sum(world.legal_rate(p + s) for p, s in zip(prompts, samples)) / len(samples)
    print(f"{kind} shift:\n  " + "\n  ".join(tok.decode(prompts[0] + s) for s in samples[:3]))
    print(f"  legal word pairs: {legal[kind]:.2f}")
assert legal["correct"] > 0.95 and legal["double"] < legal["correct"] - 0.3
print(f"claim holds: legal pairs {legal['correct']:.2f} (correct) vs {legal['double']:.2f} (double shift)")

# %% [markdown]
# ## 3. The same bug with a transformers model
#
# transformers' causal-LM heads shift inside the loss (`labels` are meant to be a copy of
# `input_ids`). Users who shift in their dataset, as an encoder-decoder tutorial taught them,
# get the double shift; real reports include transformers #32944, #35066 and the regressions
# fixed for GIT (#47394) and Florence-2 (PR #46898). Here a GPT-2 with a tiny config (random
# init, nothing downloaded) is trained both ways, with its own loss.

# %%
def gpt2():
    torch.manual_seed(SEED)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=48, n_layer=2, n_head=4,
                     bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return GPT2LMHeadModel(cfg)


def hf_loss(model, batch):
    return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss   # transformers shifts inside


hf_results = {}
for kind in ["correct", "double"]:
    model = gpt2()
    hist = fit(model, ar_batches(kind), hf_loss, steps=STEPS, lr=3e-3, desc=f"gpt2 {kind}")
    with torch.no_grad():
        logits = model(input_ids=x_val).logits
    hf_results[kind] = (hist.first_last(20), offset_accuracy(logits, x_val, 1), offset_accuracy(logits, x_val, 2))
    (first, last), acc1, acc2 = hf_results[kind]
    print(f"GPT-2, {kind:>7} labels: loss {first:.2f} -> {last:.2f} | next-token accuracy {acc1:.2f} | t+2 accuracy {acc2:.2f}")

assert hf_results["correct"][1] > best1 - 0.05 and hf_results["double"][1] < 0.10 < best2 - 0.06 < hf_results["double"][2]
print("claim holds: pre-shifted labels make transformers' GPT-2 learn t+2 too")

# %% [markdown]
# ## 4. The finite-context floor
#
# A model that reads only the last $L$ tokens optimises $\prod_t p(x_t \mid x_{t-L:t-1})$, not
# $p(x_t \mid x_{<t})$. `KBackSource` makes the cost exact: each token copies (plus one) the token
# $k=6$ steps back, with 10% noise. Tokens fewer than $k$ apart are independent, so with $L < k$ the
# best possible loss is $\log 10 = 2.30$ nats; with $L \ge k$ it is the noise entropy, about
# 0.50 nats. TinyCausalLM gets a sliding attention window: each of its 2 layers reads `window`
# tokens, so a position can be influenced by `model.context_length` = 2·(window−1)+1 tokens.
# Window 3 gives a context of 5 tokens, one short of *k*; without a window the model reads the
# whole 32-token block.

# %%
source = KBackSource(k=6, tokenizer=tok)
kb_train = source.sample(4096, 32, torch.Generator().manual_seed(SEED))
kb_val = source.sample(256, 32, torch.Generator().manual_seed(SEED + 1)).to(DEVICE)
floor_rows = {}
for window in [3, None]:
    torch.manual_seed(SEED)
    model = TinyCausalLM(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=32, window=window)
    L = model.context_length
    fit(model, lambda s: kb_train[(s * BATCH) % 4096:][:BATCH], lambda m, x: causal_lm_loss(m(x), x),
        steps=300, lr=3e-3, desc=f"window {window}")
    with torch.no_grad():
        losses, _ = causal_lm_token_losses(model(kb_val), kb_val)
    measured = losses[:, source.k - 1:-1].mean().item()   # logits that predict tokens t >= k
    floor_rows[L] = (measured, source.conditional_entropy(L))
    print(f"context {L:>2} tokens (window {window}): measured loss {measured:.2f} nats | known floor {floor_rows[L][1]:.2f} nats")

(short, short_floor), (full, full_floor) = floor_rows[5], floor_rows[32]
assert short > short_floor - 0.02, "no model can beat the entropy of its context"
assert short - short_floor < 0.1 and full - full_floor < 0.15 and short - full > 1.5
print(f"claim holds: context < k stays at the floor {short_floor:.2f}; context >= k reaches {full:.2f}")

# %% [markdown]
# ## 5. The shift panel
#
# Choose where the shift happens: in the dataset, in the loss, in both, or nowhere. The table is
# recomputed from the loss gradient each time (no hard-coded answer).

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import SHIFT_PLACES, render_shift, shift_panel  # noqa: E402

shift_panel()

# %% [markdown]
# Without a widget front end (GitHub, nbviewer), here is every state of the panel as text:

# %%
for where in SHIFT_PLACES:
    print(render_shift(where)["text"])

# %% [markdown]
# ## 6. Try it
#
# **Exercise 1.** Write an external-shift builder by hand: given a record, return `input_ids` and
# `labels` so that a loss *without* shift trains logit *t* on token *t+1*. The golden check grades it.

# %%
def my_ar_example(ids):
    ### BEGIN SOLUTION
    return {"input_ids": list(ids[:-1]), "labels": list(ids[1:])}
    ### END SOLUTION


# %%
# CHECK: 03-external-builder
plain_loss = lambda z, y: causal_lm_loss(z, y, shift=False)  # noqa: E731
assert_golden_shift(record, my_ar_example, plain_loss, len(tok))
### BEGIN HIDDEN TESTS
for text in ["<bos> the dog ran to the rug <eos>", "<bos> a <eos>"]:
    assert_golden_shift(tok.encode(text), my_ar_example, plain_loss, len(tok))
### END HIDDEN TESTS
print("exercise 1: your builder passes the golden shift check")

# %% [markdown]
# **Exercise 2.** A colleague's collator returns the batch below and their model's loss shifts
# internally (`causal_lm_loss(shift=True)`). Read the contract with `labkit.checks.audit`, then
# write `fixed_labels`, the labels that make this batch train next-token prediction with the
# same shifting loss.

# %%
from labkit.batch import collate  # noqa: E402
from labkit.checks import audit  # noqa: E402

records = [tok.encode(s, add_bos=True, add_eos=True) for s in ["the cat sat on the mat", "the dog ran to the rug"]]
colleague = collate([ar_example(r, "external") for r in records], tok.pad_id)
for finding in audit(colleague, loss_shifts=True):
    print(finding)

# %%
def fixed_labels(batch):
    ### BEGIN SOLUTION
    labels = batch.input_ids.clone()
    labels[batch.attention_mask == 0] = IGNORE
    return labels
    ### END SOLUTION


# %%
# CHECK: 03-fixed-labels
def check_fixed_labels(batch, labels):
    """The repaired labels must pass audit() with a shifting loss and keep every real token."""
    repaired = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels)
    findings = audit(repaired, loss_shifts=True)
    assert not findings, f"audit still finds: {findings[0]} (with a shifting loss, labels are a copy of input_ids)"
    assert labels.ne(IGNORE).sum() == batch.attention_mask.sum(), "every real token should be a label; only padding is -100"


check_fixed_labels(colleague, fixed_labels(colleague))
### BEGIN HIDDEN TESTS
other = collate([ar_example(tok.encode(s, add_bos=True), "external") for s in ["the cat sat", "a bird slept on the sofa"]], tok.pad_id)
check_fixed_labels(other, fixed_labels(other))
### END HIDDEN TESTS
print("exercise 2: audit finds nothing wrong with the repaired batch")

# %% [markdown]
# ## Summary
#
# | measurement | correct shift | double shift |
# |---|---|---|
# | golden check | logit t → token t+1 | logit t → token t+2 (caught) |
# | training loss | falls | falls (to the two-ahead entropy) |
# | next-token accuracy | ≈ Bayes limit | ≈ 0 |
# | legal word pairs in samples | ≈ 1 | far lower |
#
# The printed table below is this run's numbers.

# %%
print(f"{'':<26}{'correct':>10}{'double':>10}")
print(f"{'final loss (nats)':<26}{c['loss_last']:>10.2f}{d['loss_last']:>10.2f}")
print(f"{'next-token accuracy':<26}{c['next_acc']:>10.2f}{d['next_acc']:>10.2f}")
print(f"{'t+2 accuracy':<26}{c['t2_acc']:>10.2f}{d['t2_acc']:>10.2f}")
print(f"{'legal word pairs':<26}{legal['correct']:>10.2f}{legal['double']:>10.2f}")
print(f"{'GPT-2 next-token accuracy':<26}{hf_results['correct'][1]:>10.2f}{hf_results['double'][1]:>10.2f}")
print(f"finite context: 5 tokens -> loss {short:.2f} (floor {short_floor:.2f}); 32 tokens -> loss {full:.2f} (floor {full_floor:.2f})")
