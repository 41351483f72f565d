"""Masked, span and diffusion denoising (notebook 08): properties, statistics, cross-checks, checks."""
import itertools
import time

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import IGNORE
from labkit.checks import ContractError
from labkit.data import MarkovWorld
from labkit.paradigms.masked import (bert_mask, corruption_stats, delete_tokens, diffusion_corrupt, diffusion_loss,
                                     diffusion_weights, masked_lm_loss, random_other_tokens, sentinel_tokenizer,
                                     span_corrupt, span_noise_mask, span_reconstruct, token_accuracy,
                                     unmask_sample)

SPECIALS = (0, 1, 2, 3)
MASK = 3
V = 40


# ----------------------------------------------------------------------------- bert_mask: properties

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), T=st.integers(1, 40), p=st.floats(0.0, 1.0),
       mask_frac=st.floats(0.0, 1.0), random_share=st.floats(0.0, 1.0))
def test_bert_mask_properties(seed, B, T, p, mask_frac, random_share):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)           # specials appear anywhere
    random_frac = (1 - mask_frac) * random_share
    x, y = bert_mask(ids, MASK, V, p=p, mask_frac=mask_frac, random_frac=random_frac, special_ids=SPECIALS, generator=g)
    chosen = y.ne(IGNORE)
    special = torch.isin(ids, torch.tensor(SPECIALS))
    assert x.shape == y.shape == ids.shape
    assert not (chosen & special).any(), "specials are never chosen"
    assert torch.equal(x[special], ids[special]), "specials are untouched"
    assert torch.equal(x[~chosen], ids[~chosen]), "unchosen positions carry IGNORE and their clean token"
    assert torch.equal(y[chosen], ids[chosen]), "chosen positions target the clean ids"
    changed = chosen & x.ne(ids)
    assert (x[changed].eq(MASK) | ~torch.isin(x[changed], torch.tensor(SPECIALS))).all(), "a replacement is <mask> or a non-special id"


def test_bert_mask_is_reproducible_and_refuses_bad_input():
    ids = torch.randint(4, V, (3, 20), generator=torch.Generator().manual_seed(0))
    a = bert_mask(ids, MASK, V, special_ids=SPECIALS, generator=torch.Generator().manual_seed(5))
    b = bert_mask(ids, MASK, V, special_ids=SPECIALS, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ContractError, match="split"):
        bert_mask(ids, MASK, V, mask_frac=0.8, random_frac=0.3)
    with pytest.raises(ContractError, match="vocab_size"):
        bert_mask(ids, MASK, 10)
    with pytest.raises(ContractError, match="mask id"):
        bert_mask(ids, None, V)
    with pytest.raises(ContractError, match="p "):
        bert_mask(ids, MASK, V, p=1.5)


def test_bert_mask_statistics_over_100k_tokens(tok):
    world = MarkovWorld(tokenizer=tok)
    ids = world.sample_windows(6400, 16, torch.Generator().manual_seed(0))
    x, y = bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=torch.Generator().manual_seed(1))
    s = corruption_stats(ids, x, y, tok.mask_id, tok.special_ids)
    assert s["n_tokens"] >= 100_000
    for k, want in {"chosen": 0.15, "masked": 0.8, "random": 0.1, "unchanged": 0.1}.items():
        assert abs(s[k] - want) < 0.01, (k, s[k])
    assert s["special_chosen"] == 0 and s["labels_clean"] and s["unchosen_changed"] == 0


def test_bert_mask_matches_transformers_collator_statistics(tok):
    """Cross-check with DataCollatorForLanguageModeling on labkit's tokenizer (to_hf): the same
    15 / 80 / 10 / 10 within one point, the same special-token rule, the same label convention."""
    from transformers import DataCollatorForLanguageModeling

    world = MarkovWorld(tokenizer=tok)
    ids = world.sample_windows(6400, 16, torch.Generator().manual_seed(2))
    hf = DataCollatorForLanguageModeling(tokenizer=tok.to_hf(), mlm_probability=0.15, seed=0)
    batch = hf([{"input_ids": r} for r in ids.tolist()])
    theirs = corruption_stats(ids, batch["input_ids"], batch["labels"], tok.mask_id, tok.special_ids)
    x, y = bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=torch.Generator().manual_seed(3))
    ours = corruption_stats(ids, x, y, tok.mask_id, tok.special_ids)
    for k in ("chosen", "masked", "random", "unchanged"):
        assert abs(ours[k] - theirs[k]) < 0.01, (k, ours[k], theirs[k])
    for s in (ours, theirs):
        assert s["special_chosen"] == 0 and s["labels_clean"] and s["unchosen_changed"] == 0


