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
# # 10b · Teacher signals: on-policy distillation, sampled teachers, copied errors
#
# **What you will see.** Notebook 10 distilled a teacher's distribution on real text and its greedy
# outputs. Here the question is *which signal* the student gets, and where:
#
# 1. **on-policy vs off-policy distillation** on notebook 07's counting language: the student writes
#    its own continuations and the teacher grades every token it wrote, against the same student
#    graded on continuations the teacher wrote. Same teacher, student, steps and token budget, three
#    seeds; free-running accuracy position by position. Does grading the student on its own states
#    remove the error growth that teacher forcing leaves?
# 2. **sampled vs greedy teacher outputs** for sequence-level distillation: the student's entropy and
#    calibration measured against the teacher's known distribution;
# 3. **a teacher with a systematic error**: it miscounts in one known context, and a student trained
#    on its outputs copies the error, against a control teacher without it.
#
# Identities are `CHECK` lines; measured effects `CLAIM` or `COMPARE` lines (`labkit.claims`).
# Before each headline measurement you can commit a prediction (`labkit.predict`).
#
# **Runtime:** about 40 s on a laptop CPU (2 cores).

# %%
import copy

import matplotlib.pyplot as plt
import torch

import labkit
from labkit.batch import collate
from labkit.claims import check, claim, compare, summary
from labkit.data import CAT_WORLD, MarkovWorld, RunningSumTask
from labkit.exercises.onpolicy import check_overconfidence, check_reverse_kl
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import (after_injected_slip, causal_lm_loss, compounding, position_accuracy,
                                             teacher_forced_accuracy, teacher_forced_predictions)
from labkit.paradigms.distillation import entropy, kd_loss
from labkit.paradigms.onpolicy import (CountingOracle, PlantedErrorTeacher, counting_context, distillation_loss,
                                       distinct_pairs, generated_mask, overconfidence, sample_rollouts, sequence_data,
                                       token_kl)
from labkit.predict import ask, reveal
from labkit.train import KeepFirstReaching, fit
from labkit.viz import contract_text
from labkit.vocab import WordTokenizer

SEED, DEVICE = labkit.setup_notebook()
tok = WordTokenizer([str(d) for d in range(10)])
task = RunningSumTask(n_steps=16, max_step=4, tokenizer=tok)          # notebook 07's counting language
P, N = task.prompt_len, task.n


def verdict_choice(record, better, worse):
    """A compare record's verdict in the words of a prediction's choices."""
    return {"A better": better, "A worse": worse}.get(record["verdict"], "no detectable difference")


# %% [markdown]
# ## 1. A teacher and a student on the counting language
#
# Rows are `<bos> a_1 … a_16 <sep> s_1 … s_16` with running counts $s_k = (a_1 + \dots + a_k) \bmod 10$
# (notebook 07). One TinyCausalLM (2 layers, width 32) trains with teacher forcing for 300 steps:
# trained to the end it is the **teacher**. As in notebook 07 we keep the first checkpoint of the same
# run whose teacher-forced accuracy on probe rows reaches 0.9: that is the **student**, a model that
# looks good on gold prefixes and still slips when it reads its own.

# %%
val = task.sample(512, torch.Generator().manual_seed(SEED + 100)).to(DEVICE)
gold = val[:, P:].cpu()
probe_rows = task.sample(256, torch.Generator().manual_seed(SEED + 200)).to(DEVICE)


def tf_accuracy(m, rows):
    return teacher_forced_accuracy(m, rows, P)


keep_first_good = KeepFirstReaching(lambda m: tf_accuracy(m, probe_rows), target=0.9, every=10)


def counting_lm():
    return TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=task.length)


torch.manual_seed(SEED)
teacher = counting_lm()
fit(teacher, task.batches(32, SEED), lambda m, b: causal_lm_loss(m(b[0]), b[1]), steps=300, lr=2e-3, desc="teacher",
    callback=keep_first_good)
