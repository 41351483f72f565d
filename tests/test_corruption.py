"""labkit.paradigms.corruption and its grader (notebook 08b)."""
import pytest
import torch

from labkit.contracts import ContractError
from labkit.exercises.corruption import check_close_up
from labkit.models import TinyTransformer
from labkit.paradigms.corruption import (CORRUPTIONS, close_up, compact_vocabulary, corrupt, corruption_matrix,
                                         delete_tokens_padded, denoise_loss, denoiser_batches, mask_spans, repair_rate,
                                         swap_neighbours)

KW = dict(mask_id=1, pad_id=0, pool=list(range(5, 15)), special_ids=[2, 3])


def rows(seed=0, B=64, L=16):
    ids = torch.randint(5, 15, (B, L), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 2
    return ids


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_corruption_keeps_shape_specials_and_reports_hits(kind):
    clean = rows()
    noisy, hit = corrupt(kind, clean, 0.2, generator=torch.Generator().manual_seed(1), **KW)
    assert noisy.shape == clean.shape and torch.equal(hit, noisy.ne(clean)) and hit.any()
    if kind != "delete":
        assert torch.equal(noisy[:, 0], clean[:, 0])          # specials never touched


def test_rate_zero_is_identity():
    clean = rows()
    for kind in CORRUPTIONS:
        noisy, hit = corrupt(kind, clean, 0.0, **KW)
        assert torch.equal(noisy, clean) and not hit.any()


def test_rates_are_about_right():
    clean = rows(B=2000)
    g = torch.Generator().manual_seed(2)
    for kind in ("mask", "replace"):
        _, hit = corrupt(kind, clean, 0.15, generator=g, **KW)
        assert abs(hit[:, 1:].float().mean().item() - 0.15) < 0.01
    noisy, _ = delete_tokens_padded(clean, 0.15, 0, [2], g)
    assert abs(noisy.eq(0).float().sum().item() / clean[:, 1:].numel() - 0.15) < 0.01


def test_swap_is_a_permutation_of_neighbours():
    clean = rows()
    noisy, hit = swap_neighbours(clean, 0.3, [2], torch.Generator().manual_seed(3))
    assert torch.equal(noisy.sort(-1).values, clean.sort(-1).values)
    t = hit.nonzero()
    for b, i in t.tolist():                    # each moved token came from a neighbour
        assert noisy[b, i] in (clean[b, max(i - 1, 0)], clean[b, min(i + 1, clean.shape[1] - 1)])


def test_spans_are_runs_of_masks():
    noisy, hit = mask_spans(rows(B=200), 0.3, 1, span_len=3, special_ids=[2], generator=torch.Generator().manual_seed(4))
    assert noisy[hit].eq(1).all()


def test_close_up_and_compact_vocabulary():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    drop = torch.tensor([[False, True, False, True], [False, False, False, False]])
    assert close_up(ids, drop, 0).tolist() == [[5, 7, 0, 0], [9, 10, 11, 12]]
    to_c, from_c = compact_vocabulary([42, 7, 300], 512)
    assert from_c.tolist() == [7, 42, 300] and to_c[300] == 2 and to_c[0] == -1


def test_denoise_loss_and_repair_rate():
    torch.manual_seed(0)
    model = TinyTransformer(16, d_model=16, n_layers=1, n_heads=2, max_len=16, causal=False)
    clean = rows(B=8)
    noisy, _ = corrupt("mask", clean, 0.3, generator=torch.Generator().manual_seed(5), **KW)
    total = denoise_loss(model, noisy, clean, reduction="sum")
    assert torch.allclose(total / clean.numel(), denoise_loss(model, noisy, clean), rtol=1e-5)
    assert 0.0 <= repair_rate(model, noisy, clean) <= 1.0
    get = denoiser_batches(rows(B=32), "swap", 0.2, 8, seed=0, **KW)
    a, b = get(3), get(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], rows(B=32)[24:32])
    m = corruption_matrix({"mask": model}, {"mask": (noisy, clean)})
    assert set(m) == {("mask", "mask")}


def test_grader():
    check_close_up(lambda ids, drop, pad: close_up(ids, drop, pad))
    with pytest.raises(AssertionError, match="where they stood"):
        check_close_up(lambda ids, drop, pad: torch.where(drop, torch.full_like(ids, pad), ids))
    with pytest.raises(AssertionError, match="front"):
        check_close_up(lambda ids, drop, pad: torch.stack([torch.cat([torch.full((int(d.sum()),), pad), r[~d]])
                                                           for r, d in zip(ids, drop)]))


def test_contracts():
    with pytest.raises(ContractError):
        corrupt("mask", rows(), -0.1, **KW)
    with pytest.raises(ContractError):
        denoise_loss(None, rows(), rows()[:, :8])
