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
# # 00 · A tour: one sentence, six training tasks
#
# **What you will see.** The sentence *the cat sat on the mat* becomes six different training
# examples: a label for the whole sentence, next-token prediction, a masked blank, an instruction
# completion, a contrastive pair and a preference pair. Every one of them is fed to a model with
# the same forward call and scored with the same cross-entropy line; what differs is the data
# contract (which tokens are read, which are targets, what the loss divides by). Then two
# identical networks learn two different things from the same stream, and we check each against
# the known truth; and a classification head on the same transformer learns a sentence label,
# checked against a shuffled-label control. Notebook 14 runs the whole table: one network, five
# objectives, every network scored on every objective's probe.
#
# Numbers the notebook asserts go through `labkit.claims`: `check` for counts and identities that
# hold by construction, `claim` for measured effects with a visible threshold; the ledger closes the
# notebook.
#
# **Runtime:** about 25 s on a laptop CPU.

# %%
import torch
import torch.nn.functional as F

import labkit
from labkit import IGNORE
from labkit.batch import collate
from labkit.checks import assert_masked_targets, assert_prompt_masked, audit
from labkit.claims import check, claim, compare, ledger, summary
from labkit.predict import ask, reveal, verdict_choices, verdict_of
from labkit.data import MarkovWorld
from labkit.models import TinyTransformer
from labkit.paradigms.autoregressive import ar_example, causal_lm_loss, causal_lm_token_losses
from labkit.paradigms.objective_matrix import (SequenceClassifier, classification_accuracy, classification_example,
                                               collate_classification)
from labkit.paradigms.supervised import single_label_ce
from labkit.paradigms.masked import mask_positions, random_mask
from labkit.reduce import reduce, token_cross_entropy
from labkit.train import fit
from labkit.viz import contract_text
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()
tok = seed_vocab()

# %% [markdown]
# ## 1. One record, the chapter's ids
#
# A word-level tokenizer with the lab's special tokens gives the ids used throughout the lab.

# %%
record = tok.encode("the cat sat on the mat", add_bos=True, add_eos=True)
for t in record:
    print(f"{tok.token(t):>6} -> {t}")
assert record == [1, 42, 95, 317, 18, 42, 510, 2]

# %% [markdown]
# ## 2. A training paradigm is a data-objective pipeline
#
# Every paradigm in this lab is one instance of
#
# $$\min_\theta\; \mathbb{E}_{x\sim p_\text{data}}\; \mathbb{E}_{(c,y)\sim q(\cdot\mid x)} \big[\ell_\theta(c, y)\big],$$
#
# where the **task construction** $q(c, y \mid x)$ turns a raw record $x$ into a context $c$ and a
# target $y$. In code that is `raw record -> example builder -> collator -> loss reducer`, and the
# batch that comes out defines the empirical objective
#
# $$\hat{\mathcal L} = \frac{\sum_{b,t} m_{b,t}\, \ell_\theta(c_{b,t}, y_{b,t})}{\sum_{b,t} m_{b,t}},$$
#
# with $m$ the supervised positions (labels ≠ −100). The network never sees the word "task".
#
# ### Supervised classification: the whole sentence is the input, one label is the target
#
# The chapter's first row. There is no token-level target at all: the builder pairs the ids with
# a class id (here 1 = "someone ran", 0 = not), and a head on the pooled hidden states turns the
# sentence into K logits, scored by the same cross-entropy over K classes.

# %%
labelled = classification_example(record, label=int(tok.stoi["ran"] in record))
print({k: (tok.decode(v) if k == "input_ids" else v) for k, v in labelled.items()})

# %% [markdown]
# ### Autoregressive LM: every next token is a target

# %%
ar = collate([ar_example(record)], tok.pad_id)
print(contract_text(ar, tokenizer=tok))

# %% [markdown]
# ### Masked LM: one hidden token is the target, read from both sides

# %%
masked = collate([mask_positions(record, [2], tok.mask_id)], tok.pad_id)
print(contract_text(masked, tokenizer=tok, loss_shifts=False))
assert_masked_targets(masked.input_ids, masked.labels, torch.tensor([record]), tok.mask_id)

