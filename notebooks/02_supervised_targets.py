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
# # 02 · Supervised targets: what a label means decides the loss
#
# **What you will see.** "Train with cross-entropy" leaves out the part that matters: what the
# target *means*. The same small MLP is trained on the same inputs with different target
# constructions, and each choice is scored against data whose true law is known:
#
# 1. multi-label findings (5 conditions, two of which usually come together): softmax CE over a
#    normalised multi-hot target vs independent binary cross-entropies (BCE);
# 2. mutually exclusive classes (scikit-learn's 8×8 digits): softmax vs BCE, and where BCE's
#    probabilities stop summing to one;
# 3. several annotators per item with a known true ambiguity: vote distributions vs majority vote,
#    scored by calibration and by the distance to the true label distribution;
# 4. $\mathrm{CE}(q, p) = H(q) + \mathrm{KL}(q \Vert p)$, checked numerically;
# 5. label smoothing: the ceiling it puts on every class, and what it does specifically to a rare,
#    certain class; class imbalance, class weights, and weights that keep their meaning after the
#    reduction;
# 6. two exercises.
#
# Every comparison trains both arms from the same initialisation on the same data for the same
# steps, changes one thing, and is repeated over three seeds (`labkit.claims.compare`: effect ± sd,
# a 95% interval and a two-sided verdict). Identities are `check`s; single measurements with a
# threshold are `claim`s. The ledger closes the notebook.
#
# **Runtime:** about 25 s on a laptop CPU (about 30 small training runs).

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import labkit
from labkit.checks import ContractError
from labkit.claims import check, claim, compare, ledger, summary
from labkit.predict import ask, reveal, verdict_choices, verdict_of
from labkit.data import AnnotatorWorld, FindingsWorld, digits_split, imbalanced_blobs, thin_classes
from labkit.models import MLPClassifier
from labkit.paradigms.supervised import (ce_decomposition, class_balanced_weights, class_mass_at_prior,
                                         f1_per_label, majority_law, majority_vote, multilabel_bce,
                                         normalise_multi_hot, reliability, risk_shares, single_label_ce,
                                         smoothed_targets, soft_target_ce, vote_distribution, weighted_ce)
from labkit.exercises.supervised import check_class_weighted_ce, check_multilabel_loss
from labkit.train import fit
from labkit.viz import reliability_figure

SEED, DEVICE = labkit.setup_notebook()
SEEDS = [SEED, SEED + 1, SEED + 2]      # each seed draws its own training sample and initialisation; both arms share them
TEST_SEED = SEED + 10_000               # held-out data: drawn once, apart from every training draw


def gen(seed):
    return torch.Generator().manual_seed(seed)


def trained(sizes, x, target, loss_fn, seed, steps=300, lr=1e-2):
    """A fresh MLPClassifier(*sizes), initialised from `seed`, trained full-batch with AdamW on (x, target)."""
    torch.manual_seed(seed)
    model = MLPClassifier(*sizes)
    fit(model, [(x, target)], lambda m, b: loss_fn(m(b[0]), b[1]), steps=steps, lr=lr, seed=seed, progress=False)
    return model


def predict(model, x, link):
    model.eval()
    with torch.no_grad():
        return link(model(x.to(DEVICE))).cpu()


softmax = lambda z: z.softmax(-1)  # noqa: E731

# %% [markdown]
# ## 1. Multi-label findings: softmax makes present labels compete
#
# `FindingsWorld` draws findings for an imaging report from a known law: pneumonia and edema often
# come together (their known joint probability is printed below), the three other findings are
# independent, and every item has at least one finding. The 16 features are a noisy sum of one
# direction per present finding, so each finding can be read off the features on its own.

# %%
world = FindingsWorld()
x_va, y_va = world.sample(1000, gen(TEST_SEED))
x_te, y_te = world.sample(2000, gen(TEST_SEED + 1))
known = world.cooccurrence()
print("known P(finding):           ", " ".join(f"{n}={p:.2f}" for n, p in zip(world.names, world.marginals().tolist())))
print(f"known P(pneumonia and edema) = {known[0, 1]:.2f}; in the test sample {(y_te[:, 0] * y_te[:, 1]).mean():.2f}")
print(f"findings per item: {y_te.sum(-1).mean():.2f} on average; example target {y_te[0].int().tolist()}")

# %% [markdown]
# Two objectives for the same MLP (16 → 64 → 5):
#
# * **softmax CE** over the normalised multi-hot target ($[1, 1, 0, 0, 0] \to [0.5, 0.5, 0, 0, 0]$): the
#   five outputs form one distribution, so two present findings must share its mass;
# * **BCE**: five independent sigmoids, $\ell = -\sum_k y_k \log s_k + (1 - y_k)\log(1 - s_k)$.
#
# Handing the multi-hot target to single-label CE directly is refused, with the reason:

# %%
try:
    single_label_ce(torch.zeros(2, 5), y_te[:2])
except ContractError as err:
    print("ContractError:", err)

# %% [markdown]
# Per seed, both objectives train on the same 2000 items from the same initialisation. We score the
# co-occurring pair (pneumonia, edema) on the test items three ways: F1 at the usual threshold 0.5;
# F1 at a threshold chosen on validation data (the same grid for both objectives); and the Brier
# score (mean squared error of the probability, no threshold at all).

