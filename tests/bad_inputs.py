"""The inputs each public function refuses. One source for the test (each must raise
ContractError) and for the README's bad-input table (tools/bad_input_table.py), so the table
stays true. Each case is the call itself, as text; it is evaluated in NAMESPACE."""
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from labkit import IGNORE
from labkit.batch import Batch, collate, pack, pad, position_ids_from_mask
from labkit.checks import assert_golden_shift, assert_has_targets, assert_masked_targets, assert_prompt_masked, audit
from labkit.data import KBackSource, MarkovWorld, load_instructions
from labkit.dist import run_ranks
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import ar_example, causal_lm_loss, completion_example, generate
from labkit.paradigms.contrastive import info_nce
from labkit.paradigms.distillation import kd_loss
from labkit.paradigms.masked import bert_mask, mask_positions, random_mask
from labkit.paradigms.mixture import mixture_weights
from labkit.paradigms.preference import bradley_terry_loss, dpo_loss
from labkit.reduce import reduce, token_cross_entropy
from labkit.train import fit
from labkit.vocab import WordTokenizer, seed_vocab
from labkit.widgets import render_shift

tok = seed_vocab()
ids2x3 = torch.zeros(2, 3, dtype=torch.long)
model = TinyCausalLM(16, d_model=8, n_layers=1, n_heads=2, max_len=8)


def external(record):
    return ar_example(record, "external")


def shifting_loss(logits, labels):
    return causal_lm_loss(logits, labels, shift=True)


# files a student might pass: empty, a folder, latin-1 text, records with missing fields
FILES = Path(tempfile.mkdtemp(prefix="labkit-bad-inputs-"))
empty_file, folder = FILES / "empty.jsonl", FILES / "a_folder"
latin1_file, broken_record = FILES / "latin1.jsonl", FILES / "broken.jsonl"
empty_file.write_text("")
folder.mkdir(exist_ok=True)
latin1_file.write_bytes('{"task": "copy", "note": "caf\u00e9"}\n'.encode("latin-1"))
broken_record.write_text(json.dumps({"task": "copy", "messages": [{"role": "user", "content": "copy 1 2"}]}) + "\n")

NAMESPACE = dict(globals())