# %% [markdown]
# ### Instruction completion: the prompt is context, only the answer is a target

# %%
chat = [{"role": "user", "content": "explain gradient clipping"},
        {"role": "assistant", "content": "clipping rescales large gradients"}]
chat_ids, assistant_mask = tok.encode_chat(chat)
chat_labels = [i if m else IGNORE for i, m in zip(chat_ids, assistant_mask)]
sft = collate([{"input_ids": chat_ids, "labels": chat_labels}], tok.pad_id)
print(contract_text(sft, tokenizer=tok))
prompt_len = assistant_mask.index(1)
assert_prompt_masked(sft.labels[0], prompt_len)

# %% [markdown]
# ### Contrastive pair: the target is *which* item in the batch matches
#
# Pair each caption with an "image" (here a random vector standing in for an image encoder's
# output). Caption *i*'s target is image *i*: a B-way classification over the batch, so the
# same cross-entropy applies to the similarity matrix with `arange(B)` as labels.

# %%
captions = ["the cat sat on the mat", "the dog ran to the rug", "a bird sat on the sofa", "the cat slept under the box"]
B = len(captions)
gen = torch.Generator().manual_seed(SEED)
image_emb = F.normalize(torch.randn(B, 16, generator=gen), dim=-1)
text_emb = F.normalize(image_emb + 0.5 * torch.randn(B, 16, generator=gen), dim=-1)   # noisy matches
similarity = text_emb @ image_emb.T / 0.1          # [B captions, B images], temperature 0.1
targets = torch.arange(B)
print("targets (row i matches column i):", targets.tolist())
print("similarity / tau:\n", similarity.round(decimals=1))
contrastive_loss = F.cross_entropy(similarity, targets)
print(f"InfoNCE = B-way cross-entropy: {contrastive_loss.item():.3f}")

# %% [markdown]
# ### Preference pair: the target is "this answer is better than that one"
#
# Two completions of the same prompt. A model scores each by the log-probability of its
# *response tokens only*; Bradley-Terry turns the difference into a probability that the chosen
# one wins, $\sigma(r^+ - r^-)$, and the loss is $-\log\sigma(r^+ - r^-)$.

# %%
prompt = tok.encode("the cat sat on the", add_bos=True)
chosen, rejected = tok.encode("mat <eos>"), tok.encode("apple <eos>")
pair = collate([{"input_ids": prompt + r, "labels": [IGNORE] * len(prompt) + r} for r in (chosen, rejected)], tok.pad_id)
print(contract_text(pair, row=0, tokenizer=tok))
print(contract_text(pair, row=1, tokenizer=tok))

# %% [markdown]
# ## 3. Same forward, same cross-entropy, different tasks
#
# One untrained network, one forward call, one loss line for every causal batch above. The
# numbers differ because the contract differs: count the targets (the denominator). Each count is
# fixed by the construction of its example, so it is checked against that construction.

# %%
torch.manual_seed(SEED)
model = TinyTransformer(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=32, causal=True)
contracts = []
for name, batch, shifts in [("autoregressive", ar, True), ("masked", masked, False), ("completion", sft, True),
                            ("preference (chosen)", pair, True)]:
    logits = model(batch.input_ids, batch.attention_mask, batch.position_ids)       # the same forward
    losses, mask = causal_lm_token_losses(logits, batch.labels, shift=shifts)       # the same CE
    value, denominator = reduce(losses[:1], mask[:1], "token_mean")
    contracts.append((name, int(denominator), value.item()))
    print(f"{name:<20} targets {int(denominator):>2} | token-mean loss {value.item():.2f}")
seq_logprob = -(losses * mask).sum(-1)            # response log-probs of the preference pair
bt_loss = -F.logsigmoid(seq_logprob[0] - seq_logprob[1])
print(f"preference: log p(chosen) {seq_logprob[0].item():.2f}, log p(rejected) {seq_logprob[1].item():.2f}, "
      f"Bradley-Terry loss {bt_loss.item():.3f}")
by_construction = {"autoregressive": len(record) - 1,        # every token after <bos> is a next-token target
                   "masked": 1,                              # one hidden position
                   "completion": sum(assistant_mask),        # the answer and its <eos>
                   "preference (chosen)": len(chosen)}       # the chosen response's tokens