# %%
both = (y_te[:, 0] == 1) & (y_te[:, 1] == 1)
shared_target = float(normalise_multi_hot(y_te)[both][:, :2].mean())   # what the normalised target gives each of the pair
grid = [k / 20 for k in range(1, 20)]


def pair_f1(p, y, t=0.5):
    return float(f1_per_label(p, y, t)[:2].mean())


ml = {"softmax": [], "BCE": []}
for s in SEEDS:
    x_tr, y_tr = world.sample(2000, gen(s))
    for name, target, loss_fn, link in (("softmax", normalise_multi_hot(y_tr), soft_target_ce, softmax),
                                        ("BCE", y_tr, multilabel_bce, torch.sigmoid)):
        model = trained((16, 5, (64,)), x_tr, target, loss_fn, s)
        p, p_va = predict(model, x_te, link), predict(model, x_va, link)
        t_best = max(grid, key=lambda t: pair_f1(p_va, y_va, t))
        ml[name].append({"pair_p": float(p[both][:, :2].mean()), "f1": pair_f1(p, y_te), "t": t_best,
                         "f1_tuned": pair_f1(p, y_te, t_best), "brier": float(((p - y_te) ** 2)[:, :2].mean())})
print(f"{'seed':>4} {'objective':>9} | {'mean p on items with both':>25} | {'F1 at 0.5':>9} | {'tuned threshold':>15} "
      f"{'F1':>5} | {'Brier':>6}")
for i, s in enumerate(SEEDS):
    for name in ml:
        r = ml[name][i]
        print(f"{s:>4} {name:>9} | {r['pair_p']:>25.3f} | {r['f1']:>9.3f} | {r['t']:>15.2f} {r['f1_tuned']:>5.3f} | {r['brier']:>6.4f}")
print(f"the normalised target gives each finding of the pair {shared_target:.3f} on these items (on average)")

# %% [markdown]
# **Claim.** The softmax model learns exactly what its target says: the present findings share one
# unit of mass, so on items with both pneumonia and edema each gets about what the normalised target
# gives it, far below 0.5. At the usual threshold that misses most of them, and BCE wins F1 by a
# wide margin. With a tuned threshold the softmax model's *ranking* recovers the decisions: the two
# objectives show no F1 difference beyond 0.02 (BCE stays ahead by far less than that). What
# does not come back is the meaning of the
# numbers: the softmax outputs are not probabilities of each finding, and the Brier score, which
# needs no threshold, shows it.

# %%
mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
claim("02.softmax_shares_mass", mean(ml["softmax"], "pair_p") - shared_target, between=(-0.03, 0.03), fmt=".3f",
      text="softmax: mean p on the pair - the normalised target's share (3 seeds)", control="BCE mean p on the pair",
      control_value=mean(ml["BCE"], "pair_p"))
matched = ["MLP 16-64-5 and its initialisation (per seed)", "the same 2000 training items (per seed)",
           "300 full-batch AdamW steps, lr 0.01", "the same 2000 test items"]
by_seed = lambda name, key: [r[key] for r in ml[name]]  # noqa: E731
compare("02.pair_f1_at_half", by_seed("BCE", "f1"), by_seed("softmax", "f1"), seeds=SEEDS, arms=("BCE", "softmax CE"),
        metric="F1 on (pneumonia, edema) at threshold 0.5", expect="A better", matched_on=matched + ["threshold 0.5"])
compare("02.pair_f1_tuned", by_seed("BCE", "f1_tuned"), by_seed("softmax", "f1_tuned"), seeds=SEEDS,
        arms=("BCE", "softmax CE"), metric="F1 on (pneumonia, edema) at a threshold tuned on validation data",
        expect="no detectable difference", min_effect=0.02,
        matched_on=matched + ["threshold chosen on the same 1000 validation items, same grid"])
_ = compare("02.pair_brier", by_seed("BCE", "brier"), by_seed("softmax", "brier"), seeds=SEEDS, arms=("BCE", "softmax CE"),
            metric="Brier score on (pneumonia, edema)", expect="A better", higher_is_better=False, matched_on=matched,
            fmt=".4f")

# %% [markdown]
# ## 2. Mutually exclusive classes: BCE leaves the simplex
#
# The reverse mistake. An 8×8 digit is exactly one of ten classes (scikit-learn's digits: 1797
# real images, shipped with the package). Softmax keeps the ten probabilities on the simplex; ten
# independent sigmoids do not know that the classes exclude each other. The train/test split is
# fixed; each seed gives both objectives the same initialisation.

# %%
digits = digits_split(seed=SEED)
xd_tr, yd_tr, xd_te, yd_te = digits["x_train"], digits["y_train"], digits["x_test"], digits["y_test"]
dg = {"softmax": [], "BCE": []}
digit_models = {}                      # the softmax (hard-label) models come back in section 5
for s in SEEDS:
    for name, target, loss_fn, link in (("softmax", yd_tr, single_label_ce, softmax),
                                        ("BCE", F.one_hot(yd_tr, 10).float(), multilabel_bce, torch.sigmoid)):
        model = digit_models[name, s] = trained((64, 10, (64,)), xd_tr, target, loss_fn, s)
        p = predict(model, xd_te, link)
        sums, above_half = p.sum(-1), p.gt(0.5).sum(-1)
        dg[name].append({"acc": float((p.argmax(-1) == yd_te).float().mean()), "p": p, "sums": sums,
                         "off": float((sums - 1).abs().gt(0.1).float().mean()), "several": int(above_half.ge(2).sum()),
                         "none": int(above_half.eq(0).sum())})
