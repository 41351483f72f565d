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
# # 04 · Padding and positions: the same prompt at another address
#
# **What you will see.** A batch of sequences of different lengths must be padded to one width,
# on the right or on the left. Padding changes nothing for attention (the mask hides it), but it
# can change **where** each real token sits, and a model with learned absolute positions reads that
# address. We measure:
#
# 1. the same prompts padded right and left, with positions from the column index (`arange`) or
#    from the attention mask, in the contract table, and the padding panel;
# 2. training with right padding: padding labels are `-100`, and `audit()` catches the version
#    where they are not (its loss looks better and means less);
# 3. batched greedy decoding vs decoding each prompt alone, with a trained TinyCausalLM: with
#    `arange` positions most rows disagree; with positions from the mask every row agrees and
#    the logits match to 1e-5;
# 4. the same with a transformers GPT-2: a plain forward vs `generate()`;
# 5. a key/value cache, where the next token's position must come from the row's own length;
# 6. two exercises.
#
# **Runtime:** about 20 s on a laptop CPU (2 cores); a few seconds on a GPU.

# %%
import matplotlib.pyplot as plt
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import labkit
from labkit import IGNORE
from labkit.batch import collate, pad, position_ids_from_mask
from labkit.checks import audit
from labkit.data import MarkovWorld
from labkit.models import HFLogits, TinyCausalLM
from labkit.paradigms.autoregressive import (causal_lm_loss, check_next_positions, check_position_ids,
                                             continuation_logits, decode_agreement, generate, generate_cached,
                                             next_positions)
from labkit.train import fit
from labkit.viz import contract_text, loss_curves
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()


def fmt_diff(x):
    """Print a logit difference: tiny ones as a bound, so the printed text does not depend on rounding noise."""
    return "< 1e-5" if x < 1e-5 else f"{x:.2g}"

# %% [markdown]
# ## 1. Four ways to pad the same prompts
#
# Three prompts of 6, 4 and 2 tokens become one `[3, 6]` batch. Right padding appends `<pad>`
# after the real tokens (common for training); left padding puts it in front, so every row's last
# real token lands in the last column (what batched decoding wants: the next token is read from
# there). Positions can be the column index, `arange(T)`, or counted over real tokens only:
#
# $$\text{position}_t = \Big(\sum_{s \le t} m_s\Big) - 1 \quad (0 \text{ on padding}),$$
#
# which is `labkit.batch.position_ids_from_mask`. For the shortest prompt (row 2):

# %%
prompts3 = [tok.encode(p) for p in ["<bos> the cat sat on the", "<bos> the dog ran", "<bos> the"]]
layouts = {}
for side in ["right", "left"]:
    for policy in ["arange", "mask"]:
        b = collate([{"input_ids": p, "labels": [IGNORE] * len(p)} for p in prompts3], tok.pad_id, side=side, positions=policy)
        layouts[(side, policy)] = b
        real = b.attention_mask[2].bool()
        codes = [f.code for f in audit(b) if f.code != "no_targets"]
        print(f"{side:>5} padding, {policy:>6} positions: row 2 tokens {tok.decode(b.input_ids[2].tolist()):<34} "
              f"positions {b.position_ids[2].tolist()}  real tokens at {b.position_ids[2][real].tolist()}  audit: {codes or 'ok'}")

# %% [markdown]
# The full contract of the left-padded batch with `arange` positions, row 2: the two real
# tokens sit at positions 4 and 5 instead of 0 and 1.

# %%
print(contract_text(layouts[("left", "arange")], row=2, tokenizer=tok))

# %% [markdown]
# **Claim.** Alone, a prompt of *n* tokens has positions 0..*n*−1. Right padding keeps them under
# both policies; left padding keeps them only when positions come from the mask, and `audit()`
# reports the other case.

# %%
def solo_positions_kept(batch):
    return all(batch.position_ids[b][batch.attention_mask[b].bool()].tolist() == list(range(len(p)))
               for b, p in enumerate(prompts3))


kept = {k: solo_positions_kept(b) for k, b in layouts.items()}
flagged = {k: "arange_positions_with_left_padding" in [f.code for f in audit(b)] for k, b in layouts.items()}
assert kept == {("right", "arange"): True, ("right", "mask"): True, ("left", "arange"): False, ("left", "mask"): True}
assert flagged == {k: not v for k, v in kept.items()}
print("claim holds: only left padding + arange moves the prompt, and audit() names it:",
      [f"{s}/{p}" for (s, p), v in kept.items() if not v])

# %% [markdown]
# ## 2. The padding panel
#
# Pick the side and the position policy; the contract tables re-render, with a verdict per row:
# does the row keep its solo positions, and is its last column a real token (the one that picks
# the next token when decoding)?

