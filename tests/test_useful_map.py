"""labkit.paradigms.objective_matrix (notebook 14 and the classification row of notebook 00) and its grader."""
import itertools

import pytest
import torch
import torch.nn as nn

from labkit import IGNORE
from labkit.checks import assert_prompt_masked
from labkit.exercises.useful_map import check_next_token_truth
from labkit.models import TinyTransformer
from labkit.paradigms.objective_matrix import (CAUSAL, OBJECTIVES, SLOTS, SceneWorld, SequenceClassifier,
                                               classification_example, collate_classification, mean_pool, new_network,
                                               next_token_probs, objective_batches, objective_loss, overlap,
                                               probe_all, probe_fill_in, probe_next_token, probe_preference,
                                               train_objective)


@pytest.fixture(scope="module")
def world():
    return SceneWorld()


def test_world_is_a_distribution_and_paraphrases_share_no_word(world):
    assert torch.isclose(world.sentence_probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert world.sentences.shape == (72, 8)
    for s in range(len(world.scenes)):
        assert not set(world.words(s, 0)) & set(world.words(s, 1))


def test_next_token_truth_matches_the_generative_story(world):
    tok = world.tokenizer
    p = world.next_token_truth(tok.encode("<bos> the cat"))
    assert torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert abs(float(p[tok.stoi["sat"]]) - 0.6) < 1e-9 and abs(float(p[tok.stoi["ran"]]) - 0.1) < 1e-9
    assert float(world.next_token_truth(tok.encode("<bos>"))[tok.stoi["the"]]) == pytest.approx(0.5)


def test_fill_truth_is_bayes_rule(world):
    """p(action | animal, place) is proportional to p(action | animal) p(place | action)."""
    from labkit.paradigms.objective_matrix import P_ACTION, P_PLACE

    tok = world.tokenizer
    for a, p in itertools.product(range(3), range(4)):
        row = world.ids(world.scenes.index((a, 0, p)), 0)
        got = world.fill_truth(row, 3)
        joint = torch.tensor([P_ACTION[a][v] * P_PLACE[v][p] for v in range(3)], dtype=torch.float64)
        want = joint / joint.sum()
        for v, word in enumerate(("sat", "ran", "slept")):
            assert float(got[tok.stoi[word]]) == pytest.approx(float(want[v]))
    # the determiner is fixed by the register of the other words
    assert float(world.fill_truth(world.ids(5, 1), 1)[tok.stoi["a"]]) == pytest.approx(1.0)


class _Oracle(nn.Module):
    """Answers every query with the world's truth (log-probabilities as logits)."""

    def __init__(self, world, causal):
        super().__init__()
        self.world, self.causal, self.w = world, causal, nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, T = x.shape
        out = torch.full((B, T, self.world.vocab_size), -30.0)
        for b in range(B):
            row = x[b]
            for t in range(1, T + 1):
                if self.causal and t <= 7:
                    out[b, t - 1] = self.world.next_token_truth(row[:t]).clamp_min(1e-13).log().float()
            if not self.causal:
                hole = (row == self.world.tokenizer.mask_id).nonzero().flatten()
                if len(hole):
                    t = int(hole[0])
                    if t == T - 1:                       # prefix + <mask>: a next-token question
                        out[b, t] = self.world.next_token_truth(row[:t]).clamp_min(1e-13).log().float()
                    else:
                        out[b, t] = self.world.fill_truth(row, t).clamp_min(1e-13).log().float()
        return out


def test_probes_give_the_truth_full_marks(world):
    assert probe_next_token(_Oracle(world, causal=True), world, n=40) == pytest.approx(1.0, abs=1e-6)
    assert probe_fill_in(_Oracle(world, causal=False), world, n=40) == pytest.approx(1.0, abs=1e-6)
    assert probe_next_token(_Oracle(world, causal=False), world, n=40) == pytest.approx(1.0, abs=1e-6)


def test_overlap_is_one_minus_total_variation():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    assert float(overlap(p, q)) == pytest.approx(1 - 0.5 * float((p - q).abs().sum()))


def test_batches_follow_each_contract(world):
    tok = world.tokenizer
    g = torch.Generator().manual_seed(0)
    ar = objective_batches(world, "autoregressive", 1, 4, g)[0]
    assert ar.shape == (4, 8)
    inputs, labels = objective_batches(world, "masked", 1, 64, g)[0]
    hidden = labels.ne(IGNORE)
    assert hidden.any() and inputs[hidden].eq(tok.mask_id).all() and not labels[:, [0, 7]].ne(IGNORE).any()
    a, b, scenes = objective_batches(world, "contrastive", 1, 4, g)[0]
    assert torch.equal(world.sentence_ids(scenes, torch.zeros_like(scenes)), a)
    assert torch.equal(world.sentence_ids(scenes, torch.ones_like(scenes)), b)
    sft = objective_batches(world, "sft", 1, 4, g)[0]
    for row in range(4):
        assert_prompt_masked(sft["labels"][row], 10)
        assert sft["labels"][row, 10:].ne(IGNORE).sum() == 2          # one word and <eos>
    dpo = objective_batches(world, "dpo", 1, 4, g)[0]
    assert torch.equal(dpo["input_ids"][:4, :10], dpo["input_ids"][4:, :10])   # same prompts
    assert not torch.equal(dpo["input_ids"][:4], dpo["input_ids"][4:])


def test_every_objective_starts_from_the_same_weights(world):
    nets = [new_network(world, o, seed=3) for o in OBJECTIVES]
    ref = nets[0].state_dict()
    for n, o in zip(nets, OBJECTIVES):
        assert n.causal == CAUSAL[o]
        assert all(torch.equal(n.state_dict()[k], ref[k]) for k in ref)


def test_losses_are_finite_and_dpo_starts_at_log2(world):
    g = torch.Generator().manual_seed(0)
    for obj in OBJECTIVES:
        net = new_network(world, obj, seed=0)
        ref = new_network(world, obj, seed=0) if obj == "dpo" else None
        loss = objective_loss(obj, ref)(net, objective_batches(world, obj, 1, 8, g)[0])
        assert torch.isfinite(loss)
        if obj == "dpo":
            assert float(loss.detach()) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-5)