for i, s in enumerate(SEEDS):
    for name in dg:
        r = dg[name][i]
        print(f"seed {s} {name:>7}: accuracy {r['acc']:.3f} | sum of the 10 probabilities in [{r['sums'].min():.2f}, "
              f"{r['sums'].max():.2f}], |sum - 1| > 0.1 for {r['off']:.1%} of test digits | digits with >= 2 classes "
              f"above 0.5: {r['several']}, with none: {r['none']}")

# %% [markdown]
# **Claim.** Both objectives classify about equally well by argmax (no difference beyond 0.02), but
# only softmax outputs one distribution per image; BCE's ten numbers often sum to far more or far
# less than one, and in every run some digits get two "certain" classes at once while others get none.

# %%
check("02.softmax_on_simplex", max(float((r["sums"] - 1).abs().max()) for r in dg["softmax"]), 0, 1e-5, fmt=".0f",
      text="max |sum of the softmax probabilities - 1| over all test digits and seeds")
compare("02.digits_accuracy", [r["acc"] for r in dg["softmax"]], [r["acc"] for r in dg["BCE"]], seeds=SEEDS,
        arms=("softmax CE", "BCE"), metric="test accuracy (argmax) on digits", expect="no detectable difference",
        min_effect=0.02, matched_on=["MLP 64-64-10 and its initialisation (per seed)", "the same train/test split",
                                     "300 full-batch AdamW steps, lr 0.01"])
claim("02.bce_off_simplex", mean(dg["BCE"], "off"), above=0.05, fmt=".3f",
      text="BCE: share of test digits with |sum p - 1| > 0.1 (mean of 3 seeds)", control="softmax",
      control_value=mean(dg["softmax"], "off"))
_ = claim("02.bce_two_certain_classes", min(r["several"] for r in dg["BCE"]), above=0, fmt=".0f",
          text="BCE: test digits with two or more classes above 0.5 (fewest over 3 seeds)")

# %%
# NBVAL_IGNORE_OUTPUT
p_b = dg["BCE"][0]["p"]
ambiguous = p_b.gt(0.5).sum(-1).ge(2).nonzero().flatten()[:4].tolist()
fig, axes = plt.subplots(1, 1 + len(ambiguous), figsize=(3.2 + 1.9 * len(ambiguous), 2.6),
                         gridspec_kw={"width_ratios": [2.2] + [1] * len(ambiguous)})
axes[0].hist([dg["softmax"][0]["sums"].numpy(), dg["BCE"][0]["sums"].numpy()], bins=30, label=["softmax", "BCE"])
axes[0].set_xlabel("sum of the 10 predicted probabilities")
axes[0].set_ylabel("test digits")
axes[0].set_title(f"seed {SEEDS[0]}: per-image sums", fontsize=9)
axes[0].legend(fontsize=8)
for ax, i in zip(axes[1:], ambiguous):
    ax.imshow(xd_te[i].view(8, 8), cmap="gray_r")
    top = p_b[i].topk(2)
    top2 = ", ".join(f"{c}: {v:.2f}" for v, c in zip(top.values.tolist(), top.indices.tolist()))
    ax.set_title(f"true {int(yd_te[i])}; BCE\n{top2}", fontsize=8)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Soft targets: annotators who disagree
#
# `AnnotatorWorld` makes items whose true label distribution $q(y \mid x)$ is known: an item sits
# between the prototypes of two of 4 classes, and its position sets the mix $q = (1 - \lambda, \lambda)$
# with $\lambda \sim U(0, 0.5)$, from certain items to coin flips. Five simulated annotators vote
# independently from $q$. Two ways to build the training target from the same votes:
#
# * **majority vote**: one class per item, trained with single-label CE;
# * **vote distribution**: the share of votes per class, trained with soft-target CE.
#
# On 4000 new items we know each $q$, so calibration is measured exactly: in a bin of items where
# the model's top probability is about $c$, the chance that a fresh annotator agrees with the model's
# top class is the mean of $q[\arg\max p]$. Expected calibration error (ECE) averages the gaps
# $|$agreement − confidence$|$ over bins; the cross-entropy to the true distribution is
# $\mathrm{CE}(q, p) = H(q) + \mathrm{KL}(q \Vert p)$. We also know the law a majority vote follows:
# with five independent votes from $q$, the majority picks a class with probability
# `majority_law(q, 5)`, which is sharper than $q$ (a 70/30 item yields the majority class with
# probability about 0.84, checked below against the binomial sum).

# %%
annot = AnnotatorWorld()
a_te = annot.sample(4000, gen(TEST_SEED))
law_te = majority_law(a_te["q"], annot.A)
binomial = sum(torch.distributions.Binomial(5, torch.tensor(0.7)).log_prob(torch.tensor(k)).exp() for k in (3.0, 4.0, 5.0))
check("02.majority_law_70_30", float(majority_law(torch.tensor([[0.7, 0.3]]), 5)[0, 0]), float(binomial), 1e-5, fmt=".3f",
      text="majority law of a 70/30 item, 5 annotators (expected P(Binomial(5, 0.7) >= 3))")