# %%
# NBVAL_IGNORE_OUTPUT
from labkit.widgets import PaddingPanel, render_padding  # noqa: E402

PaddingPanel().ui()

# %% [markdown]
# Every state of the panel, as text (for a saved notebook without a widget front end):

# %%
for side in ["left", "right"]:
    for policy in ["mask", "arange"]:
        print(render_padding(side, policy)["text"])

# %% [markdown]
# ## 3. Training with right padding
#
# The model of this notebook is a `TinyCausalLM` with **learned absolute position embeddings**,
# trained on sentences of the `MarkovWorld` ("<bos> the cat sat on the mat <eos>", ...), one
# sentence per row, padded on the right. The collator pads the labels with `-100`, so padding is
# neither a target nor counted in the denominator.
#
# The classic mistake is `labels = input_ids.clone()` *after* padding: every `<pad>` becomes a
# target. We train a second model that way, same seed, same steps.

# %%
world = MarkovWorld(tokenizer=tok)
sentences = world.sample_sentences(4000, torch.Generator().manual_seed(SEED), max_len=24)
train_sents, held_out = sentences[:3600], sentences[3600:]
BATCH, STEPS = 32, 200


def sentence_batch(step, supervise_padding=False):
    rows = train_sents[(step * BATCH) % len(train_sents):][:BATCH]
    b = collate([{"input_ids": s} for s in rows], tok.pad_id)            # right padding, labels -100 on pads
    if supervise_padding:
        b.labels = b.input_ids.clone()                                  # the bug: pads become targets
    return b


def lm_loss(model, b):
    return causal_lm_loss(model(**b.model_inputs()), b.labels)


good, bad = sentence_batch(0), sentence_batch(0, supervise_padding=True)
print(contract_text(good, row=int(good.attention_mask.sum(-1).argmin()), tokenizer=tok))
print("\naudit, correct collator:", [str(f) for f in audit(good)] or "nothing")
print("audit, labels = input_ids.clone():", [f.code for f in audit(bad)])
print(f"targets in the denominator: {good.n_targets()} real tokens vs {bad.n_targets()} with padding "
      f"({1 - good.n_targets() / bad.n_targets():.0%} of them padding)")

# %%
models, histories = {}, {}
for kind in ["correct", "pads supervised"]:
    torch.manual_seed(SEED)
    models[kind] = TinyCausalLM(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=32)
    histories[kind] = fit(models[kind], lambda s, k=kind: sentence_batch(s, k != "correct"), lm_loss,
                          steps=STEPS, lr=3e-3, desc=kind)
model = models["correct"]

val = collate([{"input_ids": s} for s in held_out], tok.pad_id).to(DEVICE)
real_loss = {}
with torch.no_grad():
    for kind, m in models.items():
        real_loss[kind] = causal_lm_loss(m(**val.model_inputs()), val.labels).item()
        print(f"{kind:>16}: reported training loss {histories[kind].first_last(20)[1]:.2f} | "
              f"held-out loss on real tokens {real_loss[kind]:.2f}")

# %% [markdown]
# **Claim.** The run that supervises padding *reports* a lower loss (padding after `<eos>` is
# trivially predictable and fills its denominator), yet on the real tokens it is no better.

