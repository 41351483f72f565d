"""labkit against transformers wherever both implement the same mechanism."""
import pytest
import torch

from labkit import IGNORE
from labkit.batch import collate, pack, position_ids_from_mask
from labkit.paradigms.autoregressive import causal_lm_loss

transformers = pytest.importorskip("transformers")


def tiny_gpt2(vocab=64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def batch_with_padding(vocab=64):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (3, 9), generator=g)
    labels = ids.clone()
    labels[0, 6:] = IGNORE
    labels[1, :3] = IGNORE   # a masked prompt
    return ids, labels


def test_causal_lm_loss_equals_transformers_model_loss():
    model = tiny_gpt2()
    ids, labels = batch_with_padding()
    out = model(input_ids=ids, labels=labels)
    ours = causal_lm_loss(out.logits, labels, shift=True)
    assert torch.allclose(ours, out.loss, atol=1e-6)


def test_denominator_equals_num_items_in_batch_path():
    from transformers.loss.loss_utils import ForCausalLMLoss

    model = tiny_gpt2()
    ids, labels = batch_with_padding()
    n = 40  # a global count, as gradient accumulation passes it
    out = model(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(n))
    ours = causal_lm_loss(out.logits, labels, denominator=n)
    assert torch.allclose(ours, out.loss, atol=1e-6)
    direct = ForCausalLMLoss(out.logits, labels, vocab_size=64, num_items_in_batch=torch.tensor(n))
    assert torch.allclose(ours, direct, atol=1e-6)


def test_double_shift_is_the_same_bug_in_transformers():
    """Pre-shifted labels fed to a model that shifts internally: both libraries train on t+2."""
    model = tiny_gpt2()
    ids, _ = batch_with_padding()
    pre_shifted = torch.cat([ids[:, 1:], torch.full((3, 1), IGNORE)], 1)
    out = model(input_ids=ids, labels=pre_shifted)
    assert torch.allclose(causal_lm_loss(out.logits, pre_shifted), out.loss, atol=1e-6)
    t_plus_2 = torch.nn.functional.cross_entropy(out.logits[:, :-2].reshape(-1, 64), ids[:, 2:].reshape(-1))
    assert torch.allclose(out.loss, t_plus_2, atol=1e-6)


def test_position_ids_from_mask_equal_generation_positions(tok):
    model = tiny_gpt2()
    prompts = [[5, 6, 7, 8], [9, 10], [11]]
    b = collate([{"input_ids": p} for p in prompts], tok.pad_id, side="left")
    seen = []
    hook = model.transformer.wpe.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    try:
        model.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, max_new_tokens=1, do_sample=False)
    finally:
        hook.remove()
    theirs = seen[0].expand_as(b.input_ids)
    ours = position_ids_from_mask(b.attention_mask)
    real = b.attention_mask.bool()
    assert torch.equal(ours[real], theirs[real])   # pads differ across versions (0 in 5.x, 1 in 4.x); they are masked


def test_pack_agrees_with_data_collator_with_flattening():
    from transformers import DataCollatorWithFlattening

    docs = [{"input_ids": [11, 12, 13]}, {"input_ids": [21, 22]}, {"input_ids": [31, 32, 33, 34]}]
    theirs = DataCollatorWithFlattening()(docs)
    ours = pack(docs, max_len=9)
    assert ours.input_ids.shape == (1, 9)
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.position_ids, theirs["position_ids"])
    assert torch.equal(ours.labels, theirs["labels"])
    with_labels = [{"input_ids": [1, 2, 3], "labels": [IGNORE, IGNORE, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]
    assert torch.equal(pack(with_labels, 5).labels, DataCollatorWithFlattening()(with_labels)["labels"])