an = {"vote distribution": [], "majority vote": []}
for s in SEEDS:
    a_tr = annot.sample(800, gen(s))
    majority = majority_vote(a_tr["votes"], 4, gen(s))
    shares = vote_distribution(a_tr["votes"], 4)
    if s == SEEDS[0]:
        for i in range(3):
            print(f"item {i}: true q = {[round(v, 2) for v in a_tr['q'][i].tolist()]} | votes {a_tr['votes'][i].tolist()} -> "
                  f"majority {int(majority[i])}, vote distribution {[round(v, 2) for v in shares[i].tolist()]}")
    for name, target, loss_fn in (("vote distribution", shares, soft_target_ce), ("majority vote", majority, single_label_ce)):
        p = predict(trained((8, 4, (64,)), a_tr["x"], target, loss_fn, s, steps=400), a_te["x"], softmax)
        dec = ce_decomposition(a_te["q"].double(), p.double())
        an[name].append({"table": reliability(p, a_te["q"]), "kl": float(dec["kl"].mean()), "ce": float(dec["ce"].mean()),
                         "H": float(dec["entropy"].mean()), "conf": float(p.max(-1).values.mean()),
                         "agree": float(a_te["q"].gather(1, p.argmax(-1, keepdim=True)).mean()),
                         "kl_law": float(ce_decomposition(law_te.double(), p.double())["kl"].mean())})
for i, s in enumerate(SEEDS):
    for name, rs in an.items():
        r = rs[i]
        print(f"seed {s} {name:>17}: ECE {r['table']['ece']:.3f} | mean confidence {r['conf']:.2f} vs agreement "
              f"{r['agree']:.2f} | CE to true q {r['ce']:.3f} = H(q) {r['H']:.3f} + KL {r['kl']:.3f} nats | "
              f"KL(majority law || p) {r['kl_law']:.3f}")

# %% [markdown]
# **Claim.** Trained on vote distributions, the model is calibrated (the minimiser of soft-target CE
# is $q$ itself) and close to the true distribution. Trained on majority votes it is overconfident
# and much further from $q$; the measured reason is that it learns the law of the majority, which is
# sharper than $q$: its KL to `majority_law` is well below its KL to $q$.

# %%
matched = ["the same 800 items and their 5 votes (per seed)", "MLP 8-64-4 and its initialisation (per seed)",
           "400 full-batch AdamW steps, lr 0.01", "the same 4000 test items"]
soft_rs, major_rs = an["vote distribution"], an["majority vote"]
compare("02.annotators_ece", [r["table"]["ece"] for r in soft_rs], [r["table"]["ece"] for r in major_rs], seeds=SEEDS,
        arms=("vote distribution", "majority vote"), metric="ECE against the true q", expect="A better",
        higher_is_better=False, matched_on=matched)
log_kl = lambda rs: [math.log(r["kl"]) for r in rs]  # noqa: E731   (KL spans scales: compare it on a log scale)
compare("02.annotators_log_kl", log_kl(soft_rs), log_kl(major_rs), seeds=SEEDS, arms=("vote distribution", "majority vote"),
        metric="log KL(q || p) to the true label distribution", expect="A better", higher_is_better=False,
        matched_on=matched)
claim("02.majority_overconfident", mean(major_rs, "conf") - mean(major_rs, "agree"), above=0.1, fmt=".3f",
      text="majority-vote model: mean confidence - mean agreement (3 seeds)", control="vote-distribution model",
      control_value=mean(soft_rs, "conf") - mean(soft_rs, "agree"))
_ = claim("02.majority_learns_majority_law", mean(major_rs, "kl_law") / mean(major_rs, "kl"), below=0.75, fmt=".3f",
          text="majority-vote model: KL(majority law || p) / KL(q || p) (3 seeds)")

# %%
# NBVAL_IGNORE_OUTPUT
reliability_figure({f"{name} (seed {SEEDS[0]})": rs[0]["table"] for name, rs in an.items()},
                   title="reliability on 4000 test items, true label law known")
plt.show()

# %% [markdown]
# ## 4. CE(q, p) = H(q) + KL(q ‖ p)
#
# $-\sum_k q_k \log p_k = -\sum_k q_k \log q_k + \sum_k q_k \log (q_k / p_k)$: the first term depends only on
# the target, so minimising CE over $p$ minimises the KL, which is 0 exactly at $p = q$. With one-hot
# targets $H(q) = 0$ and CE is the KL; with vote distributions $H(q) > 0$ is a floor no model can go
# below. Numerically, on random distributions (some with zeros in $q$) and on the model above:

# %%
g = gen(SEED)
q = torch.rand(1000, 7, generator=g, dtype=torch.float64) ** 3
q[q < 0.05] = 0
q[:, 0] += 1e-3
q = q / q.sum(-1, keepdim=True)
p = torch.randn(1000, 7, generator=g, dtype=torch.float64).softmax(-1)
dec = ce_decomposition(q, p)
torch_ce = F.cross_entropy(p.log(), q, reduction="none")             # torch's CE with probability targets
r0 = soft_rs[0]
print(f"the vote-trained model (seed {SEEDS[0]}): CE {r0['ce']:.3f} = floor H(q) {r0['H']:.3f} + KL {r0['kl']:.3f}")
check("02.ce_is_h_plus_kl", float((dec["ce"] - dec["entropy"] - dec["kl"]).abs().max()), 0, 1e-12, fmt=".0f",
      text="max |CE - (H + KL)| over 1000 random pairs")
