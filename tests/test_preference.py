"""Preference records, response masks, sequence log-probs, Bradley-Terry, DPO, policy gradient."""
import dataclasses
import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from labkit import IGNORE
from labkit.checks import ContractError, trained_targets
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_token_losses
from labkit.paradigms.preference import (RECORD_FIELDS, TEMPLATE_VERSION, AnswerWorld, PreferenceRecord,
                                         RewardModel, assert_same_prompt, batch_logprob, bradley_terry_loss,
                                         build_pair, chat_example, collate_pairs, default_preferences_path,
                                         dpo_loss, expected_pair_accuracy, group_advantages, implicit_rewards,
                                         kl_shaped_rewards, load_preferences, pair_accuracy, policy_gradient_fit,
                                         policy_gradient_loss, preferences_jsonl, rollout, sample_log_ratios,
                                         sequence_logprob, tokenizer_version, validate_record, write_preferences)


@pytest.fixture
def record(tok):
    return {"prompt": "C ?", "chosen": "3 good", "rejected": "5", "generator_policy": "answerworld-sft-v0",
            "sampling_temperature": 1.0, "sampling_top_p": 0.9, "judge_source": "unit test",
            "template_version": TEMPLATE_VERSION, "tokenizer_version": tokenizer_version(tok)}


# ----------------------------------------------------------------------------- records

def test_validate_record_accepts_a_complete_record(record):
    r = validate_record(record)
    assert isinstance(r, PreferenceRecord) and r.to_dict() == record
    assert validate_record(dict(record, sampling_temperature=0)).sampling_temperature == 0   # ints are numbers


@pytest.mark.parametrize("field", list(RECORD_FIELDS))
def test_validate_record_names_a_missing_field(record, field):
    del record[field]
    with pytest.raises(ContractError, match=f"line 7: field '{field}' is missing"):
        validate_record(record, line=7)


@pytest.mark.parametrize("field,value", [("prompt", 3), ("chosen", None), ("sampling_temperature", "1.0"),
                                         ("sampling_top_p", True), ("judge_source", ["a"]), ("tokenizer_version", 1.5)])
def test_validate_record_names_an_ill_typed_field(record, field, value):
    record[field] = value
    with pytest.raises(ContractError, match=f"line 2: field '{field}' must be"):
        validate_record(record, line=2)


@pytest.mark.parametrize("change,match", [({"choosen": "x"}, "unknown field"), ({"rejected": "3 good"}, "no preference"),
                                          ({"sampling_temperature": -1.0}, ">= 0"), ({"sampling_top_p": 0.0}, r"\(0, 1\]"),
                                          ({"sampling_top_p": 1.5}, r"\(0, 1\]"), ({"chosen": "  "}, "empty")])
def test_validate_record_refuses_bad_values(record, change, match):
    with pytest.raises(ContractError, match=match):
        validate_record({**record, **change})
    with pytest.raises(ContractError, match="JSON object"):
        validate_record([record])


def _write(tmp_path, lines):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_preferences_reads_and_skips_blank_lines(tmp_path, record):
    path = _write(tmp_path, [json.dumps(record), "", json.dumps(dict(record, prompt="D ?"))])
    records = load_preferences(path)
    assert [r.prompt for r in records] == ["C ?", "D ?"]


def test_load_preferences_validates_the_whole_file_first(tmp_path, record):
    good = json.dumps(record)
    bad = dict(record)
    bad.pop("template_version")
    with pytest.raises(ContractError, match="line 4: field 'template_version' is missing"):
        load_preferences(_write(tmp_path, [good, good, good, json.dumps(bad), good]))
    with pytest.raises(ContractError, match="line 2: field 'sampling_top_p' must be a number"):
        load_preferences(_write(tmp_path, [good, json.dumps(dict(record, sampling_top_p="0.9"))]))
    with pytest.raises(ContractError, match="line 3: malformed JSON"):
        load_preferences(_write(tmp_path, [good, good, good[:-3], good]))
    with pytest.raises(ContractError, match="no preference records"):
        load_preferences(_write(tmp_path, ["", "  "]))
    with pytest.raises(ContractError, match="not found"):
        load_preferences(tmp_path / "missing.jsonl")


