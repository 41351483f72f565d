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
# # 10c · Adversarial learning: a generator, a judge, and the judge exploited
#
# **What you will see.** In adversarial learning the training signal comes from another model: a
# judge (discriminator, critic) is trained to tell real data from generated data, and the generator
# is trained to make the judge say "real". That works where no likelihood can be written down but a
# judge can be trained. It also means the generator optimises *the judge*, not the truth. On a world
# whose answer is known (eight Gaussians on a ring) we measure:
#
# 1. how to score a generator against the truth: modes reached, share of samples on a mode, and a
#    kernel distance (MMD) to fresh real samples;
# 2. the game's two losses, and why the generator's usual loss is the "non-saturating" one;
# 3. a GAN (the judge keeps learning) against the same generator trained against a judge that was
#    fitted once and then frozen, over three seeds;
# 4. a trained GAN's judge, frozen, and the generator optimised further against it: the judge's score
#    rises while the distance to the truth grows, against the game continued as control;
# 5. notebook 11's proxy-reward hacking, re-run small: the same structure, measured a second time;
# 6. an exercise.
#
# **Runtime:** about 35 s on a laptop CPU (2 cores).

# %%
import copy

import matplotlib.pyplot as plt
import torch

import labkit
from labkit.batch import collate
from labkit.claims import check, claim, compare, summary
from labkit.exercises.adversarial import check_generator_loss
from labkit.models import TinyCausalLM
from labkit.paradigms.adversarial import (discriminator_loss, gan_fit, generator_loss, make_discriminator,
                                          make_generator, mode_coverage, mmd_rbf, ring_centers, ring_of_gaussians,
                                          score_generator)
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.paradigms.preference import AnswerWorld, policy_gradient_fit
from labkit.predict import ask, reveal, verdict_choices, verdict_of
from labkit.train import fit
from labkit.vocab import seed_vocab

SEED, DEVICE = labkit.setup_notebook()

# %% [markdown]
# ## 1. A world with a known answer
#
# The truth: a mode chosen uniformly among 8 centres on a circle of radius 2, plus Gaussian noise of
# standard deviation σ = 0.05. Every generator is scored on 1,000 samples from fixed noise against it:
#
# | score | what it says |
# |---|---|
# | `quality` | share of samples within 3σ of their nearest centre ("on a mode") |
# | `modes_hit` | modes holding at least 10 of the 1,000 samples (on-mode ones) |
# | `mode_kl` | KL(uniform over the modes ‖ the samples' histogram over their nearest mode), nats |
# | `mmd` | MMD² with a sum of RBF kernels to 1,000 fresh real samples (0 in expectation for the truth itself) |
#
# First the truth scored against itself: a 2-D Gaussian lies within 3σ of its centre with
# probability $1 - e^{-9/2}$, a value fixed by construction (a `CHECK`, with sampling tolerance).

# %%
STD = 0.05
centers = ring_centers(8, radius=2.0)
real = lambda n, g: ring_of_gaussians(n, std=STD, generator=g)  # noqa: E731
truth = ring_of_gaussians(1000, std=STD, generator=torch.Generator().manual_seed(SEED + 99))
fresh = ring_of_gaussians(1000, std=STD, generator=torch.Generator().manual_seed(SEED + 98))
z_eval = torch.randn(1000, 2, generator=torch.Generator().manual_seed(SEED + 5))    # fixed noise for every score
truth_score = {**mode_coverage(fresh, centers, STD), "mmd": mmd_rbf(fresh, truth)}
print({k: round(v, 3) for k, v in truth_score.items() if k != "per_mode"})
check("10c.truth_on_mode", truth_score["quality"], 1 - torch.exp(torch.tensor(-4.5)).item(), 0.015,
      text="share of real samples within 3 std of their centre (expected 1 - exp(-9/2))")
_ = check("10c.truth_modes", truth_score["modes_hit"], 8, 0, text="modes reached by real samples")

# %% [markdown]
# ## 2. The game
#
# The judge $D$ outputs a logit $l = D(x)$, its belief that $x$ is real being $\sigma(l)$. It
# minimises the cross-entropy of "real = 1, generated = 0"; the generator $G$ moves its samples to
# make the judge wrong:
#
# $$\min_G \max_D\; \mathbb E_{x\sim p_\text{data}} \log\sigma(D(x)) + \mathbb E_{z} \log\big(1-\sigma(D(G(z)))\big).$$
#
# Taken literally the generator minimises $\log(1-\sigma(l))$ (`saturating`). Its gradient with
# respect to $l$ is $-\sigma(l)$, which vanishes exactly where the judge confidently rejects a sample,
# the samples that most need to move. The usual fix (`non_saturating`) minimises $-\log\sigma(l)$
# instead: the same fixed point, gradient $-(1-\sigma(l))$, largest where the judge rejects. Checked
# against autograd on a few logits:

# %%
l = torch.tensor([-6.0, -2.0, 0.0, 2.0], requires_grad=True)
grads = {}
for kind in ("saturating", "non_saturating"):
    (g_l,) = torch.autograd.grad(generator_loss(l, kind) * len(l), l)
    grads[kind] = g_l
    print(f"{kind:<15} d loss / d l at l = {l.tolist()}: {[round(v, 4) for v in g_l.tolist()]}")
# float-rounding residues are rounded well below the tolerance (they differ between machines)
check("10c.saturating_grad", round((grads["saturating"] + torch.sigmoid(l)).abs().max().item(), 7), 0.0, 1e-6,
      text="max |autograd - (-sigmoid(l))|, saturating loss")
check("10c.non_saturating_grad", round((grads["non_saturating"] + 1 - torch.sigmoid(l)).abs().max().item(), 7), 0.0, 1e-6,
      text="max |autograd - (-(1 - sigmoid(l)))|, non-saturating loss")
_ = check("10c.judge_loss_at_chance", discriminator_loss(torch.zeros(4), torch.zeros(4)).item(),
          2 * torch.log(torch.tensor(2.0)).item(), 1e-6, text="judge loss when it says 1/2 everywhere (2 log 2)")

# %% [markdown]
# ## 3. A judge that keeps learning vs a judge fitted once
#
# Two arms from the same initial generator and judge (small MLPs, 2-D noise in, 2-D points out):
#
# | arm | what the judge does |
# |---|---|
# | `game` (a GAN) | one judge update, then one generator update, 1,000 times |
# | `fixed judge` | 1,000 judge updates against the *initial* generator, then frozen for 1,000 generator updates |
#
# Everything else is matched: the same number of updates of each network, Adam at the same
# learning rate, batches of 256, the same real draws, the non-saturating loss. The only difference is
# whether the judge sees the generator's new samples. Three seeds (initialisation and draws).

# %%
STEPS = 1000
SEEDS = [SEED, SEED + 1, SEED + 2]


def train_arms(seed):
    """(game G, game D, fixed-judge G, fixed judge) from one initialisation."""
    torch.manual_seed(seed)
    G0, D0 = make_generator(), make_discriminator()
    game_G, game_D = copy.deepcopy(G0), copy.deepcopy(D0)
    gan_fit(game_G, game_D, real, STEPS, seed=seed)                                   # the judge learns alongside
    fixed_G, fixed_D = copy.deepcopy(G0), copy.deepcopy(D0)
    gan_fit(fixed_G, fixed_D, real, STEPS, seed=seed, train_generator=False)          # the judge fitted once ...
    gan_fit(fixed_G, fixed_D, real, STEPS, seed=seed, train_discriminator=False)      # ... then frozen
    return game_G, game_D, fixed_G, fixed_D


trained, arm_scores = {}, {}
for s in SEEDS:
    trained[s] = train_arms(s)
    game_G, game_D, fixed_G, fixed_D = trained[s]
    arm_scores["game", s] = score_generator(game_G, game_D, z_eval, truth, centers, STD)
    arm_scores["fixed judge", s] = score_generator(fixed_G, fixed_D, z_eval, truth, centers, STD)
print(f"{'arm':<12}{'seed':>5}{'own judge P(real)':>19}{'quality':>9}{'modes':>7}{'mode KL':>9}{'MMD':>8}")
for (arm, s), r in arm_scores.items():
    print(f"{arm:<12}{s:>5}{r['judge']:>19.3f}{r['quality']:>9.3f}{r['modes_hit']:>7}{r['mode_kl']:>9.3f}{r['mmd']:>8.3f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(10, 3.3), sharex=True, sharey=True)
with torch.no_grad():
    panels = [("truth", fresh), ("game (GAN)", trained[SEED][0](z_eval)), ("fixed judge", trained[SEED][2](z_eval))]
for ax, (title, x) in zip(axes, panels):
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
    ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="k", s=20)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
axes[0].set_xlim(-4, 4)
axes[0].set_ylim(-4, 4)
fig.suptitle(f"1,000 samples, seed {SEED}", fontsize=10)
fig.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
game_q = ask("10c.fixed_judge_mmd", "Trained against a judge that was fitted once and frozen, is the generator "
             "closer to the truth (MMD) than the GAN's, or farther?",
             choices=verdict_choices(("fixed judge", "game")))

