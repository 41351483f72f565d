"""The bottom of labkit: the error every contract raises, IGNORE, and the validators every public
function uses. It imports nothing from labkit, so any module may import it.

Each validator returns the value it accepted (never a silently converted one) or raises a
ContractError whose message names the broken contract and the fix. The vocabulary:

    token_ids(x, name, vocab_size)   integer tensor, ids in [0, V)
    label_ids(x, name, vocab_size)   integer tensor, ids in [0, V) or IGNORE (-100)
    binary_mask(x, name)             0/1 (or bool) tensor; refuses -100 (labels) and soft values
    log_probs(x, name)               float tensor, every entry <= 0 (−inf allowed)
    probabilities(x, name)           float tensor in [0, 1], rows summing to 1
    finite(x, name, low=, high=)     a real number (not text, not bool, not NaN/inf), optional bounds
    positive(x, name) / count(x, name)  finite > 0 / an integer >= minimum (not text, not float)
    weight_tensor(x, name)           finite, non-negative, not all zero
    text_file(path, name)            an existing UTF-8 file, not a folder, not empty
    same_shape(a, b, names)          shapes equal
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

IGNORE = -100
MEANING = {"ids": "token ids", "labels": "labels (ids or -100)", "mask": "a 0/1 mask"}


class ContractError(ValueError):
    """A broken data/objective contract. The message names the contract and the fix."""


def tensor(x, name: str) -> torch.Tensor:
    """x itself if it is a torch.Tensor; lists and numpy arrays are refused with the one-line fix."""
    if isinstance(x, torch.Tensor):
        return x
    kind = type(x).__name__
    if isinstance(x, str):
        raise ContractError(f"{name} must be a tensor of numbers, got the text {x[:40]!r}; fix: encode text with the "
                            "tokenizer first (tok.encode(...)), then torch.tensor(ids)")
    raise ContractError(f"{name} must be a torch.Tensor, got {kind}; fix: wrap it as torch.tensor({name}) "
                        "(with dtype=torch.long for ids and labels)")


def _integer(x: torch.Tensor, name: str, what: str) -> None:
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        hint = " (float ids would be truncated: 1.7 -> 1)" if x.is_floating_point() else ""
        raise ContractError(f"{name} must hold integer {what}, got dtype {x.dtype}{hint}; fix: build it with "
                            "dtype=torch.long from integer ids")


def token_ids(x, name: str = "input_ids", vocab_size: int | None = None) -> torch.Tensor:
    """An integer tensor of ids in [0, vocab_size)."""
    x = tensor(x, name)
    _integer(x, name, "token ids")
    if x.numel() and int(x.min()) < 0:
        hint = "; -100 belongs in labels, never in input_ids" if bool(x.eq(IGNORE).any()) else ""
        raise ContractError(f"{name} holds negative ids {x[x < 0][:5].tolist()}{hint}; fix: use the tokenizer's ids")
    if vocab_size is not None and x.numel() and int(x.max()) >= vocab_size:
        raise ContractError(f"{name} holds ids >= vocab_size={vocab_size}: {x[x >= vocab_size][:5].tolist()}; fix: the "
                            "model's vocabulary must cover the tokenizer")
    return x


def label_ids(x, name: str = "labels", vocab_size: int | None = None) -> torch.Tensor:
    """An integer tensor whose entries are class ids in [0, vocab_size) or IGNORE (-100)."""
    x = tensor(x, name)
    _integer(x, name, "label ids (or -100)")
    bad = x.ne(IGNORE) & (x.lt(0) | (x.ge(vocab_size) if vocab_size is not None else torch.zeros_like(x, dtype=torch.bool)))
    if bad.any():
        rng = f"[0, {vocab_size})" if vocab_size is not None else "[0, V)"
        raise ContractError(f"{name} holds ids outside {rng} that are not -100: {x[bad][:5].tolist()}; fix: ignored "
                            "positions use -100 and the vocabulary must cover every target")
    return x


def binary_mask(x, name: str = "mask") -> torch.Tensor:
    """A 0/1 (or bool) tensor. Labels (-100 and ids) and soft values are refused, with the fix."""
    x = tensor(x, name)
    if x.dtype == torch.bool:
        return x
    if x.numel() == 0:
        return x
    if bool(x.eq(IGNORE).any()):
        raise ContractError(f"{name} holds -100: these are labels, not a 0/1 mask (the denominator would count them as "
                            f"-100 each); fix: pass labels.ne(-100) as the mask")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ContractError(f"{name} holds NaN or inf; fix: a mask is 0 or 1")
    if not bool((x.eq(0) | x.eq(1)).all()):
        vals = torch.unique(x)[:6].tolist()
        raise ContractError(f"{name} must be 0/1, got values {vals}; fix: a mask says which positions count; soft "
                            "importance goes in weights=, and label ids go through labels.ne(-100)")
    return x


def log_probs(x, name: str = "log_probs", tol: float = 1e-6) -> torch.Tensor:
    """A float tensor of log-probabilities: every entry <= 0 (−inf allowed), no NaN, no +inf."""
    x = tensor(x, name)
    if not x.is_floating_point():
        raise ContractError(f"{name} must be floating point log-probabilities, got {x.dtype}")
    v = x.detach()
    if bool(torch.isnan(v).any()) or bool(torch.isposinf(v).any()):
        raise ContractError(f"{name} holds NaN or +inf; fix: find where the log-probability became non-finite")
    if v.numel() and float(v.max()) > tol:
        raise ContractError(f"{name} holds positive values (max {float(v.max()):.3g}): a log-probability is <= 0; fix: "
                            "pass summed log softmax of the response tokens (sequence_logprob), not logits or probabilities")
    return x


def probabilities(x, name: str = "probs", dim: int = -1, tol: float = 1e-4) -> torch.Tensor:
    """A float tensor in [0, 1] whose entries sum to 1 along `dim`."""
    x = tensor(x, name)
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ContractError(f"{name} must be finite floating point probabilities")
    if x.numel() and (float(x.min()) < -tol or float(x.max()) > 1 + tol):
        raise ContractError(f"{name} has values outside [0, 1] (min {float(x.min()):.3g}, max {float(x.max()):.3g}); "
                            "fix: these look like logits or log-probabilities: apply softmax first")
    sums = x.sum(dim)
    if x.numel() and not bool(torch.allclose(sums, torch.ones_like(sums), atol=tol * x.shape[dim])):
        raise ContractError(f"{name} rows must sum to 1 along dim {dim}; fix: normalise (x / x.sum({dim}, keepdim=True))")
    return x


def finite(x, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """A real number: not text, not bool, not NaN/inf; optionally low <= x (low < x if low_open) and x <= high."""
    if isinstance(x, (str, bytes)):
        raise ContractError(f"{name} must be a number, got the text {x!r}; fix: pass {name}={x.strip() if isinstance(x, str) else x!r} "
                            "without quotes")
    if isinstance(x, bool):
        raise ContractError(f"{name} must be a number, got {x}")
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ContractError(f"{name} must be one number, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ContractError(f"{name} must be a number, got {type(x).__name__}") from None
    if not math.isfinite(v):
        raise ContractError(f"{name} is {v}; fix: a NaN or infinite {name} makes every loss and gradient NaN: pass a finite value")
    if low is not None and (v <= low if low_open else v < low):
        raise ContractError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}; fix: pass a {name} "
                            f"{'above' if low_open else 'of at least'} {low}" + ("" if high is None else f" and at most {high}"))
    if high is not None and v > high:
        raise ContractError(f"{name} must be <= {high}, got {v}; fix: pass a {name} of at most {high}"
                            + ("" if low is None else f" and {'above' if low_open else 'at least'} {low}"))
    return v


def positive(x, name: str) -> float:
    """A finite number > 0 (a temperature, β, a margin scale, a denominator)."""
    return finite(x, name, low=0.0, low_open=True)


def count(x, name: str, minimum: int = 1) -> int:
    """An integer >= minimum (a size, a number of steps); text, bools and floats are refused."""
    if isinstance(x, str):
        raise ContractError(f"{name} must be an integer, got the text {x!r}; fix: {name}={x.strip()} without quotes")
    if isinstance(x, bool) or not (isinstance(x, int) or (hasattr(x, "__index__") and not isinstance(x, float))):
        raise ContractError(f"{name} must be an integer, got {type(x).__name__} {x!r}")
    v = int(x)
    if v < minimum:
        raise ContractError(f"{name} must be >= {minimum}, got {v}; fix: pass a whole number {name} of at least {minimum}")
    return v


def weight_tensor(x, name: str = "weights") -> torch.Tensor:
    """Finite, non-negative weights, not all zero (all-zero weights make every mean 0/0)."""
    x = tensor(x, name)
    if not x.is_floating_point() and x.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        raise ContractError(f"{name} must be numeric, got {x.dtype}")
    xf = x.float()
    if not bool(torch.isfinite(xf).all()):
        raise ContractError(f"{name} hold NaN or inf; fix: every weight is a finite number >= 0")
    if bool((xf < 0).any()):
        raise ContractError(f"{name} must be non-negative, got min {float(xf.min())}")
    if xf.numel() and float(xf.sum()) == 0:
        raise ContractError(f"{name} are all zero: the weighted mean would be 0/0 and nothing is learned; fix: give the "
                            "examples that should count a positive weight")
    return x


def same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Refuse two tensors whose shapes differ (before torch broadcasts or fails with a raw error)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ContractError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same shape; fix: "
                            "build both from the same padded examples")


def text_file(path, name: str = "file", allow_empty: bool = False) -> Path:
    """An existing UTF-8 text file (non-empty unless allow_empty); returns its Path."""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise ContractError(f"{name} must be a path (str or pathlib.Path), got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise ContractError(f"{name} {p} not found; fix: check the path (relative paths start at the notebook's folder)")
    if p.is_dir():
        raise ContractError(f"{name} {p} is a folder, not a file; fix: name the file inside it")
    data = p.read_bytes()
    if not data.strip() and not allow_empty:
        raise ContractError(f"{name} {p} is empty; fix: regenerate it or point at a file with records")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ContractError(f"{name} {p} is not UTF-8 (byte {err.start}, line {line}); fix: re-save it as UTF-8, e.g. "
                            "open(path, encoding='latin-1').read() then write it back with encoding='utf-8'") from None
    return p