check("02.ce_is_torchs", float((torch_ce - dec["ce"]).abs().max()), 0, 1e-12, fmt=".0f",
      text="max |CE - F.cross_entropy with probability targets|")
check("02.kl_zero_at_q", float(ce_decomposition(q, q)["kl"].abs().max()), 0, 1e-12, fmt=".0f", text="max |KL(q || q)|")
_ = check("02.kl_nonnegative", max(0.0, -float(dec["kl"].min())), 0, 1e-12, fmt=".0f", text="most negative KL(q || p)")

# %% [markdown]
# ## 5. Label smoothing: a ceiling for every class, a floor that swamps a rare one
#
# Label smoothing trains on $(1 - \varepsilon)\,\text{onehot}(y) + \varepsilon / K$. Two consequences follow from
# the target alone, before any training:
#
# * **a ceiling for every class.** The largest target probability is $1 - \varepsilon + \varepsilon/K$ (computed
#   below). A confidence threshold above it asks for more than the model is trained to give, for
#   frequent and rare classes alike.
# * **a floor on every other item.** Each image that is *not* class $c$ asks for $\varepsilon/K$ of $c$. For a
#   frequent class that is a small share of $c$'s total target mass; for a rare class it is comparable
#   to all the mass its own few images carry.
#
# To see which consequence is specific to rarity, we keep only 12 training images of the digit 0
# ("rare zero") and train the same MLP with hard and with smoothed labels ($\varepsilon = 0.1$). The control
# is the same digit with all its training images ("frequent zero"): the section 2 softmax models,
# plus smoothed ones. Each seed draws which 12 zeros are kept and the initialisation.

# %%
# NBVAL_IGNORE_OUTPUT
rare_q = ask("02.rare_zero_count", "With only 12 zeros in training, whose predicted count of zeros is further from the truth?",
             choices=verdict_choices(("smoothed", "hard labels")))

# %%
EPS, K, RARE, N_RARE, ALERT = 0.1, 10, 0, 12, 0.95
ceiling = 1 - EPS + EPS / K
check("02.smoothing_ceiling", float(smoothed_targets(yd_tr, K, EPS).max()), ceiling, 1e-6, fmt=".3f",
      text="largest smoothed target probability (expected 1 - eps + eps/K)")
print(f"an alert at p >= {ALERT} is {'above' if ALERT > ceiling else 'below'} the smoothing ceiling {ceiling:.3f}")


def misplaced_share(labels, c):
    """Share of class c's smoothed target mass that sits on images that are not c."""
    q = smoothed_targets(labels, K, EPS)
    return float(q[labels != c, c].sum() / q[:, c].sum())


xr_tr, yr_tr = thin_classes(xd_tr, yd_tr, {RARE: N_RARE}, seed=SEEDS[0])
n_all, n_rare = len(yr_tr), int((yr_tr == RARE).sum())
closed_form = (n_all - n_rare) * EPS / K / (n_rare * (1 - EPS) + n_all * EPS / K)
print(f"training images per class (rare zero): {torch.bincount(yr_tr, minlength=K).tolist()}")
check("02.rare_target_floor_share", misplaced_share(yr_tr, RARE), closed_form, 1e-6, fmt=".3f",
      text="rare zero: share of its smoothed target mass on non-zeros, (N - n) eps/K / (n (1 - eps) + N eps/K)")
print(f"the same share for the zero with all its images: {misplaced_share(yd_tr, RARE):.3f}; for the other digits "
      f"(rare-zero set): {sum(misplaced_share(yr_tr, c) for c in range(1, K)) / (K - 1):.3f} on average")
z_any = torch.randn(50, K, generator=gen(SEED))   # the same target torch uses for label_smoothing
_ = check("02.smoothing_is_torchs", abs(float(soft_target_ce(z_any, smoothed_targets(yr_tr[:50], K, EPS))
                                              - F.cross_entropy(z_any, yr_tr[:50], label_smoothing=EPS))), 0, 1e-5, fmt=".0f",
          text="|soft-target CE on the smoothed target - F.cross_entropy(label_smoothing=eps)|")

# %% [markdown]
# Per model, on the test digits: the alert rate at $p(\text{true}) \ge 0.95$ for zeros and for the other
# digits; accuracy; and, for zeros, where the predicted mass of "zero" goes on a population with
# the *training* class mix (`class_mass_at_prior` reweights the test set to it): the predicted count of
# zeros over the true count, and the share of that mass on images that are not zeros.

