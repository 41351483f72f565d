"""A real 2-rank gloo job: gathers with and without gradient, reduced sums, error handling."""
import pytest
import torch

from labkit.checks import ContractError
from labkit.dist import _probe, run_ranks


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