def test_shipped_preferences_regenerate_bit_for_bit(tmp_path):
    shipped = default_preferences_path()
    digest = write_preferences(tmp_path / "again.jsonl")
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest
    records = load_preferences(shipped)
    assert len(records) == 800 and all(r.template_version == TEMPLATE_VERSION for r in records)
    assert digest in (shipped.parent / "README.md").read_text(), "data/README.md lists the checksum"


def test_make_records_is_seeded_and_drops_ties():
    world = AnswerWorld()
    a, b = world.make_records(50, seed=3), world.make_records(50, seed=3)
    assert preferences_jsonl(a) == preferences_jsonl(b) != preferences_jsonl(world.make_records(50, seed=4))
    for r in a:
        validate_record(r.to_dict())
        assert world.judge_score(r.prompt, r.chosen) != world.judge_score(r.prompt, r.rejected)
    with_ties = world.make_records(400, seed=0, drop_ties=False)
    assert any(world.judge_score(r.prompt, r.chosen) == world.judge_score(r.prompt, r.rejected) for r in with_ties)


# ----------------------------------------------------------------------------- the world

def test_answer_world_scores(tok):
    world = AnswerWorld(tokenizer=tok)
    assert sorted(world.answer(k) for k in world.KEYS) == [str(d) for d in range(10)]   # a bijection
    right = world.answer("C")
    assert world.parse("C ?", f"{right} good and") == (True, 2)
    assert world.parse("C ?", "x") == (False, 0)
    ids = tok.encode(f"{right} the") + [tok.eos_id]
    assert world.parse("C ?", ids) == (True, 1)
    assert world.parse("C ?", tok.encode(f"{right} the")) == (False, 1)   # never stopped: not an answer
    assert world.true_reward("C ?", ids) == 1 - 0.25 and world.proxy_reward("C ?", ids) == 1.5
    assert world.judge_score("C ?", ids) == 2.0
    assert abs(world.preference_probability("C ?", right, "x") - 1 / (1 + math.exp(-2))) < 1e-12
    with pytest.raises(ContractError, match="key"):
        world.parse("Z ?", "1")
    with pytest.raises(ContractError, match="sum to 1"):
        AnswerWorld(length_probs_wrong=(0.5, 0.4))


def test_sft_examples_mask_the_prompt(tok):
    for ex in AnswerWorld(tokenizer=tok).sft_examples(20, seed=0):
        n_prompt = ex["input_ids"].index(tok.assistant_id) + 1
        assert all(label == IGNORE for label in ex["labels"][:n_prompt])
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:] and ex["labels"][-1] == tok.eos_id


# ----------------------------------------------------------------------------- pairs and masks

def test_chat_example_marks_the_response(tok):
    ids, mask = chat_example(tok, "C ?", "3 good")
    assert tok.decode(ids) == "<user> C ? <assistant> 3 good <eos>"
    assert mask == [0, 0, 0, 0, 1, 1, 1]


def test_build_pair_and_its_refusals(tok, record):
    pair = build_pair(validate_record(record), tok)
    assert pair["prompt_len"] == 4 and pair["chosen_ids"][:4] == pair["rejected_ids"][:4]
    with pytest.raises(ContractError, match="chat template"):
        build_pair(validate_record(dict(record, template_version="chatml-v0")), tok)
    with pytest.raises(ContractError, match="tokenizer"):
        build_pair(validate_record(dict(record, tokenizer_version="gpt2")), tok)


