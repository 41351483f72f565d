"""labkit.paradigms.policy: clipped surrogate, KL estimators, IPO, best-of-n, pairs, GRPO loop, gradient agreement;
and the graders of labkit.exercises.policy (notebook 11b)."""
import copy
import math

import pytest
import torch

import bad_inputs_policy
from labkit import IGNORE
from labkit.checks import ContractError
from labkit.exercises.policy import check_clipped_surrogate, check_group_advantages
from labkit.models import TinyCausalLM
from labkit.paradigms.policy import (best_of_n_examples, best_of_n_indices, clip_fraction, clipped_surrogate_loss,
                                     distinct_per_group, every, flat_grad, grpo_fit, ipo_loss, kl_penalty, mean_margin,
                                     mean_pairwise_cosine, pair_batches, pair_loss_fn, pairs_fit, policy_stats, read_at_kl,
                                     reference_pairs, rollout_gradients, sample_pairs, sft_fit)
from labkit.paradigms.preference import AnswerWorld, dpo_loss, group_advantages, policy_gradient_loss


@pytest.mark.parametrize("case", bad_inputs_policy.CASES)
def test_bad_inputs_are_refused(case):
    with pytest.raises(ContractError) as err:
        eval(case, dict(bad_inputs_policy.NAMESPACE))  # noqa: S307
    assert len(str(err.value)) > 30


# ----------------------------------------------------------------------------- objectives

def test_clipped_surrogate_at_ratio_one_is_reinforce():
    logps = torch.tensor([-1.0, -2.0, -0.5, -3.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss = clipped_surrogate_loss(logps, logps.detach(), adv)
    assert float(loss.detach()) == pytest.approx(-float(adv.mean()))
    (g1,) = torch.autograd.grad(loss, logps)
    (g2,) = torch.autograd.grad(policy_gradient_loss(logps, adv), logps)
    assert torch.allclose(g1, g2)


def test_clipped_surrogate_stops_the_gradient_past_the_clip():
    old = torch.tensor([-2.0, -2.0, -2.0, -2.0])
    logps = (old + torch.tensor([0.5, 0.5, -0.5, -0.5])).requires_grad_(True)   # rho = e^0.5 > 1.2 or e^-0.5 < 0.8
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    (g,) = torch.autograd.grad(clipped_surrogate_loss(logps, old, adv), logps)
    # rho too high with A > 0 and rho too low with A < 0 are clipped (no gradient); the other two still get one
    assert g[0] == 0 and g[2] == 0 and g[1] != 0 and g[3] != 0
    assert clip_fraction(logps, old, adv) == pytest.approx(0.5)
    per = clipped_surrogate_loss(logps, old, adv, reduction="none")
    total = clipped_surrogate_loss(logps, old, adv, reduction="sum")
    assert per.shape == (4,) and float(per.sum().detach()) == pytest.approx(float(total.detach()))


def test_kl_estimators_are_unbiased_and_k3_nonnegative():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), -1)
    q = torch.softmax(torch.randn(6, generator=g), -1)
    exact = float((p * (p / q).log()).sum())
    y = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[y], q.log()[y]
    k1, k3 = kl_penalty(logp, logq, "k1"), kl_penalty(logp, logq, "k3")
    assert float(k1) == pytest.approx(exact, abs=0.02) and float(k3) == pytest.approx(exact, abs=0.02)
    assert bool((kl_penalty(logp, logq, "k3", reduction="none") >= 0).all())
    assert float(kl_penalty(logp, logp)) == 0.0


def test_k3_as_a_loss_has_the_gradient_of_the_reverse_kl():
    # exact expectations over a 5-answer policy: the value is KL(pi || ref), the expected gradient is grad KL(ref || pi)
    theta = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), -1)
    logp = torch.log_softmax(theta, -1)
    w = logp.exp().detach()
    k3 = (w * kl_penalty(logp, ref, reduction="none")).sum()
    k1 = (w * kl_penalty(logp, ref, "k1", reduction="none")).sum()
    forward, reverse = (logp.exp() * (logp - ref)).sum(), (ref.exp() * (ref - logp)).sum()
    grad = lambda f: torch.autograd.grad(f, theta, retain_graph=True)[0]  # noqa: E731
    assert float(k3.detach()) == pytest.approx(float(forward.detach()), abs=1e-12)
    assert torch.allclose(grad(k3), grad(reverse), atol=1e-12)
    assert not torch.allclose(grad(k3), grad(forward), atol=1e-3)
    assert torch.allclose(grad(k1), torch.zeros(5, dtype=torch.float64), atol=1e-12)   # E_pi[grad log pi] = 0


