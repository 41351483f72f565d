"""Measuring what a loss costs: peak memory and time of one call, and the full-vs-chunked CE benchmark.

CPU peaks come from torch.profiler(profile_memory=True): torch tensors bypass Python's allocator, so
tracemalloc sees almost nothing. `import labkit` stays light: the profiler is imported here only."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import NamedTuple

import torch
from torch.profiler import ProfilerActivity, profile

import labkit
from labkit.contracts import IGNORE, ContractError
from labkit.reduce import chunked_cross_entropy, full_logits_cross_entropy


class Measured(NamedTuple):
    """peak_bytes: most bytes held at once beyond those held at the start; seconds: wall time;
    cpu_seconds: process CPU time (all threads); result: what fn returned; method: how memory was read."""

    peak_bytes: int
    seconds: float
    cpu_seconds: float
    result: object
    method: str


_PROFILER_NOISE = ("USDT:", "STAGE:", "Memory block of unknown size", "profiler_start", "profiler_stop")


class _QuietNativeStderr:
    """Collect what native code writes on fd 2 (kineto prints 'profiler_start/stop' lines there) and
    re-emit on sys.stderr only the lines that are not profiler chatter."""

    def __enter__(self):
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile(mode="w+b")
        try:
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except OSError:   # no usable fd 2: nothing to hide
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._tmp.seek(0)
            for line in self._tmp.read().decode(errors="replace").splitlines():
                if line.strip() and not any(n in line for n in _PROFILER_NOISE):
                    print(line, file=sys.stderr)
        self._tmp.close()
        return False


def measure_peak_memory(fn, device=None) -> Measured:
    """Run fn() once; return the peak memory it added and its time.

    CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus what was
    allocated before. CPU: torch.profiler(profile_memory=True) records every allocation and free
    of torch's CPU allocator; the peak is the maximum of their running sum. (tracemalloc cannot
    do this: torch tensors are not allocated through Python's allocator, so it sees ~0 bytes.)
    """


    dev = torch.device(device) if device is not None else labkit.device()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        torch.cuda.synchronize(dev)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return Measured(int(torch.cuda.max_memory_allocated(dev) - before), seconds, cpu, result, "torch.cuda.max_memory_allocated")
    if dev.type != "cpu":
        raise ContractError(f"measure_peak_memory supports cpu and cuda, got {dev}")

    with _QuietNativeStderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    try:
        raw = prof.profiler.kineto_results.events()
    except AttributeError:  # pragma: no cover - depends on the torch build
        raise ContractError("this torch build's profiler exposes no memory events; fix: measure on a CUDA device") from None
    events = sorted((e.start_ns(), e.nbytes()) for e in raw
                    if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return Measured(int(peak), seconds, cpu, result, "torch.profiler (profile_memory=True)")


def ce_memory_benchmark(vocab_sizes=(8192, 32768, 131072), n_tokens: int = 4096, d_model: int = 256,
                        chunk_size: int | None = None, device=None, seed: int = 0, ignore_share: float = 0.1) -> list[dict]:
    """One training step (loss + backward) of the full-logits path and of chunked_cross_entropy, per V.

    Inputs: hidden [n_tokens, d_model] ~ N(0, 1), weight [V, d_model] ~ N(0, 1/d), labels uniform
    with ignore_share of them -100. Each path runs once under measure_peak_memory. Returns rows
    {"V", "path" ("full" | "chunked"), "peak_bytes", "seconds", "cpu_seconds", "logits_bytes"
    (one float32 [N, V] matrix), "loss", "method"}.
    """

    dev = torch.device(device) if device is not None else labkit.device()
    rows = []
    for V in vocab_sizes:
        g = torch.Generator().manual_seed(seed + V)
        hidden = torch.randn(n_tokens, d_model, generator=g).to(dev).requires_grad_()
        weight = (torch.randn(V, d_model, generator=g) * d_model ** -0.5).to(dev).requires_grad_()
        labels = torch.randint(V, (n_tokens,), generator=g)
        labels[torch.rand(n_tokens, generator=g) < ignore_share] = IGNORE
        labels = labels.to(dev)
        paths = {"full": lambda: full_logits_cross_entropy(hidden, weight, labels),
                 "chunked": lambda: chunked_cross_entropy(hidden, weight, labels, chunk_size)}
        for name, loss_fn in paths.items():
            hidden.grad = weight.grad = None

            def step():
                loss = loss_fn()
                loss.backward()
                return float(loss.detach())

            m = measure_peak_memory(step, dev)
            rows.append({"V": V, "path": name, "peak_bytes": m.peak_bytes, "seconds": m.seconds,
                         "cpu_seconds": m.cpu_seconds, "logits_bytes": n_tokens * V * 4, "loss": m.result, "method": m.method})
        hidden.grad = weight.grad = None
    return rows