def test_assert_same_prompt_refuses_other_prompts_and_masks(tok):
    c_ids, c_mask = chat_example(tok, "C ?", "3 good")
    r_ids, r_mask = chat_example(tok, "D ?", "5")
    with pytest.raises(ContractError, match="different prompts"):
        assert_same_prompt(c_ids, c_mask, r_ids, r_mask)
    no_marker = [tok.user_id] + tok.encode("C ? 5") + [tok.eos_id]
    with pytest.raises(ContractError, match="different prompts"):
        assert_same_prompt(c_ids, c_mask, no_marker, [0, 0, 0, 1, 1])
    with pytest.raises(ContractError, match="one block"):
        assert_same_prompt(c_ids, [0, 0, 0, 0, 1, 0, 1], c_ids, c_mask)
    with pytest.raises(ContractError, match="no response token"):
        assert_same_prompt(c_ids, [0] * 7, c_ids, c_mask)
    with pytest.raises(ContractError, match="token 0"):
        assert_same_prompt(c_ids, [1] * 7, c_ids, c_mask)
    assert assert_same_prompt(c_ids, c_mask, *chat_example(tok, "C ?", "5")) == 4


def test_collate_pairs_puts_chosen_first(tok, record):
    pairs = [build_pair(validate_record(record), tok), build_pair(validate_record(dict(record, chosen="4 a a a")), tok)]
    batch = collate_pairs(pairs, tok.pad_id)
    assert batch["input_ids"].shape == (4, 9)
    assert batch["input_ids"][0, :7].tolist() == pairs[0]["chosen_ids"]
    assert batch["input_ids"][2, :6].tolist() == pairs[0]["rejected_ids"]
    assert batch["response_mask"].sum(-1).tolist() == [3, 5, 2, 2]
    assert batch["attention_mask"].sum(-1).tolist() == [7, 9, 6, 6]


# ----------------------------------------------------------------------------- sequence log-probs

def _random_batch(seed=0, B=4, T=9, V=13):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (start, end) in enumerate([(3, 9), (5, 7), (2, 4), (8, 9)]):   # rows 1, 2 end with padding
        mask[b, start:end] = 1
    return logits, ids, mask


def trl_style_logps(logits, input_ids, completion_mask):
    """trl's DPO recipe, written independently: shift logits/labels/mask, gather, zero off-mask, sum."""
    shift_logits, shift_labels, shift_mask = logits[:, :-1], input_ids[:, 1:], completion_mask[:, 1:]
    per_token = torch.gather(shift_logits.log_softmax(-1), 2, shift_labels.unsqueeze(-1)).squeeze(-1)
    per_token = per_token.masked_fill(shift_mask == 0, 0.0)
    return per_token.sum(1)


def test_sequence_logprob_matches_an_independent_trl_style_definition():
    logits, ids, mask = _random_batch()
    got = sequence_logprob(logits, ids, mask)
    assert torch.allclose(got.double(), trl_style_logps(logits, ids, mask), atol=1e-5)
    assert torch.allclose(sequence_logprob(logits, ids, mask, reduction="token_mean").double(),
                          trl_style_logps(logits, ids, mask) / mask.sum(-1), atol=1e-5)


def test_sequence_logprob_uses_the_causal_shift_and_response_tokens_only():
    logits, ids, mask = _random_batch(1)
    losses, _ = causal_lm_token_losses(logits, ids.masked_fill(mask == 0, IGNORE), shift=True)
    assert torch.allclose(sequence_logprob(logits, ids, mask), -losses.sum(-1), atol=1e-6)
    targets = trained_targets(lambda z, y: -sequence_logprob(z, y, mask[:1]).sum(), ids[:1], logits.shape[-1])
    assert targets[:2] == [None, None] and targets[2:8] == ids[0, 3:9].tolist() and targets[8] is None
    perturbed = logits.clone()
    perturbed[0, :2] += 5.0                      # logits that score prompt tokens
    perturbed[1, 7:] -= 3.0                      # logits after the response (padding)
    assert torch.allclose(sequence_logprob(perturbed, ids, mask)[:2], sequence_logprob(logits, ids, mask)[:2])