# %%
rep = {k: h.first_last(20)[1] for k, h in histories.items()}
assert rep["pads supervised"] < rep["correct"] - 0.3, "supervised padding should deflate the reported loss"
assert real_loss["pads supervised"] > real_loss["correct"] - 0.02, "and not improve the loss on real tokens"
print(f"claim holds: reported loss {rep['pads supervised']:.2f} vs {rep['correct']:.2f}; "
      f"real-token loss {real_loss['pads supervised']:.2f} vs {real_loss['correct']:.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig = loss_curves(histories, title="Supervised padding: a lower loss curve, not a better model")
plt.show()

# %% [markdown]
# ## 4. Batched decoding vs decoding alone
#
# 64 prompts: the first 1 to 8 tokens of held-out sentences, decoded greedily for 8 tokens, once
# each alone (no padding) and once as one left-padded batch. `decode_agreement` compares the
# generated tokens row by row, and feeds the batch each row's solo continuation to compare every
# step's logits.

# %%
gen = torch.Generator().manual_seed(SEED + 2)
prompts = [s[: int(torch.randint(1, min(len(s), 9), (1,), generator=gen))] for s in held_out[:64]]
print("prompt lengths:", sorted({len(p) for p in prompts}))
agreement = {policy: decode_agreement(model, prompts, max_new_tokens=8, pad_id=tok.pad_id, positions=policy)
             for policy in ["arange", "mask"]}
for policy, r in agreement.items():
    print(f"positions {policy:>6}: {len(r['mismatch'])}/{len(prompts)} rows differ from decoding alone | "
          f"max logit difference {fmt_diff(r['max_logit_diff'])}")
b = agreement["arange"]["mismatch"][0]
print(f"\nexample, prompt {tok.decode(prompts[b])!r}:\n  alone          -> {tok.decode(agreement['arange']['alone'][b])}"
      f"\n  batch, arange  -> {tok.decode(agreement['arange']['batched'][b])}\n  batch, mask    -> {tok.decode(agreement['mask']['batched'][b])}")

# %% [markdown]
# **Claim.** With `arange` positions more than 20% of the rows decode differently in the batch
# than alone; with positions from the mask no row does, and the logits agree to 1e-5.

# %%
wrong, right = agreement["arange"], agreement["mask"]
assert wrong["mismatch_rate"] > 0.2, "arange positions should change many rows"
assert right["mismatch"] == [] and right["max_logit_diff"] < 1e-5
print(f"claim holds: mismatch {wrong['mismatch_rate']:.0%} (arange) vs {right['mismatch_rate']:.0%} (mask); "
      f"logit difference {fmt_diff(right['max_logit_diff'])}")

# %% [markdown]
# ## 5. The same with transformers: a plain forward vs `generate()`
#
# A GPT-2 with a tiny config and random weights (nothing downloaded) has learned absolute
# positions too. Its `generate()` builds `position_ids` from the attention mask; a plain
# `model(input_ids, attention_mask=...)` forward does not, it numbers the columns. (Real reports:
# transformers #3021 and #21080, fixed for GPT-2 generation by PR #7552; #18478 for GPT-J;
# unsloth #3699.) At GPT-2's default init (0.02) and this tiny width a random model's logits are
# almost flat, so we widen it to `initializer_range=0.05`: still random, but its predictions depend
# on what it reads, as a trained model's do.

# %%
torch.manual_seed(SEED)
gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=48, n_layer=2, n_head=4, initializer_range=0.05,
                                  bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)).eval()
ids, mask = pad(prompts, tok.pad_id, side="left")
with torch.no_grad():
    alone_last = torch.stack([gpt2(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    plain_last = gpt2(input_ids=ids, attention_mask=mask).logits[:, -1]
    fixed_last = gpt2(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
hf_plain = {"max_diff": float((plain_last - alone_last).abs().max()),
            "argmax_differs": float((plain_last.argmax(-1) != alone_last.argmax(-1)).float().mean())}
hf_fixed = float((fixed_last - alone_last).abs().max())
print(f"plain forward, left padding : max logit difference {hf_plain['max_diff']:.2g}, "
      f"next token differs in {hf_plain['argmax_differs']:.0%} of rows")
print(f"forward + positions from mask: max logit difference {fmt_diff(hf_fixed)}")

seen = []
hook = gpt2.transformer.wpe.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
with torch.no_grad():
    batched = gpt2.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            pad_token_id=tok.pad_id)[:, ids.shape[1]:].tolist()
hook.remove()
real = mask.bool()
same_positions = torch.equal(seen[0].expand_as(ids)[real], position_ids_from_mask(mask)[real])
with torch.no_grad():
    solo = [gpt2.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                          max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_id)[0, len(p):].tolist() for p in prompts]
hf_gen_mismatch = sum(a != c for a, c in zip(batched, solo))
hf_loop = decode_agreement(HFLogits(gpt2), prompts, max_new_tokens=6, pad_id=tok.pad_id, positions="arange")
print(f"generate(): positions of real tokens = position_ids_from_mask: {same_positions}; "
      f"rows that differ from generating alone: {hf_gen_mismatch}/{len(prompts)}")
print(f"a greedy loop over plain forwards (column positions): {len(hf_loop['mismatch'])}/{len(prompts)} rows differ")

# %% [markdown]
# **Claim.** The plain left-padded forward changes GPT-2's logits; with positions from the mask
# they match to 1e-5; `generate()` uses exactly those positions and every row agrees with
# generating alone.

# %%
assert hf_plain["max_diff"] > 1e-2 and hf_fixed < 1e-5 and same_positions and hf_gen_mismatch == 0
assert hf_loop["mismatch_rate"] > 0.2
print(f"claim holds: plain forward off by {hf_plain['max_diff']:.2f}, fixed {fmt_diff(hf_fixed)}; generate() 0 mismatches; "
      f"plain greedy loop {hf_loop['mismatch_rate']:.0%} mismatches")

# %% [markdown]
# ## 6. A key/value cache: where does the next token sit?
#
# Real decoders do not recompute the prefix every step: they keep each layer's keys and values
# and feed one new token at a time (`TinyCausalLM.forward_cached`). The prompt is processed once,
# left-padded, with positions from the mask. Then each new token needs a position, and the cache
# cannot infer it: the right one is the row's **own** number of real tokens
# (`next_positions(mask) = mask.sum(-1)`), not the padded length of the batch (the column
# index), which is right only for the longest prompt. Full recomputation is the reference.

# %%
full = generate(model, prompts, max_new_tokens=8, pad_id=tok.pad_id, positions="mask")
cache = {}
for policy in ["own", "padded"]:
    out = generate_cached(model, prompts, max_new_tokens=8, pad_id=tok.pad_id, next_position=policy)
    reference = continuation_logits(model, prompts, out["tokens"], tok.pad_id)   # full recomputation, same tokens
    cache[policy] = {"differ": sum(a != c for a, c in zip(out["tokens"], full)),
                     "max_diff": float((out["logits"] - reference).abs().max())}
    print(f"cache, next position = {policy:>6}: {cache[policy]['differ']}/{len(prompts)} rows differ from full "
          f"recomputation | max logit difference {fmt_diff(cache[policy]['max_diff'])}")
longest = [b for b, p in enumerate(prompts) if len(p) == max(map(len, prompts))]
print(f"prompts of the maximal length ({len(longest)} rows) get the same position either way")

# %% [markdown]
# **Claim.** Incremental decoding equals full recomputation (same tokens, logits within 1e-5)
# when each row continues from its own length, and not when it continues from the padded length.

# %%
assert cache["own"]["differ"] == 0 and cache["own"]["max_diff"] < 1e-5
assert cache["padded"]["differ"] > 0.1 * len(prompts) and cache["padded"]["max_diff"] > 0.1
print(f"claim holds: own length {cache['own']['differ']} mismatches (logits {fmt_diff(cache['own']['max_diff'])}); "
      f"padded length {cache['padded']['differ']}/{len(prompts)} rows differ")

# %% [markdown]
# ## 7. Try it
#
# **Exercise 1.** Write `my_position_ids(attention_mask)` for a `[B, T]` padding mask: every real
# token gets its position counted from its row's first real token (padding may get 0).

# %%
def my_position_ids(attention_mask):
    ### BEGIN SOLUTION
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    ### END SOLUTION


# %%
# CHECK: 04-position-ids
check_position_ids(my_position_ids)
### BEGIN HIDDEN TESTS
check_position_ids(lambda m: my_position_ids(m.bool()))
mask_ex = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]])
assert my_position_ids(mask_ex)[mask_ex.bool()].tolist() == [0, 1, 0, 1, 2, 3]
### END HIDDEN TESTS
print("exercise 1: positions count real tokens only")