def test_next_token_probs_asks_a_bidirectional_net_with_a_mask(world):
    net = new_network(world, "masked", 0)
    x = world.sentences[:3, :4]
    want = net(torch.cat([x, torch.full((3, 1), world.tokenizer.mask_id)], 1))[:, -1].softmax(-1)
    assert torch.allclose(next_token_probs(net, x, world.tokenizer.mask_id), want.detach())


def test_sequence_classifier_ignores_padding():
    torch.manual_seed(0)
    net = SequenceClassifier(TinyTransformer(20, d_model=16, n_layers=1, n_heads=2, max_len=8, causal=False), 3).eval()
    ids, mask, labels = collate_classification([classification_example([1, 5, 6], 0), classification_example([1, 7, 8, 9, 2], 2, 3)], 0)
    alone = net(torch.tensor([[1, 5, 6]]))
    assert torch.allclose(net(ids, mask)[0], alone[0], atol=1e-5)
    assert labels.tolist() == [0, 2]
    assert torch.allclose(mean_pool(torch.ones(1, 3, 2), torch.tensor([[1, 1, 0]])), torch.ones(1, 2))


def test_grader_accepts_the_solution_and_names_mistakes(world):
    def right(w, prefix):
        t = len(prefix)
        keep = (w.sentences[:, :t] == torch.tensor(prefix)).all(-1)
        p = torch.zeros(w.vocab_size, dtype=torch.float64).index_add_(0, w.sentences[:, t], w.sentence_probs * keep)
        return p / p.sum()

    def unnormalised(w, prefix):
        t = len(prefix)
        keep = (w.sentences[:, :t] == torch.tensor(prefix)).all(-1)
        return torch.zeros(w.vocab_size, dtype=torch.float64).index_add_(0, w.sentences[:, t], w.sentence_probs * keep)

    def uniform(w, prefix):
        t = len(prefix)
        keep = (w.sentences[:, :t] == torch.tensor(prefix)).all(-1).double()
        p = torch.zeros(w.vocab_size, dtype=torch.float64).index_add_(0, w.sentences[:, t], keep)
        return p / p.sum()

    check_next_token_truth(right, world)
    with pytest.raises(AssertionError, match="divided by their total"):
        check_next_token_truth(unnormalised, world)
    with pytest.raises(AssertionError, match="by its probability"):
        check_next_token_truth(uniform, world)




