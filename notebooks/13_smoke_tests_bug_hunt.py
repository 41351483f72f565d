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
# # 13 · Smoke tests and a bug hunt
#
# **What you will see.** Every objective in this lab has one small test that catches its classic
# bug before any GPU hour is spent: look at the tensors that define the task, not at the loss curve.
#
# 1. the smoke-test table: eight rows (AR LM, SFT, packed LM, masked LM, contrastive, distillation,
#    preference, curriculum), each a labkit check run on a correct and on a deliberately broken
#    pipeline; the broken one fails with a message that names the bug and the fix;
# 2. `audit()` on batches built by transformers' own collators: pad == eos, flattening without
#    boundaries, left padding with column-index positions;
# 3. a bug hunt: three small training pipelines, each with one hidden bug. You fix them; the grader
#    trains a tiny model with your fix and checks what the model *does* (next-token accuracy against
#    the Bayes limit of the positions it is evaluated on, whether it stops with `<eos>`, whether
#    packed documents read each other).
#
# Each statement is backed by a `CLAIM` or `CHECK` line (`labkit.claims`).
#
# **Runtime:** about 30 s on a laptop CPU (2 cores).

# %%
import math

import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorWithFlattening

import labkit
from labkit import IGNORE
from labkit.batch import arange_positions, pad
from labkit.exercises.bughunt import (check_hunt, check_lm_batch, check_packed_attention, check_pad_eos_collate,
                                      draw_bug_hunt, smoke_test_table, student_id, train_lm_pipeline,
                                      train_packed_pipeline, train_stop_pipeline)
from labkit.checks import audit
from labkit.claims import check, claim, summary
from labkit.predict import ask, reveal
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. The smoke-test table
#
# | row | the smoke test | the classic bug |
# |---|---|---|
# | AR LM | logit *t* is trained on token *t+1* (read from the loss gradient) | shifted in the dataset *and* in the loss |
# | SFT | prompt labels are all -100, assistant labels are not | training on the user's text |
# | packed LM | a later document's logits do not move when an earlier one changes | a plain padding mask over packed rows |
# | masked LM | unmasked tokens are -100, masked positions target their clean ids | every token graded (a copy task) |
# | contrastive | after the all-gather, query *i* of rank *r* targets column *r·B + i* | `arange(B)` targets on every rank |
# | distillation | teacher and student share the vocabulary id by id and one temperature | a student tokenizer with one extra word |
# | preference | chosen and rejected share the prompt tokens and template; one response block each | the two sides rendered from different prompts |
# | curriculum | sampled source proportions pass a chi-square test against the configured weights | a loader that samples by size |
#
# `smoke_test_table()` runs each row twice. Each check is an existing labkit contract
# (`assert_golden_shift`, `assert_prompt_masked`, `assert_masked_targets`, `assert_same_event_space`,
# `assert_same_prompt`, `assert_mixture_proportions`) or a small one in `labkit.exercises.bughunt`
# (`assert_no_cross_document`, `assert_gathered_diagonal`, `assert_distillation_contract`).

# %%
table = smoke_test_table(seed=SEED)
for r in table:
    print(f"{r['row']:<13} {r['pipeline']:<8} {'PASS' if r['passed'] else 'FAIL'}")
    if not r["passed"]:
        print(f"    {r['message']}")

# %%
# claim: every correct pipeline passes, every broken one fails with a message that names a fix
correct = [r for r in table if r["pipeline"] == "correct"]
broken = [r for r in table if r["pipeline"] == "broken"]
print(f"rows {len(correct)}: correct pipelines passing {sum(r['passed'] for r in correct)}, "
      f"broken pipelines caught {sum(not r['passed'] for r in broken)}")
check("13.smoke_correct_pass", sum(r["passed"] for r in correct), len(correct), 0, text="correct pipelines that pass (of 8)")
check("13.smoke_broken_caught", sum(not r["passed"] for r in broken), len(broken), 0, text="broken pipelines that fail (of 8)")
assert len(correct) == len(broken) == len(set(r["row"] for r in table))
assert all("fix" in r["message"].lower() for r in broken)

# %% [markdown]
# ## 2. `audit()` on transformers' own collators
#
# The same checks apply to batches we did not build. Three collators from transformers, each used
# in a way that quietly changes the task:
#
# - `DataCollatorForLanguageModeling(mlm=False)` copies `input_ids` into `labels` and sets every
#   pad token to -100. Many checkpoints have no pad token and people set `pad = eos`: then every
#   real `<eos>` becomes -100 too, and the model never learns to stop.
# - `DataCollatorWithFlattening` concatenates the examples into one row with restarting
#   `position_ids` and no attention mask. That is correct *only* with a kernel that reads the
#   boundaries from the positions (flash-attention varlen); a plain causal attention lets each
#   example read the ones before it.
# - A tokenizer with `padding_side="left"` and positions `0..T-1` counted from column 0: each
#   left-padded prompt gets other positions than when it stands alone.