# %% [markdown]
# **Exercise 2.** With a key/value cache, write `my_next_positions(attention_mask)`: one position
# per row, for the token that is about to be appended to each (left-padded) row.

# %%
def my_next_positions(attention_mask):
    ### BEGIN SOLUTION
    return attention_mask.long().sum(-1)
    ### END SOLUTION


# %%
# CHECK: 04-next-positions
check_next_positions(my_next_positions)
### BEGIN HIDDEN TESTS
_, m2 = pad(prompts[:5], tok.pad_id, side="left")
assert torch.equal(my_next_positions(m2).flatten().long(), next_positions(m2)), "one position per row: its own length"
### END HIDDEN TESTS
print("exercise 2: each row continues from its own length")

# %% [markdown]
# ## Summary
#
# | setting | solo positions kept | batched = alone |
# |---|---|---|
# | right padding (training), any policy | yes | (decoding reads the last column: use left padding) |
# | left padding, `arange` positions | no | no: many rows change |
# | left padding, positions from the mask | yes | yes, logits to 1e-5 |
# | KV cache, next position = padded length | no | no |
# | KV cache, next position = own length | yes | yes |
#
# This run's numbers:

# %%
print(f"{'measurement':<52}{'value':>10}")
print(f"{'batched vs alone, arange positions: rows differing':<52}{wrong['mismatch_rate']:>10.0%}")
print(f"{'batched vs alone, mask positions: rows differing':<52}{right['mismatch_rate']:>10.0%}")
print(f"{'batched vs alone, mask positions: max logit diff':<52}{fmt_diff(right['max_logit_diff']):>10}")
print(f"{'GPT-2 plain forward, left padding: max logit diff':<52}{hf_plain['max_diff']:>10.2f}")
print(f"{'GPT-2 generate(): rows differing from alone':<52}{hf_gen_mismatch:>10d}")
print(f"{'KV cache, padded next position: rows differing':<52}{cache['padded']['differ'] / len(prompts):>10.0%}")
print(f"{'KV cache, own next position: max logit diff':<52}{fmt_diff(cache['own']['max_diff']):>10}")
print(f"{'reported loss, pads supervised vs correct':<52}{rep['pads supervised']:>5.2f}/{rep['correct']:.2f}")
