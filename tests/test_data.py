"""Tests of labkit.data."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.data import (INSTRUCTION_TASKS, MarkovWorld, RunningSumTask, instruction_answer, load_instructions,
                         make_instructions, write_instructions)
from labkit.paradigms.autoregressive import completion_example
from labkit.vocab import WordTokenizer

ROOT = Path(__file__).resolve().parents[1]


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


def test_running_sum_layout_and_gold(task, digits):
    x = task.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, task.length) == (5, 14)
    assert (x[:, 0] == digits.bos_id).all() and (x[:, task.n + 1] == digits.sep_id).all()
    a = task.values(x[:, 1:task.n + 1])
    assert a.min() >= 0 and a.max() < task.max_step
    assert torch.equal(task.values(x[:, task.prompt_len:]), a.cumsum(1) % 10)
    assert torch.equal(task.gold(x[:, :task.prompt_len]), x[:, task.prompt_len:])
    labels = task.labels(x)
    assert (labels[:, :task.prompt_len] == IGNORE).all() and torch.equal(labels[:, task.prompt_len:], x[:, task.prompt_len:])
    assert not task.errors(x, x[:, task.prompt_len:]).any() and not task.local_errors(x, x[:, task.prompt_len:]).any()


def test_one_slip_derails_but_is_one_local_error(task):
    x = task.sample(3, torch.Generator().manual_seed(1))
    answers = x[:, task.prompt_len:].clone()
    v = task.values(answers)
    v[:, 2:] = (v[:, 2:] + 1) % 10                   # slip at index 2, then continue from it
    slipped = task.digit_ids[v]
    err, local = task.errors(x, slipped), task.local_errors(x, slipped)
    assert err[:, :2].sum() == 0 and err[:, 2:].all()
    assert local[:, 2].all() and local.sum() == 3    # only the slip itself breaks the rule


def test_running_sum_refuses_bad_input(digits):
    with pytest.raises(ContractError, match="max_step"):
        RunningSumTask(max_step=11, tokenizer=digits)
    with pytest.raises(ContractError, match="lacks"):
        RunningSumTask(tokenizer=WordTokenizer(["a", "b"]))
    task = RunningSumTask(n_steps=4, tokenizer=digits)
    x = task.sample(2)
    with pytest.raises(ContractError, match="answers must be"):
        task.errors(x, x[:, :3])
