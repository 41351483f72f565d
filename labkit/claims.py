"""Claims, checks and comparisons: every number a notebook asserts goes through here.

Three kinds of record, one printed line each:

* `check(id, value, expected, tol)`: an identity, or a value equal by construction (a gradient
  formula against autograd, a loss against its closed form). Shown as CHECK, never called a claim.
* `claim(id, value, above=..., below=..., between=...)`: an empirical effect with a threshold;
  the margin (how far the value clears the threshold) is recorded.
* `compare(id, a, b, ...)`: two arms that differ in one named thing, run over several seeds;
  the effect (A − B, signed so that positive = A better) is reported as mean ± sd with a 95%
  t-interval and a **two-sided** verdict: "A better", "no detectable difference" or "A worse".
  The expected verdict is asserted.

Each record also carries the seeds, and for comparisons the control arm and what is matched
between the arms. Records accumulate in a ledger (`ledger()`); `summary()` prints it as the
notebook's closing table. When the environment variable `LABKIT_LEDGER` names a file, every record
is also appended to it as one JSON line: `tools/execute_notebooks.py` uses that to store the ledger
of the committed run in the notebook's metadata (`metadata.labkit.claims`), and
`tools/run_seeds.py` to report each claim's smallest margin over seeds.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Sequence

import labkit
from labkit.contracts import ContractError, finite

__all__ = ["check", "claim", "compare", "ledger", "summary", "reset", "VERDICTS", "t_quantile"]

VERDICTS = ("A better", "no detectable difference", "A worse")
_LEDGER: list[dict] = []

# two-sided 95% quantiles of Student's t, by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (1.96 beyond 30)."""
    if df < 1:
        raise ContractError(f"t quantile needs df >= 1, got {df}")
    known = [k for k in sorted(_T975) if k <= df]
    return _T975[known[-1]] if df <= 30 else 1.96


def _seed() -> int | None:
    env = os.environ.get("LABKIT_SEED", "").strip()
    if env:
        return int(env)
    return labkit.DEFAULT_SEED


def _fmt(v: float, fmt: str) -> str:
    return format(v, fmt)


class Record(dict):
    """A ledger record (a dict). Its line is printed when it is made; as the last expression of a
    notebook cell it displays nothing more (no second copy, no full-precision floats in outputs)."""

    def _ipython_display_(self):
        pass


