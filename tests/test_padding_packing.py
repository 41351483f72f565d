"""Padding, positions, KV-cache decoding, packing sensitivity, SFT masks and the instruction data
(notebooks 04 and 05), with cross-checks against transformers."""
import hashlib
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from labkit import IGNORE
from labkit.batch import arange_positions, collate, pack, pad, position_ids_from_mask
from labkit.checks import ContractError, audit
from labkit.data import (INSTRUCTION_TASKS, MarkovWorld, instruction_answer, load_instructions, make_instructions,
                         write_instructions)
from labkit.models import HFLogits, TinyCausalLM
from labkit.paradigms.autoregressive import (completion_example, continuation_logits, cross_document_sensitivity,
                                             decode_agreement, generate, generate_cached, next_positions)
from labkit.exercises.autoregressive import (check_block_mask, check_next_positions, check_position_ids,
                                             check_sft_labels)
from labkit.viz import length_histogram
from labkit.widgets import PaddingPanel, render_padding

ROOT = Path(__file__).resolve().parents[1]
transformers = pytest.importorskip("transformers")


def tiny(vocab=40, **kw):
    torch.manual_seed(0)
    return TinyCausalLM(vocab, d_model=16, n_layers=2, n_heads=2, max_len=32, **kw).eval()


PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1], [1, 12, 13, 14]]


# ----------------------------------------------------------------------------- instruction data

def test_instruction_answers():
    items = ["3", "1", "2"]
    assert instruction_answer("reverse", items) == ["2", "1", "3"]
    assert instruction_answer("sort", items) == ["1", "2", "3"]
    assert instruction_answer("copy", items) == items
    assert instruction_answer("count", items) == ["3"]
    assert instruction_answer("sort", ["C", "A", "B"]) == ["A", "B", "C"]
    with pytest.raises(ContractError, match="unknown instruction task"):
        instruction_answer("add", items)
    with pytest.raises(ContractError, match="at least one"):
        instruction_answer("copy", [])


def test_make_instructions_is_seeded_and_balanced(tok):
    a, b = make_instructions(40, seed=3), make_instructions(40, seed=3)
    assert a == b and a != make_instructions(40, seed=4)
    assert [r["task"] for r in a[:4]] == list(INSTRUCTION_TASKS)
    for r in a:
        task, *items = r["messages"][0]["content"].split()
        assert 2 <= len(items) <= 5 and r["messages"][1]["content"].split() == instruction_answer(task, items)
        assert tok.unk_id not in tok.encode_chat(r["messages"])[0], "every word is in the chapter's vocabulary"
    with pytest.raises(ContractError, match="min_items"):
        make_instructions(5, min_items=4, max_items=2)


def test_data_file_is_the_seeded_generator_output(tmp_path):
    path = ROOT / "data" / "instructions.jsonl"
    digest = write_instructions(tmp_path / "again.jsonl")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "data/instructions.jsonl must equal write_instructions()"
    assert digest in (ROOT / "data" / "README.md").read_text(), "data/README.md must list the file's sha256"
    records = load_instructions()
    assert len(records) == 2000 and {r["task"] for r in records} == set(INSTRUCTION_TASKS)