@pytest.mark.slow
def test_each_objective_beats_the_untrained_net_on_its_own_probe(world):
    init = probe_all(train_objective(world, "init", 0), world)
    for obj, probe in (("autoregressive", "next-token"), ("masked", "fill-in"), ("sft", "answer")):
        trained = probe_all(train_objective(world, obj, 0, steps=120), world)
        assert trained[probe] > init[probe] + 0.3, (obj, trained[probe], init[probe])


def test_fill_grader_accepts_the_truth_and_names_left_only(world):
    from labkit.exercises.useful_map import check_fill_truth

    check_fill_truth(lambda w, ids, t: w.fill_truth(ids, t), world)
    with pytest.raises(AssertionError, match="left side only"):
        check_fill_truth(lambda w, ids, t: w.next_token_truth(ids[:t]), world)


# ----------------------------------------------------------------------------- hard-negative mining (labkit.paradigms.contrastive, notebook 09)

def test_catalogue_knows_its_duplicates():
    from labkit.paradigms.contrastive import DuplicateCatalogue

    cat = DuplicateCatalogue(seed=0, categories=4, products_per_category=3, listings_per_product=2)
    assert cat.listings.shape == (24, cat.dim) and cat.n_products == 12
    dup = cat.duplicates(torch.tensor([0, 5]))
    assert dup.sum(1).tolist() == [2, 2] and bool(dup[0, 0]) and bool(dup[0, 1]) and bool(dup[1, 4])
    q = cat.queries(torch.tensor([3, 3]), torch.Generator().manual_seed(0))
    assert q.shape == (2, cat.dim) and not torch.equal(q[0], q[1])          # fresh views


def test_mine_negatives_picks_the_hardest_and_never_the_positive():
    from labkit.paradigms.contrastive import mine_negatives

    sim = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.2], [0.1, 0.2, 0.3, 0.4, 0.5]])
    neg = mine_negatives(sim, torch.tensor([0, 4]), n_neg=2, k=2, generator=torch.Generator().manual_seed(0))
    assert sorted(neg[0].tolist()) == [1, 3] and sorted(neg[1].tolist()) == [2, 3]
    exclude = torch.zeros(2, 5, dtype=torch.bool)
    exclude[0, 1] = True
    neg = mine_negatives(sim, torch.tensor([0, 4]), n_neg=2, k=2, exclude=exclude, generator=torch.Generator().manual_seed(0))
    assert sorted(neg[0].tolist()) == [3, 4]
    rnd = mine_negatives(sim, torch.tensor([0, 4]), n_neg=4, generator=torch.Generator().manual_seed(0))
    assert 0 not in rnd[0].tolist() and 4 not in rnd[1].tolist()


def test_mined_info_nce_is_cross_entropy_over_in_batch_and_mined_keys():
    from labkit.paradigms.contrastive import info_nce, mined_info_nce

    g = torch.Generator().manual_seed(0)
    zq, zp, zn = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, 3, 6, generator=g)
    q, p, n = (torch.nn.functional.normalize(x, dim=-1) for x in (zq, zp, zn))
    logits = torch.cat([q @ p.T, (q[:, None] * n).sum(-1)], 1) / 0.1
    want = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert torch.isclose(mined_info_nce(zq, zp, zn, 0.1), want, atol=1e-5)
    # mined negatives pointing away from their query add ~nothing: in-batch InfoNCE is left
    assert torch.isclose(mined_info_nce(zq, zp, -zq[:, None].expand(4, 3, 6), 0.01), info_nce(zq, zp, 0.01), atol=1e-3)
    fn = torch.zeros(4, 4, dtype=torch.bool)
    fn[0, 1] = True
    masked = mined_info_nce(zq, zp, zn, 0.1, false_negative_mask=fn)
    assert float(masked) <= float(mined_info_nce(zq, zp, zn, 0.1)) + 1e-6


def test_dropping_duplicates_leaves_no_false_negative_among_mined():
    from labkit.paradigms.contrastive import DuplicateCatalogue, train_with_mined_negatives

    cat = DuplicateCatalogue(seed=1, categories=4, products_per_category=4, listings_per_product=3)
    _, plain = train_with_mined_negatives(cat, 0, k=4, steps=8, batch_size=8)
    _, dedup = train_with_mined_negatives(cat, 0, k=4, dedup=True, steps=8, batch_size=8)
    assert dedup["fn_share"] == 0.0 and plain["fn_share"] > 0.0