for name, denominator, _ in contracts:
    check(f"00.targets_{name.split()[0]}", denominator, by_construction[name], 0, fmt=".0f",
          text=f"{name}: supervised tokens (the loss's denominator)")

# %% [markdown]
# ## 4. Two networks, one stream, two learned behaviours
#
# `MarkovWorld` is a stream of sentences from a small Markov grammar over the chapter's words, with
# a known transition matrix $P$. We train two networks of the *same class and size*: one causal
# with next-token labels, one bidirectional with 20% of tokens masked. Then we ask both about
# "the cat ___":
#
# * the causal model should give $p(\text{sat} \mid \text{cat}) = P_{\text{cat},\text{sat}}$;
# * the masked model sees "the cat [MASK] on the mat" and should give
#   $p(\text{sat} \mid \text{cat}, \text{on}) \propto P_{\text{cat},\text{sat}} P_{\text{sat},\text{on}}$ (Bayes' rule;
#   in a Markov chain the two neighbours carry everything the rest of the row knows).
#
# The two networks are not a controlled pair and are not compared with each other: besides the
# task (attention mask, inputs, targets) they differ in training steps, because a masked batch has
# a fifth as many targets. Each is judged against the two known truths.

# %%
world = MarkovWorld(tokenizer=tok)
stream = world.sample_blocks(2048, 32, torch.Generator().manual_seed(SEED))
mask_gen = torch.Generator().manual_seed(SEED)


def next_token_batch(step):
    return stream[(step * 32) % len(stream):][:32]


def masked_batch(step):
    return random_mask(next_token_batch(step), 0.2, tok.mask_id, generator=mask_gen)


torch.manual_seed(SEED)
causal_net = TinyTransformer(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=32, causal=True)
bidir_net = TinyTransformer(len(tok), d_model=48, n_layers=2, n_heads=4, max_len=32, causal=False)
hist_causal = fit(causal_net, next_token_batch, lambda m, x: causal_lm_loss(m(x), x), steps=150, desc="next-token")
hist_masked = fit(bidir_net, masked_batch, lambda m, b: reduce(token_cross_entropy(m(b[0]), b[1]), b[1].ne(IGNORE)).value,
                  steps=400, desc="masked")
print(f"next-token net: loss {hist_causal.first_last(20)[0]:.2f} -> {hist_causal.first_last(20)[1]:.2f}")
print(f"masked net:     loss {hist_masked.first_last(20)[0]:.2f} -> {hist_masked.first_last(20)[1]:.2f}")

# %%
sat, cat, on = tok.stoi["sat"], tok.stoi["cat"], tok.stoi["on"]
with torch.no_grad():
    p_next = causal_net(torch.tensor([tok.encode("<bos> the cat")], device=DEVICE)).softmax(-1)[0, -1, sat].item()
    blank = torch.tensor([tok.encode("<bos> the cat <mask> on the mat <eos>")], device=DEVICE)
    p_fill = bidir_net(blank).softmax(-1)[0, 3, sat].item()
print(f"next-token model: p(sat | the cat)         = {p_next:.2f}   (known {world.P[cat, sat].item():.2f})")
print(f"masked model:     p(sat | the cat _ on ..) = {p_fill:.2f}   (known {world.fill_probs(cat, on)[sat].item():.2f})")

# %% [markdown]
# One query is one noisy number. The measurement: on 256 held-out positions, compare each
# model's predicted distribution with both known answers, by total variation distance
# $\mathrm{TV}(p, q) = \tfrac12 \sum_k |p_k - q_k|$ (0 = identical, 1 = disjoint). The causal model is
# asked for the next token given the prefix, the masked model for a token masked in place.