# %%
ls = {arm: [] for arm in ("rare, hard", "rare, smoothed", "frequent, hard", "frequent, smoothed")}
zeros = yd_te == RARE
for s in SEEDS:
    xr, yr = thin_classes(xd_tr, yd_tr, {RARE: N_RARE}, seed=s)
    models = {"rare, hard": (trained((64, K, (64,)), xr, yr, single_label_ce, s), yr),
              "rare, smoothed": (trained((64, K, (64,)), xr, smoothed_targets(yr, K, EPS), soft_target_ce, s), yr),
              "frequent, hard": (digit_models["softmax", s], yd_tr),
              "frequent, smoothed": (trained((64, K, (64,)), xd_tr, smoothed_targets(yd_tr, K, EPS), soft_target_ce, s),
                                     yd_tr)}
    for arm, (model, y_train) in models.items():
        p = predict(model, xd_te, softmax)
        p_true = p.gather(1, yd_te[:, None]).squeeze(1)
        mass = class_mass_at_prior(p, yd_te, torch.bincount(y_train, minlength=K) / len(y_train))
        ls[arm].append({"alert_zero": float(p_true[zeros].ge(ALERT).float().mean()),
                        "alert_other": float(p_true[~zeros].ge(ALERT).float().mean()),
                        "acc": float((p.argmax(-1) == yd_te).float().mean()), "max_p": float(p.max()),
                        "count_ratio": float(mass["count_ratio"][RARE]), "leak": float(mass["leak_share"][RARE])})
print(f"mean of {len(SEEDS)} seeds        | alert rate at p(true) >= {ALERT} |          |           | zeros at the training mix")
print(f"{'arm':>18} | {'zeros':>13} {'other digits':>14} | {'accuracy':>8} | {'largest p':>9} | "
      f"{'predicted / true count':>22} {'share on non-zeros':>18}")
for arm, rs in ls.items():
    print(f"{arm:>18} | {mean(rs, 'alert_zero'):>13.2f} {mean(rs, 'alert_other'):>14.2f} | {mean(rs, 'acc'):>8.3f} | "
          f"{mean(rs, 'max_p'):>9.3f} | {mean(rs, 'count_ratio'):>22.2f} {mean(rs, 'leak'):>18.2f}")

# %% [markdown]
# **Claims.**
#
# * *The ceiling is not about rarity.* With smoothing, an alert above the ceiling mostly stops
#   firing for the frequent digits too (it fires only where a model overshoots its own target).
#   The lesson: a threshold tuned on hard-label confidences must be re-derived after smoothing,
#   for every class.
# * *The floor is about rarity.* For the rare zero, smoothing roughly doubles the predicted count of
#   zeros in a population with the training mix: the model learns the floor its target asks for
#   (half of the target's "zero" mass sits on non-zeros; of the model's predicted mass, more than half). For the same digit with all its images,
#   smoothing shows no effect on the count beyond 0.05. So smoothing does weaken a rare, certain label, but
#   through its mass, not through its confidence cap.
# * *Smoothing is not simply bad:* it did not cost test accuracy here (the hard-label models are not
#   more accurate by even a point).

# %%
rare_h, rare_s, freq_h, freq_s = (ls[a] for a in ("rare, hard", "rare, smoothed", "frequent, hard", "frequent, smoothed"))
claim("02.ceiling_hits_frequent_digits", mean(freq_s, "alert_other"), below=0.3, fmt=".3f",
      text=f"frequent zero set, smoothed: alert rate at p >= {ALERT} on the digits 1-9 (3 seeds)",
      control="hard labels", control_value=mean(freq_h, "alert_other"))
off_count = lambda rs: [abs(r["count_ratio"] - 1) for r in rs]  # noqa: E731
rare_rec = compare("02.rare_zero_count", off_count(rare_s), off_count(rare_h), seeds=SEEDS, arms=("smoothed", "hard labels"),
        metric="rare zero: |predicted / true count of zeros - 1| at the training mix", expect="A worse",
        higher_is_better=False, matched_on=["the same 12 kept zeros and training set (per seed)", "initialisation (per seed)",
                                            "300 full-batch AdamW steps, lr 0.01", "the same test digits"])
reveal(rare_q, verdict_of(rare_rec))
compare("02.frequent_zero_count", off_count(freq_s), off_count(freq_h), seeds=SEEDS, arms=("smoothed", "hard labels"),
        metric="frequent zero: |predicted / true count of zeros - 1| at the training mix", expect="no detectable difference",
        min_effect=0.05, higher_is_better=False,
        matched_on=["the full training set", "initialisation (per seed)", "300 full-batch AdamW steps, lr 0.01",
                    "the same test digits"])
claim("02.rare_leak_share", mean(rare_s, "leak"), above=0.4, fmt=".3f",
      text="rare zero, smoothed: share of the predicted zero-mass on non-zeros (3 seeds)",
      control="frequent zero, smoothed", control_value=mean(freq_s, "leak"))
_ = claim("02.smoothing_keeps_accuracy", mean(rare_s, "acc") - mean(rare_h, "acc"), above=-0.01, fmt=".3f",
          text="rare-zero set: test accuracy, smoothed - hard labels (3 seeds)", control="hard labels",
          control_value=mean(rare_h, "acc"))

# %% [markdown]
# ## 6. Class imbalance: which class owns the empirical risk
#
# The mean loss weighs every example equally, so every *class* in proportion to its frequency.
# `imbalanced_blobs` draws two overlapping Gaussian classes with a 5% minority. Class-balanced
# weights $w_c = N / (K n_c)$ give each class the same total weight. `weighted_ce` divides by the sum of
# the weights, $\sum_i w_i \ell_i / \sum_i w_i$, as `F.cross_entropy(weight=...)` does.