assert keep_first_good.reached, "no checkpoint reached 0.9 teacher-forced accuracy"
student = counting_lm().to(DEVICE)
student.load_state_dict(keep_first_good.state)
student.eval()


def free_running(m):
    """Greedy answers from the prompts of the validation rows: [512, 16]."""
    return sample_rollouts(m, val[:, :P], N, temperature=0.0)[:, P:].cpu()


def slip_response(m):
    """Plant one wrong count in each gold row; read the next count: (share of rows whose greedy next count
    is the true one, mean probability the model gives the true one)."""
    out = after_injected_slip(m, val, P, task.digit_ids, torch.Generator().manual_seed(SEED + 7))
    rows, k = torch.arange(len(val)), out["k"]
    true_next = val[rows, k + 1].cpu()
    with torch.no_grad():
        p_true = m(out["slipped"].to(DEVICE))[rows, k].softmax(-1).cpu()[rows, true_next]
    return out["next"].eq(true_next).float().mean().item(), p_true.mean().item()


def scores(m):
    fr = free_running(m)
    acc = position_accuracy(fr, gold)
    return {"by_position": acc, "fr": acc.mean().item(), "growth": (acc[:4].mean() - acc[-4:].mean()).item(),
            "after_error": compounding(task.errors(val, fr))["after_error"], "tf": tf_accuracy(m, val),
            **dict(zip(("recovers", "p_recover"), slip_response(m)))}


ref = {"teacher": scores(teacher), f"student (step {keep_first_good.step})": scores(student)}
for name, r in ref.items():
    print(f"{name:<20} free-running accuracy {r['fr']:.3f} | first 4 positions minus last 4 {r['growth']:.3f} | "
          f"teacher-forced {r['tf']:.3f}")

# %%
student_ref = ref[f"student (step {keep_first_good.step})"]
claim("10b.teacher_solves", ref["teacher"]["fr"], above=0.98, text="teacher: free-running accuracy, mean over 16 positions")
_ = claim("10b.student_slips", student_ref["growth"], above=0.2, control="the teacher", control_value=ref["teacher"]["growth"],
          text="student checkpoint: free-running accuracy at positions 1-4 minus positions 13-16")

# %% [markdown]
# ## 2. On-policy vs off-policy distillation
#
# One distillation step, for a batch of prompts:
#
# * **who writes** the 16 answer tokens: the student (*on-policy*: its own states, slips included)
#   or the teacher (*off-policy*: teacher forcing on teacher samples), sampling at temperature 1;
# * the teacher scores **every written position**: its next-token distribution $p_T(\cdot \mid x_{<t})$;
# * the student matches it there with the per-token **reverse KL**
#   $\mathrm{KL}(p_S \,\|\, p_T) = \sum_v p_S(v)\,(\log p_S(v) - \log p_T(v))$, averaged over the written positions
#   (the usual choice on-policy; `direction="forward"` gives notebook 10's $\mathrm{KL}(p_T \,\|\, p_S)$).
#
# `distillation_loss(student, teacher, prompts, 16, policy=...)` is these three lines:

# %%
coins = torch.Generator().manual_seed(SEED)
prompts = task.sample(4, torch.Generator().manual_seed(SEED + 300))[:, :P].to(DEVICE)
rollouts = sample_rollouts(student, prompts, N, temperature=1.0, generator=coins)   # on-policy: the student writes
with torch.no_grad():
    t_logits = teacher(rollouts)                                                     # the teacher grades every token
loss = token_kl(student(rollouts), t_logits, generated_mask(rollouts, P), "reverse")
print(f"reverse KL on 4 student rollouts: {loss.item():.3f}")
wrong_rows = task.errors(rollouts, rollouts[:, P:]).any(1).nonzero().flatten().tolist()
i = wrong_rows[0] if wrong_rows else 0
print("a student rollout and, as labels, the teacher's top token at each written position:")
labels = torch.full_like(rollouts[i:i + 1], -100)
labels[0, P:] = t_logits[i, P - 1:-1].argmax(-1)
print(contract_text({"input_ids": rollouts[i:i + 1, P - 1:].cpu(), "labels": labels[:, P - 1:].cpu()}, tokenizer=tok))
_ = check("10b.generated_positions", int(generated_mask(rollouts, P).sum()), 4 * N, 0,
          text="positions graded in 4 rollouts (one per written token)")