# %%
texts = ["<bos> the cat sat on the mat <eos>", "<bos> the dog ran <eos>", "<bos> the cat sat <eos>"]
features = [{"input_ids": tok.encode(t)} for t in texts]

hf_eos = tok.to_hf()
hf_eos.pad_token = hf_eos.eos_token                     # pad == eos, as with many checkpoints
lm_batch = dict(DataCollatorForLanguageModeling(tokenizer=hf_eos, mlm=False)(features))

flat = DataCollatorWithFlattening(return_tensors="pt")(features)
flat_batch = {k: flat[k] for k in ("input_ids", "labels", "position_ids")}   # no boundary mask

hf_left = tok.to_hf()
hf_left.padding_side = "left"
enc = hf_left(texts, padding=True, return_tensors="pt", add_special_tokens=False)
left_batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
              "position_ids": arange_positions(enc["input_ids"]),
              "labels": enc["input_ids"].masked_fill(enc["attention_mask"].eq(0), IGNORE)}

findings = {
    "LM collator, pad == eos": audit(lm_batch, pad_id=tok.eos_id, eos_id=tok.eos_id),
    "flattening, no boundary mask": audit(flat_batch),
    "left padding, arange positions": audit(left_batch, pad_id=tok.pad_id),
}
for name, found in findings.items():
    print(name)
    for f in found:
        print("   ", f)

# %%
# claim: audit names the bug of each collator setup
codes = {name: sorted(f.code for f in found) for name, found in findings.items()}
print(codes)
assert codes["LM collator, pad == eos"] == ["eos_label_masked"]
assert codes["flattening, no boundary mask"] == ["cross_document_attention"]
assert codes["left padding, arange positions"] == ["arange_positions_with_left_padding", "supervised_padding"]
# the fixes: a distinct pad token; boundaries in the mask; positions from the attention mask
hf_ok = tok.to_hf()
assert audit(dict(DataCollatorForLanguageModeling(tokenizer=hf_ok, mlm=False)(features)),
             pad_id=tok.pad_id, eos_id=tok.eos_id) == []

# %% [markdown]
# ## 3. Bug hunt
#
# Each pipeline below trains a tiny causal LM on `MarkovWorld` (a Markov chain over the chapter's
# words, so the best possible next-token accuracy, its Bayes limit, is known). The limit belongs to
# the positions that are evaluated: for windows cut from a long stream it is the chain's
# $\sum_s \pi_s \max_j P_{sj}$; for whole sentences of at most 12 tokens (pipelines 2 and 3) the
# next token also depends on the position, because a sentence that must end in time ends more often
# late (`labkit.exercises.bughunt.sentence_conditionals`). We average $\max_j p(j \mid \text{context})$ over
# exactly the evaluated contexts, and score the model's argmax with the same known conditionals
# (its *expected* accuracy), which removes the noise of the sampled labels. Each has one bug.
# The loss never crashes; only the model's behaviour gives it away. The three pipelines below are
# worked examples. Your exercises are *your own* three pipelines, drawn from your student id: the
# same three stages, but which bug, where the fix belongs (does the loss shift, or must the batch?),
# which collator (right or left padding) and which mask convention the model reads are drawn per
# student, so a fix copied from a classmate usually fails. The grader
# (`labkit.exercises.bughunt.check_hunt`) trains a fresh model with your function, under the id the
# grader knows you by, and measures its behaviour; it never reads your code.

# %%
STUDENT_ID = student_id(default="demo")   # working on your own: write your id here, e.g. STUDENT_ID = "s1234"
hunt = draw_bug_hunt(STUDENT_ID)
print(f"bug hunt of {STUDENT_ID!r}: " + ", ".join(f"pipeline {p.k} ({p.kind})" for p in hunt))

# %%
# NBVAL_IGNORE_OUTPUT
q_shift = ask("13.double_shift_next_token", "Pipeline 1's batch shifts the labels and its loss shifts again. After training, "
              "how often does the model predict the NEXT token (0 = never, 1 = always)?", number=(0.0, 1.0, 0.05))

# %% [markdown]
#
# ### Pipeline 1: the LM batch
#
# The loss is `causal_lm_loss(logits, labels, shift=True)`: logit *t* is compared with label *t+1*.
# The batch builder:

# %%
def buggy_lm_batch(block):
    """block [B, L] token ids -> the training batch."""
    return {"input_ids": block[:, :-1], "labels": block[:, 1:]}


buggy1 = train_lm_pipeline(buggy_lm_batch, seed=SEED)
print(f"buggy pipeline 1: next-token accuracy {buggy1['acc']:.2f}, accuracy at t+2 {buggy1['acc_t2']:.2f}, "
      f"Bayes limit {buggy1['bayes']:.2f}")