# %% [markdown]
# **Claims.** The game reaches at least 7 of the 8 modes in every seed. The generator trained against
# the frozen judge is far from the truth (MMD, and the share of samples on a mode), while its own
# judge calls its samples real almost surely: it found what that judge rewards, not what the data
# looks like.

# %%
def per_seed(arm, key):
    return [arm_scores[arm, s][key] for s in SEEDS]


matched_arms = ["initial generator and judge (per seed)", f"{STEPS} judge and {STEPS} generator updates",
                "Adam lr 0.001, batch 256, the same real draws", "non-saturating generator loss",
                "scored on the same noise and real sample"]
claim("10c.game_modes", min(per_seed("game", "modes_hit")), above=6,
      text="game: fewest modes reached over seeds (of 8)", control="real samples", control_value=8)
fixed_rec = compare("10c.fixed_judge_mmd", per_seed("fixed judge", "mmd"), per_seed("game", "mmd"), seeds=SEEDS,
                    arms=("fixed judge", "game"), metric="MMD^2 to the truth", higher_is_better=False,
                    expect="A worse", matched_on=matched_arms)
reveal(game_q, verdict_of(fixed_rec))
claim("10c.fixed_judge_quality", max(per_seed("fixed judge", "quality")), below=0.1,
      text="fixed judge: largest share of samples on a mode over seeds", control="game (mean)",
      control_value=sum(per_seed("game", "quality")) / 3, matched_on=matched_arms)
_ = claim("10c.fixed_judge_fooled", min(per_seed("fixed judge", "judge")), above=0.9,
          text="fixed judge: smallest P(real) it gives its generator's samples, over seeds",
          control="the game's judge on the game's samples (mean)", control_value=sum(per_seed("game", "judge")) / 3)

# %% [markdown]
# ## 4. The judge exploited: freeze it and keep optimising
#
# Now start from each trained GAN. Its judge is first refitted to the final generator (300 judge-only
# updates: an evaluator trained on the current model's samples, as a reward model is), then **frozen**.
# Two arms continue from that same point for 1,000 generator updates at the same learning rate:
#
# - `frozen judge`: only the generator moves, against the frozen judge;
# - `game` (control): the judge keeps learning as before.
#
# Both are scored every 200 updates under the frozen judge (its P(real) for the samples) and
# against the truth (MMD).

# %%
EXPLOIT_STEPS, REFIT_STEPS = 1000, 300
curves = {}
for s in SEEDS:
    game_G, game_D = copy.deepcopy(trained[s][0]), copy.deepcopy(trained[s][1])
    gan_fit(game_G, game_D, real, REFIT_STEPS, seed=s + 3, train_generator=False)      # refit the judge to the final G
    judge = copy.deepcopy(game_D).requires_grad_(False)                               # the frozen judge we score with

    def track(step, G, D, judge=judge):
        return score_generator(G, judge, z_eval, truth, centers, STD)

    curves["frozen judge", s] = gan_fit(copy.deepcopy(game_G), copy.deepcopy(judge), real, EXPLOIT_STEPS, seed=s + 7,
                                        train_discriminator=False, track=track, track_every=200)
    curves["game", s] = gan_fit(copy.deepcopy(game_G), copy.deepcopy(judge), real, EXPLOIT_STEPS, seed=s + 7,
                                track=track, track_every=EXPLOIT_STEPS)
for (arm, s), c in curves.items():
    print(f"{arm:<13} seed {s}: judge P(real) " + " ".join(f"{r['judge']:.2f}" for r in c)
          + " | MMD " + " ".join(f"{r['mmd']:.3f}" for r in c) + f" | modes {c[0]['modes_hit']} -> {c[-1]['modes_hit']}")

# %%
# NBVAL_IGNORE_OUTPUT
exploit_q = ask("10c.exploit_mmd_up", "While the generator climbs the frozen judge's score, what happens to its MMD "
                "to the truth (end vs start)?", choices=["falls (closer)", "mixed across seeds", "grows (farther)"])

# %% [markdown]
# **Claims**, each required of **every** seed (the claim is on the smallest per-seed effect, because
# how far a generator runs once it exploits the judge varies a lot between seeds, see the lines
# above): under the frozen judge, its P(real) for the generator's samples rises from start to end; over
# the same updates the generator's MMD² to the truth grows; and it ends farther from the truth than the
# game continued for the same updates. The MMD² threshold, 0.02, is far above the estimate's noise
# for the truth itself (section 1).