# %% [markdown]
# Both arms start from the **same student checkpoint** and run 60 steps of 32 prompts (the same
# prompt stream per seed), AdamW at lr 5e-4 (a quarter of the training rate, as in notebook 07's
# fine-tuning), the same teacher, the same reverse KL on the same number of written tokens.
# The one difference is who writes the states. Seeds vary the prompts and the sampling coins.
#
# A third arm asks what on-policy grading needs to fix compounding: the same on-policy step with a
# teacher that **recovers** (`CountingOracle`: at every position a point mass on the *true* count
# computed from the prompt, whatever the prefix says).

# %%
# NBVAL_IGNORE_OUTPUT
q_onpolicy = ask("10b.on_vs_off", "Fine-tuned with on-policy distillation instead of off-policy, is the student's "
                 "free-running accuracy higher here?", choices=["on-policy higher", "no detectable difference",
                                                                "off-policy higher"])

# %%
DISTILL_STEPS, DISTILL_LR, BATCH = 60, 5e-4, 32
SEEDS = [10 * SEED + k for k in range(3)]
oracle = CountingOracle(task, len(tok)).to(DEVICE)
ARMS = {"on-policy": (teacher, "on"), "off-policy": (teacher, "off"), "on-policy, recovering teacher": (oracle, "on")}
runs = {arm: {} for arm in ARMS}
for s in SEEDS:
    for arm, (grader, policy) in ARMS.items():
        prompt_stream, sampling = torch.Generator().manual_seed(1000 + s), torch.Generator().manual_seed(2000 + s)
        m = copy.deepcopy(student)
        fit(m, lambda step: task.sample(BATCH, prompt_stream)[:, :P],
            lambda model, pr: distillation_loss(model, grader, pr, N, policy, "reverse", 1.0, sampling)[0],
            steps=DISTILL_STEPS, lr=DISTILL_LR, desc=f"{arm}, seed {s}")
        runs[arm][s] = scores(m)

print(f"{'arm':<31}" + "".join(f"{k:>5}" for k in range(1, N + 1)) + "   (free-running accuracy by position, mean over seeds)")
mean_by_pos = {arm: torch.stack([r["by_position"] for r in rs.values()]).mean(0) for arm, rs in runs.items()}
for name, acc in [("student checkpoint", student_ref["by_position"]), *mean_by_pos.items()]:
    print(f"{name:<31}" + "".join(f"{v:5.2f}" for v in acc.tolist()))
