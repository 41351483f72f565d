"""Real torch.distributed on one machine: spawn ranks (gloo, CPU, 127.0.0.1) and collect results.

The function a rank runs must be importable (defined in a module, e.g. in labkit), because ranks
are started with the "spawn" method; a notebook passes it by reference:

    from labkit.dist import run_ranks
    results = run_ranks(my_rank_fn, world_size=2, args=(batch,))   # my_rank_fn(rank, world_size, batch)

Every rank's return value is sent back (via torch.save, so tensors, dicts and numbers work) and
run_ranks returns them in rank order. A failing or hanging rank terminates all ranks and raises.
"""
from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import time
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labkit.contracts import ContractError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable, world_size: int, port: int, args: tuple, queue) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        out = fn(rank, world_size, *args)
        buf = io.BytesIO()
        torch.save(out, buf)
        queue.put((rank, buf.getvalue()))
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _main_module_hidden():
    """Start ranks without re-running the parent's __main__ in them.

    "spawn" children normally import the parent's main script first; a script without an
    `if __name__ == "__main__":` guard (a notebook runner, for instance) would then run again in
    every rank. Rank functions live in importable modules (run_ranks checks it), so the children
    never need __main__: hide its __file__ and __spec__ while the processes start.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            if "__spec__" in saved:
                main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def run_ranks(fn: Callable, world_size: int = 2, args: Sequence[Any] = (), timeout: float = 120.0) -> list:
    """Run fn(rank, world_size, *args) in `world_size` gloo processes; return their results by rank."""
    if world_size < 1:
        raise ContractError(f"world_size must be >= 1, got {world_size}")
    qualname = getattr(fn, "__qualname__", "")
    if getattr(fn, "__module__", "__main__") == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
        raise ContractError(f"{getattr(fn, '__name__', fn)!r} is defined in a notebook or inside a function; spawned ranks "
                            "can only import module-level functions. Fix: define it in a module (labkit.dist or a .py file)")
    queue = mp.get_context("spawn").SimpleQueue()
    with _main_module_hidden():
        ctx = mp.start_processes(_worker, args=(fn, world_size, free_port(), tuple(args), queue),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    results: list = [None] * world_size

    def drain():  # read results while ranks run: a result larger than the pipe buffer blocks its put() until read
        while not queue.empty():
            rank, payload = queue.get()
            results[rank] = torch.load(io.BytesIO(payload), weights_only=False)

    try:
        while not ctx.join(timeout=0.5):
            drain()
            if time.monotonic() > deadline:
                raise ContractError(f"distributed job did not finish within {timeout:.0f} s (a rank waits for a "
                                    "collective the others never call?); all ranks were terminated")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)
    drain()
    return results


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank its slice of the summed gradient."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[N, ...] on each rank -> [R*N, ...] (rank order); gradients flow back to every rank's x."""
    return _GatherWithGrad.apply(x).flatten(0, 1)


def all_gather_no_grad(x: torch.Tensor, keep_local_grad: bool = True) -> torch.Tensor:
    """[N, ...] -> [R*N, ...]; other ranks' rows are constants (stop-gradient). With
    keep_local_grad the local rows are x itself, so this rank's own rows still get gradients."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    with torch.no_grad():
        dist.all_gather(parts, x.detach().contiguous())
    if keep_local_grad:
        parts[dist.get_rank()] = x
    return torch.cat(parts)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of x over ranks (a new tensor; x is unchanged)."""
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _probe(rank: int, world_size: int, value: float) -> dict:
    """A tiny rank function used by the tests: gather with and without grad, reduce a sum."""
    x = torch.full((2,), value * (rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(x)
    (gathered * torch.arange(1.0, 2 * world_size + 1)).sum().backward()
    return {"rank": rank, "gathered": gathered.detach(), "grad": x.grad.clone(),
            "sum": all_reduce_sum(torch.tensor([float(rank)])),
            "no_grad_rows": all_gather_no_grad(x.detach()).tolist()}


def _fail_on_rank(rank: int, world_size: int, bad_rank: int = 1) -> int:
    """A rank function for tests: rank `bad_rank` raises while the others wait in a collective."""
    if rank == bad_rank:
        raise RuntimeError(f"rank {rank} failed on purpose")
    dist.barrier()
    return rank
