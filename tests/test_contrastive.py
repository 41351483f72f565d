"""Contrastive objectives: InfoNCE as B-way cross-entropy, its gradient, false-negative masks,
SupCon-style positives (against an independent loop implementation), retrieval metrics, negatives
gathered across 2 real gloo ranks, the exercise checks and the temperature panel."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from labkit.checks import ContractError
from labkit.data import DigitCaptions, digits_split
from labkit.dist import run_ranks
from labkit.models import DualEncoder
from labkit.paradigms.contrastive import (CONTRASTIVE_VARIANTS, GATHER_DESIGNS, GATHER_RECIPES,
                                          GATHER_RECIPES_HELP, batch_repulsive_share, class_retrieval_accuracy,
                                          contrastive_objective, dual_encoder_grads, evaluate_dual_encoder,
                                          flat_grad, gathered_clip_loss, gathered_info_nce,
                                          gathered_negatives_rank, gathered_targets, gradient_agreement,
                                          hard_negative_share, info_nce, info_nce_from_logits, key_push_balance,
                                          logit_gradient, mean_cosine, pair_batches, repulsive_share,
                                          same_class_mask, similarity_logits, single_process_grad, supcon_loss)
from labkit.widgets import ContrastiveTemperaturePanel, render_contrastive_temperature


def embeddings(B=6, D=5, N=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randn(N or B, D, generator=g)


# ----------------------------------------------------------------------------- formulas

def test_info_nce_is_cross_entropy_over_similarity_rows():
    q, k = embeddings()
    tau = 0.2
    s = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / tau
    assert torch.allclose(similarity_logits(q, k, tau), s, atol=1e-6)
    assert torch.allclose(info_nce(q, k, tau), F.cross_entropy(s, torch.arange(6)), atol=1e-6)
    # written out: -log(exp(s_ii) / sum_j exp(s_ij)), averaged
    by_hand = -sum(s[i, i] - torch.logsumexp(s[i], 0) for i in range(6)) / 6
    assert torch.allclose(info_nce(q, k, tau), by_hand, atol=1e-6)
    raw = q @ k.T / tau
    assert torch.allclose(info_nce(q, k, tau, normalize=False), F.cross_entropy(raw, torch.arange(6)), atol=1e-5)


def test_symmetric_is_the_clip_loss():
    q, k = embeddings()
    s = similarity_logits(q, k, 0.1)
    t = torch.arange(6)
    clip = (F.cross_entropy(s, t) + F.cross_entropy(s.T, t)) / 2
    assert torch.allclose(info_nce(q, k, 0.1, symmetric=True), clip, atol=1e-6)
    assert torch.allclose(info_nce(k, q, 0.1, symmetric=True), clip, atol=1e-6)   # symmetric in its arguments


def test_gradient_is_p_minus_onehot():
    q, k = embeddings(B=7, N=7, seed=3)
    s = similarity_logits(q, k, 0.3).detach().requires_grad_(True)
    info_nce_from_logits(s).backward()
    p = s.detach().softmax(-1)
    assert torch.allclose(s.grad, (p - torch.eye(7)) / 7, atol=1e-7)
    assert torch.allclose(logit_gradient(s.detach()), s.grad, atol=1e-7)


def test_explicit_targets_for_gathered_keys():
    q, k = embeddings(B=3, N=6, seed=1)
    targets = gathered_targets(rank=1, local_batch=3)
    assert targets.tolist() == [3, 4, 5]
    s = similarity_logits(q, k, 0.5)
    assert torch.allclose(info_nce(q, k, 0.5, targets=targets), F.cross_entropy(s, targets), atol=1e-6)
    with pytest.raises(ContractError, match="rank \\* B_local"):
        info_nce(q, k, 0.5, targets=torch.tensor([4, 5, 6]))
    with pytest.raises(ContractError, match="N == B"):
        info_nce(q, k, 0.5, symmetric=True)


def test_false_negative_mask_removes_keys_from_the_denominator():
    q, k = embeddings(B=6, seed=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    mask = same_class_mask(labels)
    assert not mask.diagonal().any() and mask.sum() == 2 * 3 + 2 * 1
    s = similarity_logits(q, k, 0.1)
    expected = torch.stack([-(s[i, i] - torch.logsumexp(s[i][~mask[i]], 0)) for i in range(6)]).mean()
    assert torch.allclose(info_nce(q, k, 0.1, false_negative_mask=mask), expected, atol=1e-6)
    # both directions use their own mask (the transpose) in the symmetric loss
    expected_t = torch.stack([-(s[i, i] - torch.logsumexp(s[:, i][~mask.T[i]], 0)) for i in range(6)]).mean()
    assert torch.allclose(info_nce(q, k, 0.1, symmetric=True, false_negative_mask=mask), (expected + expected_t) / 2, atol=1e-6)
    # no duplicates: the mask is empty and nothing changes
    distinct = same_class_mask(torch.arange(6))
    assert torch.equal(info_nce(q, k, 0.1, false_negative_mask=distinct), info_nce(q, k, 0.1))


def test_false_negative_mask_refuses_to_hide_the_positive():
    q, k = embeddings()
    bad = torch.eye(6, dtype=torch.bool)
    with pytest.raises(ContractError, match="no target"):
        info_nce(q, k, 0.1, false_negative_mask=bad)
    with pytest.raises(ContractError, match="bool"):
        info_nce(q, k, 0.1, false_negative_mask=torch.zeros(6, 6))
    with pytest.raises(ContractError, match=r"\[B,N\]"):
        info_nce(q, k, 0.1, false_negative_mask=torch.zeros(6, 5, dtype=torch.bool))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_temperature_must_be_positive(tau):
    q, k = embeddings()
    with pytest.raises(ContractError, match="temperature"):
        info_nce(q, k, tau)


def test_embedding_shapes_are_checked():
    with pytest.raises(ContractError, match="shared embedding space"):
        info_nce(torch.randn(4, 3), torch.randn(4, 5), 0.1)
    with pytest.raises(ContractError, match=r"\[B,D\]"):
        info_nce(torch.randn(2, 4, 3), torch.randn(4, 3), 0.1)


def supcon_reference(q, k, yq, yk, tau):
    """Independent SupCon-style (L_out) loss over two towers, written with loops: for each query,
    the mean over same-label keys of -log(exp(s_ij) / sum over all keys exp(s_il))."""
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        sims = [float(qi @ (k[j] / k[j].norm())) / tau for j in range(len(k))]
        log_denominator = math.log(sum(math.exp(s) for s in sims))
        positives = [j for j in range(len(k)) if int(yk[j]) == int(yq[i])]
        total += -sum(sims[j] - log_denominator for j in positives) / len(positives)
    return total / len(q)


def test_supcon_matches_an_independent_reference():
    q, k = embeddings(B=8, seed=4)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    assert math.isclose(float(supcon_loss(q, k, y, 0.2)), supcon_reference(q, k, y, y, 0.2), rel_tol=1e-5)
    sym = 0.5 * (supcon_reference(q, k, y, y, 0.2) + supcon_reference(k, q, y, y, 0.2))
    assert math.isclose(float(supcon_loss(q, k, y, 0.2, symmetric=True)), sym, rel_tol=1e-5)
    # with all labels distinct the only positive is the matched key: plain InfoNCE
    assert torch.allclose(supcon_loss(q, k, torch.arange(8), 0.2), info_nce(q, k, 0.2), atol=1e-6)


def test_supcon_refuses_queries_without_positives():
    q, k = embeddings(B=3, N=3)
    with pytest.raises(ContractError, match="no positive"):
        supcon_loss(q, k, torch.tensor([0, 1, 2]), 0.1, labels_k=torch.tensor([5, 5, 5]))


# ----------------------------------------------------------------------------- where the push goes

def test_repulsive_share_by_hand_and_with_mask():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    same = same_class_mask(torch.tensor([0, 1, 0]))             # keys 0 and 2 share a label
    p = logits.softmax(-1)
    expected = (p[0, 2] + p[2, 0]) / (p[0, 1] + p[0, 2] + p[1, 0] + p[1, 2] + p[2, 0] + p[2, 1])
    assert math.isclose(repulsive_share(logits, same), float(expected), rel_tol=1e-6)
    assert repulsive_share(logits, same, false_negative_mask=same) == 0.0
    assert math.isclose(hard_negative_share(logits[0], 0, k=1), float(p[0, 1] / (p[0, 1] + p[0, 2])), rel_tol=1e-6)


def test_colder_softmax_concentrates_the_push():
    row = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.0, -0.3])
    shares = [hard_negative_share(row / t, 0, k=2) for t in (0.02, 0.1, 0.5, 2.0)]
    assert all(a > b for a, b in zip(shares, shares[1:]))


def test_retrieval_and_cosine_metrics():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    gallery = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert class_retrieval_accuracy(q, torch.tensor([0, 1, 1]), gallery, torch.tensor([0, 1])) == pytest.approx(2 / 3)
    assert class_retrieval_accuracy(q, torch.tensor([0, 1, 1]), gallery, torch.tensor([0, 1]), per_class=True) == {0: 1.0, 1: 0.5}
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine(x, torch.tensor([0, 0, 1]), same=True) == pytest.approx(1.0)
    assert mean_cosine(x, torch.tensor([0, 0, 1]), same=False) == pytest.approx(0.0)
    with pytest.raises(ContractError, match="no pair"):
        mean_cosine(x, torch.tensor([0, 1, 2]), same=True)


# ----------------------------------------------------------------------------- data, model, training pieces

def test_digit_captions_and_split():
    cap = DigitCaptions()
    assert cap.caption(7, 2) == "a handwritten 7" and cap.n_wordings == 6
    ids, labels, wordings = cap.gallery()
    assert ids.shape[0] == 60 and labels.tolist()[:7] == [0] * 6 + [1]
    assert cap.tokenizer.decode(ids[labels.tolist().index(3)][ids[labels.tolist().index(3)] != 0]) == "three"
    a, b = digits_split(seed=1), digits_split(seed=1)
    assert torch.equal(a["y_test"], b["y_test"]) and a["x_train"].shape == (1200, 64)
    assert float(a["x_train"].max()) <= 1.0
    with pytest.raises(ContractError):
        cap.caption(10, 0)


def test_dual_encoder_shapes_and_refusals():
    cap = DigitCaptions()
    model = DualEncoder(64, len(cap.tokenizer), dim=8, hidden=16)
    zi, zt = model(torch.rand(3, 64), cap.encode([1, 2, 3], [0, 1, 2]))
    assert zi.shape == zt.shape == (3, 8)
    # padding does not change a caption's embedding (the bag mean excludes pads)
    short = cap.encode([1], [0])
    padded = torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1)
    assert torch.allclose(model.encode_text(short), model.encode_text(padded))
    with pytest.raises(ContractError, match="all padding"):
        model.encode_text(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ContractError, match="images must be"):
        model.encode_image(torch.rand(3, 63))


def test_pair_batches_and_objectives():
    d = digits_split(seed=0)
    cap = DigitCaptions()
    caps = cap.encode(d["y_train"], torch.zeros(len(d["y_train"]), dtype=torch.long))
    g = torch.Generator().manual_seed(0)
    batches = pair_batches(d["x_train"], caps, d["y_train"], 32, 3, g, classes_per_batch=2)
    assert all(len(y.unique()) <= 2 and len(y) == 32 for _, _, y in batches)
    torch.manual_seed(0)
    model = DualEncoder(64, len(cap.tokenizer), dim=8, hidden=16)
    losses = {v: float(contrastive_objective(v, 0.1)(model, batches[0]).detach()) for v in CONTRASTIVE_VARIANTS}
    assert losses["masked"] < losses["plain"]          # fewer negatives in every softmax
    with pytest.raises(ContractError, match="unknown variant"):
        contrastive_objective("hard", 0.1)
    ev = evaluate_dual_encoder(model, d["x_test"][:50], d["y_test"][:50], *cap.gallery()[:2])
    assert 0 <= ev["acc"] <= 1 and set(ev) >= {"paraphrase_sim", "image_same_sim", "acc_by_class"}
    same = same_class_mask(batches[0][2])
    assert batch_repulsive_share(model, batches[:1], 0.1, masked=True) == 0.0
    assert 0 < batch_repulsive_share(model, batches[:1], 0.1) < 1 and same.any()


# ----------------------------------------------------------------------------- negatives across 2 real ranks

def simulated_no_grad_grads(model, images, captions, tau, world_size=2):
    """Single process: what each rank of the stop-gradient design back-propagates, averaged over ranks."""
    B = len(images) // world_size
    total = None
    for r in range(world_size):
        model.zero_grad(set_to_none=True)
        zi, zt = model(images, captions)
        keep = torch.zeros(len(images), 1, dtype=torch.bool)
        keep[r * B:(r + 1) * B] = True
        zi_all, zt_all = torch.where(keep, zi, zi.detach()), torch.where(keep, zt, zt.detach())
        t = gathered_targets(r, B)
        loss = 0.5 * (info_nce(zi[r * B:(r + 1) * B], zt_all, tau, targets=t) + info_nce(zt[r * B:(r + 1) * B], zi_all, tau, targets=t))
        loss.backward()
        grads = {n: p.grad.clone() / world_size for n, p in model.named_parameters()}
        total = grads if total is None else {n: total[n] + grads[n] for n in grads}
    return total


def test_two_rank_gathered_negatives_against_the_full_batch():
    cap = DigitCaptions()
    d = digits_split(seed=0)
    images = d["x_train"][:16]
    caps = cap.encode(d["y_train"][:16], cap.sample_wordings(16, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = DualEncoder(64, len(cap.tokenizer), dim=8, hidden=16)
    results = run_ranks(gathered_negatives_rank, world_size=2, args=(model, images, caps, 0.1, True))
    full_loss, _ = dual_encoder_grads(model, images, caps, 0.1)
    reference = single_process_grad(model, images, caps, 0.1)
    assert set(GATHER_RECIPES) == set(GATHER_RECIPES_HELP)
    for r in results:
        assert r["full_loss"] == pytest.approx(full_loss, abs=1e-6)
        for recipe in GATHER_RECIPES:                                         # DDP: the same gradient on every rank
            assert torch.equal(r[recipe]["grad"], results[0][recipe]["grad"])
    out = results[0]
    agree = {k: gradient_agreement(out[k]["grad"], reference) for k in GATHER_RECIPES}
    # exact designs: a differentiable gather, and OpenCLIP's no-grad gather with the own slot and x R
    assert agree["with_grad"]["rel"] < 1e-5 and agree["openclip"]["rel"] < 1e-5
    assert out["with_grad"]["loss_mean"] == pytest.approx(full_loss, abs=1e-5)
    assert out["openclip"]["loss_mean"] == pytest.approx(2 * full_loss, abs=1e-4)      # the loss carries the x R
    # without x R: the right direction, 1/R of the size
    assert agree["openclip_unscaled"]["cos"] == pytest.approx(1.0, abs=1e-6)
    assert agree["openclip_unscaled"]["norm_ratio"] == pytest.approx(0.5, abs=1e-6)
    # the naive designs: the same loss value, another gradient, exactly the full batch minus named key terms
    for naive, keys in (("no_grad", "own_rank"), ("detached", "none")):
        assert out[naive]["loss_mean"] == pytest.approx(full_loss, abs=1e-5)
        assert agree[naive]["rel"] > 0.05
        assert gradient_agreement(out[naive]["grad"], single_process_grad(model, images, caps, 0.1, keys=keys,
                                                                          world_size=2))["rel"] < 1e-5
    assert out["local"]["loss_mean"] < full_loss - 0.3                        # 8-way instead of 16-way
    # single_process_grad("own_rank") against an independent loop over the ranks
    simulated = simulated_no_grad_grads(model, images, caps, 0.1)
    flat = torch.cat([simulated[n].flatten() for n, _ in model.named_parameters()])
    assert gradient_agreement(flat, single_process_grad(model, images, caps, 0.1, keys="own_rank", world_size=2))["rel"] < 1e-6


def test_gathered_info_nce_needs_a_process_group():
    q, k = embeddings()
    with pytest.raises(ContractError, match="process group"):
        gathered_info_nce(q, k, 0.1, gather="with_grad")
    with pytest.raises(ContractError, match="process group"):
        gathered_clip_loss(q, k, 0.1)
    with pytest.raises(ContractError, match="unknown gather"):
        gathered_info_nce(q, k, 0.1, gather="all")
    assert torch.equal(gathered_info_nce(q, k, 0.1, gather="local"), info_nce(q, k, 0.1))
    assert GATHER_DESIGNS == ("with_grad", "no_grad", "detached", "local")


def test_key_push_balance_full_and_local_sum_to_zero():
    s = torch.randn(8, 8, generator=torch.Generator().manual_seed(0)) * 3
    b = key_push_balance(s, 2)
    assert abs(b["full"]) < 1e-12 and abs(b["local"]) < 1e-12
    p = s.double().softmax(-1)
    other = torch.arange(8)[:, None] // 4 != torch.arange(8)[None, :] // 4
    assert b["own_rank"] == pytest.approx(-float(p[other].sum()) / 8, abs=1e-12)
    assert key_push_balance(torch.zeros(6, 6), 3)["own_rank"] == pytest.approx(-2 / 3)   # uniform: (R-1)/R lost
    with pytest.raises(ContractError, match="divisible"):
        key_push_balance(torch.zeros(6, 6), 4)


def test_gradient_agreement_and_single_process_grad_contracts():
    ref = torch.tensor([3.0, 4.0])
    a = gradient_agreement(torch.tensor([1.5, 2.0]), ref)
    assert a["cos"] == pytest.approx(1.0) and a["norm_ratio"] == pytest.approx(0.5) and a["rel"] == pytest.approx(0.5)
    with pytest.raises(ContractError, match="zero"):
        gradient_agreement(ref, torch.zeros(2))
    model = DualEncoder(64, 20, dim=4, hidden=8)
    images, caps = torch.randn(6, 64), torch.randint(1, 20, (6, 3))
    with pytest.raises(ContractError, match="keys"):
        single_process_grad(model, images, caps, 0.1, keys="some")
    with pytest.raises(ContractError, match="split evenly"):
        single_process_grad(model, images, caps, 0.1, keys="own_rank", world_size=4)
    g = single_process_grad(model, images, caps, 0.1)
    assert g.shape == flat_grad(model).shape == (sum(p.numel() for p in model.parameters()),)


# ----------------------------------------------------------------------------- exercise checks


# ----------------------------------------------------------------------------- temperature panel

def test_render_contrastive_temperature():
    start = time.perf_counter()
    cold, warm = render_contrastive_temperature(0.05), render_contrastive_temperature(1.0)
    assert (time.perf_counter() - start) / 2 < 0.1
    assert cold["hard_share"] > warm["hard_share"] and cold["p_positive"] > warm["p_positive"]
    assert cold["effective_negatives"] < warm["effective_negatives"]
    assert math.isclose(sum(cold["probs"]), 1.0, rel_tol=1e-9)
    assert "<table" in cold["html"] and "tau 0.05" in cold["text"]
    custom = render_contrastive_temperature(0.1, similarities=[0.9, 0.8, 0.0], positive=0, same_meaning=[False, True, False])
    assert custom["false_negative_share"] > 0.9
    with pytest.raises(ContractError):
        render_contrastive_temperature(0.0)
    with pytest.raises(ContractError):
        render_contrastive_temperature(0.1, similarities=[0.1, 0.2], same_meaning=[True])


def test_contrastive_temperature_panel_rerenders():
    panel = ContrastiveTemperaturePanel(tau=0.1)
    first = panel.output.value
    panel.control.value = 0.5
    assert panel.renders == 2 and panel.output.value != first and "tau 0.5" in panel.state["text"]
    assert panel.ui().children[0] is panel.control