# %%
val = world.sample_blocks(256, 32, torch.Generator().manual_seed(SEED + 1)).to(DEVICE)
rows = torch.arange(256, device=DEVICE)
pos = torch.randint(1, 31, (256,), generator=torch.Generator().manual_seed(SEED + 2)).to(DEVICE)
left, right = val[rows, pos - 1].cpu(), val[rows, pos + 1].cpu()
truth_next = world.P[left].float()                                                  # p(x_t | x_t-1)
truth_fill = torch.stack([world.fill_probs(int(a), int(b)) for a, b in zip(left, right)]).float()   # p(x_t | both sides)
with torch.no_grad():
    q_causal = causal_net(val).softmax(-1)[rows, pos - 1].cpu()
    blanked = val.clone()
    blanked[rows, pos] = tok.mask_id
    q_masked = bidir_net(blanked).softmax(-1)[rows, pos].cpu()


def tv(p, q):
    return 0.5 * (p - q).abs().sum(-1).mean().item()


distances = {("causal", "next-token truth"): tv(q_causal, truth_next), ("causal", "fill-in truth"): tv(q_causal, truth_fill),
             ("masked", "next-token truth"): tv(q_masked, truth_next), ("masked", "fill-in truth"): tv(q_masked, truth_fill)}
for (net, truth), d in distances.items():
    print(f"{net:>6} model vs {truth:<16}: TV {d:.2f}")

# %% [markdown]
# Two references frame these distances. The two truths themselves differ (knowing the right
# neighbour changes the answer), and a model that ignores the context altogether (the token
# frequencies of the training stream) is far from both. The fill-in truth `fill_probs` is checked
# against the exact posterior given the whole row (forward-backward over the chain).

# %%
visible = torch.ones_like(val, dtype=torch.bool)
visible[rows, pos] = False
exact = world.posterior(val.cpu(), visible.cpu())[rows.cpu(), pos.cpu()].float()
check("00.fill_in_truth_is_posterior", (exact - truth_fill).abs().max().item(), 0, 1e-5, fmt=".0f",
      text="max |fill_probs(left, right) - posterior given the whole row|")
freq = torch.bincount(stream.flatten(), minlength=len(tok)).float()
context_free = (freq / freq.sum()).expand_as(truth_next)
between_truths = tv(truth_next, truth_fill)
print(f"TV between the two truths on these positions: {between_truths:.2f}")
print(f"context-free model (stream frequencies): TV {tv(context_free, truth_next):.2f} to the next-token truth, "
      f"{tv(context_free, truth_fill):.2f} to the fill-in truth")

# %% [markdown]
# **Claim.** Each network is close to the truth of *its own* task (TV below 0.15, where a
# context-free model sits far above) and clearly closer to it than to the other task's truth
# (by more than 0.05): same class, same stream, same cross-entropy, different learned conditional.

# %%
own_c, other_c = distances[("causal", "next-token truth")], distances[("causal", "fill-in truth")]
own_m, other_m = distances[("masked", "fill-in truth")], distances[("masked", "next-token truth")]
claim("00.causal_fits_next_token", own_c, below=0.15, fmt=".3f", text="TV(causal model, next-token truth)",
      control="context-free model", control_value=tv(context_free, truth_next))
claim("00.masked_fits_fill_in", own_m, below=0.15, fmt=".3f", text="TV(masked model, fill-in truth)",
      control="context-free model", control_value=tv(context_free, truth_fill))
claim("00.causal_closer_to_own", other_c - own_c, above=0.05, fmt=".3f",
      text="causal model: TV to the fill-in truth - TV to the next-token truth")
_ = claim("00.masked_closer_to_own", other_m - own_m, above=0.05, fmt=".3f",
          text="masked model: TV to the next-token truth - TV to the fill-in truth")

# %% [markdown]
# ## 5. Sentence → label, trained
#
# The classification row, built like the others: `MarkovWorld` sentences, the label "someone
# ran" (1 when the sentence contains *ran*), the builder above, and `SequenceClassifier`: the
# same `TinyTransformer` class (bidirectional, as the label depends on the whole sentence) with a
# linear head on the mean of its final hidden states. Trained with `single_label_ce` for 150 steps
# of 32 sentences, then scored on held-out sentences.
#
# The control changes one thing: the same sentences, label frequencies, initialisation and steps,
# but the labels shuffled across the training sentences, so nothing in a sentence predicts its
# label. A network that learned the label from the sentence beats both the shuffled-label control
# and the majority class; one that only learned the label frequencies does not.

