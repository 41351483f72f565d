"""Effective token weights, gradient accumulation, data-parallel ranks (simulated and on a real
2-rank gloo job), the reduction panel and the notebook-06 exercise checks."""
import multiprocessing
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from labkit import IGNORE
from labkit.batch import collate
from labkit.checks import ContractError
from labkit.dist import _fail_on_rank, run_ranks
from labkit.paradigms.autoregressive import data_parallel_step
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss, causal_lm_token_losses
from labkit.reduce import (DP_MODES, REDUCTIONS, effective_weights, micro_batch_mean_gaps, rank_loss, reduce,
                           simulate_ranks)
from labkit.exercises.reductions import check_ddp_rank_loss, check_micro_batch_loss
from labkit.viz import token_weights_figure
from labkit.widgets import ReductionPanel, render_reduction

ROOT = Path(__file__).resolve().parents[1]
MASK = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])


def test_effective_weights_of_every_reduction():
    w = {how: effective_weights(MASK, how) for how in REDUCTIONS}
    assert torch.allclose(w["token_mean"][MASK.bool()], torch.full((7,), 1 / 7, dtype=torch.float64))
    assert torch.allclose(w["sequence_mean"][0, :2], torch.full((2,), 1 / 4, dtype=torch.float64))
    assert torch.allclose(w["sequence_mean"][1], torch.full((5,), 1 / 10, dtype=torch.float64))
    assert torch.equal(w["sum"], MASK.double()) and torch.allclose(w["batch_mean"], MASK.double() / 2)
    assert (w["token_mean"][~MASK.bool()] == 0).all()
    weighted = effective_weights(MASK, "token_mean", weights=torch.tensor([2.0, 1.0]))
    assert torch.allclose(weighted[0, 0], torch.tensor(2 / 9, dtype=torch.float64))
    assert torch.allclose(effective_weights(MASK, "sum", denominator=14), MASK.double() / 14)
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        effective_weights(torch.ones(3), "sum")


def test_effective_weights_are_the_gradient_shares():
    """d reduce / d l equals the per-token weight: checked against the gradient of a real reduction."""
    l = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    for how in REDUCTIONS:
        l.grad = None
        reduce(l, MASK, how).value.backward()
        assert torch.allclose(l.grad * MASK, effective_weights(MASK, how))


def _shards():
    g = torch.Generator().manual_seed(0)
    losses = [torch.rand(1, 3, generator=g) + 2.0, torch.rand(3, 6, generator=g)]
    masks = [torch.tensor([[1, 1, 0]]), torch.ones(3, 6, dtype=torch.long)]
    return losses, masks


def test_rank_loss_modes_and_simulation():
    losses, masks = _shards()
    S = [float((l * m).sum()) for l, m in zip(losses, masks)]
    n = [int(m.sum()) for m in masks]
    glob = simulate_ranks(losses, masks, "global_count")
    assert glob["counts"] == n and glob["global_count"] == sum(n)
    assert abs(glob["objective"].item() - sum(S) / sum(n)) < 1e-6      # the global token mean
    assert abs(glob["losses"][0].item() - 2 * S[0] / sum(n)) < 1e-6      # R * S_r / N
    local = simulate_ranks(losses, masks, "local_mean")
    mean_of_means = (S[0] / n[0] + S[1] / n[1]) / 2
    assert abs(local["objective"].item() - mean_of_means) < 1e-6
    assert abs(local["objective"].item() - glob["objective"].item()) > 0.5
    assert set(DP_MODES) == {"local_mean", "global_count"}
    with pytest.raises(ContractError, match="global_count mode needs"):
        rank_loss(losses[0], masks[0], "global_count")
    with pytest.raises(ContractError, match="unknown data-parallel mode"):
        rank_loss(losses[0], masks[0], "average")
    with pytest.raises(ContractError, match="one mask per rank"):
        simulate_ranks(losses, masks[:1])