def test_ipo_loss_closed_form_and_target():
    lp = torch.tensor([-1.0, -2.0])
    assert float(ipo_loss(lp, lp, lp, lp, tau=0.1)) == pytest.approx(1 / (4 * 0.1 ** 2))
    # Delta exactly at the target 1/(2 tau) = 5: zero loss
    pc = torch.tensor([-1.0]); pr = torch.tensor([-6.0]); ref = torch.tensor([-3.0])
    assert float(ipo_loss(pc, pr, ref, ref, tau=0.1)) == pytest.approx(0.0, abs=1e-9)
    # DPO at the same point still has a positive loss and gradient: it keeps pushing
    assert float(dpo_loss(pc, pr, ref, ref, beta=0.1)) > 0


# ----------------------------------------------------------------------------- selection and measurement

def test_best_of_n_indices_picks_the_first_best():
    r = torch.tensor([0.0, 1.0, 1.0, -1.0, 2.0, 0.5])
    assert best_of_n_indices(r, 3).tolist() == [1, 4]
    assert best_of_n_indices(r, 1).tolist() == list(range(6))


def test_distinct_per_group():
    assert distinct_per_group([[1, 2], [1, 2], [3], [4]], 2) == pytest.approx(1.5)


def test_read_at_kl_interpolates_on_the_first_crossing():
    traj = [{"kl": 0.0, "r": 0.0}, {"kl": 1.0, "r": 0.4}, {"kl": 3.0, "r": 0.8}, {"kl": 2.0, "r": 0.9}]
    assert read_at_kl(traj, 2.0, "r") == pytest.approx(0.6)
    assert read_at_kl(traj, 0.5, "r") == pytest.approx(0.2)


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 3.0]])) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- loops on AnswerWorld

@pytest.fixture
def small(tok):
    torch.manual_seed(0)
    model = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16).requires_grad_(False)
    return AnswerWorld(tokenizer=tok), model


def test_best_of_n_examples_mask_the_prompt_and_keep_the_best(tok, small):
    world, model = small
    prompts = [world.prompt(k) for k in world.KEYS[:3]]
    ex, stats = best_of_n_examples(model, tok, prompts, 4, world.true_reward, torch.Generator().manual_seed(0))
    assert len(ex) == 3 and stats["reward_evals"] == 12 and stats["kept_reward"] >= stats["mean_reward"]
    for e in ex:
        n_prompt = e["labels"].index(next(y for y in e["labels"] if y != IGNORE))
        assert e["labels"][:n_prompt] == [IGNORE] * n_prompt and e["labels"][n_prompt:] == e["input_ids"][n_prompt:]


def test_sample_pairs_choose_the_higher_reward(tok, small):
    world, model = small
    prompts = [world.prompt(k) for k in world.KEYS] * 3
    pairs, stats = sample_pairs(model, tok, prompts, world.true_reward, torch.Generator().manual_seed(1))
    assert stats["reward_evals"] == 60 and stats["kept"] == len(pairs)
    for p in pairs:
        n = p["prompt_len"]
        prompt = f"{tok.token(p['chosen_ids'][1])} ?"
        assert p["chosen_ids"][:n] == p["rejected_ids"][:n]
        assert world.true_reward(prompt, p["chosen_ids"][n:]) > world.true_reward(prompt, p["rejected_ids"][n:])
    batch = pair_batches(pairs, 4, tok.pad_id, seed=0)(3)
    assert batch["input_ids"].shape[0] == 8 and torch.equal(batch["index"], pair_batches(pairs, 4, tok.pad_id, seed=0)(3)["index"])


def test_grpo_fit_counts_and_moves(tok, small):
    world, model = small
    policy = copy.deepcopy(model).requires_grad_(True)
    before = [p.clone() for p in policy.parameters()]
    prompts = lambda g: [world.prompt(world.KEYS[i]) for i in torch.randint(10, (2,), generator=g).tolist()]  # noqa: E731
    parity = lambda prompt, response: float(response[0] % 2)     # an untrained model never stops: reward its first token  # noqa: E731
    hist = grpo_fit(policy, model, tok, prompts, parity, iters=3, group_size=4, epochs=2, seed=0)
    assert [h["reward_evals"] for h in hist] == [8, 16, 24] and hist[-1]["grad_steps"] == 6
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-5)         # first samples come from pi = ref
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    stats = policy_stats(policy, tok, [world.prompt("A")], 4, {"r": world.true_reward}, torch.Generator().manual_seed(0),
                         reference=model)
    assert set(stats) == {"r", "distinct", "entropy", "kl"} and 1 <= stats["distinct"] <= 4