def _record(rec: dict) -> Record:
    rec = Record(rec)
    if not isinstance(rec["id"], str) or not rec["id"] or " " in rec["id"]:
        raise ContractError(f"claim id must be a non-empty string without spaces, got {rec['id']!r}; "
                            "fix: e.g. '03.double_shift'")
    global _LEDGER
    _LEDGER = [r for r in _LEDGER if r["id"] != rec["id"]] + [rec]   # a re-run cell replaces its record
    path = os.environ.get("LABKIT_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    return rec


def reset() -> None:
    """Forget every record (a notebook's ledger starts empty in a fresh kernel anyway)."""
    _LEDGER.clear()


def ledger() -> list[dict]:
    """The records made so far in this kernel, in order (a re-run id replaces its earlier record)."""
    return [dict(r) for r in _LEDGER]


def check(id: str, value, expected=0.0, tol: float = 0.0, *, text: str = "", fmt: str = ".3g") -> dict:
    """An identity or a value equal by construction: assert |value − expected| <= tol.

    Records kind "check"; margin = tol − |value − expected|. Prints
    `CHECK <id>: <text> = <value> (expected <expected> ± <tol>)`.
    """
    v, e, t = finite(value, "value"), finite(expected, "expected"), finite(tol, "tol")
    if t < 0:
        raise ContractError(f"tol must be >= 0, got {t}")
    gap = abs(v - e)
    line = f"CHECK {id}: {text + ' = ' if text else ''}{_fmt(v, fmt)} (expected {_fmt(e, fmt)} ± {t:g})"
    assert gap <= t, f"check failed: {line}, off by {gap:g}"
    rec = _record({"id": id, "kind": "check", "text": text, "value": v, "expected": e, "tol": t,
                   "threshold": f"|value - {e:g}| <= {t:g}", "margin": t - gap, "seeds": [_seed()]})
    print(line)
    return rec


def claim(id: str, value, *, above=None, below=None, between: Sequence[float] | None = None, text: str = "",
          control: str | None = None, control_value=None, matched_on: Iterable[str] = (), fmt: str = ".2f") -> dict:
    """An empirical effect with a visible threshold: value > above, value < below, or lo <= value <= hi.

    margin = value − above, below − value, or min(value − lo, hi − value): how far the measurement
    clears its threshold (the seed sweep compares it with the seed-to-seed spread).
    A single-run contrast may name its control arm and value; a comparison over seeds uses compare().
    """
    v = finite(value, "value")
    given = [x is not None for x in (above, below, between)]
    if sum(given) == 0:
        raise ContractError(f"claim {id!r} has no threshold; fix: give above=, below= or between= (a claim that "
                            "cannot fail is not a claim; an identity is a check())")
    if above is not None and below is not None:
        between = (above, below)
        above = below = None
    elif sum(given) > 1:
        raise ContractError(f"claim {id!r}: give above/below or between, not both")
    if between is not None:
        lo, hi = (finite(x, "between") for x in between)
        if lo > hi:
            raise ContractError(f"claim {id!r}: between=({lo}, {hi}) is empty")
        margin, threshold = min(v - lo, hi - v), f"in [{_fmt(lo, fmt)}, {_fmt(hi, fmt)}]"
    elif above is not None:
        t = finite(above, "above")
        margin, threshold = v - t, f"> {_fmt(t, fmt)}"
    else:
        t = finite(below, "below")
        margin, threshold = t - v, f"< {_fmt(t, fmt)}"
    rec = {"id": id, "kind": "claim", "text": text, "value": v, "threshold": threshold, "margin": margin,
           "seeds": [_seed()], "control": control, "matched_on": list(matched_on)}
    if control_value is not None:
        rec["control_value"] = finite(control_value, "control_value")
    line = f"CLAIM {id}: {text + ' = ' if text else ''}{_fmt(v, fmt)} {threshold} (margin {_fmt(margin, fmt)})"
    if control is not None:
        cv = f" = {_fmt(rec['control_value'], fmt)}" if "control_value" in rec else ""
        line += f"; control: {control}{cv}"
    assert margin > 0 or (between is not None and margin >= 0), f"claim failed: {line}"
    rec = _record(rec)
    print(line)
    return rec


def compare(id: str, a: Sequence[float], b: Sequence[float], *, seeds: Sequence[int], arms: tuple[str, str],
            metric: str, expect: str, matched_on: Iterable[str], higher_is_better: bool = True,
            min_effect: float = 0.0, fmt: str = ".3f") -> dict:
    """Arm A vs arm B (the control) over seeds, with a two-sided verdict.

    a, b: the metric of each arm, one value per seed (paired: seed i ran both arms).
    effect_i = a_i − b_i (b_i − a_i when lower is better), so a positive effect means A is better.
    With n >= 2 seeds: mean ± t_{0.975,n−1}·sd/√n; verdict "A better" if the interval lies above
    +min_effect, "A worse" if below −min_effect, else "no detectable difference".
    With one seed (runs too slow to repeat in the notebook; `make test-seeds` adds seeds): the verdict
    compares the single effect with ±min_effect, which must then be > 0.
    margin: for a directional verdict, how far the interval clears ±min_effect; for "no detectable
    difference", how far zero sits inside the interval. `expect` must equal the verdict.
    """
    if expect not in VERDICTS:
        raise ContractError(f"expect must be one of {VERDICTS}, got {expect!r}")
    a, b = [finite(x, "a") for x in a], [finite(x, "b") for x in b]
    seeds = [int(s) for s in seeds]
    if not (len(a) == len(b) == len(seeds)) or not a:
        raise ContractError(f"compare {id!r}: a, b and seeds need one value per seed, got {len(a)}, {len(b)}, "
                            f"{len(seeds)}")
    matched = list(matched_on)
    if not matched:
        raise ContractError(f"compare {id!r}: name what is matched between the arms (matched_on=[...]); a "
                            "comparison that does not say what it holds fixed cannot be judged")
    m = finite(min_effect, "min_effect")
    sign = 1.0 if higher_is_better else -1.0
    d = [sign * (x - y) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        half = t_quantile(n - 1) * sd / math.sqrt(n)
    else:
        if m <= 0:
            raise ContractError(f"compare {id!r}: one seed gives no interval; fix: run >= 2 seeds, or give "
                                "min_effect > 0 and let `make test-seeds` supply the spread")
        sd, half = float("nan"), 0.0
    lo, hi = mean - half, mean + half
    if lo > m:
        verdict, margin = "A better", lo - m
    elif hi < -m:
        verdict, margin = "A worse", -m - hi
    else:
        verdict, margin = "no detectable difference", min(hi + m, m - lo) if n >= 2 else m - abs(mean)
    rec = {"id": id, "kind": "comparison", "text": metric, "arms": list(arms), "control": arms[1],
           "matched_on": matched, "higher_is_better": higher_is_better, "seeds": seeds, "a": a, "b": b,
           "mean_a": sum(a) / n, "mean_b": sum(b) / n, "value": mean, "sd": None if n < 2 else sd,
           "ci": [lo, hi], "min_effect": m, "verdict": verdict, "expect": expect, "margin": margin,
           "threshold": f"verdict == {expect!r}"}
    direction = "" if higher_is_better else " (lower is better)"
    spread = f" ± {_fmt(sd, fmt)} sd, 95% CI [{_fmt(lo, fmt)}, {_fmt(hi, fmt)}]" if n >= 2 else " (one seed)"
    line = (f"COMPARE {id}: {metric}{direction}: {arms[0]} {_fmt(rec['mean_a'], fmt)} vs {arms[1]} "
            f"{_fmt(rec['mean_b'], fmt)}; effect {_fmt(mean, '+' + fmt)}{spread} over seeds "
            f"{', '.join(map(str, seeds))} -> {verdict.replace('A ', arms[0] + ' ')}"
            f"\n    matched: {', '.join(matched)}")
    assert verdict == expect, f"comparison verdict {verdict!r}, expected {expect!r}: {line}"
    rec = _record(rec)
    print(line)
    return rec


def summary(records: list[dict] | None = None) -> str:
    """The ledger as a text table (kind, id, value, threshold, margin, seeds); also printed."""
    recs = ledger() if records is None else records
    rows = [("kind", "id", "value", "threshold / verdict", "margin", "seeds")]
    for r in recs:
        value = f"{r['value']:.3g}"
        if r["kind"] == "comparison":
            value = f"{r['value']:+.3g} ({r['arms'][0]} vs {r['arms'][1]})"
        thr = r["verdict"] if r["kind"] == "comparison" else r["threshold"]
        rows.append((r["kind"], r["id"], value, thr, f"{r['margin']:.3g}", ",".join(map(str, r["seeds"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    print(text)
    return text


def read_ledger_file(path) -> list[dict]:
    """Records appended to a LABKIT_LEDGER file, de-duplicated by id (the last record of an id wins)."""
    recs: dict[str, dict] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    recs.pop(r["id"], None)
                    recs[r["id"]] = r
    except FileNotFoundError:
        return []
    return list(recs.values())