def test_gradient_accumulation_with_a_model():
    torch.manual_seed(0)
    model = TinyCausalLM(30, d_model=16, n_layers=1, n_heads=2, max_len=16)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, 30, (n,), generator=g).tolist() for n in (3, 12, 14, 9)]
    micro = [collate([{"input_ids": s} for s in seqs[:1]], 0), collate([{"input_ids": s} for s in seqs[1:]], 0)]
    full = collate([{"input_ids": s} for s in seqs], 0)
    N = sum(int(b.labels[:, 1:].ne(IGNORE).sum()) for b in micro)

    def grad(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    ref = grad(causal_lm_loss(model(**full.model_inputs()), full.labels))
    acc = grad(sum(causal_lm_loss(model(**b.model_inputs()), b.labels, reduction="sum", denominator=N) for b in micro))
    mom = grad(sum(causal_lm_loss(model(**b.model_inputs()), b.labels) for b in micro) / 2)
    assert torch.allclose(acc, ref, atol=1e-6) and not torch.allclose(mom, ref, atol=1e-4)


def test_two_rank_gloo_job_matches_simulation_and_full_batch():
    """A real 2-process torch.distributed (gloo) step; results larger than a pipe buffer come back."""
    torch.manual_seed(0)
    model = TinyCausalLM(512, d_model=32, n_layers=2, n_heads=4, max_len=24).eval()
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(5, 512, (n,), generator=g).tolist() for n in (4, 15, 18, 20)]
    parts = [collate([{"input_ids": s} for s in seqs[:1]], 0), collate([{"input_ids": s} for s in seqs[1:]], 0)]
    shards = [{f: getattr(b, f) for f in ("input_ids", "attention_mask", "position_ids", "labels")} for b in parts]
    real = run_ranks(data_parallel_step, 2, args=(model, shards))
    assert [r["rank"] for r in real] == [0, 1] and real[0]["global_count"] == real[0]["local_count"] + real[1]["local_count"]
    full = collate([{"input_ids": s} for s in seqs], 0)
    model.zero_grad()
    causal_lm_loss(model(**full.model_inputs()), full.labels).backward()
    ref = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert ref.numel() * 4 > 65536, "the gradient is larger than a pipe buffer: run_ranks must read while ranks run"
    for mode in DP_MODES:
        model.zero_grad()
        per = [causal_lm_token_losses(model(**b.model_inputs()), b.labels) for b in parts]
        sim = simulate_ranks([l for l, _ in per], [m for _, m in per], mode)
        sim["objective"].backward()
        sim_grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        for r in real:
            assert torch.allclose(r["modes"][mode]["grad"], sim_grad, atol=1e-6)
            assert abs(r["modes"][mode]["loss"] - sim["losses"][r["rank"]].item()) < 1e-5
    assert torch.allclose(real[0]["modes"]["global_count"]["grad"], ref, atol=1e-6)
    assert not torch.allclose(real[0]["modes"]["local_mean"]["grad"], ref, atol=1e-4)


def test_failing_rank_is_cleaned_up():
    start = time.monotonic()
    with pytest.raises(Exception):
        run_ranks(_fail_on_rank, 2, timeout=60)
    assert time.monotonic() - start < 50, "a failing rank must end the job, not wait for the timeout"
    assert multiprocessing.active_children() == []