# %%
def at(arm, key, i):
    return [curves[arm, s][i][key] for s in SEEDS]


judge_rise = [b - a for a, b in zip(at("frozen judge", "judge", 0), at("frozen judge", "judge", -1))]
mmd_rise = [b - a for a, b in zip(at("frozen judge", "mmd", 0), at("frozen judge", "mmd", -1))]
vs_game = [a - b for a, b in zip(at("frozen judge", "mmd", -1), at("game", "mmd", -1))]
claim("10c.exploit_judge_up", min(judge_rise), above=0.05,
      text="frozen judge: smallest rise over seeds of its P(real) for the generator's samples, start -> end")
exploit_rec = claim("10c.exploit_mmd_up", min(mmd_rise), above=0.02,
                    text="smallest growth over seeds of the MMD^2 to the truth over the same updates",
                    control="start (mean MMD^2)", control_value=sum(at("frozen judge", "mmd", 0)) / 3)
reveal(exploit_q, "grows (farther)" if min(mmd_rise) > 0 else "falls (closer)" if max(mmd_rise) < 0
       else "mixed across seeds")
_ = claim("10c.exploit_vs_game", min(vs_game), above=0.02,
          text="smallest excess over seeds of the exploiting arm's final MMD^2 over the continued game's",
          control="game continued (mean final MMD^2)", control_value=sum(at("game", "mmd", -1)) / 3,
          matched_on=["start: the same trained GAN and refitted judge (per seed)", f"{EXPLOIT_STEPS} generator updates",
                      "Adam lr 0.001, batch 256, noise draws", "scored by the same frozen judge and real sample"])

# %% [markdown]
# Where did the exploited samples go? The per-seed lines above show the modes reached: the
# generator piles its samples onto the few modes the frozen judge happens to like most. *Hypothesis*
# (not measured separately): a judge that is never updated keeps its arbitrary preferences between
# modes, and nothing pushes back when the generator abandons the others; in the game, the judge
# learns to reject an over-full mode.

# %% [markdown]
# ## 5. The same structure, measured twice: notebook 11's proxy reward
#
# Notebook 11 (section 7) trains a policy on-policy against a cheap judge with a loophole: the
# *proxy* reward pays for a right answer **and** a bonus for every extra word, while the *true* reward wants
# right and concise. A small re-run with `labkit.paradigms.preference`: the same SFT reference
# (150 steps), then 30 group-normalised policy-gradient steps on the proxy, without a KL penalty,
# three seeds. Judge score = proxy reward; true quality = true reward; first vs last 5 steps.

# %%
tok = seed_vocab()
world = AnswerWorld(tokenizer=tok)
sft_data = world.sft_examples(2000, seed=SEED)


def lm_loss(model, batch):
    logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return causal_lm_loss(logits, batch.labels)


torch.manual_seed(SEED)
reference = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=16)
fit(reference, lambda s: collate(sft_data[(s * 64) % 2000:][:64], tok.pad_id), lm_loss, steps=150, lr=3e-3,
    desc="SFT reference")
reference.requires_grad_(False)


def sample_keys(g, n=8):
    return [world.prompt(world.KEYS[i]) for i in torch.randint(len(world.KEYS), (n,), generator=g).tolist()]


hacked = {}
for s in SEEDS:
    policy = copy.deepcopy(reference).requires_grad_(True).to(DEVICE)
    hacked[s] = policy_gradient_fit(policy, tok, sample_keys, world.proxy_reward, iters=30, lr=6e-4, seed=s + 1,
                                    track={"proxy": world.proxy_reward, "true": world.true_reward})
first = lambda h, k: sum(r[k] for r in h[:5]) / 5  # noqa: E731
last = lambda h, k: sum(r[k] for r in h[-5:]) / 5  # noqa: E731

# %%
matched_rl = ["the same SFT reference policy", "30 steps, lr 0.0006, 8 prompts x 8 answers", "no KL penalty"]
proxy_rec = compare("10c.proxy_up", [last(hacked[s], "proxy") for s in SEEDS], [first(hacked[s], "proxy") for s in SEEDS],
                    seeds=SEEDS, arms=("last 5 steps", "first 5 steps"), metric="proxy reward (the judge)",
                    expect="A better", matched_on=matched_rl)
true_rec = compare("10c.true_down", [last(hacked[s], "true") for s in SEEDS], [first(hacked[s], "true") for s in SEEDS],
                   seeds=SEEDS, arms=("last 5 steps", "first 5 steps"), metric="true reward", expect="A worse",
                   matched_on=matched_rl)