def test_load_instructions_refuses_wrong_answers(tmp_path):
    bad = {"task": "sort", "messages": [{"role": "user", "content": "sort 3 1"}, {"role": "assistant", "content": "3 1"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(ContractError, match="not the task's answer"):
        load_instructions(tmp_path / "bad.jsonl")
    with pytest.raises(ContractError, match="not found"):
        load_instructions(tmp_path / "missing.jsonl")


def test_chat_template_masks_equal_labkit_on_the_data_file(tok):
    """Cross-check: transformers' assistant mask == labkit's completion mask, on every record."""
    records = load_instructions()
    out = tok.to_hf().apply_chat_template([r["messages"] for r in records], tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
    for r, ids, amask in zip(records, out["input_ids"], out["assistant_masks"]):
        mine_ids, mine_mask = tok.encode_chat(r["messages"])
        assert (list(ids), list(amask)) == (mine_ids, mine_mask)
        start = list(amask).index(1)
        ex = completion_example(list(ids[:start]), list(ids[start:]))
        assert [y != IGNORE for y in ex["labels"]] == [bool(m) for m in amask]


def test_markov_sentences(tok):
    world = MarkovWorld(tokenizer=tok)
    sents = world.sample_sentences(200, torch.Generator().manual_seed(0), max_len=12)
    assert len(sents) == 200 and all(s[0] == tok.bos_id and s[-1] == tok.eos_id and len(s) <= 12 for s in sents)
    assert all(world.legal_rate(s) == 1.0 for s in sents)
    assert sents == world.sample_sentences(200, torch.Generator().manual_seed(0), max_len=12)
    with pytest.raises(ContractError, match="max_len"):
        world.sample_sentences(3, max_len=2)


# ----------------------------------------------------------------------------- positions and decoding

def test_decode_agreement_mask_vs_arange():
    model = tiny()
    good = decode_agreement(model, PROMPTS, 5, pad_id=0, positions="mask")
    assert good["mismatch"] == [] and good["max_logit_diff"] < 1e-5 and good["batched"] == good["alone"]
    bad = decode_agreement(model, PROMPTS, 5, pad_id=0, positions="arange")
    assert bad["max_logit_diff"] > 1e-2
    assert 0 not in bad["mismatch"], "the longest prompt has no padding: its positions are right either way"


def test_continuation_logits_equal_stepwise_decoding():
    model = tiny()
    new = generate(model, PROMPTS, 4, pad_id=0)
    logits = continuation_logits(model, PROMPTS, new, pad_id=0)
    assert logits.shape == (len(PROMPTS), 4, 40)
    assert logits.argmax(-1).tolist() == new     # greedy: each step's argmax is the token generated
    with pytest.raises(ContractError, match="share one length"):
        continuation_logits(model, PROMPTS[:2], [[1], [1, 2]], pad_id=0)
    with pytest.raises(ContractError, match="continuations"):
        continuation_logits(model, PROMPTS, new[:1], pad_id=0)


def test_kv_cache_prefill_equals_forward():
    model = tiny()
    ids, mask = pad(PROMPTS, 0, side="left")
    pos = position_ids_from_mask(mask)
    logits, past = model.forward_cached(ids, mask, pos)
    assert torch.allclose(logits, model(ids, attention_mask=mask, position_ids=pos), atol=1e-5)
    assert len(past) == 2 and past[0][0].shape == (4, 2, ids.shape[1], 8)


def test_kv_cache_positions_own_vs_padded():
    model = tiny()
    full = generate(model, PROMPTS, 6, pad_id=0)
    own = generate_cached(model, PROMPTS, 6, pad_id=0, next_position="own")
    assert own["tokens"] == full
    assert torch.allclose(own["logits"], continuation_logits(model, PROMPTS, own["tokens"], 0), atol=1e-5)
    padded = generate_cached(model, PROMPTS, 6, pad_id=0, next_position="padded")
    ref = continuation_logits(model, PROMPTS, padded["tokens"], 0)
    assert (padded["logits"] - ref).abs().amax((1, 2))[1:].min() > 1e-3, "every padded row continues at the wrong position"
    assert torch.allclose(padded["logits"][0], ref[0], atol=1e-5), "the longest row is unaffected"
    with pytest.raises(ContractError, match="next_position"):
        generate_cached(model, PROMPTS, 2, 0, next_position="column")


def test_forward_cached_refuses_bad_input():
    model = tiny()
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ContractError, match="position_ids"):
        model.forward_cached(ids, torch.ones(1, 3), None)
    with pytest.raises(ContractError, match="P\\+S"):
        model.forward_cached(ids, torch.ones(1, 2), torch.arange(3)[None])
    with pytest.raises(ContractError, match="window"):
        tiny(window=2).forward_cached(ids, torch.ones(1, 3), torch.arange(3)[None])
    _, past = model.forward_cached(ids, torch.ones(1, 3), torch.arange(3)[None])
    with pytest.raises(ContractError, match="layers"):
        model.forward_cached(ids[:, :1], torch.ones(1, 4), torch.tensor([[3]]), past[:1])


def test_next_positions():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert next_positions(mask).tolist() == [2, 4]
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        next_positions(torch.ones(1, 2, 2))


def tiny_gpt2(vocab=40):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      initializer_range=0.05, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()


def test_gpt2_generate_uses_mask_positions_and_plain_forward_does_not():
    """Cross-check: labkit's greedy loop with mask positions == transformers generate(); arange == plain forward."""
    gpt2 = tiny_gpt2()
    ids, mask = pad(PROMPTS, 0, side="left")
    theirs = gpt2.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                           pad_token_id=0)[:, ids.shape[1]:].tolist()
    assert generate(HFLogits(gpt2), PROMPTS, 5, pad_id=0, positions="mask") == theirs
    with torch.no_grad():
        plain = gpt2(input_ids=ids, attention_mask=mask).logits
        arange = HFLogits(gpt2)(ids, attention_mask=mask, position_ids=arange_positions(ids))
    assert torch.allclose(plain, arange, atol=1e-6), "a plain forward numbers the columns"
    bad = decode_agreement(HFLogits(gpt2), PROMPTS, 5, pad_id=0, positions="arange")
    assert bad["max_logit_diff"] > 1e-2
    with pytest.raises(ContractError, match="padding mask"):
        HFLogits(gpt2)(ids, attention_mask=torch.ones(4, 6, 6))


def test_render_padding_states(tok):
    states = {(s, p): render_padding(s, p) for s in ("left", "right") for p in ("mask", "arange")}
    assert states[("left", "mask")]["ok"] and states[("left", "mask")]["findings"] == []
    assert not states[("left", "arange")]["ok"]
    assert states[("left", "arange")]["findings"] == ["arange_positions_with_left_padding"]
    assert [r["positions_ok"] for r in states[("left", "arange")]["rows"]] == [True, False, False]
    assert all(not st["ok"] and st["findings"] == [] for (s, _), st in states.items() if s == "right")
    assert "<table" in states[("right", "mask")]["html"] and "padding right" in states[("right", "mask")]["text"]
    custom = render_padding("left", "arange", prompts=[[1, 42], [1, 42, 95]], tokenizer=tok)
    assert [r["positions_ok"] for r in custom["rows"]] == [False, True]
    with pytest.raises(ContractError, match="padding side"):
        render_padding("middle")


def test_padding_panel_rerenders():
    panel = PaddingPanel()
    assert panel.renders == 1 and panel.state["ok"]
    panel.positions.value = "arange"
    assert panel.renders == 2 and not panel.state["ok"] and "arange" in panel.output.value
    panel.side.value = "right"
    assert panel.renders == 3 and "padding right" in panel.state["text"]
    assert panel.ui().children[0] is panel.side


# ----------------------------------------------------------------------------- packing

def test_cross_document_sensitivity_is_exactly_zero_only_with_block_mask_and_restart():
    model = tiny()
    a, a2, a_long, b = [1, 5, 6, 2], [1, 7, 8, 2], [1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 2]
    assert cross_document_sensitivity(model, a, a2, b) == 0.0
    assert cross_document_sensitivity(model, a, a_long, b) < 1e-5
    assert cross_document_sensitivity(model, a, a2, b, block_diagonal=False) > 1e-3
    assert cross_document_sensitivity(model, a, a_long, b, restart_positions=False) > 1e-3


def test_pack_matches_flattening_collator_on_sft_examples(tok):
    """Cross-check with completion labels: pack() == DataCollatorWithFlattening (labels and positions)."""
    from transformers import DataCollatorWithFlattening

    records = load_instructions()[:3]
    examples = []
    for r in records:
        ids, amask = tok.encode_chat(r["messages"])
        start = amask.index(1)
        ex = completion_example(ids[:start], ids[start:])
        examples.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
    total = sum(len(e["input_ids"]) for e in examples)
    ours, theirs = pack(examples, max_len=total), DataCollatorWithFlattening()(examples)
    assert torch.equal(ours.input_ids, theirs["input_ids"]) and torch.equal(ours.labels, theirs["labels"])
    assert torch.equal(ours.position_ids, theirs["position_ids"])


def test_pad_equals_eos_collator_hides_eos(tok):
    """transformers' CLM collator with pad == eos: audit() reports eos_label_masked; masking by position does not."""
    from transformers import DataCollatorForLanguageModeling

    hf = tok.to_hf()
    hf.pad_token = hf.eos_token
    rows = [tok.encode_chat(r["messages"])[0] for r in load_instructions()[:4]]
    out = DataCollatorForLanguageModeling(hf, mlm=False)([{"input_ids": r} for r in rows])
    assert "eos_label_masked" in [f.code for f in audit(dict(out), pad_id=hf.pad_token_id, eos_id=tok.eos_id)]
    fixed = collate([{"input_ids": r} for r in rows], pad_id=tok.eos_id)
    assert audit(fixed, pad_id=tok.eos_id, eos_id=tok.eos_id) == []


# ----------------------------------------------------------------------------- exercise checks

def _message(check, fn):
    with pytest.raises(AssertionError) as err:
        check(fn)
    return str(err.value)


def test_check_position_ids():
    check_position_ids(position_ids_from_mask)
    check_position_ids(lambda m: (m.cumsum(-1) - 1).clamp_min(0))
    assert "arange" in _message(check_position_ids, arange_positions)
    assert "off by one" in _message(check_position_ids, lambda m: m.cumsum(-1))
    assert "clamp" in _message(check_position_ids, lambda m: m.cumsum(-1) - 1)
    assert "tensor" in _message(check_position_ids, lambda m: m.tolist())


def test_check_next_positions():
    check_next_positions(lambda m: m.sum(-1))
    assert "padded length" in _message(check_next_positions, lambda m: torch.full((m.shape[0],), m.shape[1]))
    assert "off by one" in _message(check_next_positions, lambda m: m.sum(-1) - 1)


def test_check_block_mask():
    def good(d):
        T, real = len(d), d.ge(0)
        same = d[:, None].eq(d[None, :]) & real[:, None] & real[None, :]
        return (same & torch.ones(T, T, dtype=torch.bool).tril()) | torch.eye(T, dtype=torch.bool)

    check_block_mask(good)
    causal_only = lambda d: torch.ones(len(d), len(d), dtype=torch.bool).tril()  # noqa: E731
    assert "cross-document" in _message(check_block_mask, causal_only)
    assert "LATER" in _message(check_block_mask, lambda d: d[:, None].eq(d[None, :]))
    no_pad_key = lambda d: good(d) & d.ge(0)[:, None]  # noqa: E731
    assert "NaN" in _message(check_block_mask, no_pad_key)


def test_check_sft_labels():
    check_sft_labels(lambda i, a, m: torch.where(a.bool() & m.bool(), i, torch.full_like(i, IGNORE)))
    by_id = lambda i, a, m: torch.where(m.bool() & i.ne(2), i, torch.full_like(i, IGNORE))  # noqa: E731
    assert "pad == eos" in _message(check_sft_labels, by_id)
    every = lambda i, a, m: torch.where(a.bool(), i, torch.full_like(i, IGNORE))  # noqa: E731
    assert "imitate" not in _message(check_sft_labels, every) and "prompt tokens" in _message(check_sft_labels, every)
    shifted = lambda i, a, m: torch.nn.functional.pad(  # noqa: E731
        torch.where(a.bool() & m.bool(), i, torch.full_like(i, IGNORE))[:, 1:], (0, 1), value=IGNORE)
    assert "shifted" in _message(check_sft_labels, shifted)


def test_length_histogram():
    fig = length_histogram({"a": [1, 2, 2], "b": [5, 5]}, max_len=6)
    assert len(fig.axes) == 1
    plt.close(fig)