def test_bert_mask_replace_ids_draws_other_data_tokens(tok):
    """replace_ids: every random replacement is a pool token other than the clean one; the split and
    the chosen positions are those of the default call with the same generator."""
    world = MarkovWorld(tokenizer=tok)
    ids = world.sample_windows(6400, 16, torch.Generator().manual_seed(0))
    pool = [i for i in ids.unique().tolist() if i not in tok.special_ids]
    x, y = bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=torch.Generator().manual_seed(1),
                     replace_ids=pool)
    s = corruption_stats(ids, x, y, tok.mask_id, tok.special_ids)
    for k, want in {"chosen": 0.15, "masked": 0.8, "random": 0.1, "unchanged": 0.1}.items():
        assert abs(s[k] - want) < 0.01, (k, s[k])
    random_pos = y.ne(IGNORE) & x.ne(tok.mask_id) & x.ne(ids)
    assert torch.isin(x[random_pos], torch.tensor(pool)).all()
    x0, y0 = bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, y0) and torch.equal(x.eq(tok.mask_id), x0.eq(tok.mask_id))
    # mask only: the same chosen positions, every one shown as <mask>
    xm, ym = bert_mask(ids, tok.mask_id, len(tok), mask_frac=1.0, random_frac=0.0, special_ids=tok.special_ids,
                       generator=torch.Generator().manual_seed(1), replace_ids=pool)
    assert torch.equal(ym, y) and torch.equal(xm.eq(tok.mask_id), y.ne(IGNORE))
    with pytest.raises(ContractError, match="replace_ids"):
        bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, replace_ids=[tok.mask_id, 42])


def test_random_other_tokens_is_uniform_over_the_others():
    pool = [5, 9, 12, 20]
    ids = torch.tensor([5, 9, 12, 20, 7] * 4000)
    out = random_other_tokens(ids, pool, torch.Generator().manual_seed(0))
    assert torch.isin(out, torch.tensor(pool)).all()
    in_pool = ids.ne(7)
    assert not out[in_pool].eq(ids[in_pool]).any(), "never the clean token"
    for clean in pool:                                       # 3 other tokens, each about 1/3
        counts = torch.bincount(out[ids == clean], minlength=21)[pool].float()
        assert counts[pool.index(clean)] == 0
        assert ((counts[counts > 0] / counts.sum()) - 1 / 3).abs().max() < 0.04
    counts = torch.bincount(out[ids == 7], minlength=21)[pool].float()   # not in the pool: any of the 4
    assert ((counts / counts.sum()) - 0.25).abs().max() < 0.04
    with pytest.raises(ContractError, match="2 distinct"):
        random_other_tokens(ids, [5], None)


def test_masked_lm_loss_equals_the_mean_over_targets_and_token_accuracy():
    from labkit.models import TinyTransformer
    from labkit.reduce import token_cross_entropy

    torch.manual_seed(0)
    model = TinyTransformer(V, d_model=16, n_layers=1, n_heads=2, max_len=12, causal=False)
    ids = torch.randint(4, V, (5, 12), generator=torch.Generator().manual_seed(1))
    x, y = bert_mask(ids, MASK, V, p=0.3, special_ids=SPECIALS, generator=torch.Generator().manual_seed(2))
    full = token_cross_entropy(model(x), y)
    assert torch.allclose(masked_lm_loss(model, x, y), full.sum() / y.ne(IGNORE).sum(), atol=1e-5)
    with pytest.raises(ContractError, match="no target"):
        masked_lm_loss(model, x, torch.full_like(y, IGNORE))
    where = y.ne(IGNORE)
    want = model(x).argmax(-1)[where].eq(ids[where]).float().mean().item()
    assert token_accuracy(model, x, ids, where) == pytest.approx(want)