try:
    check_lm_batch(buggy_lm_batch, seed=SEED)
except AssertionError as err:
    print("grader:", err)

# %% [markdown]
# **Exercise 1.** Your pipeline 1 is printed below: read which loss it uses, then fix its batch
# builder so that the model reaches the Bayes limit of next-token accuracy with that loss.

# %%
print(hunt[0].card())


# %%
def fixed_lm_batch(block):
    ### BEGIN SOLUTION
    if hunt[0].options["loss_shifts"]:                 # the loss shifts: the batch must not
        return {"input_ids": block, "labels": block}
    return {"input_ids": block[:, :-1], "labels": block[:, 1:]}
    ### END SOLUTION


# %%
# CHECK: 13-lm-batch
fixed1 = check_hunt(fixed_lm_batch, 1, STUDENT_ID, seed=SEED)
### BEGIN HIDDEN TESTS
check_hunt(fixed_lm_batch, 1, student_id(default=STUDENT_ID), seed=SEED + 7)
### END HIDDEN TESTS
print(f"exercise 1: next-token accuracy {fixed1['acc']:.2f} (expected {fixed1['acc_expected']:.3f}) vs Bayes limit "
      f"{fixed1['bayes']:.3f}")

# %% [markdown]
# ### Pipeline 2: the SFT collator with pad == eos
#
# The checkpoint has no pad token, so the pipeline pads with `<eos>` (pad_id == eos_id). Every
# training sentence ends with a real `<eos>`. The collator:

# %%
def buggy_collate(sentences, pad_id):
    """sentences: lists of ids ("<bos> ... <eos>"); right-pad -> input_ids, attention_mask, labels."""
    input_ids, attention_mask = pad(sentences, pad_id, "right")
    labels = input_ids.masked_fill(input_ids.eq(pad_id), IGNORE)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


buggy2 = train_stop_pipeline(buggy_collate, seed=SEED)
print(f"buggy pipeline 2: {buggy2['stop_rate']:.0%} of continuations stop with <eos>; audit: {buggy2['codes']}")
try:
    check_pad_eos_collate(buggy_collate, seed=SEED)
except AssertionError as err:
    print("grader:", err)

# %% [markdown]
# **Exercise 2.** Your pipeline 2 is printed below. Fix its collator (the pad id stays equal to the
# eos id, the padding side stays your tokenizer's): padding must not be a target, and the model
# must learn to end its sentences.

# %%
print(hunt[1].card())


# %%
def fixed_collate(sentences, pad_id):
    ### BEGIN SOLUTION
    input_ids, attention_mask = pad(sentences, pad_id, hunt[1].options["side"])
    labels = input_ids.masked_fill(attention_mask.eq(0), IGNORE)
    labels[:, 1:] = labels[:, 1:].masked_fill(attention_mask[:, :-1].eq(0), IGNORE)   # predicted from padding (left)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    ### END SOLUTION


# %%
# CHECK: 13-pad-eos
fixed2 = check_hunt(fixed_collate, 2, STUDENT_ID, seed=SEED)
### BEGIN HIDDEN TESTS
check_hunt(fixed_collate, 2, student_id(default=STUDENT_ID), seed=SEED + 7)
### END HIDDEN TESTS
print(f"exercise 2: {fixed2['stop_rate']:.0%} of continuations stop with <eos>")

# %% [markdown]
# ### Pipeline 3: the packed attention mask
#
# Sentences are packed into rows with `labkit.batch.pack` (positions restart per document, the
# first label of each document is -100). The attention mask comes from the document ids
# (`-1` = padding), `True` = may attend:

# %%
def buggy_attention(document_ids):
    """document_ids [B, T] -> bool [B, T, T]."""
    B, T = document_ids.shape
    return torch.ones(T, T, dtype=torch.bool).tril().expand(B, T, T)


buggy3 = train_packed_pipeline(buggy_attention, seed=SEED)
print(f"buggy pipeline 3: the second document's logits move by {buggy3['leak']:.2f} when the first changes; "
      f"accuracy {buggy3['acc']:.2f} on {buggy3['n_eval']} targets (expected {buggy3['acc_expected']:.3f}; "
      f"Bayes limit of these positions {buggy3['bayes']:.3f})")
try:
    check_packed_attention(buggy_attention, seed=SEED)
except AssertionError as err:
    print("grader:", err)

# %% [markdown]
# Its accuracy looks fine. The sampled accuracy can even land above the Bayes limit: with a few
# hundred targets its standard error is about $\sqrt{p(1-p)/n}$ (printed below), and the limit is that
# of the evaluated sentence positions, not of stationary text. The expected accuracy, free of label
# noise, stays below the limit, as it must for a model that reads only the past. The leak costs
# nothing here because the sentences are drawn independently, so an earlier one carries no
# information about the next (measured: the buggy model's expected accuracy is as close to the
# limit as the fixed one's, below). On real text it flatters packed validation (notebook 05) and
# lets the model condition on unrelated documents.

