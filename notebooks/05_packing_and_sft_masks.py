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
# # 05 · Packing and SFT masks: which tokens may be read, which are learned
#
# **What you will see.** Three masks decide what a language model is trained on, and each one,
# when wrong, trains smoothly:
#
# 1. **packing**: several documents share one row. Without a block-diagonal attention mask a
#    document reads the one before it. We measure how much document B's logits move when
#    document A changes (exactly 0 with the right mask), then train on packed data both ways and
#    watch the leaky model score well on packed validation rows and worse on documents alone;
# 2. **prompt vs completion loss**: a toy instruction set (reverse / sort / copy / count), rendered
#    with the transformers chat template of the labkit tokenizer. Completion-only loss against
#    loss on every token, with the answer tokens weighted alike in both, over five seeds: answer
#    accuracy, and what each model writes after a bare user turn;
# 3. **pad == eos**: a collator that hides padding by token id also hides every `<eos>` label,
#    and the model never learns to stop;
# 4. **truncation**: with `max_len` at or below a prompt's length, an SFT example keeps its prompt
#    and loses every target; how many records that hits, what a token mean does with 0/0, and the
#    builder's guard;
# 5. two exercises.
#
# Every number the notebook asserts goes through `labkit.claims`: `CHECK` lines are identities
# (true by construction, up to float rounding), `CLAIM` lines are measurements with a visible
# threshold, `COMPARE` lines are two arms that differ in one named thing, over seeds, with a
# two-sided verdict.
#
# **Runtime:** about 45 s on a laptop CPU (2 cores); a few seconds on a GPU.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling

import labkit
from labkit import IGNORE
from labkit.batch import collate, pack
from labkit.checks import assert_prompt_masked, audit
from labkit.claims import check, claim, compare, summary
from labkit.contracts import ContractError
from labkit.data import INSTRUCTION_TASKS, load_instructions
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import (causal_lm_loss, completion_example, cross_document_sensitivity,
                                             generate)
from labkit.exercises.autoregressive import check_block_mask, check_sft_labels
from labkit.train import fit
from labkit.viz import contract_text, length_histogram, loss_curves
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. Packing documents into rows
#
# `pack()` fills rows of at most `max_len` tokens with whole documents. Three rules keep each
# document the task it was alone:
#
# - positions restart at 0 in every document;
# - the first label of every document is `-100`, so after the loss's shift no logit is trained to
#   predict the next document's first token from the previous document's last one;
# - the attention mask is **block-diagonal** (`[B, T, T]`): causal inside a document, closed across
#   documents. transformers' `DataCollatorWithFlattening` follows the same rules (its boundaries
#   travel in `position_ids`); the lab's tests check that `pack` agrees with it.

# %%
docs = [tok.encode(s, add_bos=True, add_eos=True) for s in ["the cat sat", "a dog ran to the rug", "the mat"]]
packed = pack([{"input_ids": d} for d in docs], max_len=16)
print(contract_text(packed, row=0, tokenizer=tok))
print("\nattention mask of row 0 (1 = may attend):")
for t in range(packed.input_ids.shape[1]):
    print(f"  {tok.token(int(packed.input_ids[0, t])):>6} " + " ".join(str(int(a)) for a in packed.attention_mask[0, t]))

# %% [markdown]
# The row `logit t trains on` shows the boundary rule: the `<eos>` of one document and the
# `<bos>` of the next are never a (context, target) pair.
#
# ### Does document B read document A?
#
# Pack `[A, B]` into one row, change A, and measure the largest change of B's logits
# (`cross_document_sensitivity`). Two things can carry A into B: attention (the mask) and
# positions (if they do not restart, a longer A moves B).

# %%
torch.manual_seed(SEED)
probe = TinyCausalLM(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=40).to(DEVICE).eval()
doc_a = tok.encode("<bos> the cat sat on the mat <eos>")
doc_a_words = tok.encode("<bos> the dog ran to the rug <eos>")       # same length, other words
doc_a_longer = tok.encode("<bos> the cat sat on the mat and the dog ran <eos>")
doc_b = tok.encode("<bos> a bird slept under the sofa <eos>")
sensitivity = {}
for block in [True, False]:
    for restart in [True, False]:
        s_words = cross_document_sensitivity(probe, doc_a, doc_a_words, doc_b, block_diagonal=block, restart_positions=restart)
        s_len = cross_document_sensitivity(probe, doc_a, doc_a_longer, doc_b, block_diagonal=block, restart_positions=restart)
        sensitivity[(block, restart)] = (s_words, s_len)
        print(f"mask {'block-diagonal' if block else 'plain padding':>14}, positions {'restart' if restart else 'run on':>7}: "
              f"change of B's logits when A's words change {s_words:.3f}, when A gets longer {s_len:.3f}")