CASES = [
    "completion_example([1, 2, 3], [4, 5], max_len=3)",
    "pad([[1, 2]], pad_value=None)",
    "pad([[1, 2]], 0, side='middle')",
    "pad(['the cat'], 0)",
    "position_ids_from_mask(torch.ones(1, 3, 3))",
    "collate([{'input_ids': [1, 2, 3], 'labels': [2, 3]}], pad_id=0)",
    "collate([{'input_ids': [1]}], pad_id=0, positions='rope')",
    "pack([{'input_ids': [1, 2, 3]}], max_len=2)",
    "Batch(input_ids=ids2x3, attention_mask=torch.ones(2, 4), position_ids=ids2x3, labels=ids2x3)",
    "reduce(torch.ones(2, 3), torch.zeros(2, 3), 'token_mean')",
    "reduce(torch.ones(2, 3), torch.ones(2, 3), 'mean')",
    "reduce(torch.ones(2, 3), torch.ones(2, 3), 'token_mean', denominator=0)",
    "token_cross_entropy(torch.zeros(1, 2, 7), torch.tensor([[3, 9]]))",
    "causal_lm_loss(torch.zeros(2, 4, 9), torch.zeros(2, 3, dtype=torch.long))",
    "causal_lm_loss(torch.zeros(1, 3, 9), torch.full((1, 3), IGNORE))",
    "ar_example([1, 42, 95], shift='both')",
    "completion_example([5, 210], [])",
    "generate(model, [[1, 2]], max_new_tokens=2, pad_id=0, temperature=-1)",
    "WordTokenizer(['a', 'b', 'a'])",
    "tok.decode([42, -100])",
    "tok.encode_chat([{'role': 'system', 'content': 'hi'}])",
    "assert_has_targets({'labels': torch.full((1, 4), IGNORE)})",
    "assert_prompt_masked(torch.tensor([5, 210, 141, 6]), prompt_len=3)",
    "assert_masked_targets([1, 3, 95], [42, 95, -100], [1, 42, 95], mask_id=3)",
    "assert_golden_shift([1, 42, 95, 317, 18], external, shifting_loss, 512)",
    "audit({'input_ids': ids2x3, 'labels': torch.zeros(2, 4, dtype=torch.long)})",
    "model(torch.zeros(1, 9, dtype=torch.long))",
    "model(torch.full((1, 3), 16))",
    "fit(model, [ids2x3], lambda m, x: m(x).sum(), steps=0)",
    "MarkovWorld({'the': {'cat': 0.5}})",
    "KBackSource(k=0)",
    "mask_positions([1, 42, 95], [7], mask_id=3)",
    "random_mask(ids2x3, p=1.5, mask_id=3)",
    "run_ranks(lambda rank, world_size: rank, world_size=2)",
    "render_shift('model')",
    # misspelt or dropped fields: the prompt (or the pads) would be trained silently
    "collate([{'input_ids': [5, 210, 7], 'lables': [-100, -100, 7]}], pad_id=0)",
    "collate([{'input_ids': [5, 210, 7], 'label': [-100, -100, 7]}], pad_id=0)",
    "collate([{'input_ids': [5, 7, 0], 'attention_mask': [1, 1, 0]}], pad_id=0)",
    "collate([{'input_ids': [5, 7], 'position_ids': [3, 4]}], pad_id=0)",
    # ids that are not integer ids
    "collate([{'input_ids': [1.7, 2]}], pad_id=0)",
    "collate([{'input_ids': torch.tensor([1.7, 2.0])}], pad_id=0)",
    "model(torch.tensor([[1.7, 2.0]]))",
    "model([[1, 2]])",
    "model(np.array([[1, 2]]))",
    "model('the cat')",
    "model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4))",
    # weights and denominators that make a mean 0/0 or NaN
    "collate([{'input_ids': [1, 2], 'weight': 0}], pad_id=0)",
    "collate([{'input_ids': [1, 2], 'weight': float('nan')}], pad_id=0)",
    "reduce(torch.ones(2, 3), torch.ones(2, 3), weights=torch.zeros(2))",
    "reduce(torch.ones(2, 3), torch.ones(2, 3), denominator=float('inf'))",
    "reduce(torch.ones(0, 3), torch.ones(0, 3))",
    # labels (-100) or soft values where a 0/1 mask is expected
    "reduce(torch.ones(2, 3), torch.tensor([[5, -100, 3], [-100, 2, 2]]))",
    "reduce(torch.ones(2, 3), torch.full((2, 3), 0.5))",
    "reduce(torch.tensor([[1.0, float('nan')]]), torch.ones(1, 2))",
    # sizes given as text
    "pack([{'input_ids': [1, 2]}], max_len='8')",
    "TinyCausalLM('16')",
    # files: empty, a folder, not UTF-8, a record missing a field
    "load_instructions(empty_file)",
    "load_instructions(folder)",
    "load_instructions(latin1_file)",
    "load_instructions(broken_record)",
    # labels where a 0/1 mask is expected, logits where log-probabilities are expected
    "kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), T=2.0, mask=torch.tensor([3, -100]))",
    "kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), T=2.0, mask=torch.tensor([0.3, 1.0]))",
    "dpo_loss(torch.tensor([2.1]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-3.0]))",
    "dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([float('nan')]))",
    # NaN or infinite temperatures, strengths and margins
    "dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), beta=float('nan'))",
    "kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), T=float('inf'))",
    "info_nce(torch.randn(4, 8), torch.randn(4, 8), temperature=float('inf'))",
    "mixture_weights([100, 10], gamma=float('nan'))",
    "bradley_terry_loss(torch.zeros(2), torch.zeros(2), margin=float('inf'))",
    "generate(model, [[1, 2]], max_new_tokens=2, pad_id=0, temperature=float('nan'))",
    # a mask id the model has no embedding for
    "random_mask(ids2x3, p=0.5, mask_id=-1)",
    "random_mask(ids2x3, p=0.5, mask_id=16, vocab_size=16)",
    "bert_mask(ids2x3, mask_id=16, vocab_size=16)",
]