def test_corruption_stats_refuses_mismatched_shapes():
    with pytest.raises(ContractError, match="one shape"):
        corruption_stats(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2), 3)


# ----------------------------------------------------------------------------- span corruption: properties

SENTINELS = list(range(1000, 1100))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), L=st.integers(2, 160), density=st.floats(0.02, 0.9),
       mean_span=st.floats(1.0, 8.0))
def test_span_corrupt_properties(seed, L, density, mean_span):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 500, (L,), generator=g)
    inputs, targets = span_corrupt(ids, SENTINELS, density, mean_span, generator=g)
    noise = min(max(round(L * density), 1), L - 1)
    spans = max(round(min(noise, L - noise) / mean_span), 1)
    in_sent = [int(i) for i in inputs if int(i) in set(SENTINELS)]
    out_sent = [int(i) for i in targets if int(i) in set(SENTINELS)]
    assert in_sent == out_sent == SENTINELS[:spans], "one sentinel per span, in order, in both"
    assert int(targets[0]) == SENTINELS[0], "targets start with a sentinel"
    assert len(inputs) == L - noise + spans and len(targets) == noise + spans
    assert torch.equal(span_reconstruct(inputs, targets, SENTINELS), ids), "inputs + targets give back the clean row"
    mask = span_noise_mask(L, density, mean_span, torch.Generator().manual_seed(seed))
    assert int(mask.sum()) == noise and not bool(mask[0]) and bool(mask[-1])
    starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])
    assert int(starts.sum()) == spans


def test_span_corrupt_batch_and_errors():
    ids = torch.arange(40).view(2, 20) + 10
    a, b = span_corrupt(ids, SENTINELS, 0.3, 2.0, torch.Generator().manual_seed(0))
    assert a.shape == (2, 20 - 6 + 3) and b.shape == (2, 6 + 3)
    assert torch.equal(span_reconstruct(a, b, SENTINELS), ids)
    with pytest.raises(ContractError, match="already contains sentinel"):
        span_corrupt(torch.tensor([1, 1000, 3, 4]), SENTINELS)
    with pytest.raises(ContractError, match="sentinel ids"):
        span_corrupt(torch.arange(100), [1000], 0.5, 2.0)
    with pytest.raises(ContractError, match="at least 2"):
        span_noise_mask(1)
    with pytest.raises(ContractError, match="start with a sentinel"):
        span_reconstruct(torch.tensor([5, 1000]), torch.tensor([7, 1000]), SENTINELS)


def test_span_statistics_over_many_rows():
    rows = torch.randint(0, 500, (500, 100), generator=torch.Generator().manual_seed(1))
    lengths = []
    g = torch.Generator().manual_seed(2)
    for _ in range(500):
        m = span_noise_mask(100, 0.15, 3.0, g)
        starts = m & ~torch.cat([torch.tensor([False]), m[:-1]])
        lengths.append(int(m.sum()) / int(starts.sum()))
    assert sum(lengths) / len(lengths) == pytest.approx(3.0)
    a, b = span_corrupt(rows, SENTINELS, generator=g)
    assert torch.equal(span_reconstruct(a, b, SENTINELS), rows)


def test_sentinel_tokenizer_keeps_every_other_id(tok):
    stok, ids = sentinel_tokenizer(8, tok)
    assert len(stok) == len(tok) and ids[0] == len(tok) - 1 and len(set(ids)) == 8
    assert stok.token(ids[0]) == "<extra_id_0>" and stok.token(ids[7]) == "<extra_id_7>"
    assert stok.encode("the cat sat on the mat") == tok.encode("the cat sat on the mat")
    assert stok.mask_id == tok.mask_id
    with pytest.raises(ContractError, match="unused"):
        sentinel_tokenizer(10_000, tok)


def test_delete_tokens_keeps_specials_and_targets_clean():
    ids = torch.tensor([1, 10, 11, 12, 13, 14, 2])
    inputs, targets = delete_tokens(ids, 1.0, special_ids=(1, 2))
    assert inputs.tolist() == [1, 2] and torch.equal(targets, ids)
    inputs, _ = delete_tokens(ids, 0.0)
    assert torch.equal(inputs, ids)
    with pytest.raises(ContractError):
        delete_tokens(ids[None], 0.5)


