"""Rotary positions in TinyCausalLM (labkit.models) and the 04b graders (labkit.exercises.positions)."""
import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from labkit.batch import arange_positions, pack, pad, position_ids_from_mask
from labkit.contracts import ContractError
from labkit.exercises.positions import check_continuation_positions, check_rope, rope_interleaved
from labkit.models import TinyCausalLM, apply_rope
from labkit.paradigms.autoregressive import continuation_logits, generate, generate_cached


def rope_model(**kw):
    torch.manual_seed(0)
    return TinyCausalLM(30, d_model=16, n_layers=2, n_heads=2, max_len=64, positions="rope", **kw).eval()


def test_apply_rope_equals_transformers_llama():
    q, k = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    pos = torch.randint(0, 60, (2, 7))
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=24, num_attention_heads=3, rope_theta=500.0))
    hq, hk = apply_rotary_pos_emb(q, k, *rotary(q, pos))
    assert torch.allclose(apply_rope(q, pos, base=500.0), hq, atol=1e-5)
    assert torch.allclose(apply_rope(k, pos, base=500.0), hk, atol=1e-5)


def test_rotation_keeps_norms_and_scores_depend_on_offsets_only():
    q, k = torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    pos = torch.arange(9)[None]
    assert torch.equal(apply_rope(q, torch.zeros_like(pos)), q)
    assert torch.allclose(apply_rope(q, pos).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    s0 = apply_rope(q, pos) @ apply_rope(k, pos).transpose(-1, -2)
    s1 = apply_rope(q, pos + 123) @ apply_rope(k, pos + 123).transpose(-1, -2)
    assert torch.allclose(s0, s1, atol=1e-4)
    s2 = apply_rope(q, pos) @ apply_rope(k, pos.flip(-1)).transpose(-1, -2)   # other offsets: other scores
    assert not torch.allclose(s0, s2, atol=1e-2)


def test_rope_model_ignores_a_constant_shift_per_row_learned_does_not():
    x = torch.randint(30, (3, 10))
    shift = torch.arange(10).expand(3, 10) + torch.tensor([[0], [7], [40]])
    m = rope_model()
    assert torch.allclose(m(x), m(x, position_ids=shift), atol=1e-4)
    torch.manual_seed(0)
    learned = TinyCausalLM(30, d_model=16, n_layers=2, n_heads=2, max_len=64).eval()
    assert (learned(x) - learned(x, position_ids=shift)).abs().max() > 1e-2


def test_rope_left_padding_with_arange_equals_alone_only_when_pads_are_masked():
    m = rope_model()
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    ids, mask = pad(prompts, 0, side="left")
    masked = m(ids, attention_mask=mask, position_ids=arange_positions(ids))
    attended = m(ids, position_ids=arange_positions(ids))
    for b, p in enumerate(prompts):
        alone = m(torch.tensor([p]))[0]
        assert torch.allclose(masked[b, -len(p):], alone, atol=1e-4)
        if len(p) < ids.shape[1]:
            assert (attended[b, -len(p):] - alone).abs().max() > 1e-3


def test_rope_kv_cache_equals_recomputation_and_wrong_offset_does_not():
    m = rope_model()
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13]]
    own = generate_cached(m, prompts, max_new_tokens=4, pad_id=0, next_position="own")
    ref = continuation_logits(m, prompts, own["tokens"], pad_id=0)
    assert torch.allclose(own["logits"], ref, atol=1e-4)
    assert own["tokens"] == generate(m, prompts, 4, pad_id=0)
    padded = generate_cached(m, prompts, max_new_tokens=4, pad_id=0, next_position="padded")
    assert (padded["logits"][1:, 1:] - own["logits"][1:, 1:]).abs().max() > 1e-3   # the shorter rows move


def test_rope_packing_positions_need_not_restart_under_a_block_diagonal_mask():
    m = rope_model()
    row = pack([{"input_ids": [3, 4, 5, 6]}, {"input_ids": [7, 8, 9]}], max_len=8)
    restart = m(row.input_ids, row.attention_mask, row.position_ids)
    run_on = m(row.input_ids, row.attention_mask, arange_positions(row.input_ids))
    assert torch.allclose(restart, run_on, atol=1e-4)


def test_default_stays_learned_and_rope_has_no_position_table():
    torch.manual_seed(0)
    learned = TinyCausalLM(30, d_model=16, n_layers=1, n_heads=2, max_len=16)
    assert learned.positions == "learned" and "pos.weight" in learned.state_dict()
    assert "pos.weight" not in rope_model().state_dict()


def test_model_contracts_for_positions_and_ids():
    with pytest.raises(ContractError, match="positions"):
        TinyCausalLM(30, d_model=16, n_heads=2, positions="sinusoidal")
    with pytest.raises(ContractError, match="even"):
        TinyCausalLM(30, d_model=12, n_heads=4, positions="rope")
    m = rope_model()
    with pytest.raises(ContractError, match="integer"):
        m(torch.tensor([[1.7, 2.0]]))
    with pytest.raises(ContractError, match="max_len"):
        m(torch.zeros(1, 3, dtype=torch.long), position_ids=torch.tensor([[0, 1, 64]]))
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        apply_rope(torch.randn(1, 2, 3, 4), torch.arange(4)[None])


def test_check_rope_accepts_both_layouts_and_names_mistakes():
    check_rope(apply_rope)
    check_rope(rope_interleaved)
    check_rope(lambda x, p: apply_rope(x.double(), p).float())
    wrong = {"unchanged": lambda x, p: x,
             "length": lambda x, p: x * torch.cos(p[:, None, :, None].float()),
             "offset m - n": lambda x, p: apply_rope(x, p * p),
             "frequencies": lambda x, p: apply_rope(x, p, base=100.0),
             "shape": lambda x, p: x[..., :-1]}
    for needle, fn in wrong.items():
        with pytest.raises(AssertionError, match=needle):
            check_rope(fn)


def test_check_continuation_positions():
    check_continuation_positions(lambda p, m: p[:, -1] + 1)
    check_continuation_positions(lambda p, m: (p * m).max(-1).values + 1)
    for fn, needle in [(lambda p, m: m.sum(-1), "count of real tokens"), (lambda p, m: p[:, -1], "off by one"),
                       (lambda p, m: torch.full((p.shape[0],), p.shape[1]), "padded length")]:
        with pytest.raises(AssertionError, match=needle):
            check_continuation_positions(fn)