def test_sequence_logprob_refuses_bad_masks():
    logits, ids, mask = _random_batch()
    with pytest.raises(ContractError, match="token 0"):
        sequence_logprob(logits, ids, torch.ones_like(mask))
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ContractError, match=r"rows \[1\]"):
        sequence_logprob(logits, ids, empty)
    with pytest.raises(ContractError, match="-100"):
        sequence_logprob(logits, ids.masked_fill(mask == 1, IGNORE), mask)
    with pytest.raises(ContractError, match="response_mask"):
        sequence_logprob(logits, ids, mask[:, :-1])


# ----------------------------------------------------------------------------- Bradley-Terry and DPO

def test_bradley_terry_loss_formula_and_margin():
    rc, rr = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.5])
    assert torch.allclose(bradley_terry_loss(rc, rr), -torch.log(torch.sigmoid(rc - rr)).mean())
    # trl RewardTrainer: -logsigmoid(chosen - rejected - margin).mean(), per-pair margin
    margin = torch.tensor([0.5, 1.0, 0.0])
    assert torch.allclose(bradley_terry_loss(rc, rr, margin), -F.logsigmoid(rc - rr - margin).mean())
    assert bradley_terry_loss(rc, rr, 1.0) > bradley_terry_loss(rc, rr)
    with pytest.raises(ContractError, match="margin"):
        bradley_terry_loss(rc, rr, torch.ones(2))
    with pytest.raises(ContractError, match=r"\[B\]"):
        bradley_terry_loss(rc, rr[:2])
    assert pair_accuracy(rc, rr) == pytest.approx(1 / 3) and pair_accuracy(torch.ones(2), torch.ones(2)) == 0.5


def trl_v0_dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                    beta, label_smoothing=0.0):
    """trl's (v0.x) sigmoid DPO loss, written independently from its published definition."""
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps)
    return losses, chosen_rewards, rejected_rewards


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_matches_the_formula_and_trl(beta):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = ((torch.randn(16, generator=g, dtype=torch.float64) * 4 - 10).clamp(max=-0.1) for _ in range(4))
    delta = (pc - rc) - (pr - rr)
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta), -torch.log(torch.sigmoid(beta * delta)).mean())
    losses, chosen_r, rejected_r = trl_v0_dpo_loss(pc, pr, rc, rr, beta)
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta), losses.mean())
    assert torch.allclose(implicit_rewards(pc, rc, beta), chosen_r)
    assert torch.allclose(implicit_rewards(pr, rr, beta), rejected_r)


def test_dpo_loss_at_the_reference_gradient_and_refusals():
    ref = torch.tensor([-5.0, -7.0])
    assert abs(float(dpo_loss(ref, ref - 1, ref, ref - 1)) - math.log(2)) < 1e-6
    pc = torch.tensor([-4.0, -6.0], requires_grad=True)
    pr, rc, rr = torch.tensor([-6.0, -5.0]), torch.tensor([-5.0, -5.0]), torch.tensor([-5.0, -5.0])
    dpo_loss(pc, pr, rc, rr, beta=0.5).backward()
    delta = (pc.detach() - rc) - (pr - rr)
    assert torch.allclose(pc.grad, -0.5 * torch.sigmoid(-0.5 * delta) / 2)   # -beta sigma(-beta delta) / B
    with pytest.raises(ContractError, match="frozen"):
        dpo_loss(pc, pr, rc.clone().requires_grad_(True), rr)
    with pytest.raises(ContractError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ContractError, match="four"):
        dpo_loss(pc, pr[:1], rc, rr)


# ----------------------------------------------------------------------------- policy gradient