# %%
xb_tr, yb_tr = imbalanced_blobs(2000, 0.05, 2.0, generator=gen(SEEDS[0]))
cw = class_balanced_weights(yb_tr, 2)
z0 = torch.zeros(len(yb_tr), 2)                  # where training starts: a model that predicts 50/50 for everything
per0 = single_label_ce(z0, yb_tr, reduction="none")
share_plain = risk_shares(per0, yb_tr, 2)
share_weighted = risk_shares(per0, yb_tr, 2, cw[yb_tr])
wce = weighted_ce(z0, yb_tr, cw)
print(f"class sizes {torch.bincount(yb_tr).tolist()}, class-balanced weights {[round(w, 2) for w in cw.tolist()]}")
print(f"weighted_ce = {wce.value:.4f} over a denominator of {wce.denominator:.0f} (= sum of weights = N)")
check("02.plain_share_is_frequency", float(share_plain[0]), float((yb_tr == 0).float().mean()), 1e-6, fmt=".3f",
      text="majority's share of the plain risk of a 50/50 predictor (expected: its frequency)")
check("02.weighted_share_is_half", float(share_weighted[1]), 0.5, 1e-4, fmt=".3f",
      text="minority's share of the class-weighted risk")
_ = check("02.weighted_ce_is_torchs", abs(float(wce.value - F.cross_entropy(z0, yb_tr, weight=cw))), 0, 1e-6, fmt=".0f",
          text="|weighted_ce - F.cross_entropy(weight=...)|")

# %% [markdown]
# Both arms train per seed on the same 2000 points from the same initialisation; only the class
# weights differ. The data's law is known, so we can also say what an ideal classifier would do:
# with unit-variance classes $\pm 1$ apart from the origin along $x_0$, the Bayes rule for class prior
# $\pi$ predicts the minority where $x_0 > \log(\pi_0/\pi_1) / 2$. The plain mean trains under the data's
# prior; the class weights make the effective prior 50/50.

# %%
xb_te, yb_te = imbalanced_blobs(4000, 0.05, 2.0, generator=gen(TEST_SEED))
DIST = 2.0


def bayes_minority_recall(pi1):
    """Minority recall of the Bayes rule for prior pi1 (class means at x0 = -DIST/2 and +DIST/2, unit variance)."""
    boundary = torch.log(torch.tensor((1 - pi1) / pi1)) / DIST
    return float(1 - torch.special.ndtr(boundary - DIST / 2))


imb = {"plain mean": [], "class-weighted": []}
for s in SEEDS:
    xb, yb = imbalanced_blobs(2000, 0.05, DIST, generator=gen(s))
    for name, weights in (("plain mean", None), ("class-weighted", class_balanced_weights(yb, 2))):
        model = trained((2, 2, (32,)), xb, yb, lambda z, y, w=weights: weighted_ce(z, y, w).value, s, steps=200)
        pred = predict(model, xb_te, lambda z: z.argmax(-1))
        imb[name].append({"majority": float((pred[yb_te == 0] == 0).float().mean()),
                          "minority": float((pred[yb_te == 1] == 1).float().mean()),
                          "acc": float((pred == yb_te).float().mean()),
                          "bayes": bayes_minority_recall(float(yb.float().mean()) if weights is None else 0.5)})
for i, s in enumerate(SEEDS):
    for name, rs in imb.items():
        r = rs[i]
        print(f"seed {s} {name:>14}: recall majority {r['majority']:.2f}, minority {r['minority']:.2f} "
              f"(Bayes rule for its prior: {r['bayes']:.2f}) | accuracy {r['acc']:.3f}")

# %% [markdown]
# **Claim.** With the plain mean the majority owns almost all of the risk, and the model lands near
# the Bayes rule for the data's prior, which predicts the minority only deep inside its region: most
# minority examples are missed. Class weights split the risk evenly, the model lands near the Bayes
# rule for a 50/50 prior, and minority recall rises sharply, at a cost in majority recall and in
# plain accuracy (the weights change which errors the model prefers; they are a choice, not a free fix).

# %%
matched = ["the same 2000 training points (per seed)", "MLP 2-32-2 and its initialisation (per seed)",
           "200 full-batch AdamW steps, lr 0.01", "the same 4000 test points"]
compare("02.weights_minority_recall", [r["minority"] for r in imb["class-weighted"]], [r["minority"] for r in imb["plain mean"]],
        seeds=SEEDS, arms=("class-weighted", "plain mean"), metric="minority recall", expect="A better", matched_on=matched)
compare("02.weights_accuracy", [r["acc"] for r in imb["class-weighted"]], [r["acc"] for r in imb["plain mean"]],
        seeds=SEEDS, arms=("class-weighted", "plain mean"), metric="accuracy", expect="A worse", matched_on=matched)
for name in imb:
    claim(f"02.{'plain' if name == 'plain mean' else 'weighted'}_near_bayes_rule",
          abs(mean(imb[name], "minority") - mean(imb[name], "bayes")), below=0.1, fmt=".3f",
          text=f"{name}: |minority recall - Bayes rule's for its prior| (3 seeds)")

# %% [markdown]
# ### Weights must keep their meaning after the reduction
#
# A sample weight of 2 should mean "this example counts like two copies of it". Dividing by the sum
# of the weights over the **whole** batch keeps that meaning. Averaging per-micro-batch (or per-rank)
# weighted means does not: an example's influence then depends on which micro-batch it landed in.
# We read each example's influence as $\partial \text{objective} / \partial \ell_i$:

# %%
losses = torch.tensor([0.9, 0.4, 0.6, 0.5, 0.7, 0.3, 0.8, 0.2], dtype=torch.float64, requires_grad=True)
w = torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float64)    # example 0: a minority example, weight 10
parts = [slice(0, 4), slice(4, 8)]                                      # two micro-batches of 4


def global_mean(l, w):
    return (w * l).sum() / w.sum()


def mean_of_means(l, w):
    return sum((w[s] * l[s]).sum() / w[s].sum() for s in parts) / len(parts)


influence = {}
for name, objective in (("global weighted mean", global_mean), ("mean of micro-batch means", mean_of_means)):
    (g,) = torch.autograd.grad(objective(losses, w), losses)
    influence[name] = g
    print(f"{name:>26}: influence of the weight-10 example {g[0]:.3f}, of a weight-1 example beside it {g[1]:.3f}, "
          f"in the other micro-batch {g[4]:.3f}")
# the meaning test: weight 2 on example 1 == example 1 duplicated (weight 1 twice)
w2 = w.clone()
w2[1] = 2
dup_l, dup_w = torch.cat([losses.detach(), losses.detach()[1:2]]), torch.cat([w, w[1:2]])
print(f"global mean: weight 2 {float(global_mean(losses.detach(), w2)):.4f} vs duplicated {float(global_mean(dup_l, dup_w)):.4f}")

# %% [markdown]
# These are identities of the two formulas, so they are checks: under the global weighted mean the
# weight-10 example has exactly 10 times the influence of any weight-1 example, wherever they sit,
# and a weight of 2 equals a duplicate; under the mean of micro-batch means a weight-1 example counts
# more in the light micro-batch than in the heavy one, by the ratio of their weight sums (about three).

# %%
gw, mm = influence["global weighted mean"], influence["mean of micro-batch means"]
check("02.global_mean_keeps_ratio", float((gw[0] / gw[1:] - 10).abs().max()), 0, 1e-9, fmt=".0f",
      text="max |influence ratio weight-10 / weight-1 - 10|, global mean")
check("02.weight2_is_duplicate", abs(float(global_mean(losses.detach(), w2)) - float(global_mean(dup_l, dup_w))), 0, 1e-12,
      fmt=".0f", text="|weight 2 - duplicated|, global mean")
_ = check("02.mean_of_means_distorts", float(mm[4] / mm[1]), float(w[parts[0]].sum() / w[parts[1]].sum()), 1e-9, fmt=".2f",
          text="mean of means: weight-1 influence, light / heavy micro-batch (expected: heavy / light weight sum)")

# %% [markdown]
# ## 7. Try it
#
# **Exercise 1.** Write the multi-label loss of one item: `logits` and `targets` are $[N, K]$
# (targets multi-hot), return $[N]$, each the sum over the $K$ labels of an independent binary
# cross-entropy. (Use `logsigmoid` or `binary_cross_entropy_with_logits` for stability.)

# %%
def multilabel_loss(logits, targets):
    ### BEGIN SOLUTION
    return -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).sum(-1)
    ### END SOLUTION


# %%
# CHECK: 02-multilabel-loss
check_multilabel_loss(multilabel_loss)
### BEGIN HIDDEN TESTS
check_multilabel_loss(multilabel_loss, large=True)
### END HIDDEN TESTS
print("exercise 1: your loss is a sum of independent binary cross-entropies")

# %% [markdown]
# **Exercise 2.** Write the class-weighted mean cross-entropy: `logits` $[N, K]$, `labels` $[N]$,
# `class_weights` $[K]$; each example's loss is weighted by the weight of its label, and the weights
# must keep their meaning after the reduction (a batch that holds a single class gets its plain mean).

# %%
def class_weighted_ce(logits, labels, class_weights):
    ### BEGIN SOLUTION
    per = F.cross_entropy(logits, labels, reduction="none")
    w = class_weights[labels]
    return (w * per).sum() / w.sum()
    ### END SOLUTION


# %%
# CHECK: 02-class-weighted-ce
check_class_weighted_ce(class_weighted_ce)
### BEGIN HIDDEN TESTS
check_class_weighted_ce(class_weighted_ce, seed=SEED + 100)
### END HIDDEN TESTS
print("exercise 2: your weighted mean divides by the sum of the weights")

# %% [markdown]
# ## Summary
#
# | target construction | what the model learns | measured here |
# |---|---|---|
# | multi-hot → softmax | present labels share one unit of mass | its target's share on co-occurring findings; decisions recoverable by a tuned threshold, probabilities not |
# | multi-hot → BCE | each label's own probability | near 1 on both; best Brier |
# | exclusive classes → BCE | ten unrelated probabilities | same accuracy, sums far from 1 |
# | majority vote | the law of the majority (sharper than $q$) | overconfident, far from $q$ |
# | vote distribution | the annotators' distribution | calibrated |
# | label smoothing | a ceiling for every class, a floor on every other item | thresholds above the ceiling fail for all classes; a rare class's predicted count doubles |
# | plain mean on imbalanced classes | the Bayes rule for the data's prior | minority missed |
#
# This run's ledger: every claim and comparison (3 seeds inside each comparison) with its threshold
# or verdict and margin; the checks are identities, each printed above with its tolerance.

# %%
claims_only = [r for r in ledger() if r["kind"] != "check"]
_ = summary(claims_only)
print(f"and {len(ledger()) - len(claims_only)} checks, all within tolerance")
