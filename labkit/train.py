"""One small training loop for every notebook: fit() with a history, seeding and device choice."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

import labkit
from labkit.contracts import ContractError


@dataclass
class History:
    """What fit() saw: step index, training loss and wall time (seconds) per logged step."""

    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"

    def __repr__(self) -> str:
        if not self.loss:
            return "History(empty)"
        return (f"History({len(self.loss)} steps, loss {self.loss[0]:.2f} -> {self.loss[-1]:.2f}, "
                f"{self.seconds:.1f} s on {self.device})")

    def first_last(self, k: int = 10) -> tuple[float, float]:
        """Mean loss over the first and last k logged steps."""
        k = max(1, min(k, len(self.loss)))
        return sum(self.loss[:k]) / k, sum(self.loss[-k:]) / k


class StopTraining(Exception):
    """Raised by a fit() callback to end training after the current step; fit() returns normally."""


class KeepFirstReaching:
    """fit() callback: every `every` updates, score the model; keep the first weights whose score reaches `target`.

    score(model) -> float (e.g. teacher-forced accuracy on probe rows). After training: `reached` (bool),
    `step` (updates done when it was reached), `state` (a copy of that state_dict). stop=True ends training
    at that step (the model then holds exactly those weights). then(step, model, loss), if given, runs first
    on every step (e.g. a progress bar).
    """

    def __init__(self, score: Callable, target: float, every: int = 10, stop: bool = False,
                 then: Callable | None = None):
        if every < 1:
            raise ContractError(f"every must be >= 1 (updates between probes), got {every}")
        self.score, self.target, self.every, self.stop, self.then = score, float(target), every, stop, then
        self.reached, self.step, self.state = False, None, None

    def __call__(self, step: int, model: torch.nn.Module, loss: float) -> None:
        if self.then is not None:
            self.then(step, model, loss)
        if self.reached or (step + 1) % self.every:
            return
        if float(self.score(model)) >= self.target:
            self.reached, self.step = True, step + 1
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.stop:
                raise StopTraining


def fit(model: torch.nn.Module, batches: Callable[[int], object] | Iterable, loss_fn: Callable, steps: int,
        lr: float = 3e-3, weight_decay: float = 0.0, device=None, seed: int | None = None,
        progress: bool = True, desc: str = "training", clip: float | None = 1.0,
        callback: Callable | None = None) -> History:
    """Train with AdamW for `steps` steps and return the History.

    batches: a function step -> batch, or an iterable (cycled). A batch is moved with .to(device)
    (a labkit Batch, a tensor, or a dict/tuple of tensors). loss_fn(model, batch) -> scalar tensor.
    device: default labkit.device(). seed: seeds torch before the first step (None: leave as is).
    callback: called as callback(step, model, loss) after each optimizer step (loss: that step's
    training loss, a float), e.g. to probe validation accuracy; the model is in train mode. A callback
    that raises StopTraining ends training after that step (see KeepFirstReaching).
    """
    if steps < 1:
        raise ContractError(f"steps must be >= 1 (the number of optimizer updates), got {steps}")
    dev = torch.device(device) if device is not None else labkit.device()
    if seed is not None:
        torch.manual_seed(seed)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if callable(batches):
        get = batches
    else:
        source = list(batches)
        if not source:
            raise ContractError("fit() got an empty batch list")
        get = lambda i: source[i % len(source)]  # noqa: E731
    hist = History(device=str(dev))
    start = time.perf_counter()
    # tqdm.notebook ignores TQDM_DISABLE, and a bar left in a saved notebook would show frozen at 0%:
    # honour the variable here (it is set under test and when notebooks are executed for the repository)
    off = not progress or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    bar = tqdm(range(steps), desc=desc, leave=False, **({"disable": True} if off else {}))
    for step in bar:
        batch = _to(get(step), dev)
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss.detach()):
            raise ContractError(f"loss became {float(loss)} at step {step}; fix: lower lr, or check for a batch without targets")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        hist.steps.append(step)
        hist.loss.append(float(loss.detach()))
        if callback is not None:
            try:
                callback(step, model, hist.loss[-1])
            except StopTraining:
                break
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    hist.seconds = time.perf_counter() - start
    model.eval()
    return hist


def _to(batch, dev):
    if hasattr(batch, "to"):
        return batch.to(dev)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, dev) for v in batch)
    return batch