def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    a = group_advantages(r, 4)
    assert torch.allclose(a.view(2, 4).mean(-1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(a[:4], (r[:4] - 0.5) / (r[:4].std() + 1e-4))
    assert torch.equal(a[4:], torch.zeros(4))                       # a group that agrees teaches nothing
    assert torch.allclose(group_advantages(r, 4, normalize=False)[:4], r[:4] - 0.5)
    with pytest.raises(ContractError, match="multiple"):
        group_advantages(r, 3)


def test_policy_gradient_loss_and_kl_shaping():
    logps = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5])
    policy_gradient_loss(logps, adv).backward()
    assert torch.allclose(logps.grad, -adv / 3)
    shaped = kl_shaped_rewards(torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -4.0]), torch.tensor([-2.0, -2.0]), 0.5)
    assert torch.allclose(shaped, torch.tensor([0.5, 2.0]))
    with pytest.raises(ContractError, match="match"):
        policy_gradient_loss(logps, adv[:2])


def test_reward_model_from_policy_and_rollout(tok):
    torch.manual_seed(0)
    policy = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    rm = RewardModel.from_policy(policy)
    assert torch.equal(rm.backbone.tok.weight, policy.tok.weight) and rm.backbone.tok.weight is not policy.tok.weight
    batch = rollout(policy, tok, ["C ?", "D ?", "E ?"], max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape[0] == 3
    assert batch["response_mask"].sum(-1).tolist() == [len(r) for r in batch["responses"]]
    assert torch.equal(rm(batch["input_ids"], batch["attention_mask"]), torch.zeros(3))   # zero head
    assert RewardModel(len(tok), d_model=16, max_len=16)(batch["input_ids"], batch["attention_mask"]).shape == (3,)
    logps = batch_logprob(policy, batch)
    assert logps.shape == (3,) and (logps <= 0).all()
    with pytest.raises(ContractError, match="TinyTransformer"):
        RewardModel.from_policy(torch.nn.Linear(2, 2))


def test_policy_gradient_fit_moves_towards_the_reward(tok):
    torch.manual_seed(0)
    world = AnswerWorld(tokenizer=tok)
    policy = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    reference = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    right = {tok.stoi[world.answer(k)] for k in world.KEYS}
    even = lambda p, r: float(r[0] % 2 == 0)  # noqa: E731   a dense toy reward: the first token has an even id
    hist = policy_gradient_fit(policy, tok, lambda g: ["C ?", "D ?"], even, iters=30, lr=1e-2, max_new_tokens=2,
                               kl_coef=0.01, reference=reference, track={"right": lambda p, r: float(r[0] in right)})
    assert set(hist[0]) == {"reward", "logp_per_token", "kl", "right"}     # kl: a reference was given
    assert sum(h["reward"] for h in hist[-5:]) / 5 > sum(h["reward"] for h in hist[:5]) / 5 + 0.2
    with pytest.raises(ContractError, match="reference"):
        policy_gradient_fit(policy, tok, lambda g: ["C ?"], even, iters=1, kl_coef=0.1)


def test_policy_gradient_fit_offline_sampler_trains_on_the_generator(tok):
    """sampler= replaces the policy's own samples: the trained answers are the generator's (half right,
    padded), whatever the policy does; without a reference there is no kl entry."""
    torch.manual_seed(0)
    world = AnswerWorld(tokenizer=tok)
    policy = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    right = lambda p, r: float(world.parse(p, r)[0])  # noqa: E731
    hist = policy_gradient_fit(policy, tok, lambda g: ["C ?", "D ?", "E ?", "F ?"], right, iters=6, lr=1e-2,
                               sampler=world.generator_batch, track={"right": right})
    assert "kl" not in hist[0]
    share = sum(h["right"] for h in hist) / len(hist)
    assert 0.3 < share < 0.7                       # the generator is right half of the time, the policy never samples


def test_generator_batch_matches_rollout_format(tok):
    world = AnswerWorld(tokenizer=tok)
    prompts = ["C ?", "D ?", "C ?"]
    b = world.generator_batch(prompts, torch.Generator().manual_seed(0))
    assert b["input_ids"].shape[0] == 3 and all(r[-1] == tok.eos_id for r in b["responses"])
    assert b["response_mask"].sum(-1).tolist() == [len(r) for r in b["responses"]]
    for p, ids, mask in zip(prompts, b["input_ids"].tolist(), b["response_mask"].tolist()):
        start = mask.index(1)
        prompt_ids = tok.encode_chat([{"role": "user", "content": p}], add_generation_prompt=True)[0]
        assert ids[:start] == prompt_ids


def test_sample_log_ratios_is_zero_for_the_reference_and_estimates_kl(tok):
    torch.manual_seed(0)
    policy = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    batch = rollout(policy, tok, ["C ?"] * 64, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_log_ratios(policy, policy, batch), torch.zeros(64))
    other = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=16)
    ratios = sample_log_ratios(policy, other, batch)
    assert ratios.shape == (64,) and float(ratios.mean()) > 0        # KL(pi || other) > 0 on pi's own samples