def test_sft_fit_trains_in_place_and_freezes(tok, small):
    world, model = small
    examples = world.sft_examples(64, seed=0)
    m = copy.deepcopy(model)
    before = [p.clone() for p in m.parameters()]
    seen = []
    out = sft_fit(m, examples, tok.pad_id, steps=4, lr=1e-2, batch_size=16, callback=every(2, lambda mod: 1, seen))
    assert out is m and not any(p.requires_grad for p in m.parameters()) and seen == [1, 1]
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_reference_pairs_margin_and_pairs_fit(tok, small):
    world, model = small
    g = torch.Generator().manual_seed(2)
    parity = lambda prompt, response: float(response[0] % 2)     # an untrained model never stops: reward its first token  # noqa: E731
    data = reference_pairs(model, tok, [world.prompt(k) for k in world.KEYS] * 4, parity, g)
    assert data["reward_evals"] == 80 and data["kept"] == len(data["pairs"]) == data["ref_chosen"].shape[0]
    assert mean_margin(model, data, tok.pad_id) == pytest.approx(0.0, abs=1e-5)     # pi = ref: Delta = 0
    batch = pair_batches(data["pairs"], 4, tok.pad_id, seed=0)(0)
    assert float(pair_loss_fn(dpo_loss, data, 0.1)(model, batch)) == pytest.approx(math.log(2), abs=1e-5)
    assert float(pair_loss_fn(ipo_loss, data, 0.1)(model, batch)) == pytest.approx(25.0, abs=1e-3)
    policy = pairs_fit(copy.deepcopy(model), data, dpo_loss, 0.1, steps=5, lr=1e-2, pad_id=tok.pad_id, batch_size=8)
    assert mean_margin(policy, data, tok.pad_id) > 0 and not any(p.requires_grad for p in policy.parameters())


def test_rollout_gradients_share_one_rollout(tok, small):
    world, model = small
    m = copy.deepcopy(model).requires_grad_(True)
    parity = lambda prompt, response: float(response[0] % 2)  # noqa: E731
    prompts = [world.prompt("A")] * 4 + [world.prompt("B")] * 4
    arms = {"r": lambda r: r, "2r": lambda r: 2 * r, "r+1": lambda r: r + 1}
    g = rollout_gradients(m, tok, prompts, parity, arms, torch.Generator().manual_seed(0))
    assert torch.allclose(g["2r"], 2 * g["r"], atol=1e-6)          # same samples: scaling A scales the gradient
    assert g["r"].shape == g["r+1"].shape == (sum(p.numel() for p in m.parameters()),)


def test_flat_grad_matches_backward(small):
    _, model = small
    m = copy.deepcopy(model).requires_grad_(True)
    x = torch.randint(5, 20, (2, 5))
    loss = m(x).float().pow(2).mean()
    g = flat_grad(m, loss, retain_graph=True)
    loss.backward()
    assert torch.allclose(g, torch.cat([p.grad.flatten() for p in m.parameters()]))


# ----------------------------------------------------------------------------- exercise graders

def _adv(unbiased, eps):
    def fn(r, n):
        g = r.view(-1, n)
        return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, unbiased=unbiased, keepdim=True) + eps)).flatten()
    return fn


@pytest.mark.parametrize("fn", [_adv(True, 1e-4), _adv(False, 1e-6), lambda r, n: group_advantages(r, n)])
def test_group_advantage_grader_accepts_correct_solutions(fn):
    for seed in range(3):
        check_group_advantages(fn, seed)


def _adv_inside(r, n):
    g = r.view(-1, n)
    return ((g - g.mean(-1, keepdim=True)) / (g.var(-1, keepdim=True) + 1e-8).sqrt()).flatten()


@pytest.mark.parametrize("fn", [_adv(True, 1e-3), _adv(False, 1e-3), _adv_inside])
def test_group_advantage_grader_accepts_any_small_eps_and_notebook_rewards(fn):
    check_group_advantages(fn, seed=1)
    probe = torch.tensor([1.0] * 8 + [1, -0.25, 0, -0.5, 1, 0, 0, -1] + [0.0] * 7 + [1.0])   # a tied group, two mixed
    check_group_advantages(fn, rewards=probe, group_size=8)


@pytest.mark.parametrize("fn,match", [(_adv(True, 0.0), "NaN"), (lambda r, n: (r - r.mean()) / (r.std() + 1e-4), "SAME prompt"),
                                      (lambda r, n: -_adv(True, 1e-4)(r, n), "sign")])
def test_group_advantage_grader_names_the_mistake(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_group_advantages(fn)


def _surrogate_where(lp, old, a, eps):
    rho = (lp - old).exp()
    return torch.where(a >= 0, -rho.clamp(max=1 + eps) * a, -rho.clamp(min=1 - eps) * a).mean()


@pytest.mark.parametrize("fn", [lambda lp, o, a, e: clipped_surrogate_loss(lp, o, a, e), _surrogate_where])
def test_clipped_surrogate_grader_accepts_correct_solutions(fn):
    for seed in range(3):
        check_clipped_surrogate(fn, seed)


@pytest.mark.parametrize("fn,match", [
    (lambda lp, o, a, e: -torch.maximum((lp - o).exp() * a, (lp - o).exp().clamp(1 - e, 1 + e) * a).mean(), "MIN"),
    (lambda lp, o, a, e: -((lp - o).exp() * a).mean(), "no clipping"),
    (lambda lp, o, a, e: -torch.minimum((lp - o).exp() * a, (lp - o).exp().clamp(1 - e, 1 + e) * a).sum(), "summed"),
])
def test_clipped_surrogate_grader_names_the_mistake(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_clipped_surrogate(fn)