# %%
# NBVAL_IGNORE_OUTPUT
cls_q = ask("00.classifier_vs_shuffled_labels", "Held-out accuracy: the classifier trained on the true labels vs the same "
             "classifier trained on shuffled labels?", choices=verdict_choices(("true labels", "shuffled labels")))

# %%
ran = tok.stoi["ran"]
sentences = world.sample_sentences(2500, torch.Generator().manual_seed(SEED + 3))
train_set = [classification_example(x, int(ran in x)) for x in sentences[:2000]]
held_out = collate_classification([classification_example(x, int(ran in x)) for x in sentences[2000:]], tok.pad_id)


def train_classifier(examples, seed, steps=150):
    """The same transformer body with a 2-class head, trained on (sentence, label) examples."""
    g = torch.Generator().manual_seed(seed)
    batches = [collate_classification([examples[int(i)] for i in torch.randint(len(examples), (32,), generator=g)], tok.pad_id)
               for _ in range(steps)]
    torch.manual_seed(seed)
    net = SequenceClassifier(TinyTransformer(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=32, causal=False), n_classes=2)
    fit(net, batches, lambda m, b: single_label_ce(m(b[0], b[1]), b[2]), steps=steps, desc="classifier")
    return classification_accuracy(net, *held_out)


def shuffled_labels(examples, seed):
    perm = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    return [dict(e, label=examples[int(j)]["label"]) for e, j in zip(examples, perm)]


CLS_SEEDS = [SEED + i for i in range(3)]
acc_true = [train_classifier(train_set, s) for s in CLS_SEEDS]
acc_shuffled = [train_classifier(shuffled_labels(train_set, s), s) for s in CLS_SEEDS]
majority = max(held_out[2].float().mean().item(), 1 - held_out[2].float().mean().item())
print("held-out accuracy, true labels:    ", [round(a, 3) for a in acc_true])
print("held-out accuracy, shuffled labels:", [round(a, 3) for a in acc_shuffled])
print(f"majority class on the held-out sentences: {majority:.3f}")

# %% [markdown]
# **Claim and comparison.** Trained on the true labels, the classifier beats the majority class on
# every seed (the smallest accuracy is the value), and it beats the shuffled-label control with
# everything else held equal.

# %%
claim("00.classifier_beats_majority", min(acc_true), above=majority, fmt=".3f",
      text="sentence -> label: smallest held-out accuracy over seeds", control="majority class", control_value=majority)
cls_rec = compare("00.classifier_vs_shuffled_labels", acc_true, acc_shuffled, seeds=CLS_SEEDS, arms=("true labels", "shuffled labels"),
            metric="held-out accuracy", expect="A better",
            matched_on=["sentences", "label frequencies", "network and initialisation", "150 steps of 32, lr"])
_ = reveal(cls_q, verdict_of(cls_rec))

# %% [markdown]
# ## 6. The map of the lab
#
# | # | notebook | what you measure |
# |---|---|---|
# | 00 | tour (this one) | one record, five tasks; same forward + CE, different learned behaviour |
# | 01 | cross-entropy | grad = p − onehot; temperature; chunked CE memory |
# | 02 | supervised targets | softmax vs BCE, soft labels vs majority vote |
# | 03 | autoregressive shift | the double shift trains smoothly and learns t+2; the finite-context floor |
# | 04 | padding & positions | left padding with arange positions breaks batched decoding |
# | 05 | packing & SFT masks | leaked documents, unmasked prompts, pad == eos |
# | 06 | reductions & denominators | token vs sequence mean, gradient accumulation, ranks |
# | 07 | teacher forcing & exposure bias | errors compound in free-running generation |
# | 08 | masked & denoising | BERT 80/10/10, spans, masked diffusion |
# | 09 | contrastive & false negatives | InfoNCE, temperature, false negatives, gathered negatives |
# | 10 | distillation | temperature, T², dark knowledge |
# | 11 | preference & policy | Bradley-Terry, DPO, length bias, reward hacking |
# | 12 | mixtures & curriculum | n^γ weights, forgetting |
# | 13 | smoke tests & bug hunt | every check on correct and broken pipelines |
# | 14 | a useful map, executed | one network under five objectives, each scored on every objective's probe |
#
# The README lists which of these are ready.
#
# ## 7. Try it
#
# **Exercise 1.** Build the masked-LM example that hides *mat* (position 6) and nothing else.