def test_expected_pair_accuracy_against_a_known_judge():
    p = torch.tensor([0.9, 0.8, 0.5, 0.3])
    assert expected_pair_accuracy(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.zeros(4), p) == pytest.approx((0.9 + 0.8 + 0.5 + 0.3) / 4)
    assert expected_pair_accuracy(torch.zeros(4), torch.ones(4), p) == pytest.approx((0.1 + 0.2 + 0.5 + 0.7) / 4)
    best = torch.where(p >= 0.5, 1.0, -1.0)                          # rank as the judge does: the ceiling
    assert expected_pair_accuracy(best, torch.zeros(4), p) == pytest.approx(float(torch.maximum(p, 1 - p).mean()))
    with pytest.raises(ContractError, match="one probability per pair"):
        expected_pair_accuracy(torch.zeros(4), torch.zeros(4), p[:3])


# ----------------------------------------------------------------------------- exercise checks


def test_record_dataclass_round_trip(record):
    r = validate_record(record)
    assert dataclasses.replace(r, prompt="D ?").prompt == "D ?"
    assert json.loads(preferences_jsonl([r]))["chosen"] == "3 good"


def test_render_dpo_weights_sum_vs_mean():
    import time

    from labkit.widgets import DPO_DEMO_PAIR, DPOWeightsPanel, render_dpo_weights

    start = time.perf_counter()
    summed = render_dpo_weights(0.3, reduction="sum")
    assert time.perf_counter() - start < 0.1
    mean = render_dpo_weights(0.3, reduction="token_mean")
    delta = sum(DPO_DEMO_PAIR["chosen_logratios"]) - sum(DPO_DEMO_PAIR["rejected_logratios"])
    assert summed["delta"] == pytest.approx(delta) and summed["loss"] == pytest.approx(float(-F.logsigmoid(torch.tensor(0.3 * delta))))
    # the gradient of dpo_loss w.r.t. each token's log-prob, measured by autograd
    c = torch.tensor(DPO_DEMO_PAIR["chosen_logratios"], dtype=torch.float64, requires_grad=True)
    r = torch.tensor(DPO_DEMO_PAIR["rejected_logratios"], dtype=torch.float64, requires_grad=True)
    for state, agg in ((summed, torch.sum), (mean, torch.mean)):
        c.grad = r.grad = None
        ref = torch.full((1,), -100.0, dtype=torch.float64)   # log-ratios ride on a reference log-prob
        dpo_loss(agg(c)[None] + ref, agg(r)[None] + ref, ref, ref, 0.3).backward()
        assert torch.allclose(-c.grad, torch.tensor(state["chosen_weights"], dtype=torch.float64))
        assert torch.allclose(r.grad, torch.tensor(state["rejected_weights"], dtype=torch.float64))
    assert sum(mean["chosen_weights"]) == pytest.approx(sum(mean["rejected_weights"]))   # each answer weighs the same
    assert sum(summed["chosen_weights"]) > 2 * sum(summed["rejected_weights"])          # the long answer dominates
    with pytest.raises(ContractError, match="beta"):
        render_dpo_weights(0.0)
    panel = DPOWeightsPanel()
    panel.mode.value = "token_mean"
    panel.beta.value = 1.0
    assert panel.renders == 3 and panel.state["text"].startswith("mean") and "beta 1" in panel.state["text"]
