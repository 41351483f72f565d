"""A real 2-rank gloo job: gathers with and without gradient, reduced sums, error handling."""
import multiprocessing
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from labkit.batch import collate
from labkit.checks import ContractError
from labkit.dist import _fail_on_rank, _probe, run_ranks
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import causal_lm_loss, causal_lm_token_losses, data_parallel_step
from labkit.reduce import DP_REDUCTIONS, simulate_ranks


def test_two_rank_gather_and_grad():
    results = run_ranks(_probe, world_size=2, args=(1.0,))
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["gathered"].tolist() == [1.0, 1.0, 2.0, 2.0]
        assert r["sum"].item() == 1.0
    # d/dx_rank of sum_k c_k * gathered_k, summed over both ranks' losses: 2 * c[rank slice]
    assert results[0]["grad"].tolist() == [2.0, 4.0] and results[1]["grad"].tolist() == [6.0, 8.0]


def test_run_ranks_refuses_local_functions():
    def local(rank, world_size):
        return rank
    with pytest.raises(ContractError, match="module-level"):
        run_ranks(local, 2)


ROOT = Path(__file__).resolve().parents[1]


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
    for mode in DP_REDUCTIONS:
        model.zero_grad()
        per = [causal_lm_token_losses(model(**b.model_inputs()), b.labels) for b in parts]
        sim = simulate_ranks([l for l, _ in per], [m for _, m in per], mode)
        sim["objective"].backward()
        sim_grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        for r in real:
            assert torch.allclose(r["reductions"][mode]["grad"], sim_grad, atol=1e-6)
            assert abs(r["reductions"][mode]["loss"] - sim["losses"][r["rank"]].item()) < 1e-5
    assert torch.allclose(real[0]["reductions"]["global_count"]["grad"], ref, atol=1e-6)
    assert not torch.allclose(real[0]["reductions"]["local_mean"]["grad"], ref, atol=1e-4)


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