# ----------------------------------------------------------------------------- masked diffusion

def test_diffusion_corrupt_semantics():
    ids = torch.randint(4, V, (2000, 16), generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 0.95, 2000)
    noisy, labels, t_out = diffusion_corrupt(ids, MASK, t=t, generator=torch.Generator().manual_seed(1))
    masked = labels.ne(IGNORE)
    assert torch.equal(masked, noisy.eq(MASK)) and torch.equal(labels[masked], ids[masked])
    assert torch.equal(noisy[~masked], ids[~masked]) and torch.equal(t_out, t)
    lo, hi = masked[:1000].float().mean().item(), masked[1000:].float().mean().item()
    assert abs(lo - t[:1000].mean().item()) < 0.02 and abs(hi - t[1000:].mean().item()) < 0.02
    _, _, drawn = diffusion_corrupt(ids, MASK, generator=torch.Generator().manual_seed(2))
    assert drawn.min() > 0 and drawn.max() <= 1
    with pytest.raises(ContractError, match="noise level"):
        diffusion_corrupt(ids, MASK, t=torch.ones(3))


def test_diffusion_weights_rows_and_loss():
    masked = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    t = torch.tensor([0.25, 0.75, 0.1])
    B, T = masked.shape
    tm = diffusion_weights(masked, t, "token_mean")
    ps = diffusion_weights(masked, t, "sequence_mean")
    el = diffusion_weights(masked, t, "elbo")
    assert tm.sum().item() == pytest.approx(1.0) and tm.sum(1).tolist() == pytest.approx([0.25, 0.75, 0.0])
    assert ps.sum(1).tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert el.sum(1).tolist() == pytest.approx([1 / (0.25 * B * T), 3 / (0.75 * B * T), 0.0])
    assert not (tm[~masked].any() or ps[~masked].any() or el[~masked].any())
    logits = torch.randn(B, T, 7)
    labels = torch.where(masked, torch.randint(0, 7, (B, T)), torch.full((B, T), IGNORE))
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE)
    for w, weights in [("token_mean", tm), ("sequence_mean", ps), ("elbo", el)]:
        assert diffusion_loss(logits, labels, t, w).item() == pytest.approx((weights * ce).sum().item(), rel=1e-5)
    with pytest.raises(ContractError, match="no masked"):
        diffusion_loss(logits, torch.full((B, T), IGNORE), t)
    with pytest.raises(ContractError, match="unknown reduction"):
        diffusion_weights(masked, t, "sum")


class FixedText(nn.Module):
    """A denoiser that always predicts one fixed text (confidence decreasing along the row)."""

    def __init__(self, text, V):
        super().__init__()
        self.text, self.V = torch.tensor(text), V
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, ids, attention_mask=None, position_ids=None):
        B, T = ids.shape
        logits = torch.zeros(B, T, self.V) + 0 * self.dummy
        logits[:, torch.arange(T), self.text] = 20.0 - torch.arange(T).float()
        return logits


def test_unmask_sample_commits_and_never_writes_mask():
    text = [5, 6, 7, 8, 9, 10]
    model = FixedText(text, 12)
    for steps, order in [(6, "confidence"), (2, "confidence"), (3, "random")]:
        out = unmask_sample(model, 4, 6, mask_id=3, steps=steps, order=order, generator=torch.Generator().manual_seed(0))
        assert out.tolist() == [text] * 4
    out = unmask_sample(nn.Sequential(nn.Embedding(12, 12)), 8, 5, mask_id=3, generator=torch.Generator().manual_seed(1))
    assert not out.eq(3).any()
    with pytest.raises(ContractError, match="steps"):
        unmask_sample(model, 1, 6, 3, steps=7)
    with pytest.raises(ContractError, match="order"):
        unmask_sample(model, 1, 6, 3, order="left")


