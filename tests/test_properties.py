"""Property tests (hypothesis) for builders, collators and reductions."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import IGNORE
from labkit.batch import collate, pack, pad, position_ids_from_mask, unpack
from labkit.paradigms.autoregressive import ar_example, causal_lm_token_losses
from labkit.paradigms.masked import random_mask
from labkit.reduce import reduce

seqs = st.lists(st.lists(st.integers(5, 60), min_size=1, max_size=9), min_size=1, max_size=6)
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(seqs)
def test_positions_from_mask_do_not_depend_on_padding_side(rows):
    right = collate([{"input_ids": r} for r in rows], 0, side="right")
    left = collate([{"input_ids": r} for r in rows], 0, side="left")
    for b, r in enumerate(rows):
        real_r = right.position_ids[b][right.attention_mask[b].bool()].tolist()
        real_l = left.position_ids[b][left.attention_mask[b].bool()].tolist()
        assert real_r == real_l == list(range(len(r)))
        assert left.input_ids[b][left.attention_mask[b].bool()].tolist() == r


@SETTINGS
@given(seqs)
def test_padding_is_never_a_target(rows):
    for side in ("right", "left"):
        b = collate([{"input_ids": r} for r in rows], 0, side=side)
        assert not (b.labels.ne(IGNORE) & b.attention_mask.eq(0)).any()
        assert b.n_targets() == sum(len(r) for r in rows)


@SETTINGS
@given(seqs, st.integers(9, 30))
def test_pack_then_unpack_round_trips(rows, max_len):
    packed = pack([{"input_ids": r} for r in rows], max_len=max_len)
    docs = unpack(packed)
    assert [d["input_ids"] for d in docs] == rows
    assert [d["labels"] for d in docs] == [[IGNORE] + r[1:] for r in rows]
    assert packed.input_ids.shape[1] <= max_len
    # positions restart at 0 in every document
    assert int(packed.position_ids[packed.document_ids.ge(0)].eq(0).sum()) == len(rows)


@SETTINGS
@given(seqs, st.integers(9, 30))
def test_block_diagonal_mask_never_crosses_documents(rows, max_len):
    packed = pack([{"input_ids": r} for r in rows], max_len=max_len)
    d = packed.document_ids
    cross = d[:, :, None].ne(d[:, None, :]) & d[:, :, None].ge(0) & d[:, None, :].ge(0)
    assert not (packed.attention_mask & cross).any()


@SETTINGS
@given(st.lists(st.lists(st.floats(0, 10), min_size=4, max_size=4), min_size=1, max_size=5),
       st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=5))
def test_reduction_denominators(losses, masks):
    n = min(len(losses), len(masks))
    l, m = torch.tensor(losses[:n]), torch.tensor(masks[:n])
    if not m.any():
        return
    tok = reduce(l, m, "token_mean")
    assert tok.denominator.item() == m.sum().item()
    assert torch.allclose(tok.value * tok.denominator, (l * m).sum())
    assert reduce(l, m, "sum").denominator.item() == 1
    assert reduce(l, m, "batch_mean").denominator.item() == n
    seq = reduce(l, m, "sequence_mean")
    assert seq.denominator.item() == m.any(-1).sum().item()
    # accumulate micro-batches with the global count == the full token mean
    parts = sum(reduce(l[i:i + 1], m[i:i + 1], "sum", denominator=m.sum()).value for i in range(n))
    assert torch.allclose(parts, tok.value, atol=1e-5)


@SETTINGS
@given(st.lists(st.integers(5, 60), min_size=2, max_size=12))
def test_internal_and_external_shift_train_the_same_pairs(ids):
    V = 64
    logits = torch.randn(1, len(ids), V, generator=torch.Generator().manual_seed(len(ids)))
    internal = ar_example(ids, "internal")
    external = ar_example(ids, "external")
    l_int, m_int = causal_lm_token_losses(logits, torch.tensor([internal["labels"]]), shift=True)
    l_ext, m_ext = causal_lm_token_losses(logits[:, :-1], torch.tensor([external["labels"]]), shift=False)
    assert torch.allclose(l_int[m_int], l_ext[m_ext])


@SETTINGS
@given(st.integers(1, 6), st.integers(2, 20), st.floats(0, 1), st.integers(0, 10_000))
def test_random_mask_invariants(B, T, p, seed):
    ids = torch.randint(5, 50, (B, T), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 1
    x, y = random_mask(ids, p, mask_id=3, special_ids=(1,), generator=torch.Generator().manual_seed(seed))
    masked = x.eq(3)
    assert torch.equal(y[masked], ids[masked]) and y[~masked].eq(IGNORE).all()
    assert torch.equal(x[~masked], ids[~masked]) and not masked[:, 0].any()


@SETTINGS
@given(seqs)
def test_pad_mask_counts_real_tokens(rows):
    ids, mask = pad(rows, 0, side="left")
    assert mask.sum(-1).tolist() == [len(r) for r in rows]
    pos = position_ids_from_mask(mask)
    assert pos.max().item() == max(len(r) for r in rows) - 1