# %%
def mask_mat(ids):
    ### BEGIN SOLUTION
    inputs = list(ids)
    labels = [IGNORE] * len(ids)
    labels[6], inputs[6] = ids[6], tok.mask_id
    return {"input_ids": inputs, "labels": labels}
    ### END SOLUTION


# %%
# CHECK: 00-mask-mat
mine = mask_mat(record)
assert_masked_targets(mine["input_ids"], mine["labels"], record, tok.mask_id)
### BEGIN HIDDEN TESTS
assert mine["input_ids"][6] == tok.mask_id, "the input at position 6 must be the [MASK] id"
assert mine["labels"][6] == tok.stoi["mat"], "the target of the hidden position is the clean token 'mat'"
assert mine["input_ids"][:6] == record[:6], "only position 6 may change"
### END HIDDEN TESTS
print("exercise 1: passes the masked-LM smoke test")

# %% [markdown]
# **Exercise 2.** Build completion labels for a new chat so that only the assistant's answer
# (and its `<eos>`) is learned. `audit` must find nothing.

# %%
chat2 = [{"role": "user", "content": "copy A B C"}, {"role": "assistant", "content": "A B C"}]


def completion_labels(messages):
    ### BEGIN SOLUTION
    ids, amask = tok.encode_chat(messages)
    return ids, [i if m else IGNORE for i, m in zip(ids, amask)]
    ### END SOLUTION


# %%
# CHECK: 00-completion-labels
def check_completion_labels(messages, ids, labels):
    """Prompt tokens are -100, every answer token and the final <eos> are targets (audit agrees)."""
    want_ids, amask = tok.encode_chat(messages)
    assert list(ids) == want_ids, "input ids must be the chat rendered by tok.encode_chat"
    batch = collate([{"input_ids": ids, "labels": labels}], tok.pad_id)
    findings = audit(batch, prompt_lengths=[amask.index(1)], eos_id=tok.eos_id)
    assert not findings, f"{findings[0]}"
    assert sum(y != IGNORE for y in labels) == sum(amask), "the answer tokens and <eos> are the targets, nothing else"


check_completion_labels(chat2, *completion_labels(chat2))
### BEGIN HIDDEN TESTS
chat3 = [{"role": "user", "content": "sort 3 1 2"}, {"role": "assistant", "content": "1 2 3"},
         {"role": "user", "content": "reverse A B"}, {"role": "assistant", "content": "B A"}]
ids3, labels3 = completion_labels(chat3)
assert sum(y != IGNORE for y in labels3) == 7, "both assistant turns with their <eos> (4 + 3 tokens) are targets; user turns are not"
### END HIDDEN TESTS
print("exercise 2: prompt masked, answer and <eos> supervised")

# %% [markdown]
# ## Summary

# %%
targets = {name: denominator for name, denominator, _ in contracts}
print(f"{'paradigm':<16}{'targets in the example above':<40}  what is learned")
print(f"{'classification':<16}{'1 label for the whole sentence':<40}  p(label | sentence)")
print(f"{'autoregressive':<16}{str(targets['autoregressive']) + ' next tokens':<40}  p(next token | prefix)")
print(f"{'masked':<16}{str(targets['masked']) + ' hidden token':<40}  p(hidden token | both sides)")
print(f"{'completion':<16}{str(targets['completion']) + ' answer tokens (prompt not learned)':<40}  p(answer | prompt)")
print(f"{'contrastive':<16}{str(B) + ' rows, one matching column each':<40}  which of B candidates matches (B-way CE)")
print(f"{'preference':<16}{str(targets['preference (chosen)']) + ' response tokens per answer, 1 pair':<40}  "
      f"P(chosen beats rejected) = sigmoid(r+ - r-)")
print()
claims_only = [r for r in ledger() if r["kind"] != "check"]
_ = summary(claims_only)
print(f"and {len(ledger()) - len(claims_only)} checks (counts and identities fixed by construction), all exact")