# ----------------------------------------------------------------------------- the exact conditional

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), pattern=st.lists(st.booleans(), min_size=2, max_size=6))
def test_posterior_matches_enumeration(seed, pattern):
    world = MarkovWorld()
    x = world.sample_windows(1, len(pattern), torch.Generator().manual_seed(seed))
    visible = torch.tensor([pattern])
    if int((~visible).sum()) > 4:
        visible[0, :2] = True
    post = world.posterior(x, visible)[0]
    S, pi = world.states, world.stationary()
    hidden = [t for t in range(len(pattern)) if not visible[0, t]]
    total = torch.zeros(len(pattern), world.vocab_size, dtype=torch.float64)
    for combo in itertools.product(S, repeat=len(hidden)):
        y = x[0].clone()
        for t, v in zip(hidden, combo):
            y[t] = v
        p = pi[y[0]] * torch.prod(world.P[y[:-1], y[1:]])
        total[torch.arange(len(pattern)), y] += p
    total /= total.sum(-1, keepdim=True)
    assert torch.allclose(post, total, atol=1e-10)


def test_posterior_fill_probs_windows_and_logprob(tok):
    world = MarkovWorld(tokenizer=tok)
    cat, on = tok.stoi["cat"], tok.stoi["on"]
    post = world.posterior(torch.tensor([[cat, tok.mask_id, on]]), torch.tensor([[True, False, True]]))
    assert torch.allclose(post[0, 1], world.fill_probs(cat, on))
    with pytest.raises(ContractError, match="impossible"):
        world.posterior(torch.tensor([[tok.stoi["the"], 0, on]]), torch.tensor([[True, False, True]]))
    with pytest.raises(ContractError, match="not a state"):
        world.posterior(torch.tensor([[tok.stoi["apple"], 0]]), torch.tensor([[True, False]]))
    w = world.sample_windows(20_000, 3, torch.Generator().manual_seed(0))
    assert world.P[w[:, :-1], w[:, 1:]].gt(0).all()
    freq = torch.bincount(w[:, 2], minlength=world.vocab_size).double() / len(w)
    assert (freq - world.stationary()).abs().max() < 0.015
    lp = world.sequence_logprob(w[:3])
    manual = world.stationary()[w[0, 0]].log() + world.P[w[0, 0], w[0, 1]].log() + world.P[w[0, 1], w[0, 2]].log()
    assert lp[0].item() == pytest.approx(manual.item())


# ----------------------------------------------------------------------------- exercise checks


# ----------------------------------------------------------------------------- the mask-ratio panel

@pytest.mark.parametrize("kind", ["token", "span", "bert", "deletion"])
def test_render_corruption(kind):
    from labkit.widgets import render_corruption

    render_corruption()                                # warm the imports
    start = time.perf_counter()
    state = render_corruption(0.4, kind, seed=3)
    assert time.perf_counter() - start < 0.1
    assert kind in state["text"] and "<table" in state["html"] and state["n_targets"] >= 1
    if kind in ("token", "bert"):
        assert state["n_targets"] == int(state["targets"].ne(IGNORE).sum())
    if kind == "span":
        stok, sentinels = sentinel_tokenizer(16)
        clean = torch.tensor(stok.encode("the cat sat on the mat and the dog ran to the rug"))
        assert torch.equal(span_reconstruct(state["inputs"], state["targets"], sentinels), clean)
    if kind == "deletion":
        assert state["n_targets"] == len(state["targets"]) > len(state["inputs"])
    more = render_corruption(0.9, kind, seed=3)
    assert more["n_targets"] >= state["n_targets"] or kind == "deletion"


def test_render_corruption_refuses_bad_input():
    from labkit.widgets import render_corruption

    with pytest.raises(ContractError, match="unknown corruption"):
        render_corruption(0.3, "shuffle")
    with pytest.raises(ContractError, match="ratio"):
        render_corruption(1.0, "token")


def test_mask_ratio_panel_rerenders():
    from labkit.widgets import CORRUPTIONS, MaskRatioPanel

    panel = MaskRatioPanel()
    seen = {}
    for kind in CORRUPTIONS:
        panel.kind.value = kind
        seen[kind] = panel.output.value
    panel.ratio.value = 0.8
    assert panel.renders == 1 + len(CORRUPTIONS) and len(set(seen.values())) == len(CORRUPTIONS)
    assert panel.state["kind"] == "deletion" and panel.state["ratio"] == 0.8
    assert panel.ui().children[0] is panel.kind
