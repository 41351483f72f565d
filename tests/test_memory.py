"""Tests of labkit.memory."""
import tracemalloc

import pytest
import torch

from labkit.checks import ContractError
from labkit.memory import ce_memory_benchmark, measure_peak_memory


def test_profiler_sees_torch_tensors_tracemalloc_does_not():
    def alloc():
        a = torch.ones(4 * 2**20)          # 16 MiB
        b = a * 2                          # +16 MiB: peak 32 MiB
        del a
        c = b + 1                          # 16 + 16 again
        return float(c[0])

    tracemalloc.start()
    alloc()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    m = measure_peak_memory(alloc, "cpu")
    assert traced < 2**20
    assert abs(m.peak_bytes - 32 * 2**20) < 2**16 and m.result == 3.0 and m.seconds >= 0 and "profiler" in m.method


def test_measurement_hides_profiler_chatter_only(capfd):
    measure_peak_memory(lambda: torch.ones(1000).sum(), "cpu")
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err


def test_benchmark_rows():
    rows = ce_memory_benchmark((64, 256), n_tokens=32, d_model=8, device="cpu", chunk_size=8)
    assert [(r["V"], r["path"]) for r in rows] == [(64, "full"), (64, "chunked"), (256, "full"), (256, "chunked")]
    for a, b in zip(rows[::2], rows[1::2]):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["logits_bytes"] == b["logits_bytes"] == 32 * a["V"] * 4
    with pytest.raises(ContractError, match="cpu and cuda"):
        measure_peak_memory(lambda: None, "meta")