# %% [markdown]
# **Checks** (by construction). With the block-diagonal mask and restarted positions, B's logits
# do not move at all: exactly 0 when A's words change (when A's length changes, B sits in other
# columns of a wider row, and only float rounding, below 1e-5, remains). **Claim:** every other
# combination lets A reach B (the smallest change over the three is shown; a random-init probe,
# one seed here, other seeds in `tools/run_seeds.py`).

# %%
worst_other = min(max(v) for k, v in sensitivity.items() if k != (True, True))
check("05.block_restart_words", sensitivity[(True, True)][0], 0,
      text="block-diagonal + restart: change of B's logits when A's words change")
check("05.block_restart_length", sensitivity[(True, True)][1], 0, 1e-5, fmt=".0e",
      text="block-diagonal + restart: change of B's logits when A gets longer")
_ = claim("05.other_settings_leak", worst_other, above=0.01,
          text="smallest change of B's logits over the other three settings",
          control="block-diagonal + restart", control_value=max(sensitivity[(True, True)]))

# %% [markdown]
# ### Training on packed rows, with and without the block-diagonal mask
#
# A realistic hazard: near-duplicate documents (the same page crawled twice, a quoted reply)
# land next to each other in a packed row. Here every document is a random 7-digit string,
# `<bos> 3 1 4 1 5 9 2 <eos>`, and appears twice in a row. Alone, a digit is unpredictable
# (log 10 nats); a model that can read the previous document can copy it. Two identical
# models train on the same packed rows, with the plain padding mask ("leaky") and with the
# block-diagonal mask. We then score each on packed validation rows (built like its training
# rows) and on the same documents one per row.

# %%
digits = [tok.stoi[str(d)] for d in range(10)]