# %% [markdown]
# One table, two worlds. Each row: the judge's score and the true quality at the start and at the end
# of optimising against a fixed judge (means over the seeds; the tests are the `CLAIM` and `COMPARE` lines above).

# %%
rows = [("GAN, frozen judge", "judge P(real)", at("frozen judge", "judge", 0), at("frozen judge", "judge", -1),
         "MMD^2 (lower = truer)", at("frozen judge", "mmd", 0), at("frozen judge", "mmd", -1)),
        ("policy, proxy reward", "proxy reward", [first(hacked[s], "proxy") for s in SEEDS],
         [last(hacked[s], "proxy") for s in SEEDS], "true reward (higher = truer)",
         [first(hacked[s], "true") for s in SEEDS], [last(hacked[s], "true") for s in SEEDS])]
mean = lambda v: sum(v) / len(v)  # noqa: E731
print(f"{'world':<22}{'judge score':<16}{'start':>8}{'end':>8}   {'true quality':<30}{'start':>8}{'end':>8}")
for world_name, jn, j0, j1, tn, t0, t1 in rows:
    print(f"{world_name:<22}{jn:<16}{mean(j0):>8.3f}{mean(j1):>8.3f}   {tn:<30}{mean(t0):>8.3f}{mean(t1):>8.3f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
steps = [r["step"] for r in curves["frozen judge", SEED]]
for s in SEEDS:
    axes[0].plot(steps, [r["judge"] for r in curves["frozen judge", s]], color="tab:orange", alpha=0.8)
    axes[0].plot(steps, [r["mmd"] * 5 for r in curves["frozen judge", s]], color="tab:blue", alpha=0.8)
    axes[1].plot([r["proxy"] for r in hacked[s]], color="tab:orange", alpha=0.8)
    axes[1].plot([r["true"] for r in hacked[s]], color="tab:blue", alpha=0.8)
axes[0].set_title("GAN: frozen judge's P(real) (orange), 5 x MMD^2 to truth (blue)", fontsize=9)
axes[0].set_xlabel("generator updates against the frozen judge")
axes[1].set_title("policy: proxy reward (orange), true reward (blue)", fontsize=9)
axes[1].set_xlabel("policy-gradient step")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What is measured and what is interpretation.** Measured, in both worlds: optimising against a
# fixed evaluator raises the evaluator's score while the truth gets worse (two claims in the GAN, two
# `COMPARE` lines for the policy), and in the GAN a judge that keeps learning does not get exploited
# this way (`10c.exploit_vs_game`).
# *Interpretation, not measured here*: the judge's blind spots play the role of the proxy's loophole
# (the proxy's is written into it; the frozen judge's are whatever its last training left); the GAN's
# remedy (keep training the judge on fresh samples) corresponds to refreshing a reward model on the
# policy's new outputs, and notebook 11's KL penalty towards the reference is a different remedy
# (stay near where the judge was trained), which this notebook does not test on the GAN.

# %% [markdown]
# ## 6. Try it
#
# **Exercise.** Write the generator's non-saturating loss: given the judge's logits on a batch of
# generated samples (any shape), return the mean over samples of $-\log\sigma(l)$. It must be
# differentiable, and stable for very negative logits (a judge that rejects confidently).

# %%
def my_generator_loss(fake_logits):
    ### BEGIN SOLUTION
    return torch.nn.functional.softplus(-fake_logits).mean()
    ### END SOLUTION


# %%
# CHECK: 10c-generator-loss
check_generator_loss(my_generator_loss)
### BEGIN HIDDEN TESTS
for seed in (1, 2, 3):
    check_generator_loss(my_generator_loss, seed=seed)
with torch.no_grad():
    logits = trained[SEED][1](trained[SEED][0](z_eval))
assert abs(float(my_generator_loss(logits)) - float(generator_loss(logits))) < 1e-5
### END HIDDEN TESTS
print("exercise: your loss is the non-saturating generator loss")

# %% [markdown]
# ## Summary
#
# | measurement | what it shows |
# |---|---|
# | truth scored against itself | the scores' reference values (on-mode share fixed by the Gaussian) |
# | game vs judge fitted once | a judge that keeps learning guides the generator to the modes; a frozen one is fooled by points far from the data |
# | frozen judge, optimised further | its score rises while the MMD to the truth grows; the game continued does not |
# | notebook 11's proxy, re-run | proxy reward up, true reward down: the same structure, measured a second time |
#
# The ledger of this run:

# %%
_ = summary()