def test_run_ranks_from_a_script_without_main_guard(tmp_path):
    """A runner script without `if __name__ == "__main__":` must not run again in every rank."""
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from labkit.dist import _probe, run_ranks
        print("runner body", flush=True)
        print(run_ranks(_probe, 2, args=(1.0,), timeout=60)[1]["rank"], flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["runner", "body", "1"]


def test_render_reduction_and_panel():
    st = render_reduction("sequence_mean", lengths=(2, 4, 10))
    assert abs(st["per_token"][0] / st["per_token"][2] - 5) < 1e-9
    assert torch.allclose(st["row_totals"], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert "<table" in st["html"] and "sequence_mean" in st["text"]
    assert render_reduction("sum")["per_token"] == [1.0, 1.0, 1.0]
    with pytest.raises(ContractError, match="unknown reduction"):
        render_reduction("median")
    with pytest.raises(ContractError, match="at least one target"):
        render_reduction("sum", lengths=(0, 2))
    start = time.perf_counter()
    panel = ReductionPanel()
    for how in REDUCTIONS:
        panel.control.value = how
    assert panel.renders == len(REDUCTIONS) and (time.perf_counter() - start) / panel.renders < 0.1
    assert "batch_mean" in panel.output.value and panel.ui().children[0] is panel.control
    fig = token_weights_figure({how: render_reduction(how)["weights"] for how in REDUCTIONS})
    assert len(fig.axes) == len(REDUCTIONS)
    plt.close(fig)


def _message(check, fn):
    with pytest.raises(AssertionError) as err:
        check(fn)
    return str(err.value)


def test_check_micro_batch_loss_names_the_misconception():
    check_micro_batch_loss(lambda l, m, n: (l * m).sum() / n)
    own_means = lambda l, m, n: (l * m).sum() / m.sum() / 3  # noqa: E731
    assert "own token count" in _message(check_micro_batch_loss, own_means)
    assert "summed the micro-batch means" in _message(check_micro_batch_loss, lambda l, m, n: (l * m).sum() / m.sum())
    assert "sequences instead of" in _message(check_micro_batch_loss, lambda l, m, n: (l * m).sum() / 6)
    assert "one scalar" in _message(check_micro_batch_loss, lambda l, m, n: float((l * m).sum() / n))


def test_check_ddp_rank_loss_names_the_misconception():
    check_ddp_rank_loss(lambda s, c, n, r: s * r / n)
    assert "world_size" in _message(check_ddp_rank_loss, lambda s, c, n, r: s / n)
    assert "own token mean" in _message(check_ddp_rank_loss, lambda s, c, n, r: s / c)


# ----------------------------------------------------------------------------- mean of means on random batches

def test_micro_batch_mean_gaps_by_hand():
    """Two sequences per batch, one per micro-batch: the gap is computable by hand for every draw."""
    sums, counts = torch.tensor([2.0, 30.0]), torch.tensor([1, 10])
    gaps = micro_batch_mean_gaps(sums, counts, n_micro=2, micro_size=1, n_batches=5, generator=torch.Generator().manual_seed(0))
    token_mean, mean_of_means = 32 / 11, (2 / 1 + 30 / 10) / 2
    assert gaps.shape == (5,) and torch.allclose(gaps, torch.full((5,), (mean_of_means - token_mean) / token_mean,
                                                                  dtype=torch.float64))


def test_micro_batch_mean_gaps_vanish_with_equal_counts():
    """Equal token counts in every micro-batch: the mean of means IS the token mean."""
    g = torch.Generator().manual_seed(1)
    sums = torch.rand(40, generator=g) * 10
    gaps = micro_batch_mean_gaps(sums, torch.full((40,), 7), n_micro=4, micro_size=3, n_batches=50, generator=g)
    assert gaps.abs().max() < 1e-12
    unequal = micro_batch_mean_gaps(sums, torch.randint(1, 20, (40,), generator=g), 4, 3, 50, generator=g)
    assert unequal.abs().max() > 1e-3


def test_micro_batch_mean_gaps_refuse_bad_input():
    s, c = torch.ones(6), torch.ones(6, dtype=torch.long)
    with pytest.raises(ContractError, match="pool"):
        micro_batch_mean_gaps(s, c, n_micro=4, micro_size=2)
    with pytest.raises(ContractError, match="one entry per sequence"):
        micro_batch_mean_gaps(s, c[:5], 2, 2)
    with pytest.raises(ContractError, match="counts > 0"):
        micro_batch_mean_gaps(s, torch.tensor([1, 1, 0, 1, 1, 1]), 2, 2)
    with pytest.raises(ContractError, match=">= 1"):
        micro_batch_mean_gaps(s, c, 0, 2)