def duplicated_docs(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for body in torch.randint(10, (n, 7), generator=g).tolist():
        d = [tok.bos_id] + [digits[j] for j in body] + [tok.eos_id]
        out += [{"input_ids": d}, {"input_ids": list(d)}]
    return out


train_docs, val_docs = duplicated_docs(3000, SEED), duplicated_docs(150, SEED + 1)
FIELDS = ("input_ids", "attention_mask", "position_ids", "labels")
BATCH = 32


def row_batches(rows, batch_size=BATCH):
    """step -> a dict of batch_size consecutive packed rows (cycling)."""
    n = rows.input_ids.shape[0]
    return lambda step: {f: getattr(rows, f)[(step * batch_size) % (n - batch_size):][:batch_size] for f in FIELDS}


def lm_loss(model, b):
    return causal_lm_loss(model(b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"]), b["labels"])


def eval_loss(model, b):
    with torch.no_grad():
        return lm_loss(model, {f: b[f].to(DEVICE) for f in FIELDS}).item()


alone = collate([{"input_ids": d["input_ids"], "labels": [IGNORE] + d["input_ids"][1:]} for d in val_docs], tok.pad_id)
alone = {f: getattr(alone, f) for f in FIELDS}       # one document per row, same boundary label rule
pack_hist, pack_eval = {}, {}
for kind, block in [("leaky", False), ("block-diagonal", True)]:
    rows, val_rows = pack(train_docs, max_len=36, block_diagonal=block), pack(val_docs, max_len=36, block_diagonal=block)
    torch.manual_seed(SEED)
    m = TinyCausalLM(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=36)
    pack_hist[kind] = fit(m, row_batches(rows, 16), lm_loss, steps=250, lr=3e-3, desc=kind)
    pack_eval[kind] = {"packed": eval_loss(m, {f: getattr(val_rows, f) for f in FIELDS}), "alone": eval_loss(m, alone)}
    e = pack_eval[kind]
    print(f"{kind:>14}: validation loss on packed rows {e['packed']:.2f} | on documents alone {e['alone']:.2f} | "
          f"gap {e['alone'] - e['packed']:.2f} nats")

# %% [markdown]
# **Claim.** The leaky model's packed validation loss is far below its loss on the same
# documents alone (it copies the previous document, a skill it cannot use at deployment).
# **Check:** with the block-diagonal mask the two numbers are equal by construction (the same
# logits for every document, the same targets), up to float rounding.

# %%
gap = {k: e["alone"] - e["packed"] for k, e in pack_eval.items()}
claim("05.leaky_packed_gap", gap["leaky"], above=0.3,
      text="leaky: loss on documents alone minus loss on packed rows (nats)",
      control="block-diagonal", control_value=gap["block-diagonal"])
_ = check("05.block_packed_gap", gap["block-diagonal"], 0, 1e-4, fmt=".0e",
          text="block-diagonal: loss on documents alone minus loss on packed rows (nats)")

# %%
# NBVAL_IGNORE_OUTPUT
fig = loss_curves(pack_hist, title="Packed training loss: the leaky run 'learns more' by copying the neighbour")
plt.show()

# %% [markdown]
# `audit()` sees the leak from the batch alone: the positions restart inside a row whose mask is
# a plain padding mask (transformers #25452, trl #784 and #805, unsloth #1207 are reports of it).

# %%
for block in [False, True]:
    findings = audit(pack(val_docs[:4], max_len=36, block_diagonal=block))
    print(f"block_diagonal={block}: {[f.code for f in findings] or 'nothing'}")

# %% [markdown]
# ## 2. Prompt loss vs completion loss
#
# `data/instructions.jsonl` holds 2000 chat records made by `labkit.data.make_instructions`
# (seeded): a user asks to reverse, sort, copy or count 2 to 5 digits or letters, the assistant
# answers. We render them with the transformers tokenizer that `WordTokenizer.to_hf()` builds:
# its chat template marks the assistant's part with `{% generation %}`, so
# `apply_chat_template(..., return_assistant_tokens_mask=True)` returns which tokens the
# assistant wrote.

# %%
records = load_instructions()
hf = tok.to_hf()
rendered = hf.apply_chat_template([r["messages"] for r in records], tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
ids0, amask0 = list(rendered["input_ids"][0]), list(rendered["assistant_masks"][0])
print(records[0]["messages"])
print(f"{'token':>12} " + " ".join(f"{tok.token(i):>9}" for i in ids0))
print(f"{'assistant':>12} " + " ".join(f"{m:>9}" for m in amask0))
same = all(tok.encode_chat(r["messages"]) == (list(i), list(m))
           for r, i, m in zip(records, rendered["input_ids"], rendered["assistant_masks"]))
print(f"labkit's encode_chat gives the same ids and mask as transformers on all {len(records)} records: {same}")


def sft_example(ids, amask, train_on_prompt=False):
    start = list(amask).index(1)                 # the assistant's first word; "<assistant>" itself is prompt
    return completion_example(ids[:start], ids[start:], train_on_prompt=train_on_prompt)


examples = {kind: [sft_example(list(i), list(m), kind == "every token")
                   for i, m in zip(rendered["input_ids"], rendered["assistant_masks"])]
            for kind in ["completion only", "every token"]}
ex = examples["completion only"][0]
assert_prompt_masked(torch.tensor(ex["labels"]), ex["prompt_len"])
print(contract_text(collate([ex], tok.pad_id), tokenizer=tok))

# %% [markdown]
# **Checks (the SFT smoke test).** labkit's chat encoding equals transformers' on every record;
# in every completion-only example the prompt labels are all `-100` and the assistant's labels
# (its `<eos>` included) are exactly the tokens transformers marks as assistant tokens.

# %%
agree = 0
for (ex, i, m) in zip(examples["completion only"], rendered["input_ids"], rendered["assistant_masks"]):
    assert_prompt_masked(torch.tensor(ex["labels"]), ex["prompt_len"])
    agree += [y != IGNORE for y in ex["labels"]] == [bool(a) for a in m]
check("05.encode_chat_equals_transformers", int(same), 1, text="encode_chat = apply_chat_template on every record (1 = yes)")
_ = check("05.targets_equal_assistant_mask", agree, len(records), fmt=".0f",
          text="records whose targets = transformers' assistant mask")

# %% [markdown]
# Now train two identical models on the first 1600 records: one on the completion only, one on
# every token (the prompt becomes a target too). Everything else is matched, and in particular the
# weight of each answer token: a token-mean loss would divide the every-token batch by its prompt
# *and* answer tokens, so each answer token would weigh less there than in the completion-only
# batch. Both arms therefore divide the summed loss by the same number, the batch's count of
# answer tokens (`denominator=`): the every-token loss is the completion-only loss plus a prompt
# term. Neither arm clips gradients (a clip would rescale the answer term by the size of the prompt
# term). Five seeds (a run takes about two seconds; with three, one slow seed can hide the effect
# in the confidence interval); each seed draws the record order and the initial weights, shared by
# both arms. Then greedy-decode the answers of the 400 held-out records, and continue a bare `<user>` turn to
# see what each model has learned to write there.

# %%
SFT_STEPS = 200
N_TRAIN = 1600
SEEDS = [SEED + i for i in range(5)]
answer_len = [len(ex["input_ids"]) - ex["prompt_len"] for ex in examples["completion only"]]   # answer + <eos>


def sft_batches(kind, seed, pad_id=tok.pad_id):
    """step -> (Batch, number of answer tokens in it): the same rows for both arms under one seed."""
    data, order = examples[kind], torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(seed)).tolist()

    def get(s):
        rows = [order[(s * BATCH + i) % N_TRAIN] for i in range(BATCH)]
        return collate([data[r] for r in rows], pad_id), sum(answer_len[r] for r in rows)
    return get


def answer_weighted_loss(model, batch):
    """sum of the supervised token losses / the batch's number of answer tokens."""
    b, n_answer = batch
    return causal_lm_loss(model(**b.model_inputs()), b.labels, denominator=n_answer)


held = records[N_TRAIN:]
questions = [tok.encode_chat(r["messages"][:1], add_generation_prompt=True)[0] for r in held]
answers = [tok.encode(r["messages"][1]["content"]) + [tok.eos_id] for r in held]
task_words = {tok.stoi[w] for w in INSTRUCTION_TASKS}
SFT_KINDS = ["completion only", "every token"]


def train_sft(kind, seed):
    """One SFT arm: train on the seed's record order from the seed's initial weights, then score it."""
    torch.manual_seed(seed)
    m = TinyCausalLM(len(tok), d_model=64, n_layers=2, n_heads=4, max_len=24)
    fit(m, sft_batches(kind, seed), answer_weighted_loss, steps=SFT_STEPS, lr=3e-3, clip=None, desc=f"{kind}, seed {seed}")
    outs = generate(m, questions, max_new_tokens=7, pad_id=tok.pad_id, eos_id=tok.eos_id)
    per_task = {t: [o == a for o, a, r in zip(outs, answers, held) if r["task"] == t] for t in INSTRUCTION_TASKS}
    bare = generate(m, [[tok.user_id]] * 32, max_new_tokens=8, pad_id=tok.pad_id, eos_id=tok.eos_id, temperature=1.0,
                    generator=torch.Generator().manual_seed(seed))
    return {"model": m, "exact": sum(o == a for o, a in zip(outs, answers)) / len(held),
            "per_task": {t: sum(v) / len(v) for t, v in per_task.items()},
            "imitates_user": sum(o[0] in task_words for o in bare) / len(bare), "bare": bare}


sft = {(kind, seed): train_sft(kind, seed) for seed in SEEDS for kind in SFT_KINDS}
for (kind, seed), e in sft.items():
    print(f"{kind:>15}, seed {seed}: answer exact match {e['exact']:.2f} ("
          + ", ".join(f"{t} {v:.2f}" for t, v in e["per_task"].items())
          + f") | bare <user> continued with a task request: {e['imitates_user']:.0%}")
for kind in SFT_KINDS:
    print(f"{kind:>15}, seed {SEED}: <user> -> {tok.decode(sft[(kind, SEED)]['bare'][0])}")

# %% [markdown]
# **Comparisons.** Over the five seeds, with the answer tokens weighted alike: answer exact match
# of completion-only vs every-token training, and the share of bare user turns that each model
# continues by writing a user request (a task word right after `<user>`): the every-token model
# learned to imitate the user (trl #3279; karpathy/nanochat PR #582 restored the mask and its chat
# score rose). Why the every-token model answers worse is not measured here; a *hypothesis*: with
# the same small model and the same number of AdamW steps, fitting the users' requests competes
# with fitting the answers. Nor is the effect of the denominator alone measured here (the earlier
# version of this comparison used a token mean in both arms); a *hypothesis*: small, since AdamW
# normalises the size of each update.

# %%
def sft_seeds(kind, key):
    return [sft[(kind, s)][key] for s in SEEDS]


sft_matched = ["model and initial weights", "records and their order", "steps, batch, lr, AdamW, no clipping",
               "answer-token weight: both losses = summed loss / number of answer tokens"]
compare("05.answer_exact_match", sft_seeds("completion only", "exact"), sft_seeds("every token", "exact"), seeds=SEEDS,
        arms=("completion only", "every token"), metric="answer exact match on 400 held-out records", expect="A better",
        matched_on=sft_matched)
_ = compare("05.bare_user_turn", sft_seeds("completion only", "imitates_user"), sft_seeds("every token", "imitates_user"),
            seeds=SEEDS, arms=("completion only", "every token"), higher_is_better=False, expect="A better",
            metric="share of 32 bare <user> turns continued with a user request", matched_on=sft_matched)

# %% [markdown]
# ## 3. pad == eos hides the end of every answer
#
# Many tokenizers have no pad token, and a common fix is `tokenizer.pad_token = tokenizer.eos_token`.
# transformers' causal-LM collator then builds labels with `labels[labels == pad_token_id] = -100`:
# every padding position is hidden, and so is every real `<eos>`.

# %%
hf_pad_eos = tok.to_hf()
hf_pad_eos.pad_token = hf_pad_eos.eos_token
collator = DataCollatorForLanguageModeling(hf_pad_eos, mlm=False)
hb = collator([{"input_ids": list(rendered["input_ids"][i])} for i in range(4)])
print("row 1 input_ids:", hb["input_ids"][1].tolist())
print("row 1 labels:   ", hb["labels"][1].tolist())
findings = audit(dict(hb), pad_id=hf_pad_eos.pad_token_id, eos_id=tok.eos_id)
print("audit:", [str(f) for f in findings])

# %% [markdown]
# A completion-only collator that inherits the same line (trl PR #456; trl #1623, #734, #2059)
# trains a model that has never seen `<eos>` as a target. We train it like the completion-only
# model of section 2 (seed, steps, loss; that collator masks padding by the attention mask), and
# let both answer the held-out questions with room for 14 new tokens.

# %%
pad_eos_batches = sft_batches("completion only", SEED, pad_id=tok.eos_id)   # the rows of the first seed's run


def masked_by_pad_id(s):
    b, n_answer = pad_eos_batches(s)
    b.labels[b.input_ids == tok.eos_id] = IGNORE          # "mask the padding" by id: pad == eos
    return b, n_answer


print("audit of one training batch:", [f.code for f in audit(masked_by_pad_id(0)[0], pad_id=tok.eos_id, eos_id=tok.eos_id)])
torch.manual_seed(SEED)
no_eos = TinyCausalLM(len(tok), d_model=64, n_layers=2, n_heads=4, max_len=24)
fit(no_eos, masked_by_pad_id, answer_weighted_loss, steps=SFT_STEPS, lr=3e-3, clip=None, desc="pad == eos")
MAX_NEW = 14
lengths, stops = {}, {}
for kind, m in [("mask from attention", sft[("completion only", SEED)]["model"]), ("mask by pad id (= eos)", no_eos)]:
    outs = generate(m, questions, max_new_tokens=MAX_NEW, pad_id=tok.pad_id, eos_id=tok.eos_id)
    lengths[kind] = [len(o) for o in outs]
    stops[kind] = sum(o[-1] == tok.eos_id for o in outs) / len(outs)
    print(f"{kind:>24}: stops with <eos> in {stops[kind]:.0%} of answers | mean length {sum(lengths[kind]) / len(outs):.1f} tokens"
          f" | e.g. {tok.decode(outs[0])}")

# %% [markdown]
# **Claims** (one seed here; `tools/run_seeds.py` repeats them under other seeds). The model whose
# `<eos>` labels were hidden (almost) never stops; the one trained with the padding masked by the
# attention mask stops in (almost) every answer.

# %%
good_stop, bad_stop = stops["mask from attention"], stops["mask by pad id (= eos)"]
claim("05.pad_eos_stops", bad_stop, below=0.1, text="labels masked by pad id (= eos): share of answers ending in <eos>",
      control="labels masked by the attention mask", control_value=good_stop)
_ = claim("05.attention_mask_stops", good_stop, above=0.9,
          text="labels masked by the attention mask: share of answers ending in <eos>")

# %%
# NBVAL_IGNORE_OUTPUT
fig = length_histogram(lengths, MAX_NEW, title="Answer lengths: without <eos> targets the model runs to the limit")
plt.show()

# %% [markdown]
# The two fixes give the same labels: a pad id distinct from `<eos>`, or labels masked where the
# attention mask is 0 (whatever the pad id is).

# %%
batch_ids = [examples["completion only"][i] for i in range(8)]
distinct_pad = collate(batch_ids, pad_id=tok.pad_id)
mask_by_attention = collate(batch_ids, pad_id=tok.eos_id)     # collate pads labels with -100 by position
check("05.two_fixes_same_labels", int(distinct_pad.labels.ne(mask_by_attention.labels).sum()), 0,
      text="labels that differ between the two fixes")
print("audit:", audit(mask_by_attention, pad_id=tok.eos_id, eos_id=tok.eos_id) or "nothing")

# %% [markdown]
# ## 4. Truncation: an example that keeps its prompt and loses every target
#
# A collator cuts each example to `max_len` tokens, from the right. In an SFT example the answer
# comes last, so when `max_len` is at or below the prompt's length the cut keeps the whole prompt
# and none of the answer: every label left is `-100`. Just above it, the answer survives without
# its end (`<eos>` lost). How many records of `data/instructions.jsonl` fall into each case at a
# few values of `max_len` (the prompt length read from transformers' assistant mask):

# %%
prompt_lens = [list(m).index(1) for m in rendered["assistant_masks"]]       # tokens before the assistant's first word
full_lens = [len(i) for i in rendered["input_ids"]]


def builder_refuses(i, max_len):
    """Does completion_example(max_len=...) refuse record i (no answer token left)?"""
    ids = list(rendered["input_ids"][i])
    try:
        completion_example(ids[:prompt_lens[i]], ids[prompt_lens[i]:], max_len=max_len)
    except ContractError:
        return True
    return False


MAX_LENS = [6, 7, 8, 9, 12]
disagree = 0
for L in MAX_LENS:
    no_target = [p >= L for p in prompt_lens]
    refused = [builder_refuses(i, L) for i in range(len(records))]
    disagree += sum(a != b for a, b in zip(no_target, refused))
    cut = sum(p < L < n for p, n in zip(prompt_lens, full_lens))
    print(f"max_len {L:>2}: {sum(no_target):4d} records keep no target | {cut:4d} keep part of the answer (no <eos>) | "
          f"{len(records) - sum(no_target) - cut:4d} whole")

# %% [markdown]
# **Check** (a count fixed by the data): the builder refuses exactly the records whose prompt is at
# least `max_len` tokens long, at every `max_len` above.

# %%
_ = check("05.refused_equals_no_target", disagree, 0,
          text=f"(record, max_len) pairs, max_len in {MAX_LENS}: builder refusal != prompt length >= max_len")

# %% [markdown]
# ### What a token mean does with 0/0
#
# Cut one such record at `max_len = 8` the naive way (keep the first 8 ids and labels) and score it
# with the completion-only model of section 2. PyTorch's `F.cross_entropy(..., ignore_index=-100)`
# divides a sum over no targets by a count of 0: the loss is NaN. Its gradient is 0 everywhere, so
# a training loop that does not look at the value learns nothing from the example and does not
# crash; any logged mean that includes it is NaN. The chapter's `mask.sum().clamp_min(1)` makes the
# value 0 instead: silent, and a per-example average over a batch then counts the empty example as
# a perfect one.

# %%
L = 8
victim = prompt_lens.index(L)                              # the first record whose prompt is exactly 8 tokens
ex = examples["completion only"][victim]
cut_batch = collate([{"input_ids": ex["input_ids"][:L], "labels": ex["labels"][:L]}], tok.pad_id)
print(contract_text(cut_batch, tokenizer=tok))
sft_model = sft[("completion only", SEED)]["model"]
sft_model.zero_grad(set_to_none=True)                      # fit() leaves the last step's gradients in place
logits = sft_model(**cut_batch.model_inputs())
torch_mean = F.cross_entropy(logits[0, :-1], cut_batch.labels[0, 1:], ignore_index=IGNORE)
torch_mean.backward()
grad_norm = sum(p.grad.norm() ** 2 for p in sft_model.parameters() if p.grad is not None).sqrt().item()
sft_model.zero_grad(set_to_none=True)
mask = cut_batch.labels[0, 1:].ne(IGNORE)
losses = F.cross_entropy(logits[0, :-1], cut_batch.labels[0, 1:].clamp_min(0), reduction="none")
clamped = ((losses * mask).sum() / mask.sum().clamp_min(1)).item()
print(f"targets left: {int(mask.sum())} | torch token mean: {torch_mean.item()} | its gradient norm: {grad_norm} | "
      f"with clamp_min(1): {clamped}")

# %%
check("05.all_ignored_mean_is_nan", int(torch_mean.isnan()), 1, text="F.cross_entropy over a row with no target is NaN (1 = yes)")
check("05.all_ignored_grad_is_zero", grad_norm, 0, text="gradient norm of that NaN loss")
_ = check("05.clamped_mean_is_zero", clamped, 0, text="the chapter's sum / count.clamp_min(1) on the same row")

# %% [markdown]
# ### The guard
#
# `completion_example(prompt, answer, max_len=...)` truncates like the collator and refuses an
# example with no answer token left, naming the three fixes. labkit's loss refuses the 0/0 too
# (`causal_lm_loss` on a batch without targets), but the builder says which record and why.

# %%
ids_i = list(rendered["input_ids"][victim])
try:
    completion_example(ids_i[:L], ids_i[L:], max_len=L)
except ContractError as err:
    print("ContractError:", err)
kept = [completion_example(list(r)[:p], list(r)[p:], max_len=L)
        for r, p in zip(rendered["input_ids"], prompt_lens) if p < L]      # fix 1: drop what cannot fit
print(f"fix 1, drop: {len(kept)} examples kept; each has a target: {all(any(y != IGNORE for y in e['labels']) for e in kept)}")

# %% [markdown]
# ## 5. Try it
#
# **Exercise 1.** Write `my_block_mask(document_ids)`: for one packed row, `document_ids` is `[T]`
# (−1 on padding); return a bool `[T, T]` mask, True where query *t* may attend key *s*: causal
# inside a document, nothing across documents, and each padding position attends to itself.

# %%
def my_block_mask(document_ids):
    ### BEGIN SOLUTION
    T = document_ids.shape[0]
    real = document_ids.ge(0)
    same = document_ids[:, None].eq(document_ids[None, :]) & real[:, None] & real[None, :]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return (same & causal) | torch.eye(T, dtype=torch.bool)
    ### END SOLUTION


# %%
# CHECK: 05-block-mask
check_block_mask(my_block_mask)
### BEGIN HIDDEN TESTS
row = pack([{"input_ids": d} for d in docs], max_len=16)
assert torch.equal(my_block_mask(row.document_ids[0]), row.attention_mask[0]), "must equal pack()'s mask"
### END HIDDEN TESTS
print("exercise 1: no token reads another document or the future")

# %% [markdown]
# **Exercise 2.** With `pad_id == eos_id` (as above), write `my_sft_labels(input_ids,
# attention_mask, assistant_mask)` (all `[B, T]`, right padding): the assistant's tokens,
# `<eos>` included, are targets; the prompt and the padding are `-100`.

# %%
def my_sft_labels(input_ids, attention_mask, assistant_mask):
    ### BEGIN SOLUTION
    keep = attention_mask.bool() & assistant_mask.bool()
    return torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE))
    ### END SOLUTION


# %%
# CHECK: 05-sft-labels
check_sft_labels(my_sft_labels)
### BEGIN HIDDEN TESTS
ids_t, am_t = torch.tensor([list(rendered["input_ids"][1])]), torch.tensor([list(rendered["assistant_masks"][1])])
mine = my_sft_labels(ids_t, torch.ones_like(ids_t), am_t)
assert mine[0, -1] == tok.eos_id and int(mine.ne(IGNORE).sum()) == int(am_t.sum()), "the answer and its <eos> are the targets"
### END HIDDEN TESTS
print("exercise 2: prompt and padding hidden, <eos> kept")

# %% [markdown]
# ## Summary
#
# | mask | wrong version | what it does | measured here |
# |---|---|---|---|
# | attention across packed documents | plain padding mask | B reads A; packed loss flatters | sensitivity > 0, packed/alone gap |
# | loss on the prompt | labels = input_ids | the model learns to write user turns | bare-turn imitation |
# | padding masked by id with pad == eos | `labels[ids == pad] = -100` | `<eos>` never a target: no stopping | stop rate |
# | truncation to `max_len` <= prompt length | `ids[:max_len]`, no guard | no target: token mean 0/0 = NaN (or a silent 0) | records hit per `max_len`, NaN, guard |
#
# This run's ledger (every check, claim and comparison above):

# %%
_ = summary()
