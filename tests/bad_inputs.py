"""The inputs each public function refuses. One source for the test (each must raise
ContractError) and for the README's bad-input table (tools/bad_input_table.py), so the table
stays true. Each case is the call itself, as text; it is evaluated in NAMESPACE."""
import torch

from labkit import IGNORE
from labkit.batch import Batch, collate, pack, pad, position_ids_from_mask
from labkit.checks import assert_golden_shift, assert_has_targets, assert_masked_targets, assert_prompt_masked, audit
from labkit.data import KBackSource, MarkovWorld
from labkit.dist import run_ranks
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import ar_example, causal_lm_loss, completion_example, generate
from labkit.paradigms.masked import mask_positions, random_mask
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


NAMESPACE = dict(globals())

CASES = [
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
]