# %%
print(f"standard error of the sampled accuracy: {math.sqrt(buggy3['bayes'] * (1 - buggy3['bayes']) / buggy3['n_eval']):.3f}")
#
# **Exercise 3.** Your pipeline 3 is printed below. Fix its mask: causal inside each document,
# closed across documents, every position (padding included) may attend itself, returned in the
# convention your model reads.

# %%
print(hunt[2].card())


# %%
def fixed_attention(document_ids):
    ### BEGIN SOLUTION
    T = document_ids.shape[1]
    same = document_ids[:, :, None].eq(document_ids[:, None, :])
    allowed = (same & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)
    return allowed if hunt[2].options["convention"] == "keep" else ~allowed
    ### END SOLUTION


# %%
# CHECK: 13-packed-mask
fixed3 = check_hunt(fixed_attention, 3, STUDENT_ID, seed=SEED)
### BEGIN HIDDEN TESTS
check_hunt(fixed_attention, 3, student_id(default=STUDENT_ID), seed=SEED + 7)
### END HIDDEN TESTS
print(f"exercise 3: cross-document change {fixed3['leak']:.2g}, accuracy {fixed3['acc']:.2f} "
      f"(expected {fixed3['acc_expected']:.3f}, Bayes limit {fixed3['bayes']:.3f})")

# %% [markdown]
# **Claim.** Each bug changes what the model does and each fix restores it: the double shift
# predicts two tokens ahead instead of one, the pad == eos collator never stops, the packed mask
# leaks across documents; the fixed pipelines reach the Bayes limit of the positions they are
# evaluated on (expected accuracy within 0.03 of it), stop, and do not leak.

# %%
print(f"pipeline 1 next-token accuracy: buggy {buggy1['acc']:.2f}, fixed {fixed1['acc']:.2f} (Bayes {fixed1['bayes']:.3f})")
print(f"pipeline 2 stop rate:           buggy {buggy2['stop_rate']:.2f}, fixed {fixed2['stop_rate']:.2f}")
print(f"pipeline 3 cross-document leak: buggy {buggy3['leak']:.2f}, fixed {fixed3['leak']:.2g}")
claim("13.double_shift_next_token", buggy1["acc"], below=0.2, text="buggy pipeline 1: next-token accuracy")
reveal(q_shift, buggy1["acc"])
claim("13.double_shift_two_ahead", buggy1["acc_t2"], above=buggy1["acc"], text="buggy pipeline 1: accuracy at t+2",
      control="its next-token accuracy", control_value=buggy1["acc"])
claim("13.lm_fixed_at_bayes", fixed1["bayes"] - fixed1["acc_expected"], below=0.03,
      text="fixed pipeline 1: Bayes limit - expected accuracy, on the evaluated windows", fmt=".3f")
claim("13.pad_eos_never_stops", buggy2["stop_rate"], below=0.2, text="buggy pipeline 2: share of continuations that stop")
claim("13.pad_eos_fixed_stops", fixed2["stop_rate"], above=0.8, text="fixed pipeline 2: share of continuations that stop")
claim("13.packed_buggy_leaks", math.log10(buggy3["leak"]), above=math.log10(0.1),
      text="buggy pipeline 3: log10 of the cross-document logit change")
check("13.packed_fixed_no_leak", fixed3["leak"], 0.0, 1e-5, text="fixed pipeline 3: cross-document logit change")
check("13.packed_expected_below_bayes", max(0.0, fixed3["acc_expected"] - fixed3["bayes"]), 0.0, 1e-12,
      text="fixed pipeline 3: excess of expected accuracy over the Bayes limit (0 for a causal model)")
claim("13.packed_fixed_at_bayes", fixed3["bayes"] - fixed3["acc_expected"], below=0.03,
      text="fixed pipeline 3: Bayes limit of the evaluated sentence positions - expected accuracy", fmt=".3f")
claim("13.packed_leak_costs_nothing", buggy3["bayes"] - buggy3["acc_expected"], below=0.03,
      text="buggy pipeline 3: Bayes limit - expected accuracy (independent sentences: nothing to gain)", fmt=".3f")

# %% [markdown]
# ## Summary
#
# | measurement | what it shows |
# |---|---|
# | smoke-test table | each objective has a one-tensor test; broken pipelines fail with bug and fix named |
# | audit on transformers' collators | pad == eos, flattening without boundaries and left padding with arange positions are caught |
# | bug hunt | bugs that do not crash show up in behaviour: accuracy at the wrong offset, a model that never stops, documents that read each other |
#
# The ledger of this run (every `CLAIM` and `CHECK` above):

# %%
ledger_table = summary()