print(f"\n{'seed':>4} {'arm':<31}{'free-run':>9}{'growth':>8}{'P(err|err)':>11}{'p(true count after a slip)':>28}")
for s in SEEDS:
    for arm, rs in runs.items():
        r = rs[s]
        print(f"{s:>4} {arm:<31}{r['fr']:>9.3f}{r['growth']:>8.3f}{r['after_error']:>11.2f}{r['p_recover']:>28.3f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6.4, 3.3))
positions = range(1, N + 1)
ax.plot(positions, student_ref["by_position"], "k:", label="student checkpoint (before)")
for (arm, acc), style in zip(mean_by_pos.items(), ["o-", "s--", "^-"]):
    ax.plot(positions, acc, style, label=arm, markersize=4)
ax.set_xlabel("answer position k")
ax.set_ylabel("free-running accuracy")
ax.set_ylim(0, 1.02)
ax.legend(fontsize=7)
ax.set_title("Who writes the states: on-policy and off-policy end alike", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Comparisons.** Free-running accuracy (mean over the 16 positions), and the error growth
# (accuracy at positions 1-4 minus positions 13-16), on-policy (A) vs off-policy (B), paired by seed,
# two-sided 95% intervals; a difference smaller than 0.02 counts as none.

# %%
matched = ["student checkpoint", "teacher", f"{DISTILL_STEPS} steps x {BATCH} prompts x {N} written tokens",
           f"lr {DISTILL_LR}, AdamW, clip 1.0", "reverse KL, temperature-1 rollouts", "prompt stream per seed"]


def arm(name, key):
    return [runs[name][s][key] for s in SEEDS]


on_off = compare("10b.on_vs_off_free_running", arm("on-policy", "fr"), arm("off-policy", "fr"), seeds=SEEDS,
                 arms=("on-policy", "off-policy"), metric="free-running accuracy (mean over 16 positions)",
                 expect="no detectable difference", min_effect=0.02, matched_on=matched)
compare("10b.on_vs_off_error_growth", arm("on-policy", "growth"), arm("off-policy", "growth"), seeds=SEEDS,
        arms=("on-policy", "off-policy"), metric="accuracy at positions 1-4 minus 13-16", higher_is_better=False,
        expect="no detectable difference", min_effect=0.02, matched_on=matched)
claim("10b.onpolicy_improves", min(arm("on-policy", "fr")) - student_ref["fr"], above=0.1, control="student checkpoint",
      control_value=student_ref["fr"], text="on-policy arm: free-running accuracy gain over the checkpoint, smallest over seeds")
_ = claim("10b.errors_still_compound", min(arm("on-policy", "after_error")), above=0.9, control="off-policy arm",
          control_value=min(arm("off-policy", "after_error")),
          text="on-policy arm: P(error | an earlier error), smallest over seeds")

# %%
_ = reveal(q_onpolicy, verdict_choice(on_off, "on-policy higher", "off-policy higher"))

# %% [markdown]
# Both arms help the student a lot, and they end alike: grading the student on its own states did
# **not** remove the error growth here. Once a count is wrong, later counts are still wrong almost
# always, in both arms.
#
# ## 3. Why: the teacher's targets on a slipped prefix
#
# On-policy grading can only teach what the teacher says at the student's states. Plant one wrong
# count in gold rows and read the teacher's next count: a teacher trained with teacher forcing
# **continues from the planted count** (notebook 07's one-step rule), so after a student's slip its
# target is the slip's continuation, exactly what the student already writes.

# %%
_ = claim("10b.teacher_never_recovers", ref["teacher"]["recovers"], below=0.05, fmt=".3f",
          text="teacher: share of rows whose next count after a planted slip is the true one")

# %% [markdown]
# The recovering teacher's target after a slip is the true count. Does on-policy grading by it teach
# the student to recover, and at what price?

# %%
matched_oracle = [m for m in matched if m != "teacher"] + ["on-policy rollouts"]
compare("10b.recovering_teacher_recovery", arm("on-policy, recovering teacher", "p_recover"), arm("on-policy", "p_recover"),
        seeds=SEEDS, arms=("recovering teacher", "learned teacher"),
        metric="probability of the true count right after a planted slip", expect="A better", matched_on=matched_oracle)
_ = compare("10b.recovering_teacher_free_running", arm("on-policy, recovering teacher", "fr"), arm("on-policy", "fr"),
            seeds=SEEDS, arms=("recovering teacher", "learned teacher"), metric="free-running accuracy (mean over 16 positions)",
            expect="A worse", matched_on=matched_oracle)

# %% [markdown]
# With the recovering teacher the student moves some probability towards the true count after a
# slip (it learns to recover a little), and its free-running accuracy falls far below the learned
# teacher's arm. A **hypothesis** we did not test: recovering
# needs the sum of all increments so far, a function this 2-layer student cannot learn in 60 steps,
# and the recovery targets pull it away from the one-step rule it had. So on-policy distillation
# fixes compounding only where the teacher's per-token targets on the student's states are both
# *right* and *learnable*; here neither teacher offers both.
#
# ## 4. Sequence level: sampled vs greedy teacher outputs
#
# Notebook 10's sequence-level student learned from the teacher's **greedy** outputs and lost entropy.
# Does it have to? The same recipe with outputs **sampled** at temperature 1 from the teacher's own
# distribution. The world is notebook 10's cat world; the teacher (2 layers, width 32, 200 steps)
# gives the reference distribution, computed exactly on held-out real passages. Per seed, both
# students (1 layer, width 24) start from the same initialisation and train 200 steps on 256
# continuations of the same 256 prompts, 12 tokens each: the one difference is greedy vs sampled
# decoding of the teacher.
#
# Measured against the teacher on held-out passages: KL(teacher ‖ student), entropy, and
# **overconfidence**, $\mathbb E[\max_v p_S(v) - p_T(\arg\max_v p_S)]$: how much more the student
# trusts its top word than the teacher's distribution does (0 for a student calibrated to the teacher).

# %%
words = sorted({w for a, succ in CAT_WORLD.items() for w in [a, *succ]} - {"<bos>", "<eos>"})
lm_tok = WordTokenizer(words)
world = MarkovWorld(tokenizer=lm_tok)
blocks = world.sample_blocks(2048, 17, torch.Generator().manual_seed(SEED))
held_out = world.sample_blocks(128, 17, torch.Generator().manual_seed(SEED + 1))[:, :-1].to(DEVICE)
LM_BATCH, LM_STEPS = 32, 200

torch.manual_seed(SEED)
lm_teacher = TinyCausalLM(len(lm_tok), d_model=32, n_layers=2, n_heads=4, max_len=32)
fit(lm_teacher, lambda s: blocks[(s * LM_BATCH) % len(blocks):][:LM_BATCH, :-1], lambda m, x: causal_lm_loss(m(x), x),
    steps=LM_STEPS, lr=3e-3, desc="LM teacher")
with torch.no_grad():
    teacher_logits = lm_teacher(held_out)


def sft_loss(model, b):
    return causal_lm_loss(model(b.input_ids, b.attention_mask, b.position_ids), b.labels)


seq = {"sampled": {}, "greedy": {}}
for s in SEEDS:
    lm_prompts = [blocks[(97 * s + i) % len(blocks), :1 + i % 4].tolist() for i in range(256)]
    for name, temperature in [("sampled", 1.0), ("greedy", 0.0)]:
        data = sequence_data(lm_teacher, lm_prompts, 12, temperature, torch.Generator().manual_seed(3000 + s))
        torch.manual_seed(s)
        lm_student = TinyCausalLM(len(lm_tok), d_model=24, n_layers=1, n_heads=2, max_len=32)
        fit(lm_student, [collate(data[j:j + LM_BATCH], lm_tok.pad_id) for j in range(0, len(data), LM_BATCH)], sft_loss,
            steps=LM_STEPS, lr=3e-3, desc=f"{name}, seed {s}")
        with torch.no_grad():
            z = lm_student(held_out)
        seq[name][s] = {"kl": kd_loss(z, teacher_logits, 1.0).item(), "entropy": entropy(z),
                        "over": overconfidence(z, teacher_logits), "pairs": distinct_pairs(data)}
h_teacher = entropy(teacher_logits)
print(f"world's entropy rate {world.entropy_rate():.3f} nats; teacher on held-out passages {h_teacher:.3f} nats")
print(f"{'seed':>4} {'teacher outputs':<16}{'KL(T || S)':>11}{'entropy':>9}{'overconfidence':>16}{'distinct pairs':>16}")
for s in SEEDS:
    for name in seq:
        r = seq[name][s]
        print(f"{s:>4} {name:<16}{r['kl']:>11.3f}{r['entropy']:>9.3f}{r['over']:>16.3f}{r['pairs']:>16}")

# %%
# NBVAL_IGNORE_OUTPUT
q_sampled = ask("10b.sampled_vs_greedy", "Which student is better calibrated to the teacher's distribution "
                "(lower overconfidence)?", choices=["sampled outputs", "no detectable difference", "greedy outputs"])

# %% [markdown]
# **Comparisons.** Sampled (A) vs greedy (B) teacher outputs, paired by seed: KL from the teacher
# and overconfidence (both lower is better). **Claim:** the sampled student's entropy stays within
# 0.1 nats of the teacher's on every seed (the greedy one is the control).

# %%
seq_matched = ["student size and initialisation (per seed)", "the same 256 prompts, 12 tokens each",
               f"{LM_STEPS} steps, batch {LM_BATCH}, lr 0.003", "the same teacher"]


def seq_arm(name, key):
    return [seq[name][s][key] for s in SEEDS]


compare("10b.sampled_vs_greedy_kl", seq_arm("sampled", "kl"), seq_arm("greedy", "kl"), seeds=SEEDS,
        arms=("sampled outputs", "greedy outputs"), metric="KL(teacher || student) on held-out passages, nats",
        higher_is_better=False, expect="A better", matched_on=seq_matched)
calibration = compare("10b.sampled_vs_greedy_overconfidence", seq_arm("sampled", "over"), seq_arm("greedy", "over"),
                      seeds=SEEDS, arms=("sampled outputs", "greedy outputs"),
                      metric="overconfidence: E[max p_S - p_T(argmax p_S)]", higher_is_better=False, expect="A better",
                      matched_on=seq_matched)
_ = claim("10b.sampled_keeps_entropy", max(abs(h - h_teacher) for h in seq_arm("sampled", "entropy")), below=0.1,
          control="greedy outputs (largest gap)", control_value=max(abs(h - h_teacher) for h in seq_arm("greedy", "entropy")),
          text="|student entropy - teacher entropy|, sampled outputs, largest over seeds, nats")

# %%
_ = reveal(q_sampled, verdict_choice(calibration, "sampled outputs", "greedy outputs"))

# %% [markdown]
# Sampling writes the teacher's alternatives into the data (more distinct word pairs, printed above),
# so a student fine-tuned on them recovers the teacher's uncertainty; the collapse in notebook 10
# came from the greedy decoder, not from sequence-level distillation as such. The sampled student's
# KL is small but not zero; a **hypothesis** we did not test here: it sees one sampled token per
# position, so its estimate of the teacher's distribution carries sampling noise that token-level
# distillation (which reads the distribution itself) does not have.
#
# ## 5. A teacher with a systematic error
#
# `PlantedErrorTeacher` wraps the counting teacher of section 1 and changes one thing: whenever the
# count it has just read is 4 and the next increment is 3, it writes 8 instead of 7 (a point mass on
# the wrong digit); everywhere else it is the teacher. The control is the teacher itself.
#
# Both students start from the student checkpoint of section 1 and are fine-tuned on 640 greedy
# teacher continuations (sequence-level distillation, teacher forcing on the teacher's outputs) for
# 40 steps at lr 2e-3; per seed the same prompts, the same batch order and the same steps. We read
# the students with **gold** prefixes on 512 validation rows and split the answer positions into the
# planted context (gold previous count 4, increment 3) and all the others.

# %%
PREV, INC = 4, 3
WRONG = tok.stoi[str((PREV + INC + 1) % 10)]                         # the true count would be 7
buggy = PlantedErrorTeacher(teacher, lambda ids: counting_context(task, ids, PREV, INC), WRONG)
example = sample_rollouts(buggy, val[:64, :P], N, temperature=0.0)
fired = counting_context(task, example, PREV, INC).any(1).nonzero().flatten()
j = int(fired[0])
print("the faulty teacher's answer to a prompt that passes through the context (labels: the true counts):")
print(contract_text({"input_ids": example[j:j + 1, P - 1:].cpu(), "labels": torch.cat([torch.tensor([[-100]]),
                     gold[j:j + 1]], 1)}, tokenizer=tok))
in_context = counting_context(task, val, PREV, INC)[:, P - 1:P - 1 + N].cpu()    # [512, 16]: the gold context
print(f"the context occurs at {int(in_context.sum())} of {in_context.numel()} validation answer positions")


def context_errors(m):
    pred = teacher_forced_predictions(m, val, P)
    wrong = pred.ne(gold)
    return {"context": wrong[in_context].float().mean().item(), "copies": pred[in_context].eq(WRONG).float().mean().item(),
            "elsewhere": wrong[~in_context].float().mean().item()}


faulty_ref = context_errors(buggy)
check("10b.planted_error_fires", faulty_ref["copies"], 1.0, 0, text="faulty teacher: share of context positions answered 8")
_ = check("10b.planted_error_only_there", faulty_ref["elsewhere"], context_errors(teacher)["elsewhere"], 0,
          text="faulty teacher: error rate elsewhere, equal to the teacher's")

# %%
# NBVAL_IGNORE_OUTPUT
q_copy = ask("10b.copied_error", "After the fine-tuning on the faulty teacher's outputs, what share of the context "
             "positions does the student answer with the teacher's wrong 8?", number=(0, 1, 0.05))

# %%
copy_runs = {"faulty teacher": {}, "correct teacher": {}}
for s in SEEDS:
    sft_prompts = task.sample(640, torch.Generator().manual_seed(4000 + s))[:, :P].to(DEVICE)
    for name, t in [("faulty teacher", buggy), ("correct teacher", teacher)]:
        rows = sample_rollouts(t, sft_prompts, N, temperature=0.0)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(5000 + s))
        m = copy.deepcopy(student)
        fit(m, lambda step: rows[order[(step * BATCH) % len(rows):][:BATCH]],
            lambda model, x: causal_lm_loss(model(x), task.labels(x)), steps=40, lr=2e-3, desc=f"{name}, seed {s}")
        copy_runs[name][s] = context_errors(m)
before = context_errors(student)
print(f"{'seed':>4} {'student of':<17}{'error in context':>17}{'writes 8 there':>16}{'error elsewhere':>17}")
print(f"{'':>4} {'(checkpoint)':<17}{before['context']:>17.3f}{before['copies']:>16.3f}{before['elsewhere']:>17.3f}")
for s in SEEDS:
    for name, rs in copy_runs.items():
        r = rs[s]
        print(f"{s:>4} {name:<17}{r['context']:>17.3f}{r['copies']:>16.3f}{r['elsewhere']:>17.3f}")

# %% [markdown]
# **Comparisons and a claim.** Error rate in the planted context, faulty (A) vs correct (B) teacher;
# the same for every other position, where the two teachers agree (a difference under 0.01 counts as
# none); and how often the student of the faulty teacher writes exactly the teacher's wrong digit.

# %%
copy_matched = ["student checkpoint", "the same 640 prompts per seed", "40 steps, batch 32, lr 0.002",
                "batch order per seed", "validation rows, gold prefixes"]


def copy_arm(name, key):
    return [copy_runs[name][s][key] for s in SEEDS]


compare("10b.copied_error", copy_arm("faulty teacher", "context"), copy_arm("correct teacher", "context"), seeds=SEEDS,
        arms=("faulty teacher", "correct teacher"), metric="student's error rate in the planted context",
        higher_is_better=False, expect="A worse", matched_on=copy_matched)
compare("10b.error_elsewhere_unchanged", copy_arm("faulty teacher", "elsewhere"), copy_arm("correct teacher", "elsewhere"),
        seeds=SEEDS, arms=("faulty teacher", "correct teacher"), metric="student's error rate at every other position",
        higher_is_better=False, expect="no detectable difference", min_effect=0.01, matched_on=copy_matched)
copied = min(copy_arm("faulty teacher", "copies"))
_ = claim("10b.student_writes_the_error", copied, above=0.8, control="the checkpoint before fine-tuning",
          control_value=before["copies"], text="student of the faulty teacher: share of context positions answered 8, "
          "smallest over seeds")

# %%
_ = reveal(q_copy, sum(copy_arm("faulty teacher", "copies")) / len(SEEDS))

# %% [markdown]
# The student had learned the right count in that context from gold data (its checkpoint error
# there is about its error anywhere), and a short fine-tuning on the teacher's outputs replaced it
# with the teacher's error, while every other position stayed as good as the control's. A label
# written by a teacher is trusted like any label: its hallucination becomes the student's. We
# measured the sequence level only; by construction the teacher's per-token distribution in that
# context is the same point mass, so token-level or on-policy distillation would grade the student
# towards the same error. Only a check against something other than the teacher can catch it.
#
# ## 6. Try it
#
# **Exercise 1.** Write the on-policy distillation loss of section 2: given the student's logits
# `[B, T, V]` on its own rollouts, the teacher's logits on the same rollouts and a mask `[B, T]` of
# the written positions, return the mean over the masked positions of the reverse KL
# $\sum_v p_S(v)(\log p_S(v) - \log p_T(v))$. The gradient must reach the student's logits.

# %%
def my_reverse_kl(student_logits, teacher_logits, mask):
    ### BEGIN SOLUTION
    log_s = torch.log_softmax(student_logits, -1)
    log_t = torch.log_softmax(teacher_logits, -1)
    kl = (log_s.exp() * (log_s - log_t)).sum(-1)
    return kl[mask].mean()
    ### END SOLUTION


# %%
# CHECK: 10b-reverse-kl
check_reverse_kl(my_reverse_kl)
### BEGIN HIDDEN TESTS
check_reverse_kl(my_reverse_kl, seed=3)
with torch.no_grad():
    mine = my_reverse_kl(student(rollouts), t_logits, generated_mask(rollouts, P))
assert abs(float(mine) - float(loss.detach())) < 1e-4, "on the notebook's rollouts your loss differs from token_kl(..., 'reverse')"
### END HIDDEN TESTS
print("exercise 1: your reverse KL matches token_kl")

# %% [markdown]
# **Exercise 2.** Write the calibration measure of section 4: for student and teacher logits `[N, V]`,
# the mean over positions of $\max_v p_S(v) - p_T(\arg\max_v p_S)$, how much more the student trusts
# its own top token than the teacher does.

# %%
def my_overconfidence(student_logits, teacher_logits):
    ### BEGIN SOLUTION
    p_s, p_t = student_logits.softmax(-1), teacher_logits.softmax(-1)
    confidence, top = p_s.max(-1)
    return (confidence - p_t.gather(-1, top[..., None])[..., 0]).mean()
    ### END SOLUTION


# %%
# CHECK: 10b-overconfidence
check_overconfidence(my_overconfidence)
### BEGIN HIDDEN TESTS
check_overconfidence(my_overconfidence, seed=2)
with torch.no_grad():
    mine = float(my_overconfidence(z.reshape(-1, z.shape[-1]), teacher_logits.reshape(-1, z.shape[-1])))
assert abs(mine - overconfidence(z, teacher_logits)) < 1e-5, "on the notebook's last student your measure differs"
### END HIDDEN TESTS
print("exercise 2: your overconfidence matches labkit's")

# %% [markdown]
# ## Summary
#
# | signal | measured here |
# |---|---|
# | on-policy vs off-policy distillation | alike on this task; errors still compound in both |
# | why | the teacher's target after a slip continues the slip; a recovering teacher teaches little recovery and costs accuracy |
# | sampled vs greedy teacher outputs | sampling keeps the teacher's entropy and calibration; greedy collapses them |
# | a teacher's systematic error | copied by the student in its context, nothing else changes |
#
# The ledger of this run:

# %%
_ = summary()
